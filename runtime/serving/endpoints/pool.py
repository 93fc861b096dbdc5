"""A pool of endpoints: least-in-flight choice, a limit on requests in flight per endpoint
(learned from the server's signals by a concurrency controller, or fixed), an optional request
rate (asyncio-throttle), and bounded retries that move to another endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping, Protocol

from asyncio_throttle import Throttler

from isheep.runtime.core.config import ClientConfig, EndpointConfig
from isheep.runtime.core.endpoint import Client
from isheep.runtime.core.errors import EndpointUnavailable

from ..concurrency import ConcurrencyController, ControllerConfig
from .base import Completion, Endpoint, EndpointError
from .errors import ignores_schema, key_refused, refused_feature
from .http import HttpEndpoint
from .slots import Slots
from .window import Window


def endpoint_kind(name: str) -> type[Endpoint]:
    """The class of an endpoint kind (the openai SDK is imported only when asked for)."""
    if name == "openai":
        from .openai_sdk import OpenAIEndpoint

        return OpenAIEndpoint
    return HttpEndpoint


@dataclass
class EndpointStats:
    """Counters of one endpoint, read by the progress display and the monitor."""

    url: str
    #: The most requests in flight it may ever get (``max_in_flight``).
    capacity: int
    #: Requests in flight allowed now (the controller's limit; ``capacity`` when not adaptive).
    limit: int = 0
    #: Why the limit is what it is (the controller's last reason).
    limit_reason: str = ""
    #: The server reported a queue (or a full KV cache) at the last observation.
    saturated: bool = False
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cooling_until: float = 0.0
    last_error: str = ""


@dataclass
class _Member:
    endpoint: Endpoint
    stats: EndpointStats
    slots: Slots = field(repr=False)
    #: None: a fixed limit of ``stats.capacity``.
    control: ConcurrencyController | None = field(default=None, repr=False)
    window: Window = field(default_factory=Window, repr=False)
    #: Features this endpoint refused (``completions``, ``response_format``): never asked of it again.
    refused: set[str] = field(default_factory=set)


class MetricsSource(Protocol):
    """Reads each endpoint's own counters (:class:`~isheep.runtime.serving.metrics.ServerMetrics`)."""

    async def read_each(self) -> dict[str, dict[str, float]]: ...


RetryHook = Callable[[EndpointError, str, int, float], None]
#: Told of an endpoint taken out of the pool: its URL and why.
DropHook = Callable[[str, str], None]
_NEEDS = {(False, False): frozenset(), (True, False): frozenset({"completions"}),
          (False, True): frozenset({"response_format"}), (True, True): frozenset({"completions", "response_format"})}


