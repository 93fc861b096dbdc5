"""What a pool learned about one endpoint between two observations, for its concurrency controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..concurrency import Observation
from .base import EndpointError


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass
class Window:
    """Failures and latencies of one endpoint's requests since its last observation."""

    rate_limited: int = 0
    errors: int = 0
    #: The most requests in flight at once, or waiting for a slot, during the window: an instant's
    #: count would often catch a freed slot before its next request took it.
    demand: int = 0
    retry_after: float | None = None
    latencies: list[float] = field(default_factory=list)

    def failed(self, err: EndpointError) -> None:
        """A failed request: a rate limit, or the server struggling (a wrong model says neither)."""
        if err.status == 429:
            self.rate_limited += 1
        elif err.retryable and err.reason != "wrong_model":
            self.errors += 1
        if err.retry_after:
            self.retry_after = max(self.retry_after or 0.0, err.retry_after)

    def wanted(self, used: int, waiting: int) -> None:
        self.demand = max(self.demand, used + waiting)

    def median_latency(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[len(ordered) // 2]

    def observation(self, t: float, in_flight: int, generated: int, server: Mapping[str, float]) -> Observation:
        """This window with the pool's counters and the server's own (empty where it has none)."""
        return Observation(
            t=t, in_flight=in_flight, demand=max(in_flight, self.demand), generated=generated,
            running=_count(server.get("running")), waiting=_count(server.get("waiting")),
            kv_cache=server.get("kv_cache"), preemptions=_count(server.get("preemptions")),
            rate_limited=self.rate_limited, errors=self.errors, retry_after=self.retry_after,
            latency=self.median_latency())
