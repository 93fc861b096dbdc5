"""``isheep eval RUN [--versions v0,v2]``: benchmarks of each model version of a run, served in turn
by the run's own servers and swap, kept in its lineage, printed with each score's 95% interval
and the paired difference to the base and to the version before. ``isheep eval --endpoint URL
--model NAME``: the same benchmarks of any served model (``judge`` against ``--reference-model``).
``--json`` also writes every prompt's score."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import ClassVar

from isheep.runtime.core.config import ClientConfig, EndpointConfig
from isheep.runtime.core.errors import UserError
from isheep.runtime.evals import BENCHMARKS, BenchOptions, BenchResult, Benchmark, JudgeBenchmark, Party
from isheep.runtime.pipeline.benchmarking import VersionScore, compare, evaluate_run, stored_results
from isheep.runtime.evals.sandbox import isolation
from isheep.runtime.serving.endpoints import EndpointPool
from isheep.runtime.store import RunStore

from .base import Command, positive, run_interruptible, say, writable_file, write_output
from .run import stored_config


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


def version_table(rows: list[VersionScore]) -> list[str]:
    """A run's versions per benchmark: score and interval, then the paired differences."""
    def diff(d) -> str:
        return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" if d is not None else "-"

    lines = [f"{'bench':<14}{'version':<9}{'score':>7}  {'95% interval':<16}{'prompts':>8}  "
             f"{'vs base (95%)':<26}{'vs previous (95%)':<26}"]
    for r in rows:
        lines.append(f"{r.bench:<14}{r.version:<9}{r.score.mean:>7.3f}  [{r.score.low:.3f}, {r.score.high:.3f}]  "
                     f"{r.score.n:>6}  {diff(r.vs_base):<26}{diff(r.vs_previous):<26}")
    return lines


def _endpoint_config(url: str, args: argparse.Namespace) -> EndpointConfig:
    """An endpoint named on the command line (its key from --api-key-env); a bad URL is one line."""
    try:
        return EndpointConfig(base_url=url, api_key_env=args.api_key_env, max_in_flight=args.workers)
    except ValueError as exc:
        raise UserError(str(exc).splitlines()[-1].strip()) from None


