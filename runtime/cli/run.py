"""``isheep run``: run the loop (headless with a live table, or in the Textual monitor), or resume one."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any, ClassVar

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.loading import load_config, parse_set_option
from isheep.runtime.core.errors import UserError
from isheep.runtime.pipeline import Run, RunResult
from isheep.runtime.store import RunStore

from .base import EXIT_INTERRUPTED, Command, positive, run_interruptible, say

#: Flags that set one config key each.
_FLAG_KEYS = (("recipe", "recipe"), ("model", "model"), ("rounds", "rounds"), ("round_size", "round_size"),
              ("max_proposed", "max_proposed"), ("train", "trainer.backend"), ("swap", "swap.strategy"))


class RunCommand(Command):
    """Runs the loop with a live display (or none), prints the summary, exits 130 when stopped."""

    name: ClassVar[str] = "run"
    help: ClassVar[str] = "run the loop (headless, with a live progress table)"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, help="TOML config file")
        parser.add_argument("--recipe", metavar="NAME",
                            help="the method whose defaults apply: isheep (default), dromedary, self-instruct... "
                                 "(isheep recipes lists them)")
        parser.add_argument("--endpoint", action="append", metavar="URL",
                            help="OpenAI-compatible base URL (repeat for a pool); default: OPENAI_BASE_URL")
        parser.add_argument("--model", help="served model name (default: the only model the endpoint serves)")
        parser.add_argument("--api-key-env", metavar="VAR",
                            help="environment variable holding the API key (default: OPENAI_API_KEY)")
        parser.add_argument("--rounds", type=positive, help="number of rounds")
        parser.add_argument("--round-size", type=positive, help="kept pairs wanted per round")
        parser.add_argument("--max-proposed", type=positive, help="cap on instructions proposed per round")
        parser.add_argument("--out", type=Path, help="run folder to create (default: runs/<name or time>)")
        parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR")
        parser.add_argument("--train", choices=["auto", "trl", "none"],
                            help="training between rounds: trl, or none for data-only rounds (default auto: trl "
                                 "on the managed server, none on an external endpoint)")
        parser.add_argument("--swap", choices=["auto", "reload", "lora", "restart", "command", "none"],
                            help="how the served model becomes the trained one (default auto)")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override any config key, e.g. --set proposer.temperature=0.7")
        parser.add_argument("--quiet", action="store_true", help="no live display, only the summary")
        parser.add_argument("--tui", action="store_true", help="watch and steer the run in the Textual monitor")

    def run(self, args: argparse.Namespace) -> int:
        from rich.console import Console

        from .summary import summary_table

        config = config_for(args)
        resume = args.resume is not None
        result = _run_in_monitor(config, resume) if args.tui else _run_headless(config, resume, args.quiet)
        console = Console(stderr=False, soft_wrap=True)  # paths must stay whole to be copied
        console.print(summary_table(result))
        if result.stopped:
            console.print(f"stopped; continue with: isheep run --resume {result.folder}")
            return EXIT_INTERRUPTED
        return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = dict(parse_set_option(item) for item in args.set)
    if args.endpoint:
        endpoints = [{"base_url": url} for url in args.endpoint]
        if args.api_key_env:
            for endpoint in endpoints:
                endpoint["api_key_env"] = args.api_key_env
        overrides["endpoints"] = endpoints
    for flag, key in _FLAG_KEYS:
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    if args.out is not None:
        overrides["out"] = str(args.out)
    return overrides


def config_for(args: argparse.Namespace) -> RunConfig:
    """The run's config: the file and flags, or, with ``--resume``, the run's stored config and flags."""
    overrides = _overrides(args)
    if args.resume is not None:
        if args.config is not None:
            raise UserError("--resume continues a run with its own config; drop --config (use --set to change keys)")
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise UserError("--resume DIR and --out name different folders")
        config = stored_config(args.resume, overrides)
    else:
        config = load_config(args.config, overrides)
    if args.api_key_env and not args.endpoint:
        for endpoint in config.endpoints:
            endpoint.api_key_env = args.api_key_env
    return config


def stored_config(folder: Path, overrides: dict | None = None) -> RunConfig:
    """The config a run in ``folder`` was started with (secrets never stored: looked up again), and ``overrides``."""
    store = RunStore.open(folder, readonly=True)
    try:
        stored = store.meta().get("config", {})
        stored.setdefault("model", store.meta().get("model"))
    finally:
        store.close_sync()
    return load_config(overrides={**(overrides or {}), "out": str(folder)}, base=stored)


def _run_headless(config: RunConfig, resume: bool, quiet: bool) -> RunResult:
    from rich.console import Console

    from .progress import RichProgress

    handle = Run(config, resume=resume, display=None if quiet else RichProgress(Console(stderr=True)), progress=say)

    async def main() -> RunResult:
        async with handle:
            return await handle.execute()

    return run_interruptible(main, handle.request_stop)


def _run_in_monitor(config: RunConfig, resume: bool) -> RunResult:
    """The loop and the Textual monitor in one event loop; quitting the monitor stops the run cleanly."""
    from isheep.tui import MonitorApp

    app = MonitorApp(live=True)
    handle = Run(config, resume=resume, display=app, progress=app.say)

    async def loop() -> RunResult:
        try:
            async with handle:
                result = await handle.execute()
        except Exception as err:  # noqa: BLE001 - shown in the monitor, then handled as without it
            app.run_ended("failed", f"isheep: error: {err}")
            raise
        app.run_ended("stopped" if result.stopped else "done",
                      "run stopped; resume with isheep run --resume" if result.stopped else "run finished; q quits")
        return result

    async def main() -> RunResult:
        task = asyncio.create_task(loop())
        await app.run_async()
        if not task.done() and not handle.request_stop():
            task.cancel()  # still starting: nothing to save yet
        return await task

    return run_interruptible(main, handle.request_stop)
