"""``isheep serve``: run the managed vLLM server alone, for other tools (and the test suite)."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import ClassVar

from isheep.runtime.core.loading import load_config, parse_set_option

from .base import Command, run_interruptible, say


class ServeCommand(Command):
    """Starts the server, prints ``OPENAI_BASE_URL``/``OPENAI_API_KEY``, serves until Ctrl-C."""

    name: ClassVar[str] = "serve"
    help: ClassVar[str] = "run the managed vLLM server alone, for other tools"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, help="TOML config file (its [server] section is used)")
        parser.add_argument("--model", help="'embedded' or a Hugging Face model folder")
        parser.add_argument("--port", type=int, help="port (default: a free one)")
        parser.add_argument("--log", type=Path,
                            help="server log (default: ~/.cache/isheep/logs/serve-<time>.log)")
        parser.add_argument("--swap", choices=["none", "reload", "lora"], default="none",
                            help="enable hot swaps: reload (vLLM's dev-mode routes, loopback only) or lora "
                                 "(runtime adapters)")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override server.* keys")

    def run(self, args: argparse.Namespace) -> int:
        from isheep.runtime.serving.models import cache_root, resolve_model
        from isheep.runtime.serving.server import ManagedServer

        overrides = {f"server.{k}" if not k.startswith("server.") else k: v
                     for k, v in (parse_set_option(item) for item in args.set)}
        if args.model:
            overrides["server.model"] = args.model
        if args.port is not None:
            overrides["server.port"] = args.port
        config = load_config(args.config, overrides)
        log = args.log or cache_root() / "logs" / time.strftime("serve-%Y%m%d-%H%M%S.log")
        stop = asyncio.Event()
        serving = False

        async def main() -> int:
            model_dir = resolve_model(config.server.model, progress=say)
            server = ManagedServer(config.server, model_dir, log,
                                   served_name=config.server.served_name or model_dir.name,
                                   dev_mode=args.swap == "reload", lora=args.swap == "lora")
            nonlocal serving
            try:
                await server.start(say)
                serving = True
                print(f"export OPENAI_BASE_URL={server.url}")
                print(f"export OPENAI_API_KEY={server.api_key}")
                print(f"# model: {server.served_name}; server pid: {server.pid}; log: {log}; Ctrl-C stops the "
                      "server", flush=True)
                while not stop.is_set() and not server.gave_up:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
                return 0 if stop.is_set() else 1
            finally:
                await server.stop()

        def request_stop() -> bool:
            stop.set()
            return serving  # while it starts there is nothing to stop cleanly: abort

        return run_interruptible(main, request_stop)
