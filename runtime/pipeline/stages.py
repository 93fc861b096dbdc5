"""One round's generation as a streaming pipeline::

    Proposer x P --Instruction--> [queue] --> Responder x R --Response--> [queue] --> Critic x C
        --Assessment--> [queue] --> Curator --kept Verdict--> [queue] --> Trainer

Every queue is bounded (backpressure: a fast Proposer waits for a slow Responder). Every
message a role returns is committed to the run store before it is handed on, so the store
alone says where each item is; a resumed round puts unfinished items back on the queue of
the stage they had reached. When the round's account says the quota is met (or the proposal
cap is reached) the Proposers stop, what is in flight drains, and the generation ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.endpoint import EndpointError
from isheep.runtime.core.errors import EndpointUnavailable, GarbageOutput, UserError
from isheep.runtime.core.messages import Instruction, ProposalRequest, Verdict
from isheep.runtime.core.roles import Role, Roles
from isheep.runtime.serving import EndpointPool
from isheep.runtime.store import RunStore, StoreIntegrityError, message_from_row, op_for

from .account import RoundAccount
from .stats import RoleStats, RunStats

log = logging.getLogger("isheep")

#: Proposer calls in a row that may fail (after their own retries) before the run stops.
MAX_FAILED_PROPOSALS = 10


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The most useful exception of a task group: a UserError if any, else the first one."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack[:0] = list(exc.exceptions)
        else:
            flat.append(exc)
    for exc in flat:
        if isinstance(exc, UserError):
            return exc
    return flat[0] if flat else group


class RoundPipeline:
    """The queues between the roles of one round, their workers, and the Proposers' loop.

    Args:
        config: The run's config (workers per role, queue size, proposal limits).
        store: Every message is committed here before it moves on.
        roles: The five roles.
        account: The round's account (created by the supervisor, recorded into here).
        stats: The live counters the displays read.
        running: Cleared while generation is paused (requests in flight finish).
        pool: The policy's endpoints, whose limits pace the Proposers (without it they propose
            whenever the round's tail allows, up to ``proposer.workers`` calls).
    """

    def __init__(self, config: RunConfig, store: RunStore, roles: Roles, account: RoundAccount, stats: RunStats,
                 running: asyncio.Event, pool: EndpointPool | None = None) -> None:
        self.config = config
        self.pool = pool
        self.store = store
        self.roles = roles
        self.account = account
        self.stats = stats
        self.running = running
        size = config.queue_size
        self.queues: dict[str, asyncio.Queue[Any]] = {
            name: asyncio.Queue(size) for name in ("responder", "critic", "curator", "trainer")}
        self._progress = asyncio.Event()  # set by every verdict: a waiting Proposer looks again
        self._barren = 0
        self._failed_calls = 0

    def queue_depths(self) -> dict[str, int]:
        return {name: queue.qsize() for name, queue in self.queues.items()}

    async def run(self) -> None:
        """Generate until the round has enough, then let everything in flight finish."""
        self.account.note_close()  # a resumed round may have had enough already: all of it is tail
        try:
            await self._run()
        except BaseExceptionGroup as group:
            # Surface the error a user can act on (garbage output, dead endpoint) as itself.
            raise first_error(group) from None

    async def _run(self) -> None:
        q = self.queues
        stages: list[tuple[Role, asyncio.Queue, asyncio.Queue | None, int]] = [
            (self.roles.responder, q["responder"], q["critic"], self.config.responder.workers),
            (self.roles.critic, q["critic"], q["curator"], self.config.critic.workers),
            (self.roles.curator, q["curator"], q["trainer"], 1),
            (self.roles.trainer, q["trainer"], None, 1),
        ]
        async with asyncio.TaskGroup() as group:
            consumers = []
            for role, inbox, outbox, workers in stages:
                self.stats.roles[role.name].workers = workers
                consumers += [group.create_task(self._consume(role, inbox, outbox), name=f"{role.name}-{i}")
                              for i in range(workers)]
            self.stats.roles["proposer"].workers = self.config.proposer.workers
            producers = [group.create_task(self._requeue())]
            producers += [group.create_task(self._propose(q["responder"]), name=f"proposer-{i}")
                          for i in range(self.config.proposer.workers)]
            await asyncio.gather(*producers)
            for queue in q.values():
                await queue.join()
            for task in consumers:
                task.cancel()

    # -- the Proposers -----------------------------------------------------------------------
    async def _propose(self, outbox: asyncio.Queue[Instruction]) -> None:
        try:
            await self._proposing(outbox)
        finally:
            # A call that failed, or whose drafts the filters all screened out, sends no verdict
            # down the pipeline: the Proposers waiting on it must look again all the same.
            self._progress.set()

    async def _proposing(self, outbox: asyncio.Queue[Instruction]) -> None:
        account = self.account
        while account.wants_more():
            await self.running.wait()
            if self._enough_coming():
                self._progress.clear()
                await self._progress.wait()
                continue
            out = await self._call_proposer(ProposalRequest(round=account.round, call=account.next_call()))
            if out is None:
                self._progress.set()
                continue
            account.admitted(sum(1 for m in out if isinstance(m, Instruction)))
            if not out:
                self._progress.set()
                if account.proposed >= account.cap:
                    break
                self._barren += 1
                if self._barren >= self.config.proposer.max_barren_calls:
                    raise GarbageOutput(f"the proposer's last {self._barren} replies held no parseable "
                                        "instruction; the model returns garbage for this prompt")
                continue
            self._barren = 0
            await self.store.write([op for m in out for op in op_for(m)])
            for message in out:
                if isinstance(message, Verdict):
                    account.record(message)
                else:
                    await outbox.put(message)
            self._progress.set()

    def _enough_coming(self) -> bool:
        """Whether a Proposer should wait: the round's tail, or enough instructions queued and coming."""
        if self.pool is None:
            return self.account.enough_in_flight()
        return self.account.should_wait(self.queues["responder"].qsize(), 2 * self.pool.limit,
                                        self.pool.in_flight < self.pool.limit)

    async def _call_proposer(self, request: ProposalRequest) -> list | None:
        """One proposal call; None when it failed (and was recorded), after too many in a row an error."""
        stats = self.stats.roles["proposer"]
        stats.busy += 1
        self.account.calls_in_flight += 1
        started = time.perf_counter()
        try:
            out = await self.roles.proposer.handle(request)
        except EndpointError as err:
            stats.failed += 1
            self._failed_calls += 1
            self.store.event("proposer_failed", f"proposal request failed: {err}", level="warning",
                             round=request.round)
            if self._failed_calls >= MAX_FAILED_PROPOSALS:
                raise EndpointUnavailable(
                    f"the last {self._failed_calls} proposal requests failed after retries (last: {err})") from None
            return None
        finally:
            stats.busy -= 1
            self.account.calls_in_flight -= 1
            stats.done += 1
            stats.latency_total += time.perf_counter() - started
        self._failed_calls = 0
        return out

    # -- the other roles ---------------------------------------------------------------------
    async def _consume(self, role: Role, inbox: asyncio.Queue, outbox: asyncio.Queue | None) -> None:
        stats = self.stats.roles[role.name]
        while True:
            message = await inbox.get()
            await self.running.wait()
            try:
                await self._step(role, stats, message, outbox)
            finally:
                inbox.task_done()

    async def _step(self, role: Role, stats: RoleStats, message: Any, outbox: asyncio.Queue | None) -> None:
        try:
            await self._handle(role, stats, message, outbox)
        finally:
            # Only now, with the verdict in the account: a Proposer woken earlier would judge the
            # round by stale counts, go back to waiting, and nothing would wake it again.
            self._progress.set()

    async def _handle(self, role: Role, stats: RoleStats, message: Any, outbox: asyncio.Queue | None) -> None:
        stats.busy += 1
        started = time.perf_counter()
        try:
            out = await role.handle(message)
        except (UserError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug in a role must not take the run down: fail the item
            log.exception("%s failed on item %s", role.name, message.id)
            self.store.event("role_error", f"{role.name} raised {type(exc).__name__}: {exc}", level="error",
                             round=message.round)
            if role.name == "trainer":
                return
            out = Verdict(id=message.id, round=message.round, model_version=message.model_version,
                          status="failed", stage=role.name, reason=f"error:{type(exc).__name__}")
        finally:
            stats.busy -= 1
            stats.done += 1
            stats.latency_total += time.perf_counter() - started
        if out is None:
            return
        if role is self.roles.responder and not (isinstance(out, Verdict) and out.status == "failed"):
            self.account.answered()
        try:
            await self.store.write(op_for(out))
        except StoreIntegrityError as err:
            self.store.event("integrity", str(err), level="error", round=message.round)
            self.account.lost()
            return
        if isinstance(out, Verdict):
            self.account.record(out)
            if out.status == "failed":
                stats.failed += 1
            if out.status != "kept" or outbox is None:
                return
        if outbox is not None:
            await outbox.put(out)

    async def _requeue(self) -> None:
        """Put a resumed round's unfinished items back where they stopped."""
        k = self.account.round
        rows = list(self.store.pending(k))
        if rows:
            self.store.event("resume", f"{len(rows)} unfinished items of round {k} re-queued", round=k)
        queues = {"proposed": self.queues["responder"], "responded": self.queues["critic"],
                  "assessed": self.queues["curator"]}
        for row in rows:
            await queues[row["state"]].put(message_from_row(row))
