"""The serving engine's own counters: vLLM's Prometheus ``/metrics`` (tokens, queue, KV cache).

Throughput shown from these is what the server really did; other servers lack the route, and
the runtime's own token counts (from ``usage`` in replies) stand in.
"""

from __future__ import annotations

import re

import aiohttp

from isheep.runtime.core.endpoint import EndpointError

from .endpoints.errors import send

_WANTED = {
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:prompt_tokens_total": "prompt_tokens",
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache",
    "vllm:num_preemptions_total": "preemptions",
    # Prompt tokens looked up in the prefix cache, and those it served (what prefill was spared).
    "vllm:prefix_cache_queries_total": "prefix_cache_queries",
    "vllm:prefix_cache_hits_total": "prefix_cache_hits",
}
_LINE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", re.MULTILINE)


#: Shares, not amounts: several engines' are not added up; the fullest one is what binds.
_SHARES = frozenset({"kv_cache"})


def _combine(key: str, total: float | None, value: float) -> float:
    if total is None:
        return value
    return max(total, value) if key in _SHARES else total + value


def parse_metrics(text: str) -> dict[str, float]:
    """Each wanted vLLM series over its labels (one engine or several): counts add up, shares take the highest."""
    out: dict[str, float] = {}
    for name, value in _LINE.findall(text):
        key = _WANTED.get(name)
        if key is not None:
            out[key] = _combine(key, out.get(key), float(value))
    return out


class ServerMetrics:
    """Polls the /metrics route of every endpoint that has one (and stops asking those that don't)."""

    def __init__(self, base_urls: list[str], api_keys: list[str | None]) -> None:
        self._targets = [(base, base.rsplit("/v1", 1)[0] + "/metrics", key) for base, key in zip(base_urls, api_keys)]
        self._dead: set[str] = set()

    @property
    def exposed(self) -> bool:
        """Some endpoint may still have the route (none has said it lacks it)."""
        return any(url not in self._dead for _, url, _ in self._targets)

    async def read(self) -> dict[str, float]:
        """The wanted series, summed over every endpoint that answers (the rest are asked again later)."""
        total: dict[str, float] = {}
        for values in (await self.read_each()).values():
            for k, v in values.items():
                total[k] = _combine(k, total.get(k), v)
        return total

    async def read_each(self) -> dict[str, dict[str, float]]:
        """The wanted series of each endpoint that answers, by its base URL."""
        out: dict[str, dict[str, float]] = {}
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for base, url, key in self._targets:
                if url in self._dead:
                    continue
                headers = {"Authorization": f"Bearer {key}"} if key else None
                try:
                    values = parse_metrics((await send(session, "GET", url, headers=headers)).decode("utf-8", "replace"))
                except EndpointError as err:
                    if err.status is not None:
                        self._dead.add(url)  # it answers, but has no such route
                    continue  # a restarting server: ask again next time
                if not values:
                    self._dead.add(url)
                    continue
                out[base] = values
        return out
