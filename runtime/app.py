"""Set up a run, run it, tear it down: the one entry point behind ``isheep run`` and ``isheep.run``.

Everything that can be wrong with the user's input (config, seeds, templates, endpoint, model
name) is checked before the run folder is written, so a bad start leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from isheep.agents.base import Models, ServedModel
from isheep.agents.critic import Critic
from isheep.agents.curator import Curator
from isheep.agents.proposer import Proposer
from isheep.agents.responder import Responder
from isheep.agents.trainer import Trainer, TrlBackend
from isheep.prompts import load_template

from .config import RunConfig
from .dedup import RougeIndex
from .errors import UserError
from .evaluation import Evaluator, load_eval_prompts
from .seeds import load_seeds
from .server_metrics import ServerMetrics
from .serving import Serving, open_serving
from .stats import RoundSummary, RunStats
from .records import checkpoint_from_row, model_row_op
from .store import RunStore
from .supervisor import Supervisor
from .swap import SwapError

log = logging.getLogger("isheep")


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


def version() -> str:
    try:
        from importlib.metadata import version as _v

        return _v("isheep")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0+unknown"


class _Redact(logging.Filter):
    """Masks anything that looks like a bearer token or API key in log records."""

    _PATTERN = re.compile(r"(Bearer\s+|api[_-]?key['\"=:\s]+|sk-)[A-Za-z0-9._\-]{6,}", re.IGNORECASE)

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = self._PATTERN.sub(r"\1***", message), None
        return True


def _attach_log(folder: Path, secrets: list[str]) -> logging.Handler:
    path = folder / "run.log"
    path.touch(mode=0o600, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redact(secrets))
    root = logging.getLogger("isheep")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def default_folder(config: RunConfig) -> Path:
    return Path("runs") / (config.name or time.strftime("run-%Y%m%d-%H%M%S"))


async def arun(config: RunConfig, *, resume: bool = False, display: Display | None = None,
               environ: Mapping[str, str] | None = None,
               on_supervisor: Callable[[Supervisor], None] | None = None,
               roles: Mapping[str, Callable[..., Any]] | None = None,
               progress: Callable[[str], None] | None = None) -> RunResult:
    """Run (or, with ``resume``, continue) the loop described by ``config``.

    With no endpoint configured, a managed vLLM server is started on the configured model
    (the embedded SmolLM2 by default) and stopped at the end, whatever happens.
    ``roles`` replaces built-in roles: a mapping from a role name (``proposer``, ``responder``,
    ``critic``, ``curator``, ``trainer``) to a factory called with the same arguments as the
    built-in class (see ``examples/custom_role.py``). ``progress`` receives start-up messages.
    """
    environ = os.environ if environ is None else environ
    started = time.monotonic()
    folder = Path(config.out) if config.out else default_folder(config)
    if not resume and (folder / "isheep.db").exists():
        raise UserError(f"{folder} already holds a run; continue it with --resume {folder}")

    # Inputs first: a bad seed file or template must not leave a half-made run folder.
    seeds = load_seeds(config.proposer.seeds, minimum=config.proposer.num_examples)
    propose_template = load_template("propose", config.proposer.template)
    critic_templates = {"quality": load_template("critic_quality", config.critic.quality_template),
                        "following": load_template("critic_following", config.critic.following_template)}
    eval_prompts = load_eval_prompts(config.evaluation.prompts, config.evaluation.limit) \
        if config.evaluation.enabled else None
    store: RunStore | None = None
    handler: logging.Handler | None = None
    serving: Serving | None = None
    try:
        serving = await open_serving(config, folder, environ, progress)
        servers = serving.servers
        expected = servers[0].served_name if servers else config.model
        model = await serving.pool.verify(expected, also=_resume_names(folder, config) if resume else ())
        config.model = model
        if resume:
            store = RunStore.open(folder)
            store.write_sync(store.set_meta("config", config.public_dict()))
        else:
            store = RunStore.create(folder, {
                "isheep_version": version(), "run_name": config.name or folder.name,
                "config": config.public_dict(), "model": model,
            })
            store.write_sync([model_row_op("v0", parent=None, round=0, served_name=model, state="serving",
                                           path=str(serving.base_path) if serving.base_path else None, detail={})])
        secrets = [ep.resolved_key(environ) or "" for ep in config.endpoints] + serving.secrets
        for server in servers:
            server.on_event = lambda level, message: store.event("server", message, level=level)
        handler = _attach_log(folder, secrets)
        log.info("run %s: model %s on %s", folder, model, ", ".join(serving.pool.urls))

        base = ServedModel(version="v0", name=model, path=serving.base_path)
        models = Models(policy=await _restore_policy(store, serving, base, progress), base=base)
        pool = serving.pool
        index = RougeIndex(config.proposer.rouge_threshold, [s.instruction for s in seeds])
        for text in store.screened_instructions():
            index.add(text)
        make = {"proposer": Proposer, "responder": Responder, "critic": Critic, "curator": Curator,
                "trainer": Trainer, **(roles or {})}
        proposer = make["proposer"](config.proposer, pool, models, seeds, index, propose_template, seed=config.seed)
        if config.proposer.num_machine_examples:
            from .messages import SeedTask

            proposer.machine = [SeedTask(instruction=r["instruction"], input=r["input"])
                                for r in store.query("SELECT instruction, input FROM items WHERE"
                                                     " NOT (stage='proposer' AND state='rejected')")]
        stats = RunStats(run_name=config.name or folder.name, folder=str(folder), endpoints=pool.urls,
                         rounds_total=config.rounds, model_version=models.policy.version)
        backend = TrlBackend(config.trainer, _training_progress(store, stats)) \
            if config.training_backend() == "trl" else None
        critic = make["critic"](config.critic, serving.critic_pool, models, critic_templates)
        supervisor = Supervisor(
            config, store, pool, models,
            proposer=proposer,
            responder=make["responder"](config.responder, pool, models),
            critic=critic,
            curator=make["curator"](config.curator),
            trainer=make["trainer"](config.trainer, backend),
            stats=stats,
            swapper=serving.swapper,
            evaluator=Evaluator(config.evaluation, pool, critic, eval_prompts) if eval_prompts else None,
        )
        keys = [ep.resolved_key(environ) for ep in config.endpoints] or [s.api_key for s in servers[:1]]
        supervisor.server_metrics = ServerMetrics(pool.urls, keys)
        if on_supervisor is not None:
            on_supervisor(supervisor)
        await store.start()
        if display is not None:
            display.start(supervisor)
        try:
            summaries = await supervisor.run()
        finally:
            if display is not None:
                display.stop()
            if supervisor.critic.fell_back:
                store.event("critic", "endpoint refused response_format; the critic parsed text replies")
        supervisor.refresh()
        extra = {}
        if (folder / "checkpoints").is_dir():
            extra["checkpoints"] = f"{folder / 'checkpoints'} (serving {models.policy.version} at the end)"
        failed = [row["version"] for row in store.models() if row["state"] == "failed"]
        if failed:
            extra["swap failures"] = (f"{', '.join(failed)} rolled back (the previous model kept serving; "
                                      "see the model events in the store)")
        return RunResult(
            folder=folder, model=model, rounds=summaries, totals=store.counts(), reasons=store.reasons(),
            stopped=supervisor.stopped, elapsed_s=time.monotonic() - started,
            prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens, extra=extra)
    finally:
        for server in serving.servers if serving is not None else []:
            server.on_event = None  # the store closes first
        if store is not None:
            await store.aclose()
        if serving is not None:
            await serving.aclose()
        if handler is not None:
            logging.getLogger("isheep").removeHandler(handler)
            handler.close()


async def _restore_policy(store: RunStore, serving: Serving, base: ServedModel,
                          progress: Callable[[str], None] | None) -> ServedModel:
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


def _training_progress(store: RunStore, stats: RunStats) -> Callable[[dict[str, Any]], None]:
    """Training job lines -> the live stats and the store's events (the monitor plots them)."""

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "step":
            stats.training.update({k: event.get(k) for k in ("step", "max_steps", "loss", "tokens_per_s", "epoch")})
            store.event("train_step", f"step {event.get('step')}: loss {event.get('loss', 0):.4f}",
                        round=stats.round or None, data={k: event.get(k) for k in
                                                         ("step", "max_steps", "loss", "tokens_per_s", "epoch")})
        elif kind == "start":
            stats.training.update({"examples": event.get("examples"), "device": event.get("device")})

    return on_event


def run(config: RunConfig, **kwargs: Any) -> RunResult:
    """Blocking form of :func:`arun` for scripts: ``isheep.run(config)``."""
    return asyncio.run(arun(config, **kwargs))
