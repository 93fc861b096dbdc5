"""A fleet: one swap strategy per replica, applied to every replica as one transaction.

Half a fleet on old weights silently mixes two models in a round, while the lineage says one.
So a swap is all or nothing: every replica loads and verifies the checkpoint (its own strategy:
weight version, probe logprobs before and after), and if any fails, the replicas that took it
are put back on the previous model too. While the swap runs the pools hold every new request
(the version barrier), so nothing is answered by a fleet that is half swapped. A replica that
cannot be brought back to the previous model, or that stops answering, is taken out of the pool
with a clear event, and the run goes on with the rest; when none is left, the swap fails with
the run's data safe.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from isheep.runtime.core.types import Checkpoint, ServedModel

from ..api import SwapError
from ..endpoints import EndpointPool
from ..server import ManagedServer
from .base import SwapStrategy


@dataclass
class Replica:
    """One server of the fleet: where it answers, how its model is swapped, and its process if managed."""

    url: str
    strategy: SwapStrategy
    server: ManagedServer | None = None


class FleetSwap(SwapStrategy):
    """Swaps every replica of the pool together; any failure puts all of them back.

    Args:
        replicas: The servers, each with a strategy of the same kind.
        pools: The pools that send requests to them (held during a swap; a lost replica leaves them).
        on_event: Told of a replica taken out, with a level and a message.
    """

    def __init__(self, replicas: list[Replica], pools: list[EndpointPool],
                 on_event: Callable[[str, str], None] | None = None) -> None:
        super().__init__()
        if not replicas:
            raise ValueError("a fleet needs at least one replica")
        self.replicas = replicas
        self.pools = list({id(p): p for p in pools}.values())
        self.on_event = on_event
        self.name = replicas[0].strategy.name  # type: ignore[misc] - the fleet is named by its replicas' kind

    @property
    def live(self) -> list[Replica]:
        """The replicas still in the pool (a watchdog that gave up, or a lost swap, takes one out)."""
        urls = set(self.pools[0].urls) if self.pools else {r.url for r in self.replicas}
        return [r for r in self.replicas if r.url in urls]

    async def prepare(self, current: ServedModel) -> None:
        await self._each(lambda r: r.strategy.prepare(current))

    async def release(self) -> None:
        await self._all_or_error("release", lambda r: r.strategy.release())

    async def reclaim(self) -> None:
        await self._all_or_error("reclaim", lambda r: r.strategy.reclaim())

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        replicas = self.live
        async with self._barrier():
            results = await self._each(lambda r: r.strategy.swap(checkpoint, current), replicas)
            failed = [(r, out) for r, out in zip(replicas, results) if isinstance(out, BaseException)]
            served = [(r, out) for r, out in zip(replicas, results) if isinstance(out, ServedModel)]
            if not failed:
                names = {out.name for _, out in served}
                if len(names) == 1:
                    self.evidence = self._evidence(replicas, checkpoint)
                    return served[0][1]
                failed = [(served[0][0], SwapError(f"replicas serve it under different names: {sorted(names)}"))]
            await self._roll_back(current, served, failed)
        first = failed[0]
        raise SwapError(f"{self.name} of {checkpoint.version} failed on {len(failed)} of {len(replicas)} replicas "
                        f"({first[0].url}: {first[1]}); every replica still in the pool serves {current.version}")

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        replicas = self.live
        async with self._barrier():
            results = await self._each(lambda r: r.strategy.restore(previous, served), replicas)
            for replica, out in zip(replicas, results):
                if isinstance(out, BaseException):
                    await self._drop(replica, f"it could not serve {previous.version} again ({out})")
        return previous

    async def check_serving(self, current: ServedModel, timeout_s: float) -> None:
        replicas = self.live
        results = await self._each(lambda r: r.strategy.check_serving(current, timeout_s), replicas)
        for replica, out in zip(replicas, results):
            if isinstance(out, BaseException):
                await self._drop(replica, f"it no longer answers for {current.name!r} ({out})")

    async def aclose(self) -> None:
        await self._each(lambda r: r.strategy.aclose(), self.replicas)

    # -- the transaction ---------------------------------------------------------------------
    async def _roll_back(self, current: ServedModel, served: list[tuple[Replica, ServedModel]],
                         failed: list[tuple[Replica, BaseException]]) -> None:
        """Put the replicas that took the checkpoint back; drop those left serving neither model.

        Every replica is dealt with before the last one that cannot be trusted fails the swap, so
        none is left on the new weights by an error on another.
        """
        evidence: dict[str, Any] = {}
        untrusted: list[tuple[Replica, str]] = []
        for replica, model in served:
            try:
                await replica.strategy.restore(current, model)
                evidence[replica.url] = {"restored": True}
            except Exception as exc:  # noqa: BLE001 - whatever broke, this replica cannot be trusted
                evidence[replica.url] = {"restored": False, "error": str(exc)}
                untrusted.append((replica, f"it could not serve {current.version} again ({exc})"))
        for replica, exc in failed:
            restored = getattr(exc, "restored", True)
            evidence[replica.url] = {**replica.strategy.evidence, "error": str(exc), "restored": restored}
            if not restored:
                untrusted.append((replica, f"its swap failed and {current.version} could not be restored ({exc})"))
        self.evidence = {"replicas": evidence}
        for replica, why in untrusted:
            await self._drop(replica, why)

    def _evidence(self, replicas: list[Replica], checkpoint: Checkpoint) -> dict[str, Any]:
        per = {r.url: dict(r.strategy.evidence) for r in replicas}
        after = [e.get("probe_logprobs_after") for e in per.values()]
        slowest: dict[str, float] = {}
        for e in per.values():
            for phase, seconds in (e.get("phases_s") or {}).items():
                slowest[phase] = max(slowest.get(phase, 0.0), seconds)
        return {"replicas": per, "weight_version": checkpoint.version, "phases_s": slowest,
                "weights_changed": all(e.get("weights_changed", True) for e in per.values()),
                # Same weights, same greedy probe: a replica that differs serves something else.
                "replicas_agree": all(a == after[0] for a in after)}

    @contextlib.asynccontextmanager
    async def _barrier(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for pool in self.pools:
                await stack.enter_async_context(pool.hold())
            yield

    async def _each(self, call: Callable[[Replica], Any], replicas: list[Replica] | None = None) -> list[Any]:
        """``call`` on every replica at once; each one's result or exception, in order."""
        chosen = self.live if replicas is None else replicas
        results = await asyncio.gather(*(call(r) for r in chosen), return_exceptions=True)
        for out in results:
            if isinstance(out, BaseException) and not isinstance(out, Exception):
                raise out  # cancelled or interrupted: not a replica's failure
        return results

    async def _all_or_error(self, what: str, call: Callable[[Replica], Any]) -> None:
        replicas = self.live
        for replica, out in zip(replicas, await self._each(call, replicas)):
            if isinstance(out, BaseException):
                raise SwapError(f"{what} on {replica.url} failed: {out}")

    async def _drop(self, replica: Replica, why: str) -> None:
        """Take ``replica`` out of the pools; the last one cannot be, and the swap fails instead."""
        if len(self.live) <= 1:
            raise SwapError(f"the last replica, {replica.url}, cannot be trusted: {why}", restored=False)
        for pool in self.pools:
            if replica.url in pool.urls:
                pool.remove(replica.url)
        left = len(self.live)
        if self.on_event is not None:
            self.on_event("error", f"replica {replica.url} taken out of the pool: {why}; "
                                   f"the run goes on with {left} replica{'s' if left != 1 else ''}")
        if replica.server is not None:
            await replica.server.stop()
