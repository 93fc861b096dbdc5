"""The pool's adaptive limit: its slots, and its controllers fed by real servers (the test server
as an engine with a batch and vLLM's /metrics, the fault proxy's 429s with Retry-After).

The controller's decisions themselves are tested on recorded traces in test_concurrency.py; here
the wiring: the limit the pool enforces is the one its controller chose, from what it observed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from isheep.runtime.core.config import ClientConfig
from isheep.runtime.serving import ServerMetrics
from isheep.runtime.serving.endpoints import EndpointError, EndpointPool, HttpEndpoint
from isheep.runtime.serving.endpoints.openai_sdk import OpenAIEndpoint
from isheep.runtime.serving.endpoints.slots import Slots

pytestmark = pytest.mark.timeout(90)

MODEL = "test-model"


def chat(content: str = "Say hello.") -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}]}


# -- slots ---------------------------------------------------------------------------------------
async def test_slots_follow_a_changing_limit_first_come_first_served():
    slots = Slots(2)
    order: list[int] = []

    async def holder(n: int, release: asyncio.Event) -> None:
        await slots.acquire()
        order.append(n)
        await release.wait()
        slots.release()

    gates = [asyncio.Event() for _ in range(6)]
    tasks = [asyncio.create_task(holder(n, gates[n])) for n in range(6)]
    await asyncio.sleep(0.01)
    assert order == [0, 1] and slots.used == 2 and slots.waiting == 4
    slots.set_limit(4)  # a raised limit lets the next two in, in their order
    await asyncio.sleep(0.01)
    assert order == [0, 1, 2, 3]
    slots.set_limit(1)  # a lowered one interrupts nobody: new holders wait until enough have left
    for n in (0, 1, 2):
        gates[n].set()
    await asyncio.sleep(0.01)
    assert order == [0, 1, 2, 3] and slots.used == 1
    gates[3].set()
    await asyncio.sleep(0.01)
    assert order == [0, 1, 2, 3, 4]
    gates[4].set()
    gates[5].set()
    await asyncio.gather(*tasks)
    assert order == list(range(6)) and slots.used == 0 and slots.waiting == 0


async def test_a_cancelled_waiter_passes_its_turn_on_and_a_pause_holds_everyone():
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0.01)
    slots.release()  # wakes the first waiter...
    first.cancel()  # ...which is cancelled before it runs: the second must get the slot
    await asyncio.wait_for(second, 1)
    assert slots.used == 1
    slots.release()
    slots.pause_until(time.monotonic() + 0.2)
    started = time.monotonic()
    await asyncio.wait_for(slots.acquire(), 2)
    assert time.monotonic() - started >= 0.15 and slots.used == 1


# -- controllers fed by servers ------------------------------------------------------------------
async def _load(pool: EndpointPool, seconds: float, workers: int) -> int:
    """``workers`` clients sending back to back for ``seconds``; the number of replies."""
    done = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await pool.chat(chat())
            done += 1

    await asyncio.gather(*(client() for _ in range(workers)))
    return done


async def test_with_server_metrics_the_limit_grows_to_the_engines_batch_and_holds(server_factory):
    # An engine that works on 12 requests at once and queues the rest: from a start of 2 the limit
    # doubles while nothing waits, and holds once the engine reports a queue.
    server = server_factory(delay_s=0.05, batch=12, metrics=True, empty_rate=0.0)
    endpoint = HttpEndpoint(server.url, None, timeout_s=10, connect_timeout_s=2, max_in_flight=64)
    client = ClientConfig(start_in_flight=2, control_interval_s=0.15)
    pool = EndpointPool([(endpoint, 64)], client, metrics=ServerMetrics([server.url], [None]))
    seen: list[tuple[int, bool, str]] = []

    async def watch() -> None:
        while True:
            stats = pool.stats[0]
            seen.append((stats.limit, stats.saturated, stats.limit_reason))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        await _load(pool, 4.0, workers=64)
    finally:
        watcher.cancel()
        await pool.aclose()
    limits = [limit for limit, _, _ in seen]
    assert limits[0] == 2 and {4, 8} <= set(limits), limits  # doubling from the start
    assert 12 <= max(limits) < 64, "a queue at the engine must stop the growth well below the ceiling"
    saturated = [i for i, (_, sat, reason) in enumerate(seen) if sat and reason == "saturated"]
    assert saturated, seen
    # Once saturated, it holds: no more doubling.
    assert max(limits[saturated[0]:]) <= 2 * limits[saturated[0]], seen


async def test_without_metrics_the_limit_climbs_while_throughput_grows(server_factory):
    # No /metrics: the hill climb. Replies take ~0.05 s whatever the load, so more in flight is
    # always more throughput: the limit climbs from 2 to the ceiling.
    server = server_factory(delay_s=0.05, empty_rate=0.0)
    endpoint = HttpEndpoint(server.url, None, timeout_s=10, connect_timeout_s=2, max_in_flight=16)
    pool = EndpointPool([(endpoint, 16)], ClientConfig(start_in_flight=2, control_interval_s=0.15),
                        metrics=ServerMetrics([server.url], [None]))
    try:
        await _load(pool, 3.0, workers=32)
    finally:
        await pool.aclose()
    assert pool.stats[0].limit == 16 and not pool.stats[0].saturated


async def test_a_fixed_limit_when_adaptive_is_off(server_factory):
    server = server_factory(delay_s=0.05, empty_rate=0.0)
    endpoint = HttpEndpoint(server.url, None, timeout_s=10, connect_timeout_s=2, max_in_flight=5)
    pool = EndpointPool([(endpoint, 5)], ClientConfig(adaptive=False, control_interval_s=0.1))
    try:
        await _load(pool, 1.0, workers=20)
    finally:
        await pool.aclose()
    assert pool.stats[0].limit == 5 and pool.stats[0].limit_reason.startswith("fixed")
    assert not pool.adaptive


async def test_rate_limits_shrink_the_limit_and_retry_after_pauses_new_requests(server, proxy_factory):
    proxy = proxy_factory(server.url, fail_rate=1.0, modes=["429"], retry_after="0.5")
    endpoint = HttpEndpoint(proxy.url, None, timeout_s=10, connect_timeout_s=2, max_in_flight=32)
    pool = EndpointPool([(endpoint, 32)], ClientConfig(start_in_flight=8, control_interval_s=60, max_retries=0))
    try:
        results = await asyncio.gather(*(pool.chat(chat()) for _ in range(8)), return_exceptions=True)
        assert all(isinstance(r, EndpointError) and r.status == 429 for r in results)
        now = time.monotonic()
        pool.regulate(now)  # the observation the control loop would make
        stats = pool.stats[0]
        assert stats.limit == 5 and stats.limit_reason == "rate limited"  # 8 x 0.7
        proxy.settings(fail_rate=0.0)
        started = time.monotonic()
        await pool.chat(chat())  # held back until the Retry-After has passed
        assert time.monotonic() - now >= 0.45, time.monotonic() - started
    finally:
        await pool.aclose()


@pytest.mark.parametrize("kind", [HttpEndpoint, OpenAIEndpoint])
async def test_a_reply_saying_the_rate_limit_is_spent_pauses_until_its_reset(server_factory, kind):
    # A hosted API allowing 3 requests per 0.4 s window, saying on each reply what is left. Without
    # reading those headers the 4th request would meet a 429 (no retries here: it would raise).
    server = server_factory(rate_limit=3, rate_window_s=0.4, empty_rate=0.0)
    endpoint = kind(server.url, None, timeout_s=10, connect_timeout_s=2, max_in_flight=1)
    pool = EndpointPool([(endpoint, 1)], ClientConfig(adaptive=False, max_retries=0))
    try:
        for _ in range(9):  # three windows' worth, one at a time
            await pool.chat(chat())
    finally:
        await pool.aclose()
    assert server.stats().get("rate_limited", 0) == 0 and pool.stats[0].failures == 0
    # Past the limit the server does refuse: the test server's limit is real.
    limited = server_factory(rate_limit=3, rate_window_s=30, empty_rate=0.0)
    bare = HttpEndpoint(limited.url, None, timeout_s=10, connect_timeout_s=2, max_in_flight=1)
    try:
        replies = [await bare.chat(chat()) for _ in range(3)]
        with pytest.raises(EndpointError) as caught:
            await bare.chat(chat())
    finally:
        await bare.aclose()
    assert [r.limit_resets_in is not None for r in replies] == [False, False, True]
    assert caught.value.status == 429 and 25 <= caught.value.retry_after <= 30


# -- what a hosted API asks ----------------------------------------------------------------------
def test_the_wait_a_server_asks_for_is_read_from_retry_after_or_the_rate_limit_reset():
    import email.utils

    from isheep.runtime.serving.endpoints.errors import parse_reset, wait_asked

    assert wait_asked(429, {"Retry-After": "2.5"}) == 2.5
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= wait_asked(503, {"Retry-After": in_ten}) <= 10
    # No Retry-After on a 429: the later reset of the exhausted limits (OpenAI's duration form).
    assert wait_asked(429, {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0.5s"}) == 360.5
    assert wait_asked(500, {"x-ratelimit-reset-requests": "1s"}) is None  # only a rate limit says so
    assert [parse_reset(v) for v in ("20ms", "1m30s", "7", "soon", "", "5x")] == [0.02, 90.0, 7.0, None, None, None]


def test_a_spent_limit_is_read_from_a_successful_replys_headers():
    from isheep.runtime.serving.endpoints.errors import limit_spent

    assert limit_spent({"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "1s"}) is None
    assert limit_spent({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s",
                        "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2m"}) == 120.0
    assert limit_spent({"x-ratelimit-remaining-tokens": "0"}) is None  # spent, but no reset said: nothing to wait for
    assert limit_spent({}) is None
