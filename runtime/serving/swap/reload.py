"""``reload``: new weights into the running vLLM server, no restart (about 1-2 s here).

Pause (letting requests in flight finish), reload the weights from the checkpoint folder,
reset the prefix cache (its blocks were computed by the old weights), resume, set the weight
version, then check ``/weight_info`` and a probe request. These are vLLM's dev-mode routes
(``VLLM_SERVER_DEV_MODE=1``), which the managed server only ever serves on 127.0.0.1. The new
folder must have the old one's architecture and shapes; the tokenizer is not reloaded.

Requests in flight either finish on the old weights before the reload (``finish``, the default:
every answer comes from one model) or are frozen and continued on the new weights
(``continue``: no wait for them, for endpoints shared with other traffic).

Colocated with training (``sleep``), the server gives its GPU memory up while the trainer runs,
in the order vLLM's RL weight-update guidance gives: drain, ``POST /sleep?level=1`` (weights
to host memory, KV cache dropped), train, ``POST /wake_up?tags=weights``, reload,
``POST /wake_up?tags=kv_cache`` (the cache comes back only once the new weights are in),
reset the prefix cache, resume, verify. Each phase is timed in the swap's evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Literal

from isheep.runtime.core.types import Checkpoint, ServedModel

from ..api import ServerApi, SwapError
from ..server import ManagedServer
from .base import FolderSwap, Phases


class ReloadSwap(FolderSwap):
    """Reloads the checkpoint's weights into the running vLLM server (dev-mode routes)."""

    name = "reload"

    def __init__(self, api: ServerApi, in_flight: Literal["finish", "continue"] = "finish", *,
                 server: ManagedServer | None = None, sleep: bool = False) -> None:
        super().__init__()
        self.api = api
        self.in_flight = in_flight
        self.server = server
        self.sleep = sleep
        self._asleep = False
        self._slept: dict[str, float] = {}

    async def _server_up(self) -> None:
        """A managed server its watchdog is restarting is waited for, not failed on."""
        server = self.server
        while server is not None and not server.ready.is_set():
            if server.gave_up:
                # Neither model answers there: a fleet takes this replica out rather than trust it.
                raise SwapError(f"the server at {server.url} keeps dying; see {server.log_path}", restored=False)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.ready.wait(), timeout=1.0)

    async def prepare(self, current: ServedModel) -> None:
        await self._server_up()
        if self._asleep and current.version not in self._fingerprints:
            # The probe before training failed, and a sleeping server answers nothing: it wakes on
            # the old weights for the probe the swap is verified against, then reloads as usual.
            await self.reclaim()
        await super().prepare(current)

    async def release(self) -> None:
        if not self.sleep or self._asleep:
            return
        await self._server_up()
        root, clock = self.api.root, Phases()
        await self.api.request("POST", f"{root}/pause", params={"mode": "wait"})
        clock.lap("drain")
        await self.api.request("POST", f"{root}/sleep", params={"level": "1"})
        clock.lap("sleep")
        self._asleep, self._slept = True, clock.seconds
        if self.server is not None:
            self.server.asleep = True

    async def reclaim(self) -> None:
        if self._asleep:
            await self._server_up()
            await self.api.request("POST", f"{self.api.root}/wake_up")
            await self.api.request("POST", f"{self.api.root}/resume")
            self._awake()

    async def _load(self, path: str, version: str, clock: Phases) -> None:
        await self._server_up()
        if self._asleep:
            await self._wake_into(path, clock)
        else:
            await self._reload(path, clock)
        await self.api.request("POST", f"{self.api.root}/update_weight_version", json={"new_version": version})
        if self.server is not None:  # a watchdog restart must come back on these weights, not the first ones
            self.server.serve_from(Path(path), version)

    async def _wake_into(self, path: str, clock: Phases) -> None:
        """Wake a sleeping server on the weights at ``path``: weights first, the KV cache after."""
        root = self.api.root
        clock.seconds.update({f"{phase}_before_training": s for phase, s in self._slept.items()})
        await self.api.request("POST", f"{root}/wake_up", params={"tags": "weights"})
        clock.lap("wake_weights")
        await self.api.request("POST", f"{root}/collective_rpc",
                               json={"method": "reload_weights", "kwargs": {"weights_path": path}})
        clock.lap("reload")
        await self.api.request("POST", f"{root}/wake_up", params={"tags": "kv_cache"})
        self._awake()
        clock.lap("wake_kv_cache")
        await self._reset_prefix_cache(running=False)
        clock.lap("reset_prefix_cache")
        await self.api.request("POST", f"{root}/resume")
        clock.lap("resume")

    def _awake(self) -> None:
        self._asleep = False
        if self.server is not None:
            self.server.asleep = False

    async def _reset_prefix_cache(self, running: bool) -> None:
        reset = await self.api.request("POST", f"{self.api.root}/reset_prefix_cache", params={
            "reset_running_requests": "true" if running else "false"})
        if isinstance(reset, dict) and reset.get("success") is False:
            raise SwapError("the server could not reset its prefix cache (blocks still held), so new "
                            "answers would reuse keys computed by the old weights")

    async def _reload(self, path: str, clock: Phases) -> None:
        root = self.api.root
        # finish: answers in flight complete on the old weights first, so every answer comes from one
        # model. continue: they freeze, and resume on the new weights (no wait, but mixed answers).
        await self.api.request("POST", f"{root}/pause", params={"mode": "wait" if self.in_flight == "finish" else "keep"})
        clock.lap("drain")
        try:
            await self.api.request("POST", f"{root}/collective_rpc",
                                   json={"method": "reload_weights", "kwargs": {"weights_path": path}})
            # Cached blocks hold keys and values computed by the old weights; frozen requests are
            # preempted so theirs are recomputed by the new ones.
            await self._reset_prefix_cache(running=self.in_flight == "continue")
        finally:
            await self.api.request("POST", f"{root}/resume")

    async def _verify(self, checkpoint: Checkpoint) -> None:
        info = await self.api.request("GET", f"{self.api.root}/weight_info", timeout=30)
        if isinstance(info, dict) and info.get("weight_version") != checkpoint.version:
            raise SwapError(f"the server reports weight version {info.get('weight_version')!r}, "
                            f"not {checkpoint.version!r}")
