"""``isheep export``: a run's data as JSON Lines per round and a Hugging Face ``datasets`` folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import ClassVar

from isheep.runtime.store import export_run

from .base import Command


class ExportCommand(Command):
    """Writes the exports and says where each went."""

    name: ClassVar[str] = "export"
    help: ClassVar[str] = "write a run's data as JSONL per round and a datasets folder"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("folder", type=Path, help="run folder")
        parser.add_argument("--out", type=Path, help="export folder (default: DIR/exports)")
        parser.add_argument("--all", action="store_true", help="every item with its verdict, not only kept pairs")

    def run(self, args: argparse.Namespace) -> int:
        info = export_run(args.folder, args.out, include_all=args.all)
        for k, n in info["rounds"].items():
            print(f"round {k}: {n} rows -> {info['folder']}/round-{k:02d}.jsonl")
        print(f"datasets folder: {info['dataset']}")
        return 0