class EndpointPool(Client):
    """Send requests to the least busy healthy endpoint, retrying failures a bounded number of times.

    Each request goes to the endpoint with the fewest requests in flight for its capacity
    (cooling endpoints, those that just failed to connect or timed out, are skipped while
    another is healthy); a retryable failure is sent again, to another endpoint when there is
    one, after an exponential backoff with jitter (or the server's ``Retry-After``).

    Args:
        endpoints: (endpoint, requests in flight at most) pairs; at least one.
        client: Retries, backoff, the request rate across the pool, and whether each
            endpoint's limit adapts (``client.adaptive``: its concurrency controller is fed
            every ``client.control_interval_s`` by a task the pool starts with its first request
            and stops in :meth:`aclose`).
        on_retry: Called before each retry with the error, the endpoint's URL, the attempt
            number and the delay.
        metrics: The endpoints' own counters (vLLM's /metrics) for their controllers; without
            them each controller climbs on the tokens/s and latency the pool measures.

    Raises:
        ValueError: no endpoint given.
    """

    def __init__(self, endpoints: list[tuple[Endpoint, int]], client: ClientConfig,
                 on_retry: RetryHook | None = None, metrics: MetricsSource | None = None) -> None:
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self._members = [self._member(ep, cap, client) for ep, cap in endpoints]
        self._client = client
        self._throttler = Throttler(rate_limit=client.rate_limit, period=1.0) if client.rate_limit else None
        self._on_retry = on_retry
        self._turn = 0
        self._refusals = 0  # features refused by any endpoint so far
        self._open = asyncio.Event()  # cleared while a fleet swap holds new requests (the version barrier)
        self._open.set()
        self._holders = 0
        self._dropped: list[_Member] = []
        self.on_drop: DropHook | None = None
        self._metrics = metrics
        self._control: asyncio.Task[None] | None = None

    @staticmethod
    def _member(endpoint: Endpoint, cap: int, client: ClientConfig) -> _Member:
        control = None
        if client.adaptive:
            control = ConcurrencyController(ControllerConfig(start=min(client.start_in_flight, cap), ceiling=cap))
        limit = control.limit if control is not None else cap
        return _Member(endpoint, EndpointStats(endpoint.base_url, cap, limit=limit,
                                               limit_reason="start" if control else "fixed (client.adaptive off)"),
                       Slots(limit), control)

    @classmethod
    def from_config(cls, endpoints: list[EndpointConfig], client: ClientConfig, environ: Mapping[str, str],
                    on_retry: RetryHook | None = None) -> "EndpointPool":
        from ..metrics import ServerMetrics  # not at the top: metrics imports this package

        built = []
        for cfg in endpoints:
            kind = endpoint_kind(cfg.kind)
            built.append((kind(cfg.base_url, cfg.resolved_key(environ), timeout_s=client.timeout_s,
                               connect_timeout_s=client.connect_timeout_s, max_in_flight=cfg.max_in_flight),
                          cfg.max_in_flight))
        metrics = ServerMetrics([cfg.base_url for cfg in endpoints], [cfg.resolved_key(environ) for cfg in endpoints])
        return cls(built, client, on_retry, metrics=metrics)

    @property
    def stats(self) -> list[EndpointStats]:
        return [m.stats for m in self._members]

    @property
    def endpoints(self) -> list[Endpoint]:
        return [m.endpoint for m in self._members]

    @property
    def urls(self) -> list[str]:
        return [m.stats.url for m in self._members]

    def set_retry_hook(self, hook: RetryHook | None) -> None:
        self._on_retry = hook

    @property
    def adaptive(self) -> bool:
        return any(m.control is not None for m in self._members)

    @property
    def saturated(self) -> bool:
        """Some endpoint reported a queue, or a full KV cache, at its last observation."""
        return any(m.stats.saturated for m in self._members)

    @property
    def in_flight(self) -> int:
        return sum(m.stats.in_flight for m in self._members)

    @property
    def limit(self) -> int:
        """Requests the pool may have in flight now, over all its endpoints."""
        return sum(m.slots.limit for m in self._members)

    def regulate(self, t: float, server: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """One observation of every endpoint at ``t`` (monotonic seconds): each controller sets its limit.

        Args:
            t: Now, on the clock of ``time.monotonic()`` (a ``Retry-After`` pauses relative to it).
            server: Each endpoint's own counters by URL (vLLM's /metrics); absent for those without.
        """
        for member in self._members:
            window, member.window = member.window, Window()
            control = member.control
            if control is None:
                if window.retry_after:
                    member.slots.pause_until(t + window.retry_after)
                continue
            obs = window.observation(t, member.stats.in_flight, member.stats.completion_tokens,
                                     (server or {}).get(member.stats.url) or {})
            member.slots.set_limit(control.observe(obs))
            if control.paused_until > t:
                member.slots.pause_until(control.paused_until)
            member.stats.limit, member.stats.limit_reason = control.limit, control.reason
            member.stats.saturated = control.saturated

    def remove(self, url: str) -> None:
        """Take the endpoint at ``url`` out: no request goes to it again.

        Raises:
            ValueError: it is the last endpoint of the pool, or not in it.
        """
        members = [m for m in self._members if m.stats.url != url]
        if len(members) == len(self._members):
            raise ValueError(f"{url} is not in the pool")
        if not members:
            raise ValueError(f"{url} is the last endpoint of the pool")
        self._dropped.extend(m for m in self._members if m.stats.url == url)  # closed with the pool
        self._members = members

    @property
    def held(self) -> bool:
        """True while a swap holds new requests back."""
        return not self._open.is_set()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """New requests wait until this exits (requests already sent go on): the version barrier of a swap."""
        self._holders += 1
        self._open.clear()
        try:
            yield
        finally:
            self._holders -= 1
            if not self._holders:
                self._open.set()

    async def _regulating(self) -> None:
        """The control loop: observe every endpoint each interval (a failed read only skips its metrics)."""
        metrics = self._metrics
        while True:
            await asyncio.sleep(self._client.control_interval_s)
            server: dict[str, dict[str, float]] = {}
            if metrics is not None:
                try:
                    server = await metrics.read_each()
                except Exception:  # noqa: BLE001 - a metrics hiccup must not stop requests
                    server = {}
            self.regulate(time.monotonic(), server)

    def _start_control(self) -> None:
        if self._control is None and self.adaptive:
            self._control = asyncio.get_running_loop().create_task(self._regulating(), name="pool-control")

    # -- requests ----------------------------------------------------------------------------
    async def chat(self, body: dict[str, Any]) -> Completion:
        """Send a chat completion request; see :meth:`_call` for retries and errors."""
        return await self._call("chat", body)

    async def complete(self, body: dict[str, Any]) -> Completion:
        """Send a text completion request; see :meth:`_call` for retries and errors."""
        return await self._call("complete", body)

    def supports(self, feature: str) -> bool:
        return any(feature not in m.refused for m in self._members)

    def _refuse(self, member: _Member, feature: str) -> None:
        member.refused.add(feature)
        self._refusals += 1

    def _pick(self, avoid: _Member | None, needs: frozenset[str]) -> _Member:
        members = self._members
        if needs and self._refusals:  # only once some endpoint refused something
            members = [m for m in members if not needs & m.refused]
            if not members:
                feature = sorted(needs)[0]
                raise EndpointError(f"{'schema' if feature == 'response_format' else feature}_refused",
                                    f"no endpoint of the pool serves {feature}", retryable=False)
        if len(members) == 1:
            return members[0]
        now = time.monotonic()
        healthy = [m for m in members if m.stats.cooling_until <= now and m is not avoid] or \
                  [m for m in members if m is not avoid] or members
        self._turn += 1
        # Least in flight relative to capacity; the rotating tie-break spreads an idle pool.
        order = self._members
        return min(healthy, key=lambda m: (m.slots.load,
                                           (order.index(m) - self._turn) % len(order)))

    async def _call(self, method: str, body: dict[str, Any]) -> Completion:
        """One request with its retries.

        Raises:
            EndpointError: the request failed and is not retryable, or its retries are spent;
                ``completions_refused`` / ``schema_refused`` when no endpoint serves what it needs
                (an endpoint that refuses it once is not asked again; another is tried first).
            EndpointUnavailable: an endpoint refused the API key (HTTP 401/403): every request
                would be refused alike, so the run stops at once.
        """
        attempt = 0
        avoid: _Member | None = None
        needs = _NEEDS[method == "complete", "response_format" in body]
        if self._control is None:
            self._start_control()
        while True:
            await self._open.wait()
            member = self._pick(avoid, needs)
            stats = member.stats
            try:
                member.window.wanted(member.slots.used + 1, member.slots.waiting)
                await member.slots.acquire()
                try:
                    if self._throttler is not None:
                        await self._throttler.acquire()
                    stats.in_flight += 1
                    stats.requests += 1
                    started = time.monotonic()
                    try:
                        result: Completion = await getattr(member.endpoint, method)(body)
                    except EndpointUnavailable as gone:
                        if member not in self._members:
                            continue  # a concurrent request already took it out: try the rest
                        if len(self._members) == 1:
                            raise
                        self._drop(member, str(gone))  # a managed replica that keeps dying: the rest go on
                        continue
                    finally:
                        stats.in_flight -= 1
                    member.window.latencies.append(time.monotonic() - started)
                    if result.limit_resets_in:  # the reply says the rate limit is spent: wait, not for the 429
                        member.slots.pause_until(time.monotonic() + result.limit_resets_in)
                finally:
                    member.slots.release()
                stats.prompt_tokens += result.prompt_tokens
                stats.completion_tokens += result.completion_tokens
                self._check_model(body, result)
                if "response_format" in needs and ignores_schema(result.text):
                    self._refuse(member, "response_format")  # it answers, but not in the schema
                    continue
                return result
            except EndpointError as err:
                stats.failures += 1
                stats.last_error = str(err)[:200]
                member.window.failed(err)
                refused = key_refused(stats.url, err.status)
                if refused is not None:
                    raise refused from None
                feature = refused_feature(err, needs)
                if feature is not None:
                    self._refuse(member, feature)  # another endpoint may serve it; none left: _pick says so
                    continue
                if err.reason in ("connection", "timeout"):
                    stats.cooling_until = time.monotonic() + self._delay(attempt)
                if not err.retryable or attempt >= self._client.max_retries:
                    raise
                attempt += 1
                stats.retries += 1
                delay = max(self._delay(attempt), err.retry_after or 0.0)
                if self._on_retry is not None:
                    self._on_retry(err, stats.url, attempt, delay)
                avoid = member
                await asyncio.sleep(delay)

    def _drop(self, member: _Member, why: str) -> None:
        self.remove(member.stats.url)
        if self.on_drop is not None:
            self.on_drop(member.stats.url, why)

    def _delay(self, attempt: int) -> float:
        base = min(self._client.backoff_max_s, self._client.backoff_s * (2 ** max(0, attempt - 1)))
        return base * (0.5 + random.random() / 2)

    @staticmethod
    def _check_model(body: dict[str, Any], result: Completion) -> None:
        # Hosted APIs answer with a dated name ("gpt-4o" -> "gpt-4o-2024-08-06"): a prefix match.
        asked = str(body.get("model", ""))
        if result.model and asked and not result.model.startswith(asked):
            raise EndpointError("wrong_model", f"asked for {asked!r}, reply is from {result.model!r}",
                                retryable=True)

    # -- set-up ------------------------------------------------------------------------------
    async def verify(self, model: str | None, also: tuple[str, ...] = ()) -> str:
        """Reach every endpoint and check it serves ``model``; return the model name to use.

        With no ``model`` given, a pool whose endpoints serve exactly one model uses that one.
        ``also`` lists other names that are acceptable (a run resumed mid-swap: either model).
        """
        served: list[list[str]] = []
        for member in self._members:
            url = member.stats.url
            try:
                names = await member.endpoint.models()
            except EndpointError as err:
                refused = key_refused(url, err.status)
                if refused is not None:
                    raise refused from None
                if err.status == 404 and model:
                    names = [model]  # no model list on this server: trust the name given
                elif err.reason in ("connection", "timeout"):
                    raise EndpointUnavailable(f"cannot reach endpoint {url} ({err.reason}): is the server up?") from None
                else:
                    raise EndpointUnavailable(f"endpoint {url} answered GET /models with {err}") from None
            served.append(names)
        if model is None:
            common = set(served[0]).intersection(*served[1:]) if served else set()
            if len(common) == 1:
                return common.pop()
            listing = ", ".join(sorted(set().union(*served))) or "nothing"
            raise EndpointUnavailable(f"pass --model: the endpoint serves {listing}")
        for member, names in zip(self._members, served):
            if model not in names and not set(also) & set(names):
                listing = ", ".join(names) or "no model"
                raise EndpointUnavailable(
                    f"model {model!r} is not served by {member.stats.url} (it serves: {listing})")
        return model

    async def aclose(self) -> None:
        if self._control is not None:
            self._control.cancel()
            await asyncio.gather(self._control, return_exceptions=True)
            self._control = None
        members = self._members + self._dropped
        await asyncio.gather(*(m.endpoint.aclose() for m in members), return_exceptions=True)
