"""``reload``: new weights into the running vLLM server, no restart (about 1-2 s here).

Pause (letting requests in flight finish), reload the weights from the checkpoint folder,
reset the prefix cache (its blocks were computed by the old weights), resume, set the weight
version, then check ``/weight_info`` and a probe request. These are vLLM's dev-mode routes
(``VLLM_SERVER_DEV_MODE=1``), which the managed server only ever serves on 127.0.0.1. The new
folder must have the old one's architecture and shapes; the tokenizer is not reloaded.

Requests in flight either finish on the old weights before the reload (``finish``, the default:
every answer comes from one model) or are frozen and continued on the new weights
(``continue``: no wait for them, for endpoints shared with other traffic).
"""

from __future__ import annotations

from typing import Literal

from isheep.runtime.core.types import Checkpoint

from ..api import ServerApi, SwapError
from .base import FolderSwap, Phases


class ReloadSwap(FolderSwap):
    """Reloads the checkpoint's weights into the running vLLM server (dev-mode routes)."""

    name = "reload"

    def __init__(self, api: ServerApi, in_flight: Literal["finish", "continue"] = "finish") -> None:
        super().__init__()
        self.api = api
        self.in_flight = in_flight

    async def _load(self, path: str, version: str, clock: Phases) -> None:
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
            reset = await self.api.request("POST", f"{root}/reset_prefix_cache", params={
                "reset_running_requests": "true" if self.in_flight == "continue" else "false"})
            if isinstance(reset, dict) and reset.get("success") is False:
                raise SwapError("the server could not reset its prefix cache (blocks still held), so new "
                                "answers would reuse keys computed by the old weights")
        finally:
            await self.api.request("POST", f"{root}/resume")
        await self.api.request("POST", f"{root}/update_weight_version", json={"new_version": version})

    async def _verify(self, checkpoint: Checkpoint) -> None:
        info = await self.api.request("GET", f"{self.api.root}/weight_info", timeout=30)
        if isinstance(info, dict) and info.get("weight_version") != checkpoint.version:
            raise SwapError(f"the server reports weight version {info.get('weight_version')!r}, "
                            f"not {checkpoint.version!r}")
