"""Between rounds: train on the round's kept pairs, swap the served model, record the lineage.

Each step is a phase of the round in the store (``training``, ``swapping``), so a resumed run
picks up where it stopped: training again from scratch, or swapping in the checkpoint that was
already trained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import ModelEvent, RoundEvent
from isheep.runtime.core.roles import TrainerRole
from isheep.runtime.core.types import Checkpoint, Models, ServedModel, TrainingFailed, TrainRequest
from isheep.runtime.serving import SwapError
from isheep.runtime.serving.swap import SwapStrategy
from isheep.runtime.store import RunStore, checkpoint_from_row, model_row_op, op_for

from .evaluation import Gate
from .modelcard import refresh_card
from .retention import prunable
from .stats import RunStats


class ModelUpdater:
    """Turns a finished round into the next served model: train, swap, gate, record the lineage.

    Args:
        config: The run's config.
        store: The run store (phases, lineage and events are written there).
        models: The served models; ``policy`` changes when a swap succeeds.
        stats: The live counters (state, training progress, last problem).
        trainer: Trains on the round's kept pairs.
        swapper: Makes the endpoint serve the new checkpoint.
        gate: The evaluation gate, when enabled.
    """

    def __init__(self, config: RunConfig, store: RunStore, models: Models, stats: RunStats, trainer: TrainerRole,
                 swapper: SwapStrategy, gate: Gate | None = None) -> None:
        self.config = config
        self.store = store
        self.models = models
        self.stats = stats
        self.trainer = trainer
        self.swapper = swapper
        self.gate = gate

    def examples(self, k: int, data: str | None = None) -> list[dict[str, Any]]:
        """This round's kept pairs (the recipe), or every round's so far (``trainer.data = cumulative``)."""
        return self.store.kept_pairs(k, cumulative=(data or self.config.trainer.data) == "cumulative")

    async def train(self, k: int) -> Checkpoint | None:
        """Train on round ``k``'s pairs; the checkpoint is recorded as ``trained`` before any swap."""
        current, base = self.models.policy, self.models.base
        settings = self.config.for_round(k).trainer
        examples = self.examples(k, settings.data)
        skip = self.trainer.skip_reason(len(examples))
        if skip is not None:
            self.store.event("train", f"round {k}: training skipped, {skip}", round=k)
            return None
        previous = settings.start_from == "previous" and current.version != base.version
        # An adapter-served run continues the adapter; a full-weight run continues the weights.
        adapters = self.config.swap_strategy() == "lora"
        request = TrainRequest(round=k, version=f"v{k}", parent=current.version if previous else base.version,
                               init_path=(current.path if previous and not adapters else base.path) or Path("."),
                               init_adapter=current.path if previous and adapters else None,
                               examples=examples, out_dir=self.store.folder / "checkpoints" / f"round-{k:02d}",
                               settings=settings)
        await self.store.write(op_for(RoundEvent(id=f"round-{k}", round=k, model_version=self._generator(k),
                                                 state="training", detail=f"{len(examples)} pairs")))
        self.stats.state = "training"
        self.stats.training = {"round": k, "examples": len(examples), "phase": "starting"}
        try:
            await self.swapper.prepare(current)
        except Exception as exc:  # noqa: BLE001 - only a head start; the swap does it again if need be
            self.store.event("swap", f"preparing the swap failed ({exc}); it will be done during the swap",
                             level="warning", round=k)
        if self.gate is not None:
            # The gate compares with the model served now too: measured before a colocated server sleeps.
            with self.stats.budget.phase("evaluation"):
                await self._measured(current)
        await self._release(k)
        try:
            checkpoint = await self.trainer.train(request)
        except TrainingFailed as exc:
            self.store.event("train", str(exc), level="error", round=k)
            self.stats.last_error = str(exc)
            await self._reclaim(k)
            if settings.on_failure == "stop":
                raise UserError(str(exc)) from None
            return None
        except BaseException:
            try:  # stopped mid-training: the server must not stay asleep
                await asyncio.shield(self._reclaim(k))
            except Exception as exc:  # noqa: BLE001 - the stop is what the caller must see, not this
                self.store.event("swap", f"round {k}: the server did not wake after the stop: {exc}",
                                 level="error", round=k)
            raise
        if checkpoint is None:
            await self._reclaim(k)
            return None
        await self._record(checkpoint, current.name, {"adapter": str(checkpoint.adapter) if checkpoint.adapter else None,
                                                      "kind": checkpoint.kind})
        losses = [p["loss"] for p in checkpoint.detail.get("loss", []) if p.get("loss") is not None]
        self.store.event("train", f"round {k}: trained {checkpoint.version} on {len(examples)} pairs"
                                  + (f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""), round=k)
        return checkpoint

    async def _release(self, k: int) -> None:
        """Free the trainer's devices (a colocated server sleeps); a server that cannot is an error."""
        try:
            await self.swapper.release()
        except SwapError as exc:
            raise UserError(f"round {k}: the server could not be put to sleep for training: {exc}") from None

    async def _reclaim(self, k: int) -> None:
        """No checkpoint came of the training: the server wakes on the weights it had."""
        try:
            await self.swapper.reclaim()
        except SwapError as exc:
            raise UserError(f"round {k}: the server did not wake after training: {exc}") from None

    def trained_checkpoint(self, k: int) -> Checkpoint | None:
        """The checkpoint a resumed round had trained before it was stopped while swapping."""
        row = self.store.trained_model(k)
        return checkpoint_from_row(row) if row is not None else None

    async def swap(self, k: int, checkpoint: Checkpoint) -> str:
        """Serve ``checkpoint``, gate it, record it; returns ``serving``, ``failed`` or ``rejected``.

        A failed swap was rolled back by its strategy; a rejected model (worse than the one it
        replaces on the held-out prompts) is swapped back out. Either way the previous model
        serves on, and the lineage says why. Then merged models past ``trainer.keep_checkpoints``
        are deleted.
        """
        outcome = await self._swap(k, checkpoint)
        await self.prune()
        return outcome

    async def prune(self) -> None:
        """Delete merged models beyond the newest ``trainer.keep_checkpoints`` (adapters stay)."""
        keep = self.config.trainer.keep_checkpoints
        checkpoints = self.store.folder / "checkpoints"
        for old in prunable(self.store.models(), keep, self.models.policy.version, checkpoints):
            size = sum(f.stat().st_size for f in old.path.rglob("*") if f.is_file()) if old.path.is_dir() else 0
            await asyncio.to_thread(shutil.rmtree, old.path, True)
            note = f"merged weights deleted (trainer.keep_checkpoints = {keep}); adapter kept at {old.adapter}"
            await self._amend(old.version, {"pruned": note})
            self.store.event("train", f"{old.version}: {note} ({size / 2**20:.0f} MiB freed)",
                             data={"version": old.version, "bytes": size})

    async def _swap(self, k: int, checkpoint: Checkpoint) -> str:
        current = self.models.policy
        await self.store.write(op_for(RoundEvent(id=f"round-{k}", round=k, model_version=self._generator(k),
                                                 state="swapping", detail=f"to {checkpoint.version}")))
        if self.gate is not None:
            await self._measured(current)  # read back: measured before training (unless resumed mid-swap)
        self.stats.state = "swapping"
        started = time.monotonic()
        try:
            served = await self.swapper.swap(checkpoint, current)
        except SwapError as exc:
            await self._record(checkpoint, current.name, {"swap": {**self.swapper.evidence, "strategy": self.swapper.name,
                                                                   "error": str(exc)}})
            await self.store.write(op_for(ModelEvent(id=checkpoint.version, round=k, model_version=checkpoint.version,
                                                     kind="rolled_back", parent=current.version, detail=str(exc))))
            self.stats.last_error = f"swap to {checkpoint.version} failed: {exc}"
            await self._still_serving(current, exc)
            if self.config.swap.on_failure == "stop":
                raise UserError(f"swap to {checkpoint.version} failed: {exc}") from None
            return "failed"
        seconds = time.monotonic() - started
        await self._record(checkpoint, served.name, {"swap": {**self.swapper.evidence, "strategy": self.swapper.name,
                                                              "seconds": round(seconds, 3), "served_name": served.name}})
        if self.gate is not None and await self._rejected(k, served, checkpoint, current):
            return "rejected"
        await self.store.write(op_for(ModelEvent(
            id=served.version, round=k, model_version=served.version, kind="serving", parent=current.version,
            detail=f"{self.swapper.name} swap in {seconds:.1f}s, requests name it {served.name!r}")))
        self.models.policy = served
        self.stats.model_version = served.version
        return "serving"

    async def _still_serving(self, current: ServedModel, exc: SwapError) -> None:
        """After a failed swap the previous model must answer, or there is nothing to go on with."""
        try:
            await self.swapper.check_serving(current, min(60.0, self.config.swap.timeout_s))
        except SwapError:
            raise UserError(f"the swap failed ({exc}) and the endpoint no longer answers for "
                            f"{current.name!r}; the data so far is safe in {self.store.folder}") from None

    async def _rejected(self, k: int, served: ServedModel, checkpoint: Checkpoint, current: ServedModel) -> bool:
        """Measure the new model and put ``current`` back when it is worse than the best so far beyond doubt."""
        assert self.gate is not None
        accepted = {row["version"]: known for row in self.store.models()
                    if row["state"] in ("serving", "retired") and (known := self.gate.known(row)) is not None}
        new = await self._evaluate(served, checkpoint)
        judged = None
        if self.gate.pairwise is not None:  # the base model judges the new answers against the best's
            with self._evaluating():
                verdicts = await self.gate.judge_pair(new, accepted[self.gate.best(accepted)], served.name)
            judged = verdicts.scores if self.gate.usable(verdicts) else None
            if judged is None:
                self.store.event("evaluation", f"{served.version}: the judge's verdicts could not be read "
                                               f"({verdicts.metrics.get('unreadable', 1):.0%}, of which "
                                               f"{verdicts.metrics.get('judge_errors', 0):.0%} failed requests); "
                                               "decided on the checked benchmark alone", level="warning", round=k)
        decision = self.gate.decide(new, accepted, judged)
        await self._record(checkpoint, served.name, {"gate": decision.as_dict()})
        self.store.event("evaluation", f"{served.version} {decision}", level="warning" if decision.rejected else "info",
                         round=k, data={"version": served.version, **decision.as_dict()})
        if not decision.rejected:
            return False
        try:
            await self.swapper.restore(current, served)
        except SwapError as exc:
            raise UserError(f"{served.version} did worse than {decision.best} on the evaluation and "
                            f"{current.version} could not be served again: {exc}") from None
        judged = decision.judged
        why = (f"worse than {decision.best} beyond doubt: {decision.difference.mean:+.3f} "
               f"[{decision.difference.low:+.3f}, {decision.difference.high:+.3f}], {decision.signs.losses} prompts "
               f"worse and {decision.signs.wins} better (p {decision.signs.p_worse:.3g})"
               + (f"; judged by {judged.judge}: win rate {judged.win_rate}, {judged.signs.losses} worse and "
                  f"{judged.signs.wins} better (p {judged.signs.p_worse:.3g})" if judged is not None else "")
               + f", margin {decision.margin}; {current.version} serves again")
        await self.store.write(op_for(ModelEvent(id=served.version, round=k, model_version=served.version,
                                                 kind="rejected", parent=current.version, detail=why)))
        self.stats.last_error = f"{served.version} rejected: {why}"
        return True

    async def _measured(self, model: ServedModel) -> dict[str, Any]:
        """A served model's gate result (measured once per version, then read back)."""
        assert self.gate is not None
        known = self.gate.known(self.store.model(model.version))
        return known if known is not None else await self._evaluate(model, None)

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """The displays say "evaluating" while the gate asks; the state before comes back after."""
        previous, self.stats.state = self.stats.state, "evaluating"
        try:
            yield
        finally:
            self.stats.state = previous

    async def _evaluate(self, model: ServedModel, checkpoint: Checkpoint | None) -> dict[str, Any]:
        assert self.gate is not None
        with self._evaluating():
            result = await self.gate.measure(model)
        if checkpoint is not None:
            await self._record(checkpoint, model.name, {"evaluation": result})
        else:  # a model of an earlier round (or the base): add to its lineage row
            await self._amend(model.version, {"evaluation": result})
        ci = result["interval"]
        self.store.event("evaluation", f"{model.version} scored {ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}] "
                                       f"on {result['bench']} ({ci['n']} prompts, {result['failed']} unanswered)",
                         data={"version": model.version, "score": ci["mean"]})
        return result

    def _generator(self, k: int) -> str:
        """The version that generated round ``k`` (what the rounds table names it by)."""
        return self.store.round_generator(k) or self.models.policy.version

    async def _amend(self, version: str, extra: dict[str, Any]) -> None:
        """Merge ``extra`` into the detail of a version already in the lineage, state unchanged."""
        if await self.store.amend_model(version, extra):
            refresh_card(self.store, version)

    async def _record(self, checkpoint: Checkpoint, served_name: str, extra: dict[str, Any]) -> None:
        """Upsert the version's lineage row, merging ``extra`` into what is known of it."""
        row = self.store.model(checkpoint.version)
        detail = {**checkpoint.detail, **(json.loads(row["detail"]) if row is not None else {}), **extra}
        await self.store.write([model_row_op(checkpoint.version, parent=checkpoint.parent, round=checkpoint.round,
                                             served_name=served_name, path=str(checkpoint.path), state="trained",
                                             detail=detail)])
        refresh_card(self.store, checkpoint.version)
