"""Runtime overhead benchmark: items per second through all four data roles against an instant
local test server, side by side with a bare client making the same requests, plus memory.

The bare client sends exactly the request mix of one item (one proposal per ``tasks_per_call``
items, an answer, two assessments) with the same concurrency and no runtime at all: no
queues, store, dedup, parsing or accounting. Runs alternate (bare, runtime, bare, runtime...)
in one process so both see the same machine. Prints items/s of each, their ratio, and the
RSS growth of the runtime over the run (targets: at least 1,000 items/s; under 50 MB growth
over 20,000 items). Each repeat also runs the runtime with a fixed limit per endpoint
(``client.adaptive = false``, the runtime before its concurrency controller) beside the default
adaptive one and prints adaptive/fixed (target: at least 1.0 within noise).

    python bench/pipeline.py [--items 20000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.procs import ServerProcess  # noqa: E402

import isheep  # noqa: E402
from isheep.runtime.core.recipes import load_recipe  # noqa: E402
from isheep.runtime.core.loading import load_config  # noqa: E402
from isheep.runtime.data import load_template  # noqa: E402
from isheep.runtime.serving.endpoints import HttpEndpoint  # noqa: E402

BEHAVIOUR = {"tasks_per_call": 20, "bad_rate": 0.05, "dup_rate": 0.02, "keep_rate": 0.4, "empty_rate": 0.0}
WORKERS = 64


async def bare_client(url: str, items: int) -> float:
    """The same requests as the runtime makes for ``items`` items, nothing else."""
    endpoint = HttpEndpoint(url, None, timeout_s=60, connect_timeout_s=5, max_in_flight=256)
    recipe = load_recipe("isheep")
    propose = load_template("propose", None, recipe).format(
        count=20, examples="###\n1. Instruction: Name a fruit.\n1. Input:\n<noinput>", next=2)
    critic = load_template("judge_quality", None, recipe)
    slots = asyncio.Semaphore(2 * WORKERS)

    async def item(i: int) -> None:
        async with slots:
            if i % 20 == 0:
                await endpoint.chat({"model": "test-model", "messages": [{"role": "user", "content": propose}]})
            answer = await endpoint.chat({"model": "test-model", "max_tokens": 1000,
                                          "messages": [{"role": "user", "content": f"Explain item {i} briefly."}]})
            prompt = critic.format(instruction=f"Explain item {i} briefly.", input_block="", response=answer.text,
                                   format="Reply with JSON.")
            await asyncio.gather(*(endpoint.chat({"model": "test-model", "messages": [{"role": "user", "content": p}],
                                                  "response_format": {"type": "json_object"}})
                                   for p in (prompt, prompt.replace("QUALITY", "FOLLOWS"))))

    started = time.perf_counter()
    await asyncio.gather(*(item(i) for i in range(items)))
    elapsed = time.perf_counter() - started
    await endpoint.aclose()
    return items / elapsed


async def runtime(url: str, items: int, folder: Path, monitor: bool = False,
                  adaptive: bool = True) -> tuple[float, float, float]:
    """Items/s of a real run, and RSS (MiB) after the first tenth of the items and at the end.

    With ``monitor``, the Textual monitor runs in the same loop (headless driver, 120x40),
    refreshing as it does for a person, so its cost shows in the rate.
    """
    config = load_config(overrides={
        "endpoints": [{"base_url": url, "max_in_flight": 256}], "out": str(folder), "rounds": 1,
        "round_size": items, "max_proposed": items, "responder.workers": WORKERS, "critic.workers": WORKERS,
        "proposer.workers": 4, "queue_size": 256,
        # The same chat requests as the bare client sends (the recipe's plain-text requests cost the
        # server alike; what differs between the two sides must be the runtime alone).
        "close_on": "kept", "proposer.api": "chat", "responder.base_api": "chat", "critic.style": "judge",
        "critic.api": "chat", "client.adaptive": adaptive}, environ={})
    process = psutil.Process()
    marks: dict[str, float] = {}
    holder: dict = {}

    async def sample() -> None:
        while True:
            supervisor = holder.get("s")
            account = supervisor.stats.account if supervisor else None
            if account is not None and "start" not in marks and account.finished >= items // 10:
                marks["start"] = process.memory_info().rss / 2**20
                marks["t0"] = time.perf_counter()
                marks["n0"] = account.finished
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    if monitor:
        from isheep.tui import MonitorApp

        app = MonitorApp(live=True)
        async with app.run_test(size=(120, 40)):
            await isheep.arun(config, display=app, on_supervisor=lambda s: holder.__setitem__("s", s))
            end = time.perf_counter()
    else:
        await isheep.arun(config, on_supervisor=lambda s: holder.__setitem__("s", s))
        end = time.perf_counter()
    sampler.cancel()
    rss_end = process.memory_info().rss / 2**20
    rate = (items - marks["n0"]) / (end - marks["t0"])  # steady state: start-up excluded
    return rate, marks["start"], rss_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--monitor", action="store_true",
                        help="also run with the Textual monitor open and print its cost")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    server = ServerProcess(BEHAVIOUR)
    rows = []
    monitored: list[tuple[float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for repeat in range(args.repeats):
                bare = runner(bare_client(server.url, args.items))
                rate, rss_start, rss_end = runner(runtime(server.url, args.items, Path(tmp) / f"run{repeat}"))
                fixed, _, _ = runner(runtime(server.url, args.items, Path(tmp) / f"fixed{repeat}", adaptive=False))
                rows.append((bare, rate, rss_end - rss_start, fixed))
                print(f"run {repeat + 1}: bare client {bare:,.0f} items/s | runtime {rate:,.0f} items/s "
                      f"(ratio {rate / bare:.2f}) | runtime RSS {rss_start:.0f} -> {rss_end:.0f} MiB "
                      f"(+{rss_end - rss_start:.1f} MiB over {args.items - args.items // 10:,} items) | "
                      f"fixed limit {fixed:,.0f} items/s (adaptive/fixed {rate / fixed:.2f})", flush=True)
                if args.monitor:
                    watched, _, _ = runner(runtime(server.url, args.items, Path(tmp) / f"tui{repeat}", monitor=True))
                    monitored.append((rate, watched))
                    print(f"run {repeat + 1}: with the monitor open {watched:,.0f} items/s "
                          f"({watched / rate:.3f} of headless)", flush=True)
    finally:
        server.stop()
    best = max(r[1] for r in rows)
    growth = max(r[2] for r in rows)
    print(f"runtime: {best:,.0f} items/s (target >= 1,000); runtime/bare ratio "
          f"{sum(r[1] / r[0] for r in rows) / len(rows):.2f}; worst RSS growth {growth:.1f} MiB (target < 50); "
          f"adaptive/fixed limit {sum(r[1] / r[3] for r in rows) / len(rows):.2f} (target >= 1.0)")
    if monitored:
        print(f"monitor open / headless: {sum(w / h for h, w in monitored) / len(monitored):.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
