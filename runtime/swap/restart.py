"""``restart``: restart the managed server on the new model folder (the baseline: ~45 s on CPU)."""

from __future__ import annotations

from isheep.agents.base import ServedModel
from isheep.agents.trainer import Checkpoint

from ..server import ManagedServer
from .base import ServerApi, SwapError, SwapStrategy


class RestartSwap(SwapStrategy):
    name = "restart"

    def __init__(self, server: ManagedServer, api: ServerApi) -> None:
        super().__init__()
        self.server = server
        self.api = api

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        before = await self.api.fingerprint(current.name)
        try:
            await self.server.restart(checkpoint.path)
            after = await self.api.fingerprint(current.name)
            self.evidence = {"probe_logprobs_before": before, "probe_logprobs_after": after,
                             "weights_changed": before != after}
        except Exception as exc:  # noqa: BLE001
            if current.path is None:
                raise SwapError(f"restart on {checkpoint.version} failed: {exc}") from None
            try:
                await self.server.restart(current.path)
            except Exception as again:  # noqa: BLE001
                raise SwapError(f"restart on {checkpoint.version} failed ({exc}); restarting on "
                                f"{current.version} failed too ({again})") from None
            raise SwapError(f"restart on {checkpoint.version} failed, {current.version} restored: {exc}") from None
        return ServedModel(version=checkpoint.version, name=current.name, path=checkpoint.path)

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        if previous.path is None:
            raise SwapError(f"the folder of {previous.version} is unknown; the server cannot restart on it")
        await self.server.restart(previous.path)
        await self.api.probe(previous.name)
        return previous
