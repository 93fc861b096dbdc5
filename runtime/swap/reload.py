"""``reload``: new weights into the running vLLM server, no restart (about 1-2 s here).

Pause (letting requests in flight finish), reload the weights from the checkpoint folder,
reset the prefix cache (its blocks were computed by the old weights), resume, set the weight
version, then check ``/weight_info`` and a probe request. These are vLLM's dev-mode routes
(``VLLM_SERVER_DEV_MODE=1``), which the managed server only ever serves on 127.0.0.1. The new
folder must have the old one's architecture and shapes; the tokenizer is not reloaded.
"""

from __future__ import annotations

from isheep.agents.trainer import Checkpoint

from .base import FolderSwap, ServerApi, SwapError


class ReloadSwap(FolderSwap):
    name = "reload"

    def __init__(self, api: ServerApi) -> None:
        super().__init__()
        self.api = api

    async def _load(self, path: str, version: str) -> None:
        root = self.api.root
        await self.api.request("POST", f"{root}/pause", params={"mode": "wait"})
        try:
            await self.api.request("POST", f"{root}/collective_rpc",
                                   json={"method": "reload_weights", "kwargs": {"weights_path": path}})
            await self.api.request("POST", f"{root}/reset_prefix_cache")
        finally:
            await self.api.request("POST", f"{root}/resume")
        await self.api.request("POST", f"{root}/update_weight_version", json={"new_version": version})

    async def _verify(self, checkpoint: Checkpoint) -> None:
        info = await self.api.request("GET", f"{self.api.root}/weight_info", timeout=30)
        if isinstance(info, dict) and info.get("weight_version") != checkpoint.version:
            raise SwapError(f"the server reports weight version {info.get('weight_version')!r}, "
                            f"not {checkpoint.version!r}")
