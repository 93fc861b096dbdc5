"""The ``isheep`` command: the subcommands (one module each) behind one parser, and the one place
where their errors become exit statuses.

Exit status: 0 done, 2 bad input (one line on stderr, never a traceback), 130 stopped by
Ctrl-C (resumable), 1 an internal error (its traceback goes to a file, its name to stderr).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
from typing import Sequence

from isheep.runtime.core.errors import UserError

from .base import EXIT_INTERRUPTED, EXIT_USAGE, Command, Parser
from .config import ConfigCommand
from .doctor import DoctorCommand
from .eval import EvalCommand
from .export import ExportCommand
from .model import ModelCommand
from .monitor import MonitorCommand
from .plan import PlanCommand
from .recipes import RecipesCommand
from .report import ReportCommand
from .run import RunCommand
from .serve import ServeCommand

#: In the order ``isheep --help`` lists them.
COMMANDS: tuple[type[Command], ...] = (RunCommand, PlanCommand, EvalCommand, ReportCommand, RecipesCommand,
                                       ExportCommand, ConfigCommand, MonitorCommand, ServeCommand, ModelCommand,
                                       DoctorCommand)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="isheep", description="Run the I-SHEEP self-alignment loop against an "
                                               "OpenAI-compatible endpoint.")
    sub = parser.add_subparsers(dest="command_name", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_to(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.command().run(args)
    except UserError as err:
        sys.stderr.write(f"isheep: error: {err}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("isheep: aborted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (isheep recipes | head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback, show one line
        fd, path = tempfile.mkstemp(prefix="isheep-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            traceback.print_exc(file=fh)
        if logging.getLogger("isheep").handlers:
            logging.getLogger("isheep").exception("internal error")
        sys.stderr.write(f"isheep: internal error: {type(exc).__name__}: {exc} (traceback in {path})\n")
        return 1
