"""``isheep model pull``: fetch, convert and verify the embedded model now (it is cached)."""

from __future__ import annotations

import argparse
from typing import ClassVar

from .base import Command, Parser, say


class ModelCommand(Command):
    """Model provisioning; ``pull`` is its one action so far."""

    name: ClassVar[str] = "model"
    help: ClassVar[str] = "provision models"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="model_command", required=True, parser_class=Parser)
        actions.add_parser("pull", help="download, convert and verify the embedded model (cached)")

    def run(self, args: argparse.Namespace) -> int:
        from isheep.runtime.serving.models import ensure_embedded

        print(ensure_embedded(progress=say))
        return 0
