"""Load benchmark: 50,000 items with 256 requests in flight against the instant test server.

Prints items/s for each tenth of the run, with RSS and live asyncio tasks at each point, so
throughput stability (slowest tenth / fastest tenth) and memory flatness can be read at a glance.

    python bench/load.py [--items 50000]
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
from isheep.runtime.core.loading import load_config  # noqa: E402


async def main_async(items: int) -> None:
    server = ServerProcess({"tasks_per_call": 20, "bad_rate": 0.05, "dup_rate": 0.02, "keep_rate": 0.4,
                            "empty_rate": 0.0})
    process = psutil.Process()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(overrides={
                "endpoints": [{"base_url": server.url, "max_in_flight": 256}], "out": str(Path(tmp) / "run"),
                "rounds": 1, "round_size": items, "max_proposed": items, "responder.workers": 128,
                "critic.workers": 128, "proposer.workers": 8, "queue_size": 512}, environ={})
            holder: dict = {}
            points: list[tuple[float, int, float, int]] = []
            tasks_before = len(asyncio.all_tasks())

            async def sample() -> None:
                step = items // 10
                while True:
                    supervisor = holder.get("s")
                    account = supervisor.stats.account if supervisor else None
                    if account is not None and account.finished >= step * len(points):
                        points.append((time.perf_counter(), account.finished, process.memory_info().rss / 2**20,
                                       len(asyncio.all_tasks())))
                    await asyncio.sleep(0.02)

            sampler = asyncio.create_task(sample())
            await isheep.arun(config, on_supervisor=lambda s: holder.__setitem__("s", s))
            points.append((time.perf_counter(), items, process.memory_info().rss / 2**20, len(asyncio.all_tasks())))
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await asyncio.sleep(0.2)
            tasks_after = len(asyncio.all_tasks())
    finally:
        server.stop()
    rates = []
    for (t0, n0, _, _), (t1, n1, rss, tasks) in zip(points[1:], points[2:]):
        rate = (n1 - n0) / (t1 - t0)
        rates.append(rate)
        print(f"items {n0:6d}-{n1:6d}: {rate:7.0f} items/s | RSS {rss:6.1f} MiB | asyncio tasks {tasks}")
    print(f"throughput stability (slowest / fastest tenth): {min(rates) / max(rates):.2f}; "
          f"RSS growth after the first tenth: {points[-1][2] - points[1][2]:+.1f} MiB; "
          f"asyncio tasks before/after the run: {tasks_before}/{tasks_after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main_async(args.items))
    except ImportError:
        asyncio.run(main_async(args.items))


if __name__ == "__main__":
    main()
