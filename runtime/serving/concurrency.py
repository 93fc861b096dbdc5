"""How many requests to keep in flight to one endpoint, learned from what the server reports.

A control loop written as a pure state machine: :meth:`ConcurrencyController.observe` takes one
:class:`Observation` (what the server's ``/metrics`` said, or what the runtime measured itself)
and returns the new limit. It owns no task, client or clock, so a test replays a recorded trace
and checks each decision.

The aim is a server that is never idle for want of requests and never thrashing for too many:

- **With the server's own signals** (vLLM's ``/metrics``): requests *waiting* in its queue mean
  it is saturated, so the limit holds where it is (a short queue keeps the batch full); a queue
  longer than ``queue_share`` of what the engine runs only adds latency, so the limit is trimmed
  towards the engine's batch. Nothing waiting while the runtime wants its whole limit in flight
  means the runtime is the bottleneck: the limit grows (doubling until the first saturation,
  then by a step), but only once the engine has taken up what was sent (its running count
  lags the requests on the wire, and doubling blind overshoots). Preemptions, or a KV cache near
  full, mean too many sequences for the cache: the limit shrinks.
- **Without them** (a hosted API): a hill climb on generated tokens/s. The limit grows while
  throughput grows; when a rise brings no more throughput it goes back to the best limit seen,
  and when latency climbs past ``latency_limit`` times the best seen, to the limit before.
- **Everywhere**: rate limits (HTTP 429) and errors shrink the limit multiplicatively, and a
  ``Retry-After`` pauses new requests until that time.

``workers`` and ``max_in_flight`` settings become ceilings, not numbers to tune.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Observation:
    """What is known about one endpoint at time ``t`` (seconds, any monotonic origin).

    Server counters (``running``, ``waiting``, ``kv_cache``, ``preemptions``) are None where the
    endpoint does not expose them. ``generated`` and ``preemptions`` are cumulative totals.
    """

    t: float
    #: The runtime's requests in flight to the endpoint now.
    in_flight: int
    generated: int
    running: int | None = None
    waiting: int | None = None
    kv_cache: float | None = None
    preemptions: int | None = None
    #: Requests answered 429 (rate limited) since the last observation.
    rate_limited: int = 0
    #: Other failed requests since the last observation.
    errors: int = 0
    #: The largest ``Retry-After`` (seconds) among them, if any said one.
    retry_after: float | None = None
    #: Median seconds of the requests finished since the last observation (None: none finished).
    latency: float | None = None
    #: The most requests the runtime had in flight or waiting for a slot since the last observation
    #: (None: ``in_flight``): whether the runtime wanted its whole limit.
    demand: int | None = None

    @property
    def wanted(self) -> int:
        return self.in_flight if self.demand is None else max(self.demand, self.in_flight)


@dataclass
class ControllerConfig:
    """The controller's knobs; the defaults suit vLLM and hosted APIs alike."""

    #: The limit a new endpoint starts at.
    start: int = 4
    #: Never below this many requests in flight.
    floor: int = 1
    #: Never above (the user's ``max_in_flight``: a ceiling, not a target).
    ceiling: int = 256
    #: Additive step once the first saturation was seen.
    step: int = 2
    #: Multiplicative decrease on 429s, errors and preemptions.
    backoff: float = 0.7
    #: KV-cache use above which the server is taken to be full.
    kv_full: float = 0.95
    #: A queue longer than this share of the engine's running requests is trimmed.
    queue_share: float = 0.25
    #: Grow only once the engine runs (or queues) this share of the requests in flight.
    admitted: float = 0.5
    #: A rise that gains less than this share of tokens/s did not pay (hill climb).
    min_gain: float = 0.05
    #: Latency above this multiple of the best seen means the endpoint is overloaded (hill climb).
    latency_limit: float = 2.0


