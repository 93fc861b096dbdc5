"""The ``isheep`` command line: one module per subcommand (``run``, ``export``, ``config``,
``monitor``, ``serve``, ``model``, ``doctor``), the headless progress display and the summary."""

from .main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
