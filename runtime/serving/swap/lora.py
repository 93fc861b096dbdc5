"""``lora``: serve the round's LoRA adapter beside the base weights, under a new name.

vLLM loads an adapter at run time in well under a second (``/v1/load_lora_adapter``, with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``). Each round's adapter gets a fresh name (reloading one
name can reuse stale prefix-cache blocks upstream); the roles switch to it once a probe
answers, and the previous adapter is unloaded (between rounds nothing is in flight on it).
The base model stays served under its own name, so a base-model critic keeps working.
"""

from __future__ import annotations

from isheep.runtime.core.types import Checkpoint, ServedModel

from ..api import ServerApi, SwapError
from .base import SwapStrategy


class LoraSwap(SwapStrategy):
    """Loads each round's adapter under a new name beside the base model."""

    name = "lora"

    def __init__(self, api: ServerApi, base_name: str) -> None:
        super().__init__()
        self.api = api
        self.base_name = base_name

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        if checkpoint.adapter is None:
            raise SwapError(f"{checkpoint.version} has no LoRA adapter to load")
        name = f"{self.base_name}-{checkpoint.version}"
        before = await self.api.fingerprint(current.name)
        try:
            await self.api.request("POST", f"{self.api.base_url}/load_lora_adapter",
                                   json={"lora_name": name, "lora_path": str(checkpoint.adapter)})
            if name not in await self.api.models():
                raise SwapError(f"adapter {name} is not listed by the server after loading")
            after = await self.api.fingerprint(name)
            self.evidence = {"probe_logprobs_before": before, "probe_logprobs_after": after,
                             "weights_changed": before != after, "adapter_name": name}
        except Exception as exc:  # noqa: BLE001 - the current model never stopped serving
            try:
                await self.api.request("POST", f"{self.api.base_url}/unload_lora_adapter", json={"lora_name": name})
            except SwapError:
                pass
            raise SwapError(f"loading adapter {checkpoint.version} failed, {current.version} still serves: {exc}") \
                from None
        if current.name != self.base_name:
            try:
                await self.api.request("POST", f"{self.api.base_url}/unload_lora_adapter",
                                       json={"lora_name": current.name})
            except SwapError:
                pass  # a leftover adapter costs memory, not correctness
        return ServedModel(version=checkpoint.version, name=name, path=checkpoint.adapter)

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        if previous.name != self.base_name:  # its adapter was unloaded by the swap: load it again
            if previous.path is None:
                raise SwapError(f"the adapter of {previous.version} is unknown; it cannot be loaded again")
            await self.api.request("POST", f"{self.api.base_url}/load_lora_adapter",
                                   json={"lora_name": previous.name, "lora_path": str(previous.path)})
        await self.api.probe(previous.name)
        if served.name != self.base_name:
            await self.api.request("POST", f"{self.api.base_url}/unload_lora_adapter", json={"lora_name": served.name})
        return previous
