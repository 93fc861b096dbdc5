"""The interface every swap strategy implements, and the checks they share."""

from __future__ import annotations

import abc
import time
from typing import Any, ClassVar

from isheep.runtime.core.types import Checkpoint, ServedModel

from ..api import ServerApi, SwapError


class SwapStrategy(abc.ABC):
    """Makes an endpoint serve a new checkpoint, verifies it, or restores the previous model."""

    #: The config name of the strategy.
    name: ClassVar[str]
    #: What the last swap verified (probe logprobs before and after...), for the lineage.
    evidence: dict[str, Any]

    def __init__(self) -> None:
        self.evidence = {}

    @abc.abstractmethod
    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        """Serve ``checkpoint`` and return how requests name it from now on.

        What was verified (probe logprobs before and after, the weight version, the time of each
        phase) is left in :attr:`evidence` for the lineage.

        Args:
            checkpoint: The newly trained model.
            current: The model served now (its folder is what a failed swap restores).

        Raises:
            SwapError: the swap failed; ``current`` serves again (or the message says it could not).
        """

    async def prepare(self, current: ServedModel) -> None:
        """Called while the next checkpoint trains: do now what does not need it."""

    async def release(self) -> None:
        """Called before training starts: give up the devices the trainer shares (colocated placement)."""

    async def reclaim(self) -> None:
        """Called when training produced no checkpoint after :meth:`release`: serve as before."""

    async def check_serving(self, current: ServedModel, timeout_s: float) -> None:
        """After a failed swap: ``current`` must answer, or there is nothing to go on with.

        Raises:
            SwapError: it does not answer within ``timeout_s``.
        """
        api = getattr(self, "api", None)
        if api is not None:
            await api.wait_for(current.name, timeout_s)

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        """Serve ``previous`` again after ``served`` was found wanting (the evaluation gate)."""
        raise SwapError(f"the {self.name} swap cannot put a previous model back")

    async def aclose(self) -> None:
        """Release what the strategy holds (connections, processes)."""


class Phases:
    """Seconds spent in each phase of a swap, recorded with its evidence (where a slow swap waits)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self._last, 3)
        self._last = now


class FolderSwap(SwapStrategy):
    """A strategy that makes the server load a model folder; on failure the previous folder goes back.

    Subclasses say how a folder is loaded (``_load``) and what else proves it took (``_verify``).
    """

    api: ServerApi
    #: Probe fingerprints of versions served in this process (weights of a version never change).
    _fingerprints: dict[str, list[float] | None]

    def __init__(self) -> None:
        super().__init__()
        self._fingerprints = {}

    @abc.abstractmethod
    async def _load(self, path: str, version: str, clock: Phases) -> None:
        """Make the server serve the folder at ``path`` as ``version`` (``clock.lap`` marks phases)."""

    async def _verify(self, checkpoint: Checkpoint) -> None:
        """Raise if the server does not serve ``checkpoint`` (beyond answering the probe)."""

    async def prepare(self, current: ServedModel) -> None:
        # The served model's fingerprint, taken while training runs rather than inside the swap.
        if current.version not in self._fingerprints:
            self._fingerprints[current.version] = await self.api.fingerprint(current.name)

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        clock = Phases()
        await self.prepare(current)  # a no-op when it ran while the checkpoint trained
        before = self._fingerprints[current.version]
        clock.lap("probe_before")
        try:
            await self._load(str(checkpoint.path), checkpoint.version, clock)
            clock.lap("load")
            await self._verify(checkpoint)
            after = await self.api.fingerprint(current.name)
            clock.lap("verify")
            self._fingerprints[checkpoint.version] = after
            self.evidence = {"probe_logprobs_before": before, "probe_logprobs_after": after,
                             "weights_changed": before != after, "weight_version": checkpoint.version,
                             "phases_s": clock.seconds}
        except Exception as exc:  # noqa: BLE001 - whatever broke, the old model goes back
            if current.path is None:
                raise SwapError(f"{self.name} of {checkpoint.version} failed ({exc}) and the folder of "
                                f"{current.version} is unknown, so it could not be restored", restored=False) from None
            try:
                await self._load(str(current.path), current.version, Phases())
                restored = await self.api.fingerprint(current.name)
                self.evidence = {"probe_logprobs_before": before, "probe_logprobs_restored": restored,
                                 "restored_exactly": restored == before}
            except Exception as again:  # noqa: BLE001
                raise SwapError(f"{self.name} of {checkpoint.version} failed ({exc}); restoring "
                                f"{current.version} failed too ({again})", restored=False) from None
            raise SwapError(f"{self.name} of {checkpoint.version} failed, {current.version} restored: {exc}") \
                from None
        return ServedModel(version=checkpoint.version, name=current.name, path=checkpoint.path)

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        if previous.path is None:
            raise SwapError(f"the folder of {previous.version} is unknown; it cannot be served again")
        await self._load(str(previous.path), previous.version, Phases())
        await self.api.probe(previous.name)
        return previous
