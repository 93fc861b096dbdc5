"""The managed kind: the vLLM server this run started (see :mod:`isheep.runtime.serving.server`).

Requests wait while the server is starting or being restarted by its watchdog, and a request
cut off by a crash is sent again once the server is back, so a server restart costs time, not
items. If the watchdog gives up, the run stops with a clear error.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from isheep.runtime.core.errors import EndpointUnavailable

from ..server import ManagedServer
from .base import Completion, Endpoint, EndpointError
from .http import HttpEndpoint


class ManagedEndpoint(Endpoint):
    """Requests to a managed server, held while it (re)starts and resent when a crash cut them off."""

    def __init__(self, server: ManagedServer, *, timeout_s: float, connect_timeout_s: float,
                 max_in_flight: int) -> None:
        super().__init__(server.url)
        self.server = server
        self._http = HttpEndpoint(server.url, server.api_key, timeout_s=timeout_s,
                                  connect_timeout_s=connect_timeout_s, max_in_flight=max_in_flight)

    async def _available(self) -> None:
        while not self.server.ready.is_set():
            if self.server.gave_up:
                raise EndpointUnavailable(f"the managed vLLM server keeps dying; see {self.server.log_path}")
            if self.server.stopped:  # taken out of the fleet, or the run is closing
                raise EndpointUnavailable(f"the managed vLLM server at {self.server.url} was stopped")
            try:
                await asyncio.wait_for(self.server.ready.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                continue

    async def _send(self, call: Callable[[], Awaitable[Any]]) -> Any:
        while True:
            await self._available()
            try:
                return await call()
            except EndpointError as err:
                if err.reason not in ("connection", "truncated_body", "timeout"):
                    raise
                await asyncio.sleep(1.0)  # let the watchdog see a dead process
                if self.server.alive and self.server.ready.is_set():
                    raise  # a real error of a live server: the pool's retries handle it
                # The server died under this request: wait for the restart and send it again.

    async def chat(self, body: dict[str, Any]) -> Completion:
        return await self._send(lambda: self._http.chat(body))

    async def complete(self, body: dict[str, Any]) -> Completion:
        return await self._send(lambda: self._http.complete(body))

    async def models(self) -> list[str]:
        return await self._send(self._http.models)

    async def aclose(self) -> None:
        await self._http.aclose()
