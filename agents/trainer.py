"""The Trainer: consumes the kept pairs of a round, closes the round when its quota is met, and
between rounds turns the round's data into the next model.

:class:`TrlBackend` (``trainer.backend = "trl"``) writes the pairs as a prompt-completion
dataset and runs TRL's ``SFTTrainer`` in a subprocess (``isheep.agents._sft_job``, optionally
under ``accelerate launch``), so the event loop never blocks; the job's progress (step, loss,
tokens/s) streams back line by line. The default is the recipe: LoRA on the base model with this
round's pairs, merged into full weights. ``trainer.backend = "none"`` runs data-only rounds
(hosted APIs whose weights cannot change): :meth:`Trainer.train` returns None.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from isheep.runtime.config import TrainerConfig
from isheep.runtime.ledger import RoundLedger
from isheep.runtime.messages import Verdict

from .base import Role


class TrainRequest(BaseModel):
    """What a backend needs to train one round."""

    model_config = ConfigDict(frozen=True)

    round: int
    version: str = Field(description="Version the new model will have.")
    parent: str = Field(description="Model version trained from.")
    init_path: Path = Field(description="Model folder the weights start from.")
    init_adapter: Path | None = Field(None, description="LoRA adapter to continue (lora swaps, start_from=previous).")
    examples: list[dict[str, Any]] = Field(description="{'instruction', 'input', 'response', 'id', 'round'} each.")
    out_dir: Path


class Checkpoint(BaseModel):
    """A trained model ready to be served."""

    model_config = ConfigDict(frozen=True)

    version: str
    parent: str
    round: int
    path: Path = Field(description="Full model folder (merged), or the adapter when not merged.")
    adapter: Path | None = Field(None, description="The LoRA adapter, when trained with LoRA.")
    kind: str = Field("full", description="full: a model folder; adapter: only a LoRA adapter.")
    detail: dict[str, Any] = Field(default_factory=dict, description="Hyper-parameters, loss curve...")


class TrainingFailed(RuntimeError):
    """The training job failed; the message names why (its last error line)."""


class TrainBackend(abc.ABC):
    """Fine-tunes a model on one round's data."""

    @abc.abstractmethod
    async def train(self, request: TrainRequest) -> Checkpoint:
        """Train and return the checkpoint (raise on failure)."""


def training_rows(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kept pairs as TRL prompt-completion rows: the loss covers the answer only."""
    rows = []
    for ex in examples:
        user = f"{ex['instruction']}\n\n{ex['input']}" if ex.get("input") else ex["instruction"]
        rows.append({"prompt": [{"role": "user", "content": user}],
                     "completion": [{"role": "assistant", "content": ex["response"]}]})
    return rows


def _new_session() -> None:
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # die with the runtime (PR_SET_PDEATHSIG)


class TrlBackend(TrainBackend):
    """TRL SFT in a subprocess, one per round."""

    def __init__(self, config: TrainerConfig, on_progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.on_progress = on_progress

    def spec(self, request: TrainRequest, data: Path) -> dict[str, Any]:
        c = self.config
        lr = c.learning_rate if c.learning_rate is not None else (4e-4 if c.method == "lora" else 2e-5)
        return {
            "data": str(data), "out_dir": str(request.out_dir), "init_path": str(request.init_path),
            "init_adapter": str(request.init_adapter) if request.init_adapter else None, "method": c.method,
            "merge": c.merge, "lora_r": c.lora_r, "lora_alpha": c.lora_alpha, "lora_dropout": c.lora_dropout,
            "lora_targets": c.lora_targets, "learning_rate": lr, "epochs": c.epochs, "batch_size": c.batch_size,
            "gradient_accumulation": c.gradient_accumulation, "max_length": c.max_length, "seed": c.seed,
            "sft_overrides": c.sft_overrides,
        }

    async def train(self, request: TrainRequest) -> Checkpoint:
        out = request.out_dir
        shutil.rmtree(out, ignore_errors=True)  # a resumed round trains again from scratch
        out.mkdir(parents=True, mode=0o700)
        data = out / "data.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in training_rows(request.examples)))
        spec = self.spec(request, data)
        (out / "spec.json").write_text(json.dumps(spec, indent=2))
        command = [*(self.config.launcher or [sys.executable]), "-m", "isheep.agents._sft_job", str(out / "spec.json")]
        log_path = out / "train.log"
        started = time.monotonic()
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=log,
                                                        preexec_fn=_new_session)
            losses: list[dict[str, Any]] = []
            done: dict[str, Any] | None = None
            error = ""
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
        adapter = Path(done["adapter"]) if done.get("adapter") else None
        return Checkpoint(
            version=request.version, parent=request.parent, round=request.round, path=Path(done["path"]),
            adapter=adapter, kind="adapter" if adapter is not None and Path(done["path"]) == adapter else "full",
            detail={"hyperparameters": {k: v for k, v in spec.items() if k not in ("data", "out_dir")},
                    "examples": len(request.examples), "item_ids": [e["id"] for e in request.examples],
                    "loss": losses, "metrics": done.get("metrics", {}), "seconds": time.monotonic() - started,
                    "log": str(log_path)})


class Trainer(Role[Verdict, None]):
    name: ClassVar[str] = "trainer"

    def __init__(self, config: TrainerConfig, backend: TrainBackend | None = None) -> None:
        self.config = config
        self.backend = backend
        self.ledger: RoundLedger | None = None

    def open_round(self, ledger: RoundLedger) -> None:
        """Start consuming a round (also a resumed one whose quota may already be met)."""
        self.ledger = ledger
        ledger.quota_met = ledger.kept >= ledger.quota

    async def handle(self, message: Verdict) -> None:
        assert self.ledger is not None and message.status == "kept"
        if self.ledger.kept >= self.ledger.quota:
            self.ledger.quota_met = True  # the Proposer stops; what is in flight still finishes

    async def train(self, request: TrainRequest) -> Checkpoint | None:
        """Train on a round's kept pairs; None when training is off or there is too little data."""
        if self.backend is None or len(request.examples) < self.config.min_examples:
            return None
        return await self.backend.train(request)
