"""The run's own per-round metrics in the experiment trackers of ``trainer.report_to``.

Each round's training logs itself through TRL's callbacks (in the job); this module logs what
only the main process knows, once per round with step = the round: what was proposed and kept,
why the rest was dropped, the critic's mean scores, the training's loss and time, the swap's time
and the evaluation gate's scores and decision. It goes to one more tracker run named after the
isheep run, beside the rounds' training runs (:class:`~isheep.runtime.training.backend.Tracking`
keeps the names, folders and grouping of both in one place).

One :class:`Tracker` per tool, side by side, each importing its library only when opened. A
tracker that fails is reported once (a warning event) and turned off: observation never stops a run.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import time
import zlib
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Mapping

from isheep.runtime.training.backend import Tracking

from .stats import RoundSummary

log = logging.getLogger("isheep")


class Tracker(ABC):
    """One experiment tracker's run for the isheep run: opened once, a point per round, closed.

    Args:
        place: Where the run's trackers write and under which names.
        environ: The tracker's environment variables (the process's).
    """

    name: ClassVar[str]

    def __init__(self, place: Tracking, environ: Mapping[str, str]) -> None:
        self.place = place
        self.environ = environ

    @abstractmethod
    def open(self, config: dict[str, Any]) -> None:
        """Start (or, for a resumed isheep run, continue) the run, recording the run's config."""

    @abstractmethod
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Numbers of one round, at ``step`` = the round."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release whatever :meth:`open` started."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TensorBoardTracker(Tracker):
    """Event files in ``<tracking>/tensorboard/rounds``, beside the rounds' ``round-<k>`` (one logdir)."""

    name = "tensorboard"

    def open(self, config: dict[str, Any]) -> None:
        try:  # the writer the training stack has (torch's needs the tensorboard package)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(self.place.tensorboard_dir("rounds")))
        self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```")

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()
            self.writer = None


class WandbTracker(Tracker):
    """A wandb run named after the isheep run, in its group; offline (files only) without a key."""

    name = "wandb"

    def open(self, config: dict[str, Any]) -> None:
        import wandb

        place, environ = self.place, self.environ
        folder = place.wandb_dir(environ)
        os.makedirs(folder, exist_ok=True)
        # A stable id, so a resumed isheep run continues its wandb run rather than starting another.
        run_id = f"isheep-{zlib.crc32(str(place.folder).encode()):08x}"
        self.run = wandb.init(
            project=place.project_for("WANDB_PROJECT", environ), name=place.run_name,
            group=environ.get("WANDB_RUN_GROUP") or place.run_name, job_type="rounds", id=run_id, resume="allow",
            dir=folder, mode="offline" if place.wandb_offline(environ) else None, config=config,
            settings=wandb.Settings(silent=True, console="off", disable_git=True, x_disable_stats=True,
                                    save_code=False))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        if getattr(self, "run", None) is not None:
            self.run.finish()
            self.run = None


class MlflowTracker(Tracker):
    """An MLflow run named after the isheep run; the rounds' training runs are its children.

    The store is ``file:<tracking>/mlruns`` unless ``MLFLOW_TRACKING_URI`` names another. The run
    is found again by its ``isheep.folder`` tag when the isheep run resumes.
    """

    name = "mlflow"

    def open(self, config: dict[str, Any]) -> None:
        place, environ = self.place, self.environ
        uri = place.mlflow_uri(environ)
        if not environ.get("MLFLOW_TRACKING_URI"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient(tracking_uri=uri)
        experiment = place.project_for("MLFLOW_EXPERIMENT_NAME", environ)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        folder = str(place.folder)
        earlier = client.search_runs([experiment_id], f"tags.`isheep.folder` = '{folder}'", max_results=1)
        if earlier:
            self.run_id = earlier[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            run = client.create_run(experiment_id, run_name=place.run_name,
                                    tags={"isheep.folder": folder, "isheep.run": place.run_name})
            self.run_id = run.info.run_id
            client.log_dict(self.run_id, config, "isheep_config.json")
        # Each round's training run (TRL's MLflow callback, in the job) shows under this one.
        place.job_tags["mlflow.parentRunId"] = self.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self) -> None:
        if getattr(self, "run_id", None) is not None:
            self.place.job_tags.pop("mlflow.parentRunId", None)
            self.client.set_terminated(self.run_id)
            self.run_id = None


class TrackioTracker(Tracker):
    """A trackio run named after the isheep run, in the local database under ``TRACKIO_DIR``."""

    name = "trackio"

    def open(self, config: dict[str, Any]) -> None:
        # trackio reads its folder once, when first imported.
        os.environ.setdefault("TRACKIO_DIR", self.place.trackio_dir(self.environ))
        import trackio

        wanted = {"group": self.place.run_name, "embed": False, "auto_log_cpu": False, "auto_log_gpu": False}
        known = inspect.signature(trackio.init).parameters  # older trackio releases lack some of these
        with contextlib.redirect_stdout(io.StringIO()):  # its banner would land in the run's display
            self.run = trackio.init(project=self.place.project or "isheep", name=self.place.run_name, config=config,
                                    resume="allow", **{k: v for k, v in wanted.items() if k in known})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        if getattr(self, "run", None) is not None:
            import trackio

            with contextlib.redirect_stdout(io.StringIO()):
                self.run.finish()
            # Or trackio's exit hook finishes it again, printing into the terminal.
            if trackio.context_vars.current_run.get() is self.run:
                trackio.context_vars.current_run.set(None)
            self.run = None


TRACKERS: dict[str, type[Tracker]] = {t.name: t for t in (TensorBoardTracker, WandbTracker, MlflowTracker,
                                                          TrackioTracker)}


class Trackers:
    """The run's trackers together; each one that fails is reported once and turned off.

    Args:
        trackers: Unopened trackers.
        warn: Receives the one line about a tracker that failed (the run's event log).
    """

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None]) -> None:
        self.trackers = list(trackers)
        self.warn = warn
        self.active: list[Tracker] = []

    def _call(self, tracker: Tracker, what: str, action: Callable[[], None]) -> bool:
        try:
            action()
            return True
        except Exception as exc:  # noqa: BLE001 - a tracker must never stop the run
            log.debug("%s tracker: %s failed", tracker.name, what, exc_info=True)
            self.warn(f"the {tracker.name} tracker failed to {what} ({type(exc).__name__}: {exc}); "
                      "it is off for the rest of the run")
            if tracker in self.active:
                self.active.remove(tracker)
                with contextlib.suppress(Exception):
                    tracker.close()
            return False

    def open(self, config: dict[str, Any]) -> "Trackers":
        for tracker in self.trackers:
            self.active.append(tracker)
            self._call(tracker, "start", lambda t=tracker: t.open(config))
        return self

    def log_round(self, metrics: dict[str, float], step: int) -> None:
        for tracker in list(self.active):
            self._call(tracker, f"log round {step}", lambda t=tracker: t.log(metrics, step))

    def close(self) -> None:
        for tracker in list(self.active):
            if self._call(tracker, "finish", tracker.close):
                self.active.remove(tracker)

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def build_trackers(place: Tracking, warn: Callable[[str], None],
                   environ: Mapping[str, str] | None = None) -> Trackers:
    """The trackers ``place.report_to`` names (unopened)."""
    environ = os.environ if environ is None else environ
    return Trackers([TRACKERS[name](place, environ) for name in place.report_to], warn)


def round_metrics(summary: RoundSummary, store: Any) -> dict[str, float]:
    """A finished round's numbers for the trackers, all under ``isheep/``.

    Args:
        summary: The round's summary (counts, reasons, times).
        store: The run store (critic scores, and the lineage row of the model the round trained).
    """
    k = summary.round
    out: dict[str, float] = {
        "proposed": summary.proposed, "kept": summary.kept, "acceptance": summary.acceptance,
        "generation_s": summary.generation_s, "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens, "training_s": summary.training_s,
        "swap_and_gate_s": summary.swap_s,  # the updater's swap step: the swap, the gate's evaluation, pruning
        # The tail is part of generation_s: the seconds after proposing ended, and the answers it cost.
        "tail_s": summary.tail_s, "past_quota": summary.past_quota,
    }
    if summary.saturated_share is not None:  # unknown without the server's metrics: left out, not 0
        out["saturated_share"] = summary.saturated_share
    out.update({f"rejected/{reason}": n for reason, n in summary.rejected.items()})
    out.update({f"failed/{reason}": n for reason, n in summary.failed.items()})
    for aspect in ("quality", "following"):
        counts = {score: n for (r, score), n in store.score_counts(aspect).items() if r == k}
        if counts:
            out[f"critic/{aspect}_mean"] = sum(s * n for s, n in counts.items()) / sum(counts.values())
    row = store.model(f"v{k}")  # the version round k trained (the updater's naming)
    if row is not None and row["round"] == k:
        out.update(_model_metrics(json.loads(row["detail"] or "{}")))
    return {f"isheep/{key}": float(value) for key, value in out.items()}


def _model_metrics(detail: dict[str, Any]) -> dict[str, float]:
    """Training, swap, evaluation and gate numbers from a lineage row's detail (what is there)."""
    out: dict[str, float] = {}
    losses = [p["loss"] for p in detail.get("loss") or [] if p.get("loss") is not None]
    if losses:
        out.update({"train/loss_first": losses[0], "train/loss_last": losses[-1]})
    out.update({f"train/{k}": v for k, v in (detail.get("metrics") or {}).items() if _number(v)})
    if _number(detail.get("examples")):
        out["train/examples"] = detail["examples"]
    if _number((detail.get("swap") or {}).get("seconds")):
        out["swap_s"] = detail["swap"]["seconds"]
    evaluation = detail.get("evaluation") or {}
    interval = evaluation.get("interval") or {}
    out.update({f"eval/score_{k}": v for k, v in interval.items() if k in ("mean", "low", "high") and _number(v)})
    if _number(evaluation.get("failed")):
        out["eval/unanswered"] = evaluation["failed"]
    gate = detail.get("gate") or {}
    if gate.get("decision") in ("kept", "rejected"):
        out["gate/kept"] = float(gate["decision"] == "kept")
    for part in ("score", "best_score", "difference"):
        out.update({f"gate/{part}_{k}": v for k, v in (gate.get(part) or {}).items()
                    if k in ("mean", "low", "high") and _number(v)})
    if _number((gate.get("sign_test") or {}).get("p_worse")):
        out["gate/p_worse"] = gate["sign_test"]["p_worse"]
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
