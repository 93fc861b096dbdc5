"""``isheep monitor``: attach the Textual monitor to a run folder, read-only."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import ClassVar

from isheep.runtime.store import RunStore

from .base import Command


class MonitorCommand(Command):
    """Opens the monitor on a run going on elsewhere, or finished long ago."""

    name: ClassVar[str] = "monitor"
    help: ClassVar[str] = "watch a run folder (going on elsewhere, or finished), read-only"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("folder", type=Path, help="run folder")

    def run(self, args: argparse.Namespace) -> int:
        from isheep.tui import MonitorApp

        RunStore.open(args.folder, readonly=True).close_sync()  # a missing or foreign folder: one line, exit 2
        MonitorApp(args.folder).run()
        return 0
