"""``isheep eval --endpoint URL --model NAME``: benchmarks of any served model, each score with
its 95% interval, printed as a table (and written as JSON with ``--json``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import ClassVar

from isheep.runtime.core.config import ClientConfig, EndpointConfig
from isheep.runtime.core.errors import UserError
from isheep.runtime.evals import BENCHMARKS, BenchResult
from isheep.runtime.serving.endpoints import EndpointPool

from .base import Command, positive, run_interruptible, say


def bench_names(text: str) -> list[str]:
    """An argparse type: comma-separated benchmark names, each known."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown benchmark {', '.join(unknown) or repr(text)} "
                                         f"(known: {', '.join(sorted(BENCHMARKS))})")
    return names


def table(results: list[BenchResult]) -> list[str]:
    """Results as aligned text lines: the headline score, its interval, and each benchmark's own metrics."""
    lines = [f"{'bench':<14}{'model':<24}{'score':>7}  {'95% interval':<16}{'prompts':>8}{'failed':>8}  metrics"]
    for r in results:
        ci = r.interval
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in r.metrics.items())
        lines.append(f"{r.bench:<14}{r.model[:23]:<24}{ci.mean:>7.3f}  [{ci.low:.3f}, {ci.high:.3f}]  "
                     f"{ci.n:>6}{r.failed:>8}  {metrics}")
    return lines


class EvalCommand(Command):
    """Runs the chosen benchmarks against one served model and prints the table."""

    name: ClassVar[str] = "eval"
    help: ClassVar[str] = "benchmark a served model: scores with 95%% intervals"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--endpoint", required=True, help="base URL of an OpenAI-compatible server (with /v1)")
        parser.add_argument("--model", required=True, help="the model name requests use")
        parser.add_argument("--bench", type=bench_names, default=["instructions"],
                            help=f"benchmarks, comma-separated (known: {', '.join(sorted(BENCHMARKS))})")
        parser.add_argument("--limit", type=positive, default=None, help="at most N prompts per benchmark")
        parser.add_argument("--workers", type=positive, default=8, help="requests in flight (default 8)")
        parser.add_argument("--max-tokens", type=positive, default=512, help="tokens per answer (default 512)")
        parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                            help="environment variable holding the key (default OPENAI_API_KEY)")
        parser.add_argument("--json", type=Path, help="also write the results (every prompt's score) to this file")

    def run(self, args: argparse.Namespace) -> int:
        try:
            endpoint = EndpointConfig(base_url=args.endpoint, api_key_env=args.api_key_env,
                                      max_in_flight=args.workers)
        except ValueError as exc:
            raise UserError(str(exc).splitlines()[-1].strip()) from None
        if args.json is not None and not args.json.parent.is_dir():
            raise UserError(f"--json: folder {args.json.parent} does not exist")

        async def main() -> list[BenchResult]:
            pool = EndpointPool.from_config([endpoint], ClientConfig(), os.environ)
            try:
                model = await pool.verify(args.model)
                results = []
                for name in args.bench:
                    say(f"{name}: asking {model} at {args.endpoint}")
                    bench = BENCHMARKS[name](workers=args.workers, max_tokens=args.max_tokens)
                    results.append(await bench.run(pool, model, limit=args.limit or 0))
                return results
            finally:
                await pool.aclose()

        results = run_interruptible(main, lambda: False)
        print("\n".join(table(results)))
        if args.json is not None:
            args.json.write_text(json.dumps([r.summary(keep=10**6) for r in results], indent=1), encoding="utf-8")
            say(f"results written to {args.json}")
        return 0
