"""EndpointPool against real endpoints: the test server (tests/support/openai_server.py) and the
fault proxy (tests/support/fault_proxy.py) run as subprocesses through the conftest fixtures.

Covers the least-in-flight spread, failover from a dead endpoint, no retry of a client error,
bounded retries with backoff, ``Retry-After`` (zero, and longer than the backoff), a refused API key,
and ``verify()``'s choice of model.
"""

from __future__ import annotations

import asyncio

import pytest

from isheep.runtime.core.config import ClientConfig
from isheep.runtime.core.errors import EndpointUnavailable
from isheep.runtime.serving.endpoints import EndpointError, EndpointPool, HttpEndpoint

pytestmark = pytest.mark.timeout(60)

MODEL = "test-model"
FAST = {"backoff_s": 0.01, "backoff_max_s": 0.05}


def endpoint(url: str, key: str | None = None, cap: int = 4) -> tuple[HttpEndpoint, int]:
    return HttpEndpoint(url, key, timeout_s=5, connect_timeout_s=2, max_in_flight=cap), cap


def chat(content: str = "Say hello.", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


class Hook:
    """Records the pool's retry notices."""

    def __init__(self) -> None:
        self.calls: list[tuple[EndpointError, str, int, float]] = []

    def __call__(self, err: EndpointError, url: str, attempt: int, delay: float) -> None:
        self.calls.append((err, url, attempt, delay))


# -- spreading requests --------------------------------------------------------------------------
async def test_concurrent_requests_are_shared_fairly_by_two_endpoints(server_factory):
    a, b = server_factory(delay_s=0.05, empty_rate=0.0), server_factory(delay_s=0.05, empty_rate=0.0)
    pool = EndpointPool([endpoint(a.url), endpoint(b.url)], ClientConfig(**FAST))
    try:
        replies = await asyncio.gather(*(pool.chat(chat(f"task {n}")) for n in range(40)))
    finally:
        await pool.aclose()
    assert len(replies) == 40 and all("careful answer" in r.text for r in replies)
    # Equal capacities: the rotating tie-break alternates, so the split is even.
    served = [a.stats()["requests"], b.stats()["requests"]]
    assert served == [s.requests for s in pool.stats]
    assert sorted(served) == [20, 20], served


async def test_choice_is_least_in_flight_relative_to_capacity(server_factory):
    a, b = server_factory(delay_s=0.3), server_factory(delay_s=0.3)
    pool = EndpointPool([endpoint(a.url, cap=6), endpoint(b.url, cap=2)], ClientConfig(**FAST))
    try:
        # Eight at once fill both: six go to the endpoint that takes six, two to the other.
        await asyncio.gather(*(pool.chat(chat()) for _ in range(8)))
    finally:
        await pool.aclose()
    assert [s.requests for s in pool.stats] == [6, 2]
    assert [a.stats()["requests"], b.stats()["requests"]] == [6, 2]
    assert [s.in_flight for s in pool.stats] == [0, 0]


# -- failures ------------------------------------------------------------------------------------
async def test_dead_endpoint_fails_over_to_the_live_one(server_factory):
    live, dead = server_factory(empty_rate=0.0), server_factory()
    dead.stop()
    hook = Hook()
    pool = EndpointPool([endpoint(dead.url), endpoint(live.url)], ClientConfig(max_retries=3, **FAST), hook)
    try:
        for n in range(6):
            assert "careful answer" in (await pool.chat(chat(f"task {n}"))).text
    finally:
        await pool.aclose()
    assert hook.calls, "the dead endpoint was never tried"
    assert {(err.reason, url, attempt) for err, url, attempt, _ in hook.calls} == {("connection", dead.url, 1)}
    assert live.stats()["ok"] == 6
    assert pool.stats[0].failures == len(hook.calls) and pool.stats[0].last_error.startswith("connection")


async def test_failed_request_is_retried_on_the_other_endpoint(server_factory, proxy_factory):
    good, behind = server_factory(), server_factory()
    failing = proxy_factory(behind.url, fail_rate=1.0, modes=["503"])
    hook = Hook()
    pool = EndpointPool([endpoint(failing.url), endpoint(good.url)], ClientConfig(max_retries=3, **FAST), hook)
    try:
        for _ in range(6):
            await pool.chat(chat())
    finally:
        await pool.aclose()
    # Each failure is retried once, elsewhere: never a second attempt on the failing proxy.
    assert hook.calls and {(err.reason, url, attempt) for err, url, attempt, _ in hook.calls} == {
        ("http_503", failing.url, 1)}
    assert failing.counts()["503"] == len(hook.calls)
    assert good.stats()["ok"] == 6 and behind.stats().get("requests", 0) == 0


async def test_client_error_is_raised_at_once_without_retry(server, proxy_factory):
    # A 400 that names no feature (a bad request, say): not worth sending again.
    proxy = proxy_factory(server.url, fail_rate=1.0, modes=["400"])
    hook = Hook()
    pool = EndpointPool([endpoint(proxy.url)], ClientConfig(max_retries=4, **FAST), hook)
    try:
        with pytest.raises(EndpointError) as caught:
            await pool.chat(chat())
    finally:
        await pool.aclose()
    assert (caught.value.reason, caught.value.status, caught.value.retryable) == ("http_400", 400, False)
    assert hook.calls == [] and proxy.counts()["400"] == 1


@pytest.mark.parametrize("status", [400, 500])
async def test_a_refused_schema_is_remembered_and_not_asked_again(server_factory, status):
    # This server refuses structured output (llama.cpp answers HTTP 500, others 400): the pool
    # says so as schema_refused, remembers it, and does not send the next such request at all.
    server = server_factory(structured=False, schema_status=status,
                            schema_refusal="response_format: the grammar is not supported")
    hook = Hook()
    pool = EndpointPool([endpoint(server.url)], ClientConfig(max_retries=4, **FAST), hook)
    body = chat("You are an impartial judge. Rate this.", response_format={"type": "json_object"})
    try:
        for _ in range(2):
            with pytest.raises(EndpointError) as caught:
                await pool.chat(body)
            assert (caught.value.reason, caught.value.retryable) == ("schema_refused", False)
        assert not pool.supports("response_format") and pool.supports("completions")
        await pool.chat(chat("You are an impartial judge. Rate this."))  # without the schema it answers
    finally:
        await pool.aclose()
    assert hook.calls == [] and server.stats()["critic"] == 2  # one refusal, one plain request


async def test_an_endpoint_that_refuses_a_feature_leaves_it_to_one_that_serves_it(server_factory):
    chat_only, full = server_factory(completions=False), server_factory()
    pool = EndpointPool([endpoint(chat_only.url), endpoint(full.url)], ClientConfig(max_retries=0, **FAST))
    body = {"model": "test-model", "prompt": "Paris is the capital of", "max_tokens": 4}
    try:
        replies = [await pool.complete(body) for _ in range(6)]
    finally:
        await pool.aclose()
    assert all(reply.text for reply in replies)
    # The chat-only endpoint refused once (404) and was not asked for completions again.
    assert chat_only.stats()["routes"].get("POST /v1/completions", 0) <= 1
    assert full.stats()["routes"]["POST /v1/completions"] >= 5


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_retries_are_bounded_then_the_error_is_raised(server, proxy_factory, max_retries):
    proxy = proxy_factory(server.url, fail_rate=1.0, modes=["500"])
    hook = Hook()
    pool = EndpointPool([endpoint(proxy.url)], ClientConfig(max_retries=max_retries, **FAST), hook)
    try:
        with pytest.raises(EndpointError) as caught:
            await pool.chat(chat())
    finally:
        await pool.aclose()
    assert caught.value.reason == "http_500"
    assert [attempt for _, _, attempt, _ in hook.calls] == list(range(1, max_retries + 1))
    assert proxy.counts()["500"] == max_retries + 1
    assert pool.stats[0].retries == max_retries and pool.stats[0].failures == max_retries + 1
    # Backoff doubles from backoff_s with jitter in [0.5, 1]: 0.005-0.01 s, then 0.01-0.02 s.
    for (_, _, attempt, delay), (low, high) in zip(hook.calls, [(0.005, 0.01), (0.01, 0.02)]):
        assert low <= delay <= high, (attempt, delay)


async def test_retry_after_header_is_read_and_backoff_still_applies(server, proxy_factory):
    # A 429 with "Retry-After: 0": the header reaches the error, and a zero wait does not cut the
    # backoff short.
    proxy = proxy_factory(server.url, fail_rate=1.0, modes=["429"])
    hook = Hook()
    pool = EndpointPool([endpoint(proxy.url)], ClientConfig(max_retries=1, **FAST), hook)
    try:
        with pytest.raises(EndpointError) as caught:
            await pool.chat(chat())
    finally:
        await pool.aclose()
    assert (caught.value.reason, caught.value.retryable, caught.value.retry_after) == ("http_429", True, 0.0)
    [(err, _, attempt, delay)] = hook.calls
    assert err.retry_after == 0.0 and attempt == 1
    assert 0.005 <= delay <= 0.01


async def test_a_longer_retry_after_is_waited_out(server, proxy_factory):
    # The server asks for 0.4 s, far more than the backoff: the retry is scheduled that far out.
    proxy = proxy_factory(server.url, fail_rate=1.0, modes=["429"], retry_after="0.4")
    hook = Hook()
    pool = EndpointPool([endpoint(proxy.url)], ClientConfig(max_retries=1, **FAST), hook)
    try:
        with pytest.raises(EndpointError):
            await pool.chat(chat())
    finally:
        await pool.aclose()
    [(err, _, _, delay)] = hook.calls
    assert err.retry_after == 0.4 and delay == 0.4


@pytest.mark.parametrize("key", ["wrong", None])
async def test_refused_key_stops_at_once_naming_the_endpoint(server_factory, key):
    server = server_factory(api_key="sesame")
    hook = Hook()
    pool = EndpointPool([endpoint(server.url, key)], ClientConfig(max_retries=4, **FAST), hook)
    try:
        with pytest.raises(EndpointUnavailable) as caught:
            await pool.chat(chat())
    finally:
        await pool.aclose()
    message = str(caught.value)
    assert server.url in message and "refused the API key" in message and "HTTP 401" in message
    assert "\n" not in message
    assert hook.calls == [] and server.stats()["requests"] == 1


async def test_refused_key_on_one_endpoint_is_not_retried_elsewhere(server_factory):
    server = server_factory(api_key="sesame")
    hook = Hook()
    # The same server twice, once with the right key: the wrong one must stop the pool, not be skipped.
    pool = EndpointPool([endpoint(server.url, "sesame"), endpoint(server.url, "wrong")],
                        ClientConfig(max_retries=4, **FAST), hook)
    try:
        with pytest.raises(EndpointUnavailable, match="refused the API key"):
            for _ in range(4):
                await pool.chat(chat())
    finally:
        await pool.aclose()
    assert hook.calls == [] and pool.stats[1].failures == 1 and pool.stats[0].failures == 0


# -- verify --------------------------------------------------------------------------------------
async def test_verify_picks_the_only_model_and_accepts_it_by_name(server_factory):
    server = server_factory(model="smol")
    pool = EndpointPool([endpoint(server.url)], ClientConfig(**FAST))
    try:
        assert await pool.verify(None) == "smol"
        assert await pool.verify("smol") == "smol"
        # A run resumed mid-swap asks for the new name and also accepts the old one.
        assert await pool.verify("smol-r2", also=("smol",)) == "smol-r2"
    finally:
        await pool.aclose()


async def test_verify_refuses_an_unknown_model_listing_what_is_served(server_factory):
    server = server_factory(model="smol")
    pool = EndpointPool([endpoint(server.url)], ClientConfig(**FAST))
    try:
        with pytest.raises(EndpointUnavailable) as caught:
            await pool.verify("llama")
    finally:
        await pool.aclose()
    assert str(caught.value) == f"model 'llama' is not served by {server.url} (it serves: smol)"


async def test_verify_without_a_model_refuses_endpoints_that_disagree(server_factory):
    a, b = server_factory(model="smol"), server_factory(model="tiny")
    pool = EndpointPool([endpoint(a.url), endpoint(b.url)], ClientConfig(**FAST))
    try:
        with pytest.raises(EndpointUnavailable) as caught:
            await pool.verify(None)
    finally:
        await pool.aclose()
    assert str(caught.value) == "pass --model: the endpoint serves smol, tiny"


async def test_verify_names_an_unreachable_endpoint_and_a_refused_key(server_factory):
    dead, locked = server_factory(), server_factory(api_key="sesame")
    dead.stop()
    for ep, expected in [(endpoint(dead.url), f"cannot reach endpoint {dead.url} (connection)"),
                         (endpoint(locked.url, "wrong"), f"{locked.url} refused the API key (HTTP 401)")]:
        pool = EndpointPool([ep], ClientConfig(**FAST))
        try:
            with pytest.raises(EndpointUnavailable) as caught:
                await pool.verify(MODEL)
        finally:
            await pool.aclose()
        assert str(caught.value).startswith(expected)
