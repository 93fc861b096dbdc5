"""vLLM's dev-mode admin routes, played by the test server: enough state to test swaps for real.

The routes a reload swap (and a colocated one) calls: ``/pause``, ``/resume``, ``/sleep``,
``/wake_up``, ``/is_sleeping``, ``/collective_rpc`` (``reload_weights``), ``/reset_prefix_cache``,
``/update_weight_version`` and ``/weight_info``. The served "weights" are the folder last
reloaded; greedy probes asked for logprobs get numbers derived from it, so the swap's
fingerprints change when the weights do and agree across servers holding the same folder.
``Behaviour.reload_fails`` makes reloading any folder whose path contains it answer HTTP 500.
Each answer is counted by the weight version that gave it (``answered_on``), and every admin
call is kept in order (``calls``), so tests can check a fleet's version barrier and the
colocate protocol's order.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

from aiohttp import web


class AdminRoutes:
    """The weight state of one test server and the handlers of vLLM's admin routes over it."""

    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour
        self.path = "base"
        self.version = "v0"
        self.paused = False
        self.sleeping: set[str] = set()
        self.calls: list[str] = []
        self.answered_on: Counter[str] = Counter()
        self.while_unready = 0  # answers given while paused or asleep: a barrier that leaked

    def logprobs(self, prompt: str) -> dict[str, Any]:
        digest = hashlib.sha256(f"{self.path}|{prompt}".encode()).digest()
        return {"content": [{"token": f"t{i}", "logprob": -round(b / 64, 6)} for i, b in enumerate(digest[:4])]}

    def answered(self) -> None:
        self.answered_on[self.version] += 1
        if self.paused or self.sleeping:
            self.while_unready += 1

    def _note(self, request: web.Request) -> None:
        query = f"?{request.query_string}" if request.query_string else ""
        self.calls.append(f"{request.method} {request.path}{query}")

    async def pause(self, request: web.Request) -> web.Response:
        self._note(request)
        self.paused = True
        return web.json_response({"status": "paused"})

    async def resume(self, request: web.Request) -> web.Response:
        self._note(request)
        self.paused = False
        return web.json_response({"status": "resumed"})

    async def sleep(self, request: web.Request) -> web.Response:
        self._note(request)
        self.sleeping = {"weights", "kv_cache"}
        return web.json_response({"status": "sleeping", "level": int(request.query.get("level", "1"))})

    async def wake_up(self, request: web.Request) -> web.Response:
        self._note(request)
        tags = request.query.getall("tags", ["weights", "kv_cache"])
        self.sleeping -= set(tags)
        return web.json_response({"status": "sleeping" if self.sleeping else "awake", "tags": tags})

    async def is_sleeping(self, request: web.Request) -> web.Response:
        return web.json_response({"is_sleeping": bool(self.sleeping)})

    async def collective_rpc(self, request: web.Request) -> web.Response:
        self._note(request)
        body = await request.json()
        path = str(body.get("kwargs", {}).get("weights_path", ""))
        fails = self.behaviour.reload_fails
        if body.get("method") != "reload_weights" or (fails and fails in path):
            return web.json_response({"error": {"message": f"cannot load weights from {path}"}}, status=500)
        if "weights" in self.sleeping:
            return web.json_response({"error": {"message": "weights are asleep"}}, status=500)
        self.path = path
        time.sleep(0.05)  # a reload takes a moment, long enough for a request to arrive during it
        return web.json_response({"results": [None]})

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.json_response({"success": True})

    async def update_weight_version(self, request: web.Request) -> web.Response:
        self._note(request)
        self.version = str((await request.json())["new_version"])
        return web.json_response({"weight_version": self.version})

    async def weight_info(self, request: web.Request) -> web.Response:
        return web.json_response({"weight_version": self.version})

    def attach(self, app: web.Application) -> None:
        for route, handler in (("/pause", self.pause), ("/resume", self.resume), ("/sleep", self.sleep),
                               ("/wake_up", self.wake_up), ("/collective_rpc", self.collective_rpc),
                               ("/reset_prefix_cache", self.reset_prefix_cache),
                               ("/update_weight_version", self.update_weight_version)):
            app.router.add_post(route, handler)
        app.router.add_get("/is_sleeping", self.is_sleeping)
        app.router.add_get("/weight_info", self.weight_info)
