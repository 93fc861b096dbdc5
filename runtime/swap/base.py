"""The interface every swap strategy implements."""

from __future__ import annotations

import abc
from typing import ClassVar

from isheep.agents.base import ServedModel
from isheep.agents.trainer import Checkpoint


class SwapError(Exception):
    """A swap failed; the strategy has put the previous model back before raising."""


class SwapStrategy(abc.ABC):
    """Makes an endpoint serve a new checkpoint, verifies it, or restores the previous model."""

    #: The config name of the strategy.
    name: ClassVar[str]

    @abc.abstractmethod
    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        """Serve ``checkpoint`` and return how requests name it from now on.

        On failure, restore ``current`` and raise :class:`SwapError`.
        """

    async def aclose(self) -> None:
        """Release what the strategy holds (connections, processes)."""
