"""Load: 50,000 items with 256 requests in flight against the instant test server.

The endpoint's limit is fixed here (``client.adaptive = false``): against an instant server the
adaptive limit rightly stays low (more in flight buys nothing when the runtime itself is the
bound), and this test is about what 256 requests in flight do to memory and tasks.

Memory stays flat (nothing accumulates: bounded queues, streaming store), no asyncio task
outlives the run, and the accounting holds at the end. Throughput over the run is printed by
``bench/load.py`` (a benchmark, not a test: tests check behaviour, not seconds).
"""

from __future__ import annotations

import asyncio

import psutil
import pytest

import isheep
from isheep.runtime.core.loading import load_config

pytestmark = pytest.mark.slow
ITEMS = 50_000


async def test_fifty_thousand_items_memory_flat_and_no_task_leaks(server_factory, tmp_path, clean_env):
    server = server_factory(tasks_per_call=20, bad_rate=0.05, dup_rate=0.02, keep_rate=0.4, empty_rate=0.0)
    config = load_config(overrides={
        "endpoints": [{"base_url": server.url, "max_in_flight": 256}], "out": str(tmp_path / "run"), "rounds": 1,
        "round_size": ITEMS, "max_proposed": ITEMS, "responder.workers": 128, "critic.workers": 128,
        "proposer.workers": 8, "queue_size": 512, "client.adaptive": False}, environ={})
    process = psutil.Process()
    tasks_before = len(asyncio.all_tasks())
    marks: dict[str, float] = {}
    holder: dict = {}

    async def watch() -> None:
        while True:
            supervisor = holder.get("s")
            if supervisor is not None and supervisor.stats.account is not None:
                finished = supervisor.stats.account.finished
                in_flight = sum(s.in_flight for s in supervisor.pool.stats)
                marks["peak_in_flight"] = max(marks.get("peak_in_flight", 0), in_flight)
                if "start" not in marks and finished >= ITEMS // 10:
                    marks["start"] = process.memory_info().rss / 2**20
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    result = await isheep.arun(config, on_supervisor=lambda s: holder.__setitem__("s", s))
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    deadline = asyncio.get_running_loop().time() + 5
    while len(asyncio.all_tasks()) > tasks_before and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # cancelled tasks unwind within a few turns; a leaked one never does
    growth = process.memory_info().rss / 2**20 - marks["start"]
    assert growth < 50, f"RSS grew {growth:.1f} MiB over {ITEMS - ITEMS // 10} items"
    assert len(asyncio.all_tasks()) <= tasks_before, [t.get_name() for t in asyncio.all_tasks()]
    assert marks["peak_in_flight"] >= 200  # the load really had ~256 requests in flight
    assert result.rounds[0].proposed == ITEMS
    assert sum(result.totals.values()) == ITEMS and set(result.totals) <= {"kept", "rejected", "failed"}
