"""A fault-injecting HTTP proxy for the test suite, in front of any OpenAI-compatible server.

It forwards every request to ``--upstream`` and, for ``fail_rate`` of the model requests
(chat and text completions), answers with a fault instead, drawn from ``modes``:

- ``500``, ``503``, ``429`` (with ``Retry-After: 0``): an error status;
- ``reset``: the connection is closed without an answer;
- ``timeout``: no answer for ``hang_s`` seconds (longer than the client's timeout);
- ``slow``: the real answer, sent a few bytes at a time over ``slow_s`` seconds;
- ``truncated``: the real answer cut in half, the connection then closed;
- ``nonjson``: HTTP 200 with an HTML page;
- ``wrong_model``: the real answer with another model's name in it.

Counts of forwarded requests and of each fault are at ``GET /_proxy``; ``POST /_proxy`` changes
the settings live. Binds 127.0.0.1 only. Run: ``python tests/support/fault_proxy.py --upstream
URL [--config JSON]``; prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

MODES = ("500", "503", "429", "reset", "timeout", "slow", "truncated", "nonjson", "wrong_model")
#: Not among the default modes (a bad request is not a transient fault): named when wanted.
EXTRA_MODES = ("400",)


class FaultProxy:
    def __init__(self, upstream: str, settings: dict[str, Any]) -> None:
        self.upstream = upstream.rstrip("/")
        self.settings = {"fail_rate": 0.2, "modes": list(MODES), "hang_s": 30.0, "slow_s": 1.0, "seed": 0,
                         "retry_after": "0", **settings}
        self.rng = random.Random(self.settings["seed"])
        self.counts: Counter[str] = Counter()
        self.session: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self.session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                        data=await request.read()) as resp:
            body = await resp.read()
            kept = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "retry-after")}
            return resp.status, kept, body

    async def handle(self, request: web.Request) -> web.StreamResponse:
        model_call = request.path.endswith("/completions")
        self.counts["requests"] += 1
        mode = None
        if model_call and self.rng.random() < self.settings["fail_rate"]:
            mode = self.rng.choice(self.settings["modes"])
            self.counts[mode] += 1
        if mode in ("400", "500", "503", "429"):
            headers = {"Retry-After": str(self.settings["retry_after"])} if mode == "429" else {}
            return web.json_response({"error": {"message": f"injected {mode}"}}, status=int(mode), headers=headers)
        if mode == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if mode == "timeout":
            await asyncio.sleep(self.settings["hang_s"])
            return web.json_response({"error": {"message": "too late"}}, status=504)
        if mode == "nonjson":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", status=200,
                                content_type="text/html")
        status, headers, body = await self.forward(request)
        self.counts["forwarded"] += 1
        if mode == "wrong_model" and status == 200:
            data = json.loads(body)
            data["model"] = "some-other-model"
            body = json.dumps(data).encode()
        if mode == "truncated" and status == 200:
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                           "Content-Length": str(len(body))})
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        if mode == "slow" and status == 200:
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                           "Content-Length": str(len(body))})
            await resp.prepare(request)
            chunks = [body[i:i + 64] for i in range(0, len(body), 64)]
            for chunk in chunks:
                await resp.write(chunk)
                await asyncio.sleep(self.settings["slow_s"] / max(1, len(chunks)))
            await resp.write_eof()
            return resp
        return web.Response(body=body, status=status, headers=headers)

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.settings.update(await request.json())
        return web.json_response({"settings": self.settings, "counts": dict(self.counts)})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/_proxy", self.control)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


async def serve(upstream: str, settings: dict[str, Any], port: int) -> None:
    proxy = FaultProxy(upstream, settings)
    proxy.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
    runner = web.AppRunner(proxy.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"READY {site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.upstream, json.loads(args.config), args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
