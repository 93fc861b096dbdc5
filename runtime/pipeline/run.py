"""A run: set up, run the rounds, tear down. The one entry point behind ``isheep run`` and ``isheep.run``.

:class:`Run` is an async context manager that owns every resource it starts (the endpoints and
any managed server, the run store, the log file, the display) on one
:class:`contextlib.AsyncExitStack`, so whatever happens they are released in reverse order.
It also keeps the session's time budget (:mod:`.budget`) from its creation to the end of its
teardown: start-up, the server's start and shutdown here, the rounds' phases in the supervisor.
Everything that can be wrong with the user's input (config, seeds, templates, endpoint, model
name) is checked before the run folder is written, so a bad start leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from isheep.runtime.core.config import RunConfig, missing_trackers
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import SeedTask
from isheep.runtime.core.types import Models, ServedModel
from isheep.runtime.data import load_eval_prompts
from isheep.runtime.evals import Party
from isheep.runtime.evals.instructions import SHIPPED as INSTRUCTIONS
from isheep.runtime.serving import ServerMetrics, Serving, SwapError, open_serving
from isheep.runtime.serving.endpoints import EndpointPool
from isheep.runtime.store import DB_NAME, RunStore, checkpoint_from_row, model_row_op
from isheep.runtime.training import TrlBackend
from isheep.runtime.training.backend import Tracking

from .budget import TimeBudget
from .evaluation import Gate
from .runlog import RunLog
from .stats import RoundSummary, RunStats
from .supervisor import Supervisor
from .tracking import Trackers, build_trackers
from .updater import ModelUpdater
from .wiring import Inputs, build_roles, load_inputs

log = logging.getLogger("isheep")
Progress = Callable[[str], None]


class Display(Protocol):
    """Something that shows a run while it goes (the rich progress, the Textual monitor)."""

    def start(self, supervisor: Supervisor) -> None: ...

    def stop(self) -> None: ...


@dataclass
class RunResult:
    """What a finished (or stopped) run leaves: where, what, and how it went."""

    folder: Path
    model: str
    rounds: list[RoundSummary]
    totals: dict[str, int]
    reasons: dict[tuple[str, str], int]
    stopped: bool
    elapsed_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: Where this session's wall time went; complete (shutdown included) once the run is left.
    budget: TimeBudget | None = None
    #: The time budgets of the run's earlier sessions, when it was resumed (as stored).
    budget_before: list[dict[str, Any]] = field(default_factory=list)


def version() -> str:
    try:
        from importlib.metadata import version as _v

        return _v("isheep")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0+unknown"


def default_folder(config: RunConfig) -> Path:
    return Path("runs") / (config.name or time.strftime("run-%Y%m%d-%H%M%S"))


class Run:
    """One run of the loop and everything it holds while it goes.

    ``async with Run(config) as run:`` checks the inputs, starts serving (the user's endpoints,
    or a managed vLLM server), opens the run store and builds the roles; ``await run.execute()``
    runs the rounds; leaving the block releases it all, the server included, whatever happened.

    Args:
        config: The run's config (``load_config`` builds one).
        resume: Continue the run in ``config.out`` where it stopped.
        display: Shown while the rounds run (started and stopped by :meth:`execute`).
        environ: Where API keys and ``OPENAI_*`` are looked up (default: the process's).
        roles: Replacement roles by name (see :mod:`.wiring`).
        progress: Receives start-up messages (model provisioning, server start).

    Raises:
        UserError: bad input of any kind (config, seeds, templates, endpoint, model name, a run
            folder that holds another run); nothing is written when it is raised on entry.
    """

    def __init__(self, config: RunConfig, *, resume: bool = False, display: Display | None = None,
                 environ: Mapping[str, str] | None = None, roles: Mapping[str, Callable[..., Any]] | None = None,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.resume = resume
        self.display = display
        self.environ = os.environ if environ is None else environ
        self.replace_roles = roles
        self.progress = progress
        self.folder = Path(config.out) if config.out else default_folder(config)
        self.supervisor: Supervisor | None = None
        self.model = ""
        self.budget = TimeBudget()  # the session's wall time starts now
        self.result: RunResult | None = None
        self._budget_before: list[dict[str, Any]] = []
        self._stack = contextlib.AsyncExitStack()

    # -- set-up and tear-down ----------------------------------------------------------------
    async def __aenter__(self) -> "Run":
        try:
            with self.budget.phase("startup"):
                await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            with self.budget.phase("shutdown"):
                await self._stack.aclose()
        finally:
            self.budget.close()
            self._keep_budget()

    def _keep_budget(self) -> None:
        """The finished session's budget, shutdown included, to the result and the (closed) store."""
        if self.result is not None:
            self.result.elapsed_s = self.budget.wall_s
        if self.supervisor is None:
            return
        try:  # the store closed before the servers stopped: opened once more for this one write
            store = RunStore.open(self.folder)
            try:
                store.write_sync(store.set_time_budgets(self.supervisor.stats.budget_sessions()))
            finally:
                store.close_sync()
        except Exception:  # noqa: BLE001 - the budget up to the last metrics write is stored already
            log.warning("the run's final time budget could not be stored", exc_info=True)

    async def _open(self) -> None:
        config, folder = self.config, self.folder
        log_file = RunLog()
        self._stack.callback(log_file.close)  # released last: teardown's own messages still land in it
        if not self.resume and (folder / DB_NAME).exists():
            raise UserError(f"{folder} already holds a run; continue it with --resume {folder}")
        # Inputs first: a bad seed file or template must not leave a half-made run folder.
        inputs = load_inputs(config)
        missing = missing_trackers(config.trainer.report_to) if config.training_backend() == "trl" else []
        if missing:  # a resumed run's stored trackers: checked before it trains again
            raise UserError(f"trainer.report_to: {', '.join(missing)} not installed: pip install 'isheep[trackers]'")
        if config.evaluation.enabled:  # a bad prompt file is refused before anything starts
            load_eval_prompts(config.evaluation.prompts, config.evaluation.limit, default=INSTRUCTIONS)
        # A managed server's start is a phase of its own; connecting to an endpoint is start-up.
        with self.budget.phase("server_start") if config.managed else contextlib.nullcontext():
            serving = await open_serving(config, folder, self.environ, self.progress)
            self._stack.push_async_callback(serving.aclose)
            servers = serving.servers
            expected = servers[0].served_name if servers else config.model
            also = _resume_names(folder, config) if self.resume else ()
            self.model = config.model = await serving.pool.verify(expected, also=also)
        if config.critic.endpoint is not None:  # the judge asks there for the base model, by the run's name
            await serving.critic_pool.verify(self.model)
        store = self._open_store(serving)
        self._stack.push_async_callback(store.aclose)
        self._report_serving(serving, store)
        named = [*config.endpoints, *(ep for ep in (config.critic.endpoint, config.evaluation.judge_endpoint) if ep)]
        secrets = [ep.resolved_key(self.environ) or "" for ep in named] + serving.secrets
        log_file.attach(folder, secrets)
        log.info("run %s: model %s on %s", folder, self.model, ", ".join(serving.pool.urls))
        inputs.history = [SeedTask(instruction=i, input=x) for i, x in store.screened_tasks()]
        self.supervisor = await self._build(store, serving, inputs)
        await store.start()

    def _report_serving(self, serving: Serving, store: RunStore) -> None:
        """Servers' restarts, replicas taken out and every admin call of a swap go to the event log."""
        def server_event(level: str, message: str) -> None:
            store.event("server", message, level=level)

        def dropped(url: str, why: str) -> None:
            store.event("server", f"endpoint {url} taken out of the pool: {why}", level="error")

        hooks = [(server, "on_event", server_event) for server in serving.servers]
        hooks += [(pool, "on_drop", dropped) for pool in {id(p): p for p in (serving.pool, serving.critic_pool)}.values()]
        for swapper in serving.swappers():
            if hasattr(swapper, "on_event"):
                hooks.append((swapper, "on_event", server_event))
            api = getattr(swapper, "api", None)
            if api is not None:
                hooks.append((api, "on_call", lambda call: store.event("swap", call)))
        for owner, attribute, hook in hooks:
            setattr(owner, attribute, hook)
            self._stack.callback(setattr, owner, attribute, None)  # the store closes first

    def _open_store(self, serving: Serving) -> RunStore:
        if self.resume:
            store = RunStore.open(self.folder)
            store.write_sync(store.set_meta("config", self.config.public_dict()))
            self._budget_before = store.time_budgets()  # this session's is added to them, never over them
            return store
        store = RunStore.create(self.folder, {
            "isheep_version": version(), "run_name": self.config.name or self.folder.name,
            "config": self.config.public_dict(), "model": self.model})
        store.write_sync([model_row_op("v0", parent=None, round=0, served_name=self.model, state="serving",
                                       path=str(serving.base_path) if serving.base_path else None, detail={})])
        return store

    async def _build(self, store: RunStore, serving: Serving, inputs: Inputs) -> Supervisor:
        config = self.config
        base = ServedModel(version="v0", name=self.model, path=serving.base_path)
        with self.budget.phase("swap"):  # a resumed run's trained model served again
            models = Models(policy=await _restore_policy(store, serving, base, self.progress), base=base)
        stats = RunStats(run_name=config.name or self.folder.name, folder=str(self.folder),
                         endpoints=serving.pool.urls, rounds_total=config.rounds, model_version=models.policy.version,
                         budget=self.budget, budget_before=self._budget_before)
        tracking = Tracking.for_run(config.trainer, self.folder, stats.run_name)
        backend = TrlBackend(config.trainer, training_progress(store, stats), tracking) \
            if config.training_backend() == "trl" else None
        roles = build_roles(config, serving, models, inputs, backend, self.replace_roles)
        gate = await self._gate(serving, base) if config.evaluation.enabled else None
        updater = ModelUpdater(config, store, models, stats, roles.trainer, serving.swapper, gate)
        return Supervisor(config, store, serving.pool, models, roles, stats, updater,
                          ServerMetrics(serving.pool.urls, serving.keys), self._trackers(tracking, store))

    async def _gate(self, serving: Serving, base: ServedModel) -> Gate:
        """The evaluation gate; with ``evaluation.judge`` its judge, the base model: at
        ``evaluation.judge_endpoint``, else where the base-model critic asks (a second managed
        server, ``critic.endpoint``, or the base beside the adapters of the lora swap)."""
        evaluation = self.config.evaluation
        judge = None
        if evaluation.judge and evaluation.judge_endpoint is not None:
            pool = EndpointPool.from_config([evaluation.judge_endpoint], self.config.client, self.environ)
            self._stack.push_async_callback(pool.aclose)
            judge = Party(pool, await pool.verify(evaluation.judge_model or base.name))
        elif evaluation.judge:
            judge = Party(serving.critic_pool, base.name)
        return Gate(evaluation, serving.pool, judge=judge)

    def _trackers(self, tracking: Tracking, store: RunStore) -> Trackers | None:
        """The run's experiment trackers, opened (closed before the store: their warnings land in it)."""
        if not tracking.report_to:
            return None
        trackers = build_trackers(tracking, lambda message: store.event("tracking", message, level="warning"))
        self._stack.callback(trackers.close)
        return trackers.open(self.config.public_dict())

    # -- running -----------------------------------------------------------------------------
    async def execute(self) -> RunResult:
        """Run the rounds left; the result once they are done, or stopped by :meth:`request_stop`."""
        supervisor = self.supervisor
        assert supervisor is not None, "execute() runs inside `async with Run(...)`"
        if self.display is not None:
            self.display.start(supervisor)
        try:
            summaries = await supervisor.run()
        finally:
            if self.display is not None:
                self.display.stop()
        supervisor.refresh()
        store, stats = supervisor.store, supervisor.stats
        extra = {}
        if (self.folder / "checkpoints").is_dir():
            extra["checkpoints"] = f"{self.folder / 'checkpoints'} (serving {supervisor.models.policy.version} at the end)"
        failed = [row["version"] for row in store.models() if row["state"] == "failed"]
        if failed:
            extra["swap failures"] = (f"{', '.join(failed)} rolled back (the previous model kept serving; "
                                      "see the model events in the store)")
        # elapsed_s is the wall time so far; leaving the run adds its teardown (see _keep_budget).
        self.result = RunResult(
            folder=self.folder, model=self.model, rounds=summaries, totals=store.counts(), reasons=store.reasons(),
            stopped=supervisor.stopped, elapsed_s=self.budget.wall_s,
            prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens, extra=extra,
            budget=self.budget, budget_before=list(self._budget_before))
        return self.result

    def request_stop(self) -> bool:
        """Ask the rounds to stop cleanly; False while the run is still starting (nothing to save yet)."""
        if self.supervisor is None:
            return False
        self.supervisor.request_stop()
        return True


def training_progress(store: RunStore, stats: RunStats) -> Callable[[dict[str, Any]], None]:
    """Training job lines -> the live stats and the store's events (the monitor plots the losses)."""
    fields = ("step", "max_steps", "loss", "tokens_per_s", "epoch")

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "step":
            stats.training.update({k: event.get(k) for k in fields}, phase="training")
            store.event("train_step", f"step {event.get('step')}: loss {event.get('loss', 0):.4f}",
                        round=stats.round or None, data={k: event.get(k) for k in fields})
        elif kind == "phase":
            stats.training["phase"] = event.get("phase")
            if event.get("max_steps") is not None:
                stats.training["max_steps"] = event["max_steps"]
        elif kind == "start":
            stats.training.update({"examples": event.get("examples"), "device": event.get("device")})

    return on_event


async def _restore_policy(store: RunStore, serving: Serving, base: ServedModel,
                          progress: Progress | None) -> ServedModel:
    """The model a resumed run was serving: swapped back in on a fresh managed server."""
    row = store.serving_model()
    if row is None or row["version"] == base.version:
        return base
    if not serving.servers:  # an external endpoint kept serving it
        return ServedModel(version=row["version"], name=row["served_name"], path=Path(row["path"]) if row["path"] else None)
    checkpoint = checkpoint_from_row(row)
    if progress is not None:
        progress(f"restoring model {checkpoint.version} from {checkpoint.path}")
    try:
        return await serving.swapper.swap(checkpoint, base)
    except SwapError as exc:
        raise UserError(f"cannot serve {checkpoint.version} again on resume: {exc}") from None


def _resume_names(folder: Path, config: RunConfig) -> tuple[str, ...]:
    """Names an endpoint may rightly serve when a run resumes: the model that was serving, and,
    if the run stopped mid-swap, the one it was swapping to (a command swap may have happened)."""
    store = RunStore.open(folder, readonly=True)
    try:
        names = [row["served_name"] for row in store.models() if row["state"] in ("serving", "trained")]
        if config.swap.expect_model:
            names += [config.swap.expect_model.format(version=row["version"], round=row["round"])
                      for row in store.models() if row["state"] == "trained"]
    finally:
        store.close_sync()
    return tuple(names)


async def arun(config: RunConfig, *, resume: bool = False, display: Display | None = None,
               environ: Mapping[str, str] | None = None,
               on_supervisor: Callable[[Supervisor], None] | None = None,
               roles: Mapping[str, Callable[..., Any]] | None = None,
               progress: Progress | None = None) -> RunResult:
    """Run (or, with ``resume``, continue) the loop described by ``config``.

    With no endpoint configured, a managed vLLM server is started on the configured model (the
    embedded SmolLM2 by default) and stopped at the end, whatever happens.

    Args:
        config: The run's config (``isheep.load_config``).
        resume: Continue the run in ``config.out``.
        display: Shown while the rounds run.
        environ: Where API keys are looked up (default: the process's environment).
        on_supervisor: Called with the supervisor once the run is set up (to steer or watch it).
        roles: Replacement roles: a role name -> a factory called with the built-in role's
            arguments, returning a :class:`~isheep.runtime.core.roles.Role` (see
            ``examples/custom_role.py``).
        progress: Receives start-up messages.

    Returns:
        The :class:`RunResult`: folder, per-round summaries, totals, whether it was stopped.

    Raises:
        UserError: bad input (config, seeds, templates, endpoint, model name, a refused API
            key, a model whose output cannot be used); the run folder keeps what was done.
    """
    async with Run(config, resume=resume, display=display, environ=environ, roles=roles,
                   progress=progress) as handle:
        if on_supervisor is not None:
            assert handle.supervisor is not None
            on_supervisor(handle.supervisor)
        return await handle.execute()


def run(config: RunConfig, **kwargs: Any) -> RunResult:
    """Blocking form of :func:`arun` for scripts: ``isheep.run(config)`` (same arguments)."""
    return asyncio.run(arun(config, **kwargs))
