"""``isheep report RUN [--out FILE]``: one self-contained HTML file with the run's plots, and the
plots as PNG files beside it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import ClassVar

from isheep.runtime.core.errors import UserError
from isheep.runtime.pipeline.report import write_report
from isheep.runtime.store import RunStore

from .base import Command, writable_file


class ReportCommand(Command):
    """Writes the report and says where it and its plots went."""

    name: ClassVar[str] = "report"
    help: ClassVar[str] = "write a run's report: one HTML file with plots (and the plots as PNG)"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("folder", type=Path, help="run folder")
        parser.add_argument("--out", type=Path, help="the HTML file (default: DIR/report.html)")

    def run(self, args: argparse.Namespace) -> int:
        out = args.out or args.folder / "report.html"
        store = RunStore.open(args.folder, readonly=True)  # a missing or foreign folder is said first
        try:
            if out.suffix.lower() not in (".html", ".htm"):
                raise UserError(f"--out {out}: the report is an HTML file (name it .html)")
            writable_file(out, "--out")
            try:
                page, plots = write_report(store, out)
            except OSError as exc:  # the plots' folder beside it, a disk that filled up
                raise UserError(f"--out: cannot write the report {out}: {exc.strerror or exc}") from None
        finally:
            store.close_sync()
        print(f"report: {page}")
        for plot in plots:
            print(f"plot:   {plot}")
        return 0
