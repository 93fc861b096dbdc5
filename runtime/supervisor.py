"""The wiring of all roles, in one place.

A round runs as a streaming pipeline::

    Proposer x P --Instruction--> [queue] --> Responder x R --Response--> [queue] --> Critic x C
        --Assessment--> [queue] --> Curator --kept Verdict--> [queue] --> Trainer

Every queue is bounded (backpressure: a fast Proposer waits for a slow Responder). Every
message a role returns is committed to the run store before it is handed on, so the store
alone says where each item is; a resumed round puts unfinished items back on the queue of
the stage they had reached. When the Trainer says the quota is met (or the proposal cap is
reached) the Proposers stop, what is in flight drains, and the round closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from isheep.agents.base import Models, Role
from isheep.agents.critic import Critic
from isheep.agents.curator import Curator
from isheep.agents.proposer import Proposer
from isheep.agents.responder import Responder
from isheep.agents.trainer import Trainer

from .config import RunConfig
from .endpoints import EndpointError, EndpointPool
from .errors import EndpointUnavailable, GarbageOutput, UserError
from .ledger import RoundLedger, reason_kind, seq_of
from .messages import Assessment, Instruction, ProposalRequest, Response, RoundEvent, Verdict
from .stats import RoleStats, RoundSummary, RunStats
from .records import message_from_row, op_for
from .store import PENDING_STATES, RunStore, StoreIntegrityError
from .server_metrics import ServerMetrics
from .swap import NoSwap, SwapStrategy
from .evaluation import Evaluator
from .updater import ModelUpdater

log = logging.getLogger("isheep")

#: Proposer calls in a row that may fail (after their own retries) before the run stops.
MAX_FAILED_PROPOSALS = 10


def _first_error(group: BaseExceptionGroup) -> BaseException:
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


class Supervisor:
    """Starts, drains and stops the roles of each round."""

    def __init__(self, config: RunConfig, store: RunStore, pool: EndpointPool, models: Models, *,
                 proposer: Proposer, responder: Responder, critic: Critic, curator: Curator, trainer: Trainer,
                 stats: RunStats, swapper: SwapStrategy | None = None, evaluator: Evaluator | None = None) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.models = models
        self.proposer = proposer
        self.responder = responder
        self.critic = critic
        self.curator = curator
        self.trainer = trainer
        self.stats = stats
        self.updater = ModelUpdater(config, store, models, stats, trainer, swapper or NoSwap(), evaluator)
        #: Polls the engine's own counters (set by the app when endpoints may expose them).
        self.server_metrics: ServerMetrics | None = None
        self.summaries: list[RoundSummary] = []
        self.stopped = False
        self.finish_after_round = False
        self._stop = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._progress = asyncio.Event()
        self._barren = 0
        self._failed_calls = 0
        pool.set_retry_hook(self._on_retry)

    # -- control -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop now, cleanly: in-flight requests are dropped, committed work stays."""
        self._stop.set()

    def request_finish(self) -> None:
        """Finish the current round, then stop."""
        self.finish_after_round = True

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def toggle_pause(self) -> bool:
        """Pause (or resume) generation: no new request starts; those in flight finish. Returns paused."""
        if self._running.is_set():
            self._running.clear()
            self.stats.state_before_pause = self.stats.state
            self.stats.state = "paused"
            self.store.event("control", "generation paused", round=self.stats.round or None)
        else:
            self._running.set()
            self.stats.state = self.stats.state_before_pause or "generating"
            self.store.event("control", "generation resumed", round=self.stats.round or None)
        return self.paused

    # -- rounds ------------------------------------------------------------------------------
    def next_round(self) -> int:
        """The round to work on: the open one, else the one after the last finished."""
        rounds = self.store.rounds()
        if not rounds:
            return 1
        last = rounds[-1]
        return last.round + 1 if last.state in ("done", "rejected") else last.round

    async def run(self) -> list[RoundSummary]:
        metrics = asyncio.create_task(self._metrics_loop(), name="metrics")
        try:
            k = self.next_round()
            while k <= self.config.rounds:
                task = asyncio.create_task(self._round(k), name=f"round-{k}")
                stop = asyncio.create_task(self._stop.wait())
                done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
                if task not in done:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    self.stopped = True
                    self.stats.state = "stopped"
                    self.store.event("stopped", f"stopped by request during round {k}", round=k)
                    break
                stop.cancel()
                task.result()
                k += 1
                if self.finish_after_round and k <= self.config.rounds:
                    self.stopped = True
                    self.store.event("stopped", f"stopped by request after round {k - 1}", round=k - 1)
                    break
            else:
                self.stats.state = "done"
        finally:
            metrics.cancel()
            await asyncio.gather(metrics, return_exceptions=True)
            self._write_metrics()
        return self.summaries

    async def _round(self, k: int) -> None:
        """One round: generate, then train, then swap; a resumed round starts at the phase it was in."""
        version = self.models.policy.version
        ledger = self._ledger(k)
        state = next((r.state for r in self.store.rounds() if r.round == k), None)
        summary = RoundSummary(round=k, model_version=version, proposed=0, kept=0, rejected={}, failed={},
                               generation_s=0.0, prompt_tokens=0, completion_tokens=0)
        self.stats.round, self.stats.ledger = k, ledger
        if state in (None, "generating"):
            await self._generation(k, ledger, state is None, summary)
        summary.proposed, summary.kept = ledger.proposed, ledger.kept
        summary.rejected, summary.failed = dict(ledger.rejected), dict(ledger.failed)
        outcome = "done"
        if self.trainer.backend is not None:
            checkpoint = None
            if state in (None, "generating", "training"):
                started = time.monotonic()
                checkpoint = await self.updater.train(k)
                summary.training_s = time.monotonic() - started
            elif state == "swapping":
                checkpoint = self.updater.trained_checkpoint(k)
            if checkpoint is not None:
                summary.checkpoint = str(checkpoint.path)
                started = time.monotonic()
                if await self.updater.swap(k, checkpoint) == "rejected":
                    outcome = "rejected"
                summary.swap_s = time.monotonic() - started
        # The round is named after the model that generated it, not the one it trained.
        detail = self._round_detail(ledger)
        if outcome == "rejected":
            detail = f"its model was rejected by the evaluation gate; {detail}"
        await self.store.write(op_for(RoundEvent(id=f"round-{k}", round=k, model_version=version,
                                                 state=outcome, detail=detail)))
        summary.state = outcome
        self.summaries.append(summary)
        self.stats.finished_rounds = list(self.summaries)

    @staticmethod
    def _round_detail(ledger: RoundLedger) -> str:
        return f"quota met ({ledger.kept} kept)" if ledger.kept >= ledger.quota else \
            f"proposal cap reached ({ledger.proposed} proposed, {ledger.kept} kept)"

    async def _generation(self, k: int, ledger: RoundLedger, new: bool, summary: RoundSummary) -> None:
        version = self.models.policy.version
        if new:
            await self.store.write(op_for(RoundEvent(id=f"round-{k}", round=k, model_version=version,
                                                     state="generating", detail=f"on model {version}")))
        else:
            self.store.event("round", f"round {k} resumed: {ledger.proposed} proposed, {ledger.kept} kept so far",
                             round=k)
        self.stats.state = "generating"
        self.proposer.ledger = ledger
        self.trainer.open_round(ledger)
        tokens_before = self._tokens()
        started = time.monotonic()
        await self._generate(ledger)
        summary.generation_s = time.monotonic() - started
        summary.prompt_tokens, summary.completion_tokens = (a - b for a, b in zip(self._tokens(), tokens_before))

    def _ledger(self, k: int) -> RoundLedger:
        """The round's account as the store has it (all zeros for a new round)."""
        ledger = RoundLedger(round=k, quota=self.config.round_size, cap=self.config.max_proposed,
                             tasks_per_call=self.config.proposer.tasks_per_call,
                             min_pending=self.config.proposer.min_pending)
        for (state, reason), n in self.store.reasons(k).items():
            (ledger.rejected if state == "rejected" else ledger.failed)[reason_kind(reason)] += n
        counts = self.store.counts(k)
        ledger.proposed = sum(counts.values())
        ledger.kept = counts.get("kept", 0)
        ledger.in_pipeline = sum(counts.get(s, 0) for s in PENDING_STATES)
        ledger.screened_finished = self.store.query(
            "SELECT COUNT(*) FROM items WHERE round=? AND stage IS NOT NULL AND stage != 'proposer'", (k,))[0][0]
        ledger.next_seq = self.store.max_seq(k) + 1
        ledger.calls = ledger.next_seq  # fresh example draws after a resume
        return ledger

    # -- the pipeline ------------------------------------------------------------------------
    async def _generate(self, ledger: RoundLedger) -> None:
        size = self.config.queue_size
        to_respond: asyncio.Queue[Instruction] = asyncio.Queue(size)
        to_assess: asyncio.Queue[Response] = asyncio.Queue(size)
        to_curate: asyncio.Queue[Assessment] = asyncio.Queue(size)
        to_train: asyncio.Queue[Verdict] = asyncio.Queue(size)
        stages: list[tuple[Role, asyncio.Queue, asyncio.Queue | None, int]] = [
            (self.responder, to_respond, to_assess, self.config.responder.workers),
            (self.critic, to_assess, to_curate, self.config.critic.workers),
            (self.curator, to_curate, to_train, 1),
            (self.trainer, to_train, None, 1),
        ]
        self._queues = {"responder": to_respond, "critic": to_assess, "curator": to_curate, "trainer": to_train}
        self._barren = 0
        try:
            await self._run_pipeline(ledger, stages, to_respond, (to_respond, to_assess, to_curate, to_train))
        except BaseExceptionGroup as group:
            # Surface the error a user can act on (garbage output, dead endpoint) as itself.
            raise _first_error(group) from None

    async def _run_pipeline(self, ledger: RoundLedger, stages: list, to_respond: asyncio.Queue,
                            queues: tuple[asyncio.Queue, ...]) -> None:
        to_assess, to_curate = queues[1], queues[2]
        async with asyncio.TaskGroup() as group:
            consumers = []
            for role, inbox, outbox, workers in stages:
                self.stats.roles[role.name].workers = workers
                consumers += [group.create_task(self._consume(role, inbox, outbox), name=f"{role.name}-{i}")
                              for i in range(workers)]
            self.stats.roles["proposer"].workers = self.config.proposer.workers
            producers = [group.create_task(self._requeue(ledger.round, to_respond, to_assess, to_curate))]
            producers += [group.create_task(self._propose(ledger, to_respond), name=f"proposer-{i}")
                          for i in range(self.config.proposer.workers)]
            await asyncio.gather(*producers)
            for queue in queues:
                await queue.join()
            for task in consumers:
                task.cancel()

    async def _propose(self, ledger: RoundLedger, outbox: asyncio.Queue[Instruction]) -> None:
        stats = self.stats.roles["proposer"]
        limit = self.config.proposer.max_barren_calls
        while ledger.wants_more():
            await self._running.wait()
            if ledger.enough_in_flight():
                self._progress.clear()
                await self._progress.wait()  # set by every verdict
                continue
            request = ProposalRequest(round=ledger.round, call=ledger.next_call())
            stats.busy += 1
            ledger.calls_in_flight += 1
            started = time.perf_counter()
            try:
                out = await self.proposer.handle(request)
            except EndpointError as err:
                stats.failed += 1
                self._failed_calls += 1
                self.store.event("proposer_failed", f"proposal request failed: {err}", level="warning",
                                 round=ledger.round)
                if self._failed_calls >= MAX_FAILED_PROPOSALS:
                    raise EndpointUnavailable(
                        f"the last {self._failed_calls} proposal requests failed after retries (last: {err})") from None
                continue
            finally:
                stats.busy -= 1
                ledger.calls_in_flight -= 1
                stats.done += 1
                stats.latency_total += time.perf_counter() - started
            self._failed_calls = 0
            ledger.admitted(sum(1 for m in out if isinstance(m, Instruction)))
            if not out:
                if ledger.proposed >= ledger.cap:
                    break
                self._barren += 1
                if self._barren >= limit:
                    raise GarbageOutput(f"the proposer's last {self._barren} replies held no parseable "
                                        "instruction; the model returns garbage for this prompt")
                continue
            self._barren = 0
            await self.store.write([op for m in out for op in op_for(m, seq_of(m.id))])
            for message in out:
                if isinstance(message, Verdict):
                    ledger.record(message)
                else:
                    await outbox.put(message)

    async def _consume(self, role: Role, inbox: asyncio.Queue, outbox: asyncio.Queue | None) -> None:
        stats = self.stats.roles[role.name]
        while True:
            message = await inbox.get()
            await self._running.wait()
            try:
                await self._step(role, stats, message, outbox)
            finally:
                inbox.task_done()

    async def _step(self, role: Role, stats: RoleStats, message: Any, outbox: asyncio.Queue | None) -> None:
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
            self._progress.set()  # a waiting Proposer re-checks the round's account
        if out is None:
            return
        try:
            await self.store.write(op_for(out))
        except StoreIntegrityError as err:
            self.store.event("integrity", str(err), level="error", round=message.round)
            if self.stats.ledger is not None:
                self.stats.ledger.in_pipeline -= 1
            return
        if isinstance(out, Verdict):
            assert self.stats.ledger is not None
            self.stats.ledger.record(out)
            if out.status == "failed":
                stats.failed += 1
            if out.status != "kept" or outbox is None:
                return
        if outbox is not None:
            await outbox.put(out)

    async def _requeue(self, round: int, to_respond: asyncio.Queue, to_assess: asyncio.Queue,
                       to_curate: asyncio.Queue) -> None:
        """Put a resumed round's unfinished items back where they stopped."""
        rows = list(self.store.pending(round))
        if rows:
            self.store.event("resume", f"{len(rows)} unfinished items of round {round} re-queued", round=round)
        queues = {"proposed": to_respond, "responded": to_assess, "assessed": to_curate}
        for row in rows:
            await queues[row["state"]].put(message_from_row(row))

    # -- observation -------------------------------------------------------------------------
    def _tokens(self) -> tuple[int, int]:
        stats = self.pool.stats
        return sum(s.prompt_tokens for s in stats), sum(s.completion_tokens for s in stats)

    def refresh(self) -> None:
        """Bring the shared counters up to date (displays call this before drawing)."""
        self.stats.prompt_tokens, self.stats.completion_tokens = self._tokens()
        self.stats.requests = sum(s.requests for s in self.pool.stats)
        queues = getattr(self, "_queues", {})
        self.stats.queue_depth = {name: q.qsize() for name, q in queues.items()}

    def _write_metrics(self) -> None:
        self.refresh()
        self.store.metrics(self.stats.round or None, self.stats.snapshot())

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.metrics_interval_s)
            if self.server_metrics is not None:
                try:
                    self.stats.server = await self.server_metrics.read()
                except Exception:  # noqa: BLE001 - observation must never stop the run
                    log.debug("reading server metrics failed", exc_info=True)
            self._write_metrics()

    def _on_retry(self, err: EndpointError, url: str, attempt: int, delay: float) -> None:
        self.stats.retries += 1
        self.stats.last_error = str(err)[:200]
        self.store.event("retry", f"{url}: {err.reason} (attempt {attempt}, retrying in {delay:.1f}s)",
                         level="warning", round=self.stats.round or None,
                         data={"reason": err.reason, "status": err.status})
