"""TRL SFT in a subprocess, one job per round (``trainer.backend = "trl"``).

The round's kept pairs are written as a prompt-completion dataset and trained by
``python -m isheep.runtime.training.sft_job`` (under ``trainer.launcher`` when set, and under
``accelerate launch``, one process a GPU, when ``trainer.num_processes`` is above 1), so the event
loop never blocks. The job reports on stdout, one JSON object a line: its phases (loading,
tokenizing, training with the number of steps, saving, merging), every step's loss and
tokens/s, and the result. The default is the recipe: LoRA on the base model with this round's
pairs, merged into full weights. With ``trainer.report_to``, TRL's own callbacks log each round's
training to the chosen experiment trackers (:class:`Tracking` says where, and under which names).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import netrc
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from isheep.runtime.core.config import TrainerConfig
from isheep.runtime.core.messages import user_turn
from isheep.runtime.core.process import new_session_dying_with_parent
from isheep.runtime.core.types import Checkpoint, TrainBackend, TrainingFailed, TrainRequest

JOB_MODULE = "isheep.runtime.training.sft_job"
#: ``accelerate launch`` as a module of this interpreter: no console script on PATH needed.
ACCELERATE_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]


def distributed_launch(num_processes: int) -> list[str]:
    """``accelerate launch`` starting ``num_processes`` copies of the job on this machine.

    The same line on GPUs and on a CPU: in each process torch picks NCCL when it sees CUDA, else
    the job trains on the CPU and accelerate joins the processes with gloo. ``--multi_gpu`` is
    accelerate's torchrun launcher (it spawns the processes); its ``--cpu`` would start a single
    process (accelerate's multi-CPU mode is MPI's ``mpirun``). Every other choice is explicit so a
    user's default accelerate config cannot change the run: one machine, no mixed precision or
    dynamo from the launcher (the job's own settings decide), ``trainer.gpus`` kept as the
    processes' devices (``--gpu_ids all``), and a free rendezvous port (0), so that two trainings
    on one machine do not collide on accelerate's default 29500.
    """
    return [*ACCELERATE_LAUNCH, "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--gpu_ids", "all", "--main_process_port", "0"]


def training_rows(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kept pairs as TRL prompt-completion rows: the loss covers the answer only."""
    return [{"prompt": [{"role": "user", "content": user_turn(ex["instruction"], ex.get("input") or "")}],
             "completion": [{"role": "assistant", "content": ex["response"]}]} for ex in examples]


@dataclass
class Tracking:
    """Where a run's experiment trackers write, and the names that keep its rounds together.

    Every round's training is a tracker run named ``<run name>-round-<k>``; the run's own per-round
    metrics (:mod:`isheep.runtime.pipeline.tracking`) are one more, named after the run. All of them
    share one project (wandb, trackio) or experiment (MLflow) and, where the tracker has one, a
    group named after the run. Everything stays under ``folder`` unless the tracker's own
    environment (``MLFLOW_TRACKING_URI``, ``WANDB_DIR``, ``TRACKIO_DIR``, ``WANDB_MODE``) says otherwise.

    Args:
        report_to: The trackers (``trainer.report_to``).
        folder: Their local folder (``trainer.tracking_dir``; default ``<run folder>/tracking``).
        run_name: The run's name.
        project: ``trainer.tracking_project``; None: the tracker's environment, else ``isheep``.
        job_tags: More MLflow tags of every round's run (the main process adds its run as their parent).
    """

    report_to: tuple[str, ...]
    folder: Path
    run_name: str
    project: str | None = None
    job_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_run(cls, trainer: TrainerConfig, run_folder: Path, run_name: str) -> "Tracking":
        folder = Path(trainer.tracking_dir or Path(run_folder) / "tracking").absolute()  # as the job's cwd may differ
        return cls(tuple(trainer.report_to), folder, run_name, trainer.tracking_project)

    def round_name(self, k: int) -> str:
        return f"{self.run_name}-round-{k}"

    def tensorboard_dir(self, label: str) -> Path:
        """One writer's folder: ``round-<k>`` for training, ``rounds`` for the run's metrics (one logdir, all runs)."""
        return self.folder / "tensorboard" / label

    def project_for(self, variable: str | None, environ: Mapping[str, str]) -> str:
        """The project (experiment) name: the config's, else the tracker's variable, else ``isheep``."""
        return self.project or (environ.get(variable) if variable else None) or "isheep"

    def wandb_dir(self, environ: Mapping[str, str]) -> str:
        return environ.get("WANDB_DIR") or str(self.folder)

    def wandb_offline(self, environ: Mapping[str, str]) -> bool:
        """Offline unless the user chose a mode or has a key (a login writes one to ~/.netrc)."""
        return not environ.get("WANDB_MODE") and not wandb_key_present(environ)

    def mlflow_uri(self, environ: Mapping[str, str]) -> str:
        return environ.get("MLFLOW_TRACKING_URI") or f"file:{(self.folder / 'mlruns').resolve()}"

    def trackio_dir(self, environ: Mapping[str, str]) -> str:
        return environ.get("TRACKIO_DIR") or str(self.folder / "trackio")

    def job_environment(self, k: int, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables round ``k``'s job sets for TRL's tracker callbacks (only names and paths: no secret)."""
        env: dict[str, str] = {}
        if "tensorboard" in self.report_to:
            env["TENSORBOARD_LOGGING_DIR"] = str(self.tensorboard_dir(f"round-{k}"))
        if "wandb" in self.report_to:
            env.update(WANDB_PROJECT=self.project_for("WANDB_PROJECT", environ), WANDB_DIR=self.wandb_dir(environ),
                       WANDB_RUN_GROUP=environ.get("WANDB_RUN_GROUP") or self.run_name, WANDB_JOB_TYPE="train")
            if self.wandb_offline(environ):
                env["WANDB_MODE"] = "offline"
        if "mlflow" in self.report_to:
            env.update(MLFLOW_TRACKING_URI=self.mlflow_uri(environ),
                       MLFLOW_EXPERIMENT_NAME=self.project_for("MLFLOW_EXPERIMENT_NAME", environ),
                       MLFLOW_TAGS=json.dumps({"isheep.run": self.run_name, "isheep.round": str(k), **self.job_tags}))
            if not environ.get("MLFLOW_TRACKING_URI"):
                env["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 keeps the file store behind this switch
        if "trackio" in self.report_to:
            env["TRACKIO_DIR"] = self.trackio_dir(environ)
        return env


def wandb_key_present(environ: Mapping[str, str]) -> bool:
    """Is there a wandb API key, in WANDB_API_KEY or the netrc file ``wandb login`` writes? (Never read out.)"""
    if environ.get("WANDB_API_KEY"):
        return True
    host = (environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    try:
        return netrc.netrc(environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class TrlBackend(TrainBackend):
    """TRL SFT in a subprocess, one per round.

    Args:
        config: The ``[trainer]`` section.
        on_progress: Called with every line the job reports (phases, steps, the result).
        tracking: Where ``trainer.report_to``'s trackers write; default: ``tracking`` beside the
            ``checkpoints`` folder of the run (the updater's layout), under the run folder's name.
    """

    def __init__(self, config: TrainerConfig, on_progress: Callable[[dict[str, Any]], None] | None = None,
                 tracking: Tracking | None = None) -> None:
        self.config = config
        self.on_progress = on_progress
        self.tracking = tracking

    def _tracking(self, request: TrainRequest) -> Tracking:
        settings = request.settings or self.config
        if self.tracking is not None:
            return self.tracking
        run_folder = request.out_dir.parent.parent  # <run>/checkpoints/round-NN
        return Tracking.for_run(settings, run_folder, run_folder.name)

    def spec(self, request: TrainRequest, data: Path) -> dict[str, Any]:
        """The job's whole input: paths and every hyper-parameter (written beside the checkpoint)."""
        c = request.settings or self.config
        tracking = self._tracking(request)
        lr = c.learning_rate if c.learning_rate is not None else (4e-4 if c.method == "lora" else 2e-5)
        return {
            "data": str(data), "out_dir": str(request.out_dir), "init_path": str(request.init_path),
            "init_adapter": str(request.init_adapter) if request.init_adapter else None, "method": c.method,
            "merge": c.merge, "lora_r": c.lora_r, "lora_alpha": c.lora_alpha, "lora_dropout": c.lora_dropout,
            "lora_targets": c.lora_targets, "learning_rate": lr, "epochs": c.epochs, "batch_size": c.batch_size,
            "gradient_accumulation": c.gradient_accumulation, "max_length": c.max_length, "seed": c.seed,
            "warmup_steps": c.warmup_steps, "warmup_ratio": c.warmup_ratio, "scheduler": c.scheduler,
            "eval_fraction": c.eval_fraction, "sft_overrides": c.sft_overrides,
            # This round's trackers (the round's own config may name others than the run's), one run each.
            "report_to": list(c.report_to), "run_name": tracking.round_name(request.round),
            "project": tracking.project_for(None, os.environ),  # TRL's project: trackio's (no variable of its own)
        }

    async def train(self, request: TrainRequest) -> Checkpoint:
        out = request.out_dir
        shutil.rmtree(out, ignore_errors=True)  # a resumed round trains again from scratch
        out.mkdir(parents=True, mode=0o700)
        settings = request.settings or self.config
        if "tensorboard" in settings.report_to:  # and its curve with it (one logdir a round)
            shutil.rmtree(self._tracking(request).tensorboard_dir(f"round-{request.round}"), ignore_errors=True)
        # LLaMA-Factory's max_samples, as I-SHEEP's authors ran it: the first N pairs of the round.
        examples = request.examples[:settings.max_examples] if settings.max_examples else request.examples
        data = out / "data.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in training_rows(examples)))
        spec = self.spec(request, data)
        (out / "spec.json").write_text(json.dumps(spec, indent=2))
        started = time.monotonic()
        done, losses = await self._run_job(request, out / "spec.json", out / "train.log")
        adapter = Path(done["adapter"]) if done.get("adapter") else None
        return Checkpoint(
            version=request.version, parent=request.parent, round=request.round, path=Path(done["path"]),
            adapter=adapter, kind="adapter" if adapter is not None and Path(done["path"]) == adapter else "full",
            detail={"hyperparameters": {k: v for k, v in spec.items() if k not in ("data", "out_dir")},
                    "examples": len(examples), "item_ids": [e["id"] for e in examples],
                    "loss": losses, "metrics": done.get("metrics", {}), "seconds": time.monotonic() - started,
                    "log": str(out / "train.log")})

    def command(self, request: TrainRequest, spec_path: Path) -> list[str]:
        """The job's command line: python (or ``trainer.launcher``) for one process, else ``accelerate launch``.

        With several processes a user's ``accelerate launch ...`` launcher (a DeepSpeed or FSDP
        config, say) is kept and given ``--num_processes``; without one, :func:`distributed_launch`.

        Raises:
            ValueError: several processes under a launcher that is not ``accelerate launch`` (the
                config loader refuses this combination first; a hand-made TrainerConfig lands here).
        """
        settings = request.settings or self.config
        job = ["-m", JOB_MODULE, str(spec_path)]
        launcher, processes = list(settings.launcher), settings.num_processes
        if processes == 1:
            return [*(launcher or [sys.executable]), *job]
        if not launcher:
            return [*distributed_launch(processes), *job]
        if launcher[:2] != ["accelerate", "launch"] or "--num_processes" in launcher:
            raise ValueError(f"trainer.num_processes = {processes} runs the job under 'accelerate launch' and sets "
                             f"--num_processes; trainer.launcher is {' '.join(launcher)!r}")
        return [*launcher[:2], "--num_processes", str(processes), *launcher[2:], *job]

    def environment(self, request: TrainRequest) -> dict[str, str]:
        """The job's environment: the run's, on the trainer's GPUs when ``trainer.gpus`` names them."""
        env = dict(os.environ)
        env.pop("OPENAI_API_KEY", None)  # the job talks to no endpoint
        settings = request.settings or self.config
        if settings.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, settings.gpus))
        if settings.num_processes > 1 and "OMP_NUM_THREADS" not in env:
            # torchrun gives each process one thread; on a CPU that leaves all but N cores idle.
            env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // settings.num_processes))
        if settings.report_to:
            tracking = replace(self._tracking(request), report_to=tuple(settings.report_to))
            env.update(tracking.job_environment(request.round, env))
        return env

    async def _run_job(self, request: TrainRequest, spec_path: Path,
                       log_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run the job to its end; its ``done`` line and the loss curve, or TrainingFailed."""
        try:
            command = self.command(request, spec_path)
        except ValueError as exc:
            raise TrainingFailed(f"training round {request.round}: {exc}") from exc
        losses: list[dict[str, Any]] = []
        done: dict[str, Any] | None = None
        error = ""
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=log,
                                                        env=self.environment(request),
                                                        preexec_fn=new_session_dying_with_parent)
            try:
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        continue  # a library printed to stdout
                    if event.get("event") == "step":
                        losses.append({k: event.get(k) for k in ("step", "loss", "tokens_per_s", "epoch")})
                    elif event.get("event") == "done":
                        done = event
                    elif event.get("event") == "error":
                        error = event.get("error", "")
                    if self.on_progress is not None:
                        self.on_progress(event)
                code = await proc.wait()
            finally:
                if proc.returncode is None:  # cancelled (Ctrl-C): take the job down with us
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
        if code != 0 or done is None:
            if not error:
                tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
                error = tail[-1] if tail else f"exit status {code}"
            raise TrainingFailed(f"training round {request.round} failed: {error} (log: {log_path})")
        return done, losses