def versions(text: str) -> list[str]:
    """An argparse type: comma-separated model versions (v0, v1...)."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected versions such as v0,v2")
    return names


class EvalCommand(Command):
    """Runs the chosen benchmarks against one served model and prints the table."""

    name: ClassVar[str] = "eval"
    help: ClassVar[str] = "benchmark a served model: scores with 95%% intervals"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, nargs="?", help="a run folder: evaluate its model versions")
        parser.add_argument("--versions", type=versions, help="only these versions of the run (default: all)")
        parser.add_argument("--endpoint", help="instead of a run: the base URL of a served model (with /v1)")
        parser.add_argument("--model", help="with --endpoint: the model name requests use")
        parser.add_argument("--bench", type=bench_names, default=["instructions"],
                            help=f"benchmarks, comma-separated (known: {', '.join(sorted(BENCHMARKS))})")
        parser.add_argument("--limit", type=positive, default=None, help="at most N prompts per benchmark")
        parser.add_argument("--workers", type=positive, default=8, help="requests in flight (default 8)")
        parser.add_argument("--max-tokens", type=positive, default=512, help="tokens per answer (default 512)")
        parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                            help="environment variable holding the key (default OPENAI_API_KEY)")
        parser.add_argument("--allow-code-execution", action="store_true",
                            help="let humaneval run model-written code (in a sandboxed subprocess)")
        parser.add_argument("--json", type=Path, help="also write the results (every prompt's score) to this file")
        parser.add_argument("--judge-endpoint", help="judge: the base URL of the judge model (default: a run's "
                            "evaluation.judge_endpoint, else its base model; with --endpoint: the reference's)")
        parser.add_argument("--judge-model", help="judge: the judge's model name (default: the reference model)")
        parser.add_argument("--reference-model", help="with --endpoint and judge: the model to compare with "
                            "(the base), served at --reference-endpoint")
        parser.add_argument("--reference-endpoint", help="with --endpoint: where --reference-model is served "
                            "(default: --endpoint)")

    def run(self, args: argparse.Namespace) -> int:
        if (args.run is None) == (args.endpoint is None):
            raise UserError("give a run folder, or --endpoint URL --model NAME (not both)")
        if (args.judge_endpoint or args.judge_model or args.reference_model or args.reference_endpoint) \
                and "judge" not in args.bench:
            raise UserError("--judge-endpoint, --judge-model, --reference-model and --reference-endpoint apply to "
                            "--bench judge")
        if args.run is not None and args.judge_model and not args.judge_endpoint:
            raise UserError("--judge-model names the judge at --judge-endpoint (a run's default judge is its base)")
        if args.run is not None and (args.reference_model or args.reference_endpoint):
            raise UserError("--reference-model and --reference-endpoint apply to --endpoint (a run compares with v0)")
        if args.json is not None:
            writable_file(args.json, "--json")
        benches = self._benches(args)  # refused before anything starts
        if args.run is not None:
            return self._run_folder(args, benches)
        if args.model is None or args.versions is not None:
            raise UserError("--endpoint needs --model NAME, and --versions applies to a run folder")
        if "judge" in args.bench and args.reference_model is None:
            raise UserError("--bench judge with --endpoint compares two models: name the other with --reference-model")
        return self._endpoint(args, benches)

    @staticmethod
    def _benches(args: argparse.Namespace) -> list[Benchmark]:
        options = BenchOptions(workers=args.workers, max_tokens=args.max_tokens,
                               allow_code_execution=args.allow_code_execution)
        if "humaneval" in args.bench and not args.allow_code_execution:
            raise UserError("humaneval runs model-written code: pass --allow-code-execution to allow it "
                            f"(it runs in a {isolation()})")
        return [BENCHMARKS[name].build(options) for name in args.bench]

    def _run_folder(self, args: argparse.Namespace, benches: list[Benchmark]) -> int:
        config = stored_config(args.run)
        judge = _endpoint_config(args.judge_endpoint, args) if args.judge_endpoint else \
            config.evaluation.judge_endpoint
        store = RunStore.open(args.run)

        async def main() -> list[str]:
            await store.start()
            try:
                return await evaluate_run(config, store, benches, versions=args.versions,
                                          limit=args.limit or 0, environ=os.environ, progress=say,
                                          judge=judge, judge_model=args.judge_model or config.evaluation.judge_model)
            finally:
                await store.aclose()

        try:
            measured = run_interruptible(main, lambda: False)
        except BaseException:
            store.close_sync()
            raise
        store = RunStore.open(args.run, readonly=True)
        try:
            results = stored_results(store)
        finally:
            store.close_sync()
        wanted = {b for b in args.bench}
        chosen = {v: {b: r for b, r in results.get(v, {}).items() if b in wanted} for v in measured}
        print("\n".join(version_table(compare(chosen, measured))))
        if args.json is not None:
            write_output(args.json, json.dumps(chosen, indent=1), "--json")
            say(f"results written to {args.json}")
        return 0

    def _endpoint(self, args: argparse.Namespace, benches: list[Benchmark]) -> int:
        endpoint = _endpoint_config(args.endpoint, args)
        reference = _endpoint_config(args.reference_endpoint, args) if args.reference_endpoint else endpoint
        referee = _endpoint_config(args.judge_endpoint, args) if args.judge_endpoint else reference

        async def main() -> list[BenchResult]:
            pools = {url: EndpointPool.from_config([ep], ClientConfig(), os.environ)
                     for url, ep in ((e.base_url, e) for e in (endpoint, reference, referee))}
            try:
                model = await pools[endpoint.base_url].verify(args.model)
                results = []
                for bench in benches:
                    if isinstance(bench, JudgeBenchmark):
                        bench.reference = Party(pools[reference.base_url],
                                                await pools[reference.base_url].verify(args.reference_model))
                        bench.judge = Party(pools[referee.base_url], await pools[referee.base_url].verify(
                            args.judge_model or args.reference_model))
                    say(f"{bench.name}: asking {model} at {args.endpoint}")
                    results.append(await bench.run(pools[endpoint.base_url], model, limit=args.limit or 0))
                return results
            finally:
                for pool in pools.values():
                    await pool.aclose()

        results = run_interruptible(main, lambda: False)
        print("\n".join(table(results)))
        if args.json is not None:
            write_output(args.json, json.dumps([r.summary(keep=10**6) for r in results], indent=1), "--json")
            say(f"results written to {args.json}")
        return 0
