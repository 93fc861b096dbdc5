"""Between rounds: train on the round's kept pairs, swap the served model, record the lineage.

Each step is a phase of the round in the store (``training``, ``swapping``), so a resumed run
picks up where it stopped: training again from scratch, or swapping in the checkpoint that was
already trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from isheep.agents.base import Models
from isheep.agents.trainer import Checkpoint, Trainer, TrainingFailed, TrainRequest

from .config import RunConfig
from .errors import UserError
from .messages import ModelEvent, RoundEvent
from .records import checkpoint_from_row, model_row_op, op_for
from .stats import RunStats
from .store import RunStore
from .swap import SwapError, SwapStrategy


class ModelUpdater:
    """Turns a finished round into the next served model."""

    def __init__(self, config: RunConfig, store: RunStore, models: Models, stats: RunStats, trainer: Trainer,
                 swapper: SwapStrategy) -> None:
        self.config = config
        self.store = store
        self.models = models
        self.stats = stats
        self.trainer = trainer
        self.swapper = swapper

    def examples(self, k: int) -> list[dict[str, Any]]:
        """This round's kept pairs (the recipe), or every round's so far (``trainer.data = cumulative``)."""
        rounds = "round <= ?" if self.config.trainer.data == "cumulative" else "round = ?"
        rows = self.store.query(f"SELECT id, round, instruction, input, response FROM items WHERE state='kept'"
                                f" AND {rounds} ORDER BY round, seq", (k,))
        return [dict(row) for row in rows]

    async def train(self, k: int) -> Checkpoint | None:
        """Train on round ``k``'s pairs; the checkpoint is recorded as ``trained`` before any swap."""
        current, base = self.models.policy, self.models.base
        examples = self.examples(k)
        minimum = self.config.trainer.min_examples
        if len(examples) < minimum:
            self.store.event("train", f"round {k}: training skipped, {len(examples)} kept pair(s) "
                                      f"(trainer.min_examples = {minimum})", round=k)
            return None
        previous = self.config.trainer.start_from == "previous" and current.version != base.version
        # An adapter-served run continues the adapter; a full-weight run continues the weights.
        adapters = self.config.swap_strategy() == "lora"
        request = TrainRequest(round=k, version=f"v{k}", parent=current.version if previous else base.version,
                               init_path=(current.path if previous and not adapters else base.path) or Path("."),
                               init_adapter=current.path if previous and adapters else None,
                               examples=examples, out_dir=self.store.folder / "checkpoints" / f"round-{k:02d}")
        await self.store.write(op_for(RoundEvent(id=f"round-{k}", round=k, model_version=current.version,
                                                 state="training", detail=f"{len(examples)} pairs")))
        self.stats.state = "training"
        self.stats.training = {"round": k, "examples": len(examples), "step": 0, "loss": None}
        try:
            checkpoint = await self.trainer.train(request)
        except TrainingFailed as exc:
            self.store.event("train", str(exc), level="error", round=k)
            self.stats.last_error = str(exc)
            if self.config.trainer.on_failure == "stop":
                raise UserError(str(exc)) from None
            return None
        if checkpoint is None:
            return None
        await self._record(checkpoint, current.name, {"adapter": str(checkpoint.adapter) if checkpoint.adapter else None,
                                                      "kind": checkpoint.kind})
        losses = [p["loss"] for p in checkpoint.detail.get("loss", []) if p.get("loss") is not None]
        self.store.event("train", f"round {k}: trained {checkpoint.version} on {len(examples)} pairs"
                                  + (f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""), round=k)
        return checkpoint

    def trained_checkpoint(self, k: int) -> Checkpoint | None:
        """The checkpoint a resumed round had trained before it was stopped while swapping."""
        rows = self.store.query("SELECT * FROM models WHERE round=? AND state='trained'", (k,))
        return checkpoint_from_row(rows[0]) if rows else None

    async def swap(self, k: int, checkpoint: Checkpoint) -> None:
        """Serve ``checkpoint``; on failure the strategy restored the previous model and it is recorded."""
        current = self.models.policy
        await self.store.write(op_for(RoundEvent(id=f"round-{k}", round=k, model_version=current.version,
                                                 state="swapping", detail=f"to {checkpoint.version}")))
        self.stats.state = "swapping"
        started = time.monotonic()
        try:
            served = await self.swapper.swap(checkpoint, current)
        except SwapError as exc:
            await self._record(checkpoint, current.name, {"swap": {"strategy": self.swapper.name, "error": str(exc),
                                                                   **self.swapper.evidence}})
            await self.store.write(op_for(ModelEvent(id=checkpoint.version, round=k, model_version=checkpoint.version,
                                                     kind="rolled_back", parent=current.version, detail=str(exc))))
            self.stats.last_error = f"swap to {checkpoint.version} failed: {exc}"
            if self.config.swap.on_failure == "stop":
                raise UserError(f"swap to {checkpoint.version} failed: {exc}") from None
            return
        seconds = time.monotonic() - started
        await self._record(checkpoint, served.name, {"swap": {"strategy": self.swapper.name, "seconds": round(seconds, 3),
                                                              "served_name": served.name, **self.swapper.evidence}})
        await self.store.write(op_for(ModelEvent(
            id=served.version, round=k, model_version=served.version, kind="serving", parent=current.version,
            detail=f"{self.swapper.name} swap in {seconds:.1f}s, requests name it {served.name!r}")))
        self.models.policy = served
        self.stats.model_version = served.version

    async def _record(self, checkpoint: Checkpoint, served_name: str, extra: dict[str, Any]) -> None:
        """Upsert the version's lineage row, merging ``extra`` into what is known of it."""
        rows = self.store.query("SELECT detail FROM models WHERE version=?", (checkpoint.version,))
        detail = {**checkpoint.detail, **(json.loads(rows[0]["detail"]) if rows else {}), **extra}
        await self.store.write([model_row_op(checkpoint.version, parent=checkpoint.parent, round=checkpoint.round,
                                             served_name=served_name, path=str(checkpoint.path), state="trained",
                                             detail=detail)])
