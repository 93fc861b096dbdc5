"""A small client of a server's own routes: its model list, probes, and vLLM's admin routes.

The swap strategies drive a server through it (pause, reload, adapters, weight version) and
verify what it serves with probes. Its failures are :class:`SwapError`, carrying the name the
one HTTP error mapping (``endpoints.errors``) gave them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Callable

import aiohttp

from isheep.runtime.core.endpoint import EndpointError

from .endpoints.errors import send


class SwapError(Exception):
    """A swap failed; the strategy has put the previous model back before raising.

    Args:
        message: What failed.
        restored: False when putting the previous model back failed too (the server may serve
            neither model: a fleet takes such a replica out of its pool).
        status: The HTTP status the server answered, when it answered one.
    """

    def __init__(self, message: str, *, restored: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.restored = restored
        self.status = status


class ServerApi:
    """Small client of an OpenAI-compatible server's own routes (the /v1 API and vLLM's root).

    Args:
        base_url: The server's OpenAI base URL (``.../v1``); admin routes live at its root.
        api_key: Sent as a bearer token, when given.
    """

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url.rsplit("/v1", 1)[0]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        #: Told of every call to a route outside the OpenAI API (pause, sleep, reload...) with its
        #: outcome and seconds, so a run's event log shows a swap's protocol in order.
        self.on_call: Callable[[str], None] | None = None
        #: Fingerprint probes carry a fresh vLLM ``cache_salt`` until a server refuses the field.
        self._salted = True

    async def request(self, method: str, url: str, *, json: Any = None, params: dict | None = None,
                      timeout: float = 600) -> Any:
        """One request to ``url``; its JSON reply (or text, for routes that answer text).

        Raises:
            SwapError: any failure, named as the HTTP error mapping names it.
        """
        path = url.replace(self.root, "")
        started = time.monotonic()
        async with aiohttp.ClientSession(headers=self.headers, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            try:
                raw = await send(s, method, url, body=json, params=params)
            except EndpointError as err:
                failure = f"answered HTTP {err.status}: {err.detail}" if err.status is not None else f"failed: {err}"
                self._trace(method, path, params, failure, started)
                raise SwapError(f"{method} {path} {failure}", status=err.status) from None
        self._trace(method, path, params, "ok", started)
        return _json_or_text(raw)

    def _trace(self, method: str, path: str, params: dict | None, outcome: str, started: float) -> None:
        admin = not path.startswith("/v1/") or "lora_adapter" in path
        if self.on_call is None or not admin:
            return
        query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
        self.on_call(f"{self.root}: {method} {path}{query} {outcome} ({time.monotonic() - started:.2f}s)")

    async def models(self) -> list[str]:
        data = await self.request("GET", f"{self.base_url}/models", timeout=30)
        return [m["id"] for m in data.get("data", [])]

    async def probe(self, model: str, *, logprobs: bool = False, fresh: bool = False) -> dict[str, Any]:
        """One tiny greedy request: proves ``model`` answers (and, with logprobs, what it computes;
        ``fresh``: with a cache salt of its own, so vLLM's prefix cache serves none of it)."""
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
                                "max_tokens": 4, "temperature": 0.0}
        if logprobs:
            body["logprobs"] = True
        if fresh:
            body["cache_salt"] = uuid.uuid4().hex
        data = await self.request("POST", f"{self.base_url}/chat/completions", json=body, timeout=120)
        if data.get("model") and not str(data["model"]).startswith(model):
            raise SwapError(f"a probe for {model!r} was answered by {data['model']!r}")
        return data

    async def fingerprint(self, model: str) -> list[float] | None:
        """Logprobs of a fixed greedy probe: equal for the same weights, different after training."""
        # Computed from the weights alone, never from the prefix cache: another request's cached
        # blocks (the chat template's system prompt is everyone's first block) make the server compute
        # the rest by another path, which on AVX-512 CPUs moves the logprobs in the fifth decimal.
        try:
            try:
                data = await self.probe(model, logprobs=True, fresh=self._salted)
            except SwapError as err:
                if not self._salted or err.status not in (400, 422):
                    raise
                self._salted = False  # not vLLM: a server without a prefix cache to bypass, or one that says no
                data = await self.probe(model, logprobs=True)
            content = data["choices"][0]["logprobs"]["content"]
            return [round(float(t["logprob"]), 6) for t in content]
        except (KeyError, IndexError, TypeError, ValueError):
            return None

    async def wait_for(self, model: str, timeout_s: float) -> float:
        """Probe until ``model`` answers; returns the seconds it took.

        Raises:
            SwapError: it did not answer within ``timeout_s``.
        """
        started = time.monotonic()
        last = ""
        while time.monotonic() - started < timeout_s:
            try:
                await self.probe(model)
                return time.monotonic() - started
            except SwapError as exc:
                last = str(exc)[:200]
            await asyncio.sleep(2.0)
        raise SwapError(f"{model!r} did not answer within {timeout_s:.0f}s ({last or 'no answer'})")


def _json_or_text(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
