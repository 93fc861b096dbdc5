"""``none``: keep serving the current model (the checkpoint is recorded, not served)."""

from __future__ import annotations

from isheep.runtime.core.types import Checkpoint, ServedModel

from .base import SwapStrategy


class NoSwap(SwapStrategy):
    """Keeps serving the current model: the checkpoint is recorded, not served."""

    name = "none"

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        return current

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        return previous
