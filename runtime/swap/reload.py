"""``reload``: new weights into the running vLLM server, no restart (about 1-2 s here).

Pause (letting requests in flight finish), reload the weights from the checkpoint folder,
reset the prefix cache (its blocks were computed by the old weights), resume, set the weight
version, then check ``/weight_info`` and a probe request. These are vLLM's dev-mode routes
(``VLLM_SERVER_DEV_MODE=1``), which the managed server only ever serves on 127.0.0.1. The new
folder must have the old one's architecture and shapes; the tokenizer is not reloaded.
"""

from __future__ import annotations

from isheep.agents.base import ServedModel
from isheep.agents.trainer import Checkpoint

from .base import ServerApi, SwapError, SwapStrategy


class ReloadSwap(SwapStrategy):
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

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        before = await self.api.fingerprint(current.name)
        try:
            await self._load(str(checkpoint.path), checkpoint.version)
            info = await self.api.request("GET", f"{self.api.root}/weight_info", timeout=30)
            if isinstance(info, dict) and info.get("weight_version") != checkpoint.version:
                raise SwapError(f"the server reports weight version {info.get('weight_version')!r}, "
                                f"not {checkpoint.version!r}")
            after = await self.api.fingerprint(current.name)
            self.evidence = {"probe_logprobs_before": before, "probe_logprobs_after": after,
                             "weights_changed": before != after, "weight_version": checkpoint.version}
        except Exception as exc:  # noqa: BLE001 - whatever broke, the old weights go back
            if current.path is None:
                raise SwapError(f"reload of {checkpoint.version} failed ({exc}) and the previous weights are "
                                "unknown, so they could not be restored") from None
            try:
                await self._load(str(current.path), current.version)
                restored = await self.api.fingerprint(current.name)
                self.evidence = {"probe_logprobs_before": before, "probe_logprobs_restored": restored,
                                 "restored_exactly": restored == before}
            except Exception as again:  # noqa: BLE001
                raise SwapError(f"reload of {checkpoint.version} failed ({exc}); restoring {current.version} "
                                f"failed too ({again})") from None
            raise SwapError(f"reload of {checkpoint.version} failed, {current.version} restored: {exc}") from None
        return ServedModel(version=checkpoint.version, name=current.name, path=checkpoint.path)

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        if previous.path is None:
            raise SwapError(f"the weights of {previous.version} are unknown; they cannot be reloaded")
        await self._load(str(previous.path), previous.version)
        await self.api.probe(previous.name)
        return previous