@dataclass
class ConcurrencyController:
    """One endpoint's limit on requests in flight, updated by each :class:`Observation`.

    Attributes:
        limit: Requests the runtime may have in flight now.
        paused_until: No new request before this time (a ``Retry-After``); 0: not paused.
        saturated: The server reported a queue at the last observation.
        reason: Why the last decision was taken, for the event log and the monitor.
    """

    config: ControllerConfig = field(default_factory=ControllerConfig)
    limit: int = 0
    paused_until: float = 0.0
    saturated: bool = False
    reason: str = "start"
    _slow_start: bool = True
    _last: Observation | None = None
    _rates: dict[int, float] = field(default_factory=dict)
    _best_latency: float | None = None

    def __post_init__(self) -> None:
        if not self.limit:
            self.limit = self._clamp(self.config.start)

    def _clamp(self, value: float) -> int:
        return max(self.config.floor, min(self.config.ceiling, int(value)))

    def observe(self, obs: Observation) -> int:
        """Take one observation; the new limit."""
        last, self._last = self._last, obs
        if obs.retry_after:
            self.paused_until = max(self.paused_until, obs.t + obs.retry_after)
        if obs.rate_limited or obs.errors:
            return self._shrink("rate limited" if obs.rate_limited else "errors", obs)
        if last is None or obs.t <= last.t:
            return self.limit
        if obs.waiting is not None:
            return self._with_metrics(obs, last)
        return self._hill_climb(obs, last)

    def _shrink(self, why: str, obs: Observation) -> int:
        self._slow_start = False
        self.limit = self._clamp(min(self.limit, max(obs.wanted, 1)) * self.config.backoff)
        self.reason = why
        return self.limit

    def _grow(self, why: str) -> int:
        grown = self.limit * 2 if self._slow_start else self.limit + self.config.step
        self.limit = self._clamp(grown)
        self.reason = why
        return self.limit

    def _with_metrics(self, obs: Observation, last: Observation) -> int:
        preempted = obs.preemptions is not None and last.preemptions is not None \
            and obs.preemptions > last.preemptions
        if preempted or (obs.kv_cache is not None and obs.kv_cache >= self.config.kv_full):
            self.saturated = True
            return self._shrink("preemptions" if preempted else "KV cache full", obs)
        self.saturated = bool(obs.waiting)
        engine = obs.running or 0
        if obs.waiting:
            # A queue keeps the server's batch full: more in flight would only wait longer.
            self._slow_start = False
            if engine and obs.waiting > self.config.queue_share * engine:
                trimmed = max(engine * (1 + self.config.queue_share), self.limit * self.config.backoff)
                if trimmed < self.limit:
                    self.limit = self._clamp(trimmed)
                    self.reason = "queue trimmed"
                    return self.limit
            self.reason = "saturated"
            return self.limit
        if obs.wanted < self.limit:
            self.reason = "holding: the runtime has fewer requests than the limit"
            return self.limit
        if obs.running is not None and engine < self.config.admitted * min(obs.in_flight, self.limit):
            self.reason = "holding: the engine has not taken up the requests sent yet"
            return self.limit
        return self._grow("server has room")

    def _hill_climb(self, obs: Observation, last: Observation) -> int:
        rate = (obs.generated - last.generated) / (obs.t - last.t)
        if obs.latency is not None:
            self._best_latency = obs.latency if self._best_latency is None else min(self._best_latency, obs.latency)
        if obs.wanted < self.limit:
            self.reason = "holding: the runtime has fewer requests than the limit"
            return self.limit
        previous = self._rates.get(self.limit)
        self._rates[self.limit] = rate if previous is None else max(previous, rate)
        lower = max((k for k in self._rates if k < self.limit), default=None)
        slow = obs.latency is not None and self._best_latency is not None \
            and obs.latency > self.config.latency_limit * self._best_latency
        if lower is not None and (slow or rate < self._rates[lower] * (1 + self.config.min_gain)):
            # This rise bought nothing: go back to the best limit seen, and climb by steps from now on.
            self._slow_start = False
            best = lower if slow else max(self._rates, key=lambda k: (self._rates[k], -k))
            self.limit = self._clamp(best)
            self.reason = "latency rose" if slow else "no more throughput"
            self._rates = {k: v for k, v in self._rates.items() if k <= self.limit}
            return self.limit
        return self._grow("throughput grew")

    def may_send(self, t: float, in_flight: int) -> bool:
        """Whether a new request may start at time ``t`` with ``in_flight`` already out."""
        return t >= self.paused_until and in_flight < self.limit
