"""The ``isheep`` command.

Exit status: 0 done, 2 bad input (one line on stderr, never a traceback), 130 stopped by
Ctrl-C (resumable), 1 an internal error (its traceback goes to a file, its name to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import load_config, parse_set_option
from .errors import UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"isheep: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="isheep", description="Run the I-SHEEP self-alignment loop against an "
                                                "OpenAI-compatible endpoint.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the loop (headless, with a live progress table)")
    run.add_argument("--config", type=Path, help="TOML config file")
    run.add_argument("--endpoint", action="append", metavar="URL",
                     help="OpenAI-compatible base URL (repeat for a pool); default: OPENAI_BASE_URL")
    run.add_argument("--model", help="served model name (default: the only model the endpoint serves)")
    run.add_argument("--api-key-env", metavar="VAR",
                     help="environment variable holding the API key (default: OPENAI_API_KEY)")
    run.add_argument("--rounds", type=_positive, help="number of rounds")
    run.add_argument("--round-size", type=_positive, help="kept pairs wanted per round")
    run.add_argument("--max-proposed", type=_positive, help="cap on instructions proposed per round")
    run.add_argument("--out", type=Path, help="run folder to create (default: runs/<name or time>)")
    run.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR")
    run.add_argument("--train", choices=["auto", "trl", "none"],
                     help="training between rounds: trl, or none for data-only rounds (default auto: trl on "
                          "the managed server, none on an external endpoint)")
    run.add_argument("--swap", choices=["auto", "reload", "lora", "restart", "command", "none"],
                     help="how the served model becomes the trained one (default auto)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override any config key, e.g. --set proposer.temperature=0.7")
    run.add_argument("--quiet", action="store_true", help="no live display, only the summary")
    run.add_argument("--tui", action="store_true", help="watch and steer the run in the Textual monitor")
    run.set_defaults(func=cmd_run)

    export = sub.add_parser("export", help="write a run's data as JSONL per round and a datasets folder")
    export.add_argument("folder", type=Path, help="run folder")
    export.add_argument("--out", type=Path, help="export folder (default: DIR/exports)")
    export.add_argument("--all", action="store_true", help="every item with its verdict, not only kept pairs")
    export.set_defaults(func=cmd_export)

    config = sub.add_parser("config", help="print every config key with its default and doc (TOML)")
    config.set_defaults(func=cmd_config)

    monitor = sub.add_parser("monitor", help="watch a run folder (going on elsewhere, or finished), read-only")
    monitor.add_argument("folder", type=Path, help="run folder")
    monitor.set_defaults(func=cmd_monitor)

    serve = sub.add_parser("serve", help="run the managed vLLM server alone, for other tools")
    serve.add_argument("--config", type=Path, help="TOML config file (its [server] section is used)")
    serve.add_argument("--model", help="'embedded' or a Hugging Face model folder")
    serve.add_argument("--port", type=int, help="port (default: a free one)")
    serve.add_argument("--log", type=Path, help="server log (default: ~/.cache/isheep/logs/serve-<time>.log)")
    serve.add_argument("--swap", choices=["none", "reload", "lora"], default="none",
                       help="enable hot swaps: reload (vLLM's dev-mode routes, loopback only) or lora (runtime adapters)")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override server.* keys")
    serve.set_defaults(func=cmd_serve)

    model = sub.add_parser("model", help="provision models")
    model_sub = model.add_subparsers(dest="model_command", required=True, parser_class=_Parser)
    pull = model_sub.add_parser("pull", help="download, convert and verify the embedded model (cached)")
    pull.set_defaults(func=cmd_model_pull)

    doctor = sub.add_parser("doctor", help="check the installation (and --fix what can be fixed)")
    doctor.add_argument("--fix", action="store_true", help="uninstall the vision packages that break transformers")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, value = parse_set_option(item)
        overrides[key] = value
    if args.endpoint:
        endpoints = [{"base_url": url} for url in args.endpoint]
        if args.api_key_env:
            for endpoint in endpoints:
                endpoint["api_key_env"] = args.api_key_env
        overrides["endpoints"] = endpoints
    for flag, key in (("model", "model"), ("rounds", "rounds"), ("round_size", "round_size"),
                      ("max_proposed", "max_proposed"), ("train", "trainer.backend"), ("swap", "swap.strategy")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    if args.out is not None:
        overrides["out"] = str(args.out)
    return overrides


def _config_for(args: argparse.Namespace):
    overrides = _overrides(args)
    if args.resume is not None:
        from .store import RunStore

        if args.config is not None:
            raise UserError("--resume continues a run with its own config; drop --config (use --set to change keys)")
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise UserError("--resume DIR and --out name different folders")
        store = RunStore.open(args.resume, readonly=True)
        try:
            stored = store.meta().get("config", {})
            stored.setdefault("model", store.meta().get("model"))
        finally:
            store.close_sync()
        overrides["out"] = str(args.resume)
        config = load_config(overrides=overrides, base=stored)
    else:
        config = load_config(args.config, overrides)
    if args.api_key_env and not args.endpoint:
        for endpoint in config.endpoints:
            endpoint.api_key_env = args.api_key_env
    return config


def _runner():
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - Windows
        return asyncio.Runner()


def _interruptible(coro_factory: Callable[[dict[str, Any]], Any]) -> Any:
    """Run a coroutine with Ctrl-C handling: the first asks for a clean stop, the second aborts."""
    state: dict[str, Any] = {"supervisor": None, "presses": 0}

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            state["presses"] += 1
            supervisor = state["supervisor"]
            if state["presses"] == 1 and supervisor is not None:
                sys.stderr.write("\nisheep: stopping: finishing in-flight writes (Ctrl-C again to abort)\n")
                supervisor.request_stop()
            else:
                sys.stderr.write("\nisheep: aborting\n")
                assert task is not None
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
        return await coro_factory(state)

    with _runner() as runner:
        try:
            return runner.run(main())
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .app import arun
    from .progress import RichProgress, summary_table

    config = _config_for(args)
    console = Console(stderr=False, soft_wrap=True)  # paths must stay whole to be copied
    if args.tui:
        result = _interruptible(lambda state: _run_with_monitor(config, args.resume is not None, state))
    else:
        display = None if args.quiet else RichProgress(Console(stderr=True))

        async def go(state: dict[str, Any]):
            return await arun(config, resume=args.resume is not None, display=display,
                              on_supervisor=lambda s: state.__setitem__("supervisor", s), progress=_say)

        result = _interruptible(go)
    console.print(summary_table(result))
    if result.stopped:
        console.print(f"stopped; continue with: isheep run --resume {result.folder}")
        return EXIT_INTERRUPTED
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    info = export_run(args.folder, args.out, include_all=args.all)
    for k, n in info["rounds"].items():
        print(f"round {k}: {n} rows -> {info['folder']}/round-{k:02d}.jsonl")
    print(f"datasets folder: {info['dataset']}")
    return 0


async def _run_with_monitor(config, resume: bool, state: dict[str, Any]):
    """The loop and the Textual monitor in one event loop; quitting the monitor stops the run cleanly."""
    from isheep.tui import MonitorApp

    from .app import arun

    app = MonitorApp(live=True)

    async def loop():
        try:
            result = await arun(config, resume=resume, display=app, progress=app.say,
                                on_supervisor=lambda s: state.__setitem__("supervisor", s))
        except Exception as err:  # noqa: BLE001 - shown in the monitor, then handled as without it
            app.run_ended("failed", f"isheep: error: {err}")
            raise
        app.run_ended("stopped" if result.stopped else "done",
                      "run stopped; resume with isheep run --resume" if result.stopped else "run finished; q quits")
        return result

    task = asyncio.create_task(loop())
    await app.run_async()
    if not task.done():
        supervisor = state.get("supervisor")
        if supervisor is not None:
            supervisor.request_stop()
        else:
            task.cancel()  # still starting: nothing to save yet
    return await task


def cmd_monitor(args: argparse.Namespace) -> int:
    from isheep.tui import MonitorApp

    from .store import RunStore

    RunStore.open(args.folder, readonly=True).close_sync()  # a missing or foreign folder: one line, exit 2
    MonitorApp(args.folder).run()
    return 0


def _say(message: str) -> None:
    sys.stderr.write(f"isheep: {message}\n")
    sys.stderr.flush()


def cmd_serve(args: argparse.Namespace) -> int:
    import time as _time

    from .models import cache_root, resolve_model
    from .server import ManagedServer

    overrides = {f"server.{k}" if not k.startswith("server.") else k: v
                 for k, v in (parse_set_option(item) for item in args.set)}
    if args.model:
        overrides["server.model"] = args.model
    if args.port is not None:
        overrides["server.port"] = args.port
    config = load_config(args.config, overrides)
    log = args.log or cache_root() / "logs" / _time.strftime("serve-%Y%m%d-%H%M%S.log")

    async def go(state: dict[str, Any]) -> int:
        model_dir = resolve_model(config.server.model, progress=_say)
        server = ManagedServer(config.server, model_dir, log, served_name=config.server.served_name or model_dir.name,
                               dev_mode=args.swap == "reload", lora=args.swap == "lora")
        try:
            await server.start(_say)
            print(f"export OPENAI_BASE_URL={server.url}")
            print(f"export OPENAI_API_KEY={server.api_key}")
            print(f"# model: {server.served_name}; server pid: {server.pid}; log: {log}; Ctrl-C stops the server",
                  flush=True)
            stop = asyncio.Event()
            state["supervisor"] = type("Stopper", (), {"request_stop": staticmethod(stop.set)})()
            while not stop.is_set() and not server.gave_up:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass
            return 0 if stop.is_set() else 1
        finally:
            await server.stop()

    return _interruptible(go)


def cmd_model_pull(args: argparse.Namespace) -> int:
    from .models import ensure_embedded

    print(ensure_embedded(progress=_say))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor(fix=args.fix)


def cmd_config(args: argparse.Namespace) -> int:
    from .reference import reference_toml

    sys.stdout.write(reference_toml())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        sys.stderr.write(f"isheep: error: {err}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("isheep: aborted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback, show one line
        fd, path = tempfile.mkstemp(prefix="isheep-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            traceback.print_exc(file=fh)
        if logging.getLogger("isheep").handlers:
            logging.getLogger("isheep").exception("internal error")
        sys.stderr.write(f"isheep: internal error: {type(exc).__name__}: {exc} (traceback in {path})\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
