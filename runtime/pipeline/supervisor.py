"""The rounds of a run, one after another, and the controls a person has over them.

Each round is bracketed by the roles' ``on_round_start`` / ``on_round_end`` hooks and goes
through its phases: generation (:class:`~.stages.RoundPipeline`), then training and the swap
(:class:`~.updater.ModelUpdater`). Every phase is a state of the round in the store, so a
resumed run starts a round at the phase it was in. The supervisor owns each round's account,
polls the engine's metrics, and writes the live counters to the store for the monitor. At each
round's end its numbers go to the run's experiment trackers, when ``trainer.report_to`` names any.
Each phase is also a phase of the session's time budget (:mod:`.budget`, kept in the live
counters): a round's generation becomes its tail when its account says proposing ended, and
every metrics sample says whether the server was saturated meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.endpoint import EndpointError
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import PENDING_STATES, ROUND_CLOSED_STATES, RoundEvent, SeedTask, reason_kind
from isheep.runtime.core.roles import Roles, RoundContext
from isheep.runtime.core.types import Models
from isheep.runtime.serving import EndpointPool, ServerMetrics
from isheep.runtime.store import RunStore, op_for

from .account import RoundAccount
from .stages import RoundPipeline
from .stats import RoundSummary, RunStats
from .tracking import Trackers, round_metrics
from .updater import ModelUpdater

log = logging.getLogger("isheep")


class Supervisor:
    """Runs the rounds: starts, drains and stops the roles of each, and is steered while it goes.

    Args:
        config: The run's config.
        store: The run store (started).
        pool: The policy's endpoints (their token counts and retries are shown).
        models: The served models (the updater changes the policy between rounds).
        roles: The five roles.
        stats: The live counters the displays read.
        updater: Trains and swaps between rounds.
        server_metrics: Polls the engine's own counters, where the endpoints expose them.
        trackers: The experiment trackers each finished round's numbers go to (opened).
    """

    def __init__(self, config: RunConfig, store: RunStore, pool: EndpointPool, models: Models, roles: Roles,
                 stats: RunStats, updater: ModelUpdater, server_metrics: ServerMetrics | None = None,
                 trackers: Trackers | None = None) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.models = models
        self.roles = roles
        self.stats = stats
        self.updater = updater
        self.server_metrics = server_metrics
        self.trackers = trackers
        self.summaries: list[RoundSummary] = []
        self.stopped = False
        self.finish_after_round = False
        self._stop = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._pipeline: RoundPipeline | None = None
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
        return last.round + 1 if last.state in ROUND_CLOSED_STATES else last.round

    async def run(self) -> list[RoundSummary]:
        """Run the rounds left (from where a resumed run stopped) until the last, a stop or a finish."""
        metrics = asyncio.create_task(self._metrics_loop(), name="metrics")
        try:
            k = self.next_round()
            while k <= self.config.rounds:
                task = asyncio.create_task(self._round(k), name=f"round-{k}")
                stop = asyncio.create_task(self._stop.wait())
                try:
                    done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    if not task.done():  # a stop request, or this run itself cancelled (a second Ctrl-C)
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                if task not in done:
                    self.stopped = True
                    self.stats.state = "stopped"
                    self.store.event("stopped", f"stopped by request during round {k}", round=k)
                    break
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
        config = self.config.for_round(k)
        replay = self._replay(config)
        if replay:  # a replayed round asks exactly these again: that is its whole volume
            config = config.model_copy(update={"close_on": "instructions", "round_size": len(replay),
                                               "max_proposed": len(replay)})
        account = self._account(k, config)
        state = next((r.state for r in self.store.rounds() if r.round == k), None)
        summary = RoundSummary(round=k, model_version=version, proposed=0, kept=0, rejected={}, failed={},
                               generation_s=0.0, prompt_tokens=0, completion_tokens=0)
        self.stats.round, self.stats.account = k, account
        context = RoundContext(round=k, config=config, allocate=account.allocate, replay=replay,
                               note=lambda kind, message, level: self.store.event(kind, message, level=level, round=k))
        for role in self.roles.all():
            await role.on_round_start(context)
        if state in (None, "generating"):
            await self._generation(account, config, state is None, summary)
        summary.proposed, summary.kept = account.proposed, account.kept
        summary.rejected, summary.failed = dict(account.rejected), dict(account.failed)
        outcome = await self._update_model(k, state, summary) if self.config.training_backend() != "none" else "done"
        for role in self.roles.all():
            await role.on_round_end()
        # The round is named after the model that generated it, not the one it trained.
        detail = account.closing_reason()
        if outcome == "rejected":
            detail = f"its model was rejected by the evaluation gate; {detail}"
        await self.store.write(op_for(RoundEvent(id=f"round-{k}", round=k, model_version=version,
                                                 state=outcome, detail=detail)))
        summary.state = outcome
        self.summaries.append(summary)
        self.stats.finished_rounds = list(self.summaries)
        self._track(summary)

    def _track(self, summary: RoundSummary) -> None:
        """The finished round's numbers to the trackers (each tracker's own failures are handled there)."""
        if self.trackers is None:
            return
        try:
            metrics = round_metrics(summary, self.store)
        except Exception as exc:  # noqa: BLE001 - observation must never stop the run
            log.debug("round metrics failed", exc_info=True)
            self.store.event("tracking", f"round {summary.round}: its metrics could not be gathered ({exc})",
                             level="warning", round=summary.round)
            return
        self.trackers.log_round(metrics, summary.round)

    async def _update_model(self, k: int, state: str | None, summary: RoundSummary) -> str:
        """Train (unless the round had trained already) and swap; the round's outcome."""
        checkpoint, budget = None, self.stats.budget
        if state in (None, "generating", "training"):
            started = time.monotonic()
            with budget.phase("training"):
                checkpoint = await self.updater.train(k)
            summary.training_s = time.monotonic() - started
        elif state == "swapping":
            checkpoint = self.updater.trained_checkpoint(k)
        if checkpoint is None:
            return "done"
        summary.checkpoint = str(checkpoint.path)
        started = time.monotonic()
        with budget.phase("swap"):
            outcome = await self.updater.swap(k, checkpoint)
        summary.swap_s = time.monotonic() - started
        return "rejected" if outcome == "rejected" else "done"

    async def _generation(self, account: RoundAccount, config: RunConfig, new: bool, summary: RoundSummary) -> None:
        k, version = account.round, self.models.policy.version
        if new:
            await self.store.write(op_for(RoundEvent(id=f"round-{k}", round=k, model_version=version,
                                                     state="generating", detail=f"on model {version}")))
        else:
            self.store.event("round", f"round {k} resumed: {account.proposed} proposed, {account.kept} kept so far",
                             round=k)
        self.stats.state = "generating"
        tokens_before = self._tokens()
        budget = self.stats.budget
        before = budget.round_tail, budget.saturated_s, budget.observed_s
        account.clock = budget.clock
        account.on_close = lambda: budget.switch("generation", "round_tail")
        started = time.monotonic()
        self._pipeline = RoundPipeline(config, self.store, self.roles, account, self.stats, self._running, self.pool)
        try:
            with budget.phase("generation"):
                await self._pipeline.run()
        finally:
            self._pipeline = None
            account.on_close = None
            budget.settle()  # the seconds since the last sample are the round's, not the next one's
        summary.generation_s = time.monotonic() - started
        summary.prompt_tokens, summary.completion_tokens = (a - b for a, b in zip(self._tokens(), tokens_before))
        summary.tail_s, summary.past_quota = budget.round_tail - before[0], account.past_quota
        budget.past_quota += account.past_quota
        observed = budget.observed_s - before[2]
        summary.saturated_share = (budget.saturated_s - before[1]) / observed if observed > 0 else None

    def _replay(self, config: RunConfig) -> tuple[SeedTask, ...]:
        """The instructions of an earlier round that this round asks again (none for most rounds)."""
        earlier = config.proposer.replay_round
        if not earlier:
            return ()
        tasks = tuple(SeedTask(instruction=i, input=x) for i, x in self.store.screened_tasks(earlier))
        if not tasks:
            raise UserError(f"proposer.replay_round = {earlier}, but round {earlier} has no instruction to replay")
        return tasks

    def _account(self, k: int, config: RunConfig) -> RoundAccount:
        """The round's account as the store has it (all zeros for a new round)."""
        account = RoundAccount(round=k, quota=config.round_size, cap=config.max_proposed, close_on=config.close_on,
                               tasks_per_call=config.proposer.tasks_per_call, min_pending=config.proposer.min_pending,
                               prior_rate=self._prior_rate(k))
        for (state, reason), n in self.store.reasons(k).items():
            (account.rejected if state == "rejected" else account.failed)[reason_kind(reason)] += n
        counts = self.store.counts(k)
        account.proposed = sum(counts.values())
        account.kept = counts.get("kept", 0)
        account.in_pipeline = sum(counts.get(s, 0) for s in PENDING_STATES)
        account.screened_finished = self.store.screened_finished(k)
        account.next_seq = self.store.max_seq(k) + 1
        account.calls = account.next_seq  # fresh example draws after a resume
        account.answers = account.screened - counts.get("proposed", 0)  # past the Responder (failed ones too)
        return account

    def _prior_rate(self, k: int) -> float:
        """The keep rate of screened instructions in the previous round (1 when there is none yet)."""
        if k <= 1:
            return 1.0
        finished = self.store.screened_finished(k - 1)
        return self.store.counts(k - 1).get("kept", 0) / finished if finished else 1.0

    # -- observation -------------------------------------------------------------------------
    def _tokens(self) -> tuple[int, int]:
        stats = self.pool.stats
        return sum(s.prompt_tokens for s in stats), sum(s.completion_tokens for s in stats)

    def refresh(self) -> None:
        """Bring the shared counters up to date (displays call this before drawing)."""
        self.stats.prompt_tokens, self.stats.completion_tokens = self._tokens()
        self.stats.requests = sum(s.requests for s in self.pool.stats)
        if self._pipeline is not None:
            self.stats.queue_depth = self._pipeline.queue_depths()

    def _write_metrics(self) -> None:
        self.refresh()
        snapshot = self.stats.snapshot()
        self.store.metrics(self.stats.round or None, snapshot)
        # Also where `isheep monitor` finds it after the run, and a resumed run adds its own to.
        self.store.submit(self.store.set_time_budgets(snapshot["budget"]))

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.metrics_interval_s)
            server = None
            if self.server_metrics is not None:
                try:
                    server = self.stats.server = await self.server_metrics.read()
                except Exception:  # noqa: BLE001 - observation must never stop the run
                    log.debug("reading server metrics failed", exc_info=True)
            self.stats.budget.observe(self._saturated(server))
            self._write_metrics()

    def _saturated(self, server: dict[str, float] | None) -> bool | None:
        """Whether the server had requests waiting at this sample; None: nothing says (no metrics).

        Its /metrics' ``waiting``, or the pool's own signal where it has one (an endpoint that
        reported a queue at its last observation).
        """
        pool = self.pool.saturated
        waiting = (server or {}).get("waiting")
        if waiting is None:
            return True if pool else None
        return waiting > 0 or pool

    def _on_retry(self, err: EndpointError, url: str, attempt: int, delay: float) -> None:
        self.stats.retries += 1
        self.stats.last_error = str(err)[:200]
        self.store.event("retry", f"{url}: {err.reason} (attempt {attempt}, retrying in {delay:.1f}s)",
                         level="warning", round=self.stats.round or None,
                         data={"reason": err.reason, "status": err.status})
