"""What every subcommand shares: the :class:`Command` interface, the parser, Ctrl-C handling.

Exit status: 0 done, 2 bad input (one line on stderr, never a traceback), 130 stopped by
Ctrl-C (resumable), 1 an internal error (its traceback goes to a file, its name to stderr).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, ClassVar, TypeVar

from isheep.runtime.core.errors import UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"isheep: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


class Command(abc.ABC):
    """One subcommand: its name, its arguments, and what it does (vLLM's CLI subcommands' shape)."""

    #: The word after ``isheep``.
    name: ClassVar[str]
    #: One line for ``isheep --help``.
    help: ClassVar[str]

    @classmethod
    def add_to(cls, subparsers: Any) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(cls.name, help=cls.help, description=cls.help)
        cls.add_arguments(parser)
        parser.set_defaults(command=cls)
        return parser

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Declare the subcommand's arguments (none by default)."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Do it; the exit status. A :class:`~isheep.runtime.core.errors.UserError` means bad input."""


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def writable_file(path: Path, flag: str) -> Path:
    """Check, before any work starts, that an output file can be written: its folder exists and
    takes new files, and the file, if there, is a file we may overwrite.

    Raises:
        UserError: one line naming ``flag`` and the problem.
    """
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"{flag}: {folder} is not a folder" if folder.exists() else
                        f"{flag}: folder {folder} does not exist")
    if path.is_dir():
        raise UserError(f"{flag}: {path} is a folder, not a file")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag}: {path} cannot be written (permission denied)")
    return path


def write_output(path: Path, text: str, flag: str) -> None:
    """Write a command's output file; a failure (disk full, a folder gone since) is one line."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{flag}: cannot write {path}: {exc.strerror or exc}") from None


def say(message: str) -> None:
    """A progress line on stderr (stdout stays for what a command prints as its result)."""
    sys.stderr.write(f"isheep: {message}\n")
    sys.stderr.flush()


def _runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - Windows
        return asyncio.Runner()


def run_interruptible(main: Callable[[], Awaitable[T]], stop: Callable[[], bool]) -> T:
    """Run ``main()`` on a fresh event loop with Ctrl-C (and SIGTERM) handling.

    The first signal calls ``stop()``: True means a clean stop is under way (the coroutine
    finishes on its own); False, or a second signal, aborts: the coroutine is cancelled and
    KeyboardInterrupt raised.
    """
    presses = 0

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            if presses == 1 and stop():
                sys.stderr.write("\nisheep: stopping: finishing in-flight writes (Ctrl-C again to abort)\n")
            else:
                sys.stderr.write("\nisheep: aborting\n")
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
        return await main()

    with _runner() as runner:
        try:
            return runner.run(guarded())
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
