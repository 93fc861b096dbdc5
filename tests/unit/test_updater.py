"""Between rounds: ``ModelUpdater`` trains on a round's kept pairs, swaps, and records the lineage.

A real run store, a trainer that writes a tiny checkpoint folder (or fails like a training job
does) and a swap strategy that records its calls (or fails like a swap does): no mocks. Covers
skipped training, the trained checkpoint and the round's phases, the data and start-from
knobs, failed training under both ``on_failure`` settings, successful and failed swaps, and
the checkpoint a round stopped mid-swap resumes with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isheep.agents.trainer import Trainer
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import Assessment, Instruction, Response, RoundEvent, Score, Verdict
from isheep.runtime.core.types import Checkpoint, Models, ServedModel, TrainingFailed, TrainRequest
from isheep.runtime.evals import BenchResult, Benchmark
from isheep.runtime.pipeline.evaluation import Gate
from isheep.runtime.pipeline.stats import RunStats
from isheep.runtime.pipeline.updater import ModelUpdater
from isheep.runtime.serving import SwapError
from isheep.runtime.serving.swap import SwapStrategy
from isheep.runtime.store import RunStore, model_row_op, op_for


class FolderTrainer(Trainer):
    """The built-in Trainer's rules (``trainer.min_examples``) with a training job that writes a
    tiny folder instead of running TRL, or fails the way a job does."""

    def __init__(self, config, fail: str | None = None, adapter: bool = False, merged: bool = False) -> None:
        super().__init__(config.trainer)
        self.fail, self.adapter, self.merged = fail, adapter, merged
        self.requests: list[TrainRequest] = []

    async def train(self, request: TrainRequest) -> Checkpoint:
        self.requests.append(request)
        if self.fail:
            raise TrainingFailed(self.fail)
        request.out_dir.mkdir(parents=True)
        (request.out_dir / "weights.json").write_text(json.dumps([e["id"] for e in request.examples]))
        adapter = request.out_dir / "adapter" if self.adapter or self.merged else None
        path = request.out_dir
        if self.merged:  # LoRA merged into full weights: model/ beside adapter/, as the SFT job writes them
            for folder in ("adapter", "model"):
                (request.out_dir / folder).mkdir()
                (request.out_dir / folder / "weights.bin").write_bytes(b"w" * 1024)
            path = request.out_dir / "model"
        return Checkpoint(version=request.version, parent=request.parent, round=request.round, path=path,
                          adapter=adapter, kind="adapter" if self.adapter else "full",
                          detail={"examples": len(request.examples), "loss": [{"step": 1, "loss": 2.0},
                                                                              {"step": 2, "loss": 1.25}]})


class RecordingSwap(SwapStrategy):
    """Serves a checkpoint under a new name, or fails (after 'restoring' the old model)."""

    name = "recording"

    def __init__(self, fail: str | None = None) -> None:
        super().__init__()
        self.fail = fail
        self.calls: list[tuple[str, ...]] = []

    async def prepare(self, current: ServedModel) -> None:
        self.calls.append(("prepare", current.version))

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        self.calls.append(("swap", checkpoint.version, current.version))
        if self.fail:
            self.evidence = {"restored_exactly": True}
            raise SwapError(self.fail)
        self.evidence = {"weights_changed": True}
        return ServedModel(version=checkpoint.version, name=f"m-{checkpoint.version}", path=checkpoint.path)


def keep_pairs(store: RunStore, k: int, count: int) -> None:
    """Write ``count`` kept pairs of round ``k`` (and one rejected pair, which is never trained on)."""
    ops = op_for(RoundEvent(id=f"round-{k}", round=k, model_version=f"v{k - 1}", state="generating"))
    for n in range(1, count + 2):
        inst = Instruction(id=f"r{k:02d}-{n:06d}", round=k, model_version="v0", instruction=f"Task {n} of {k}.")
        resp = Response(id=inst.id, round=k, model_version="v0", instruction=inst, text=f"Answer {n} of {k}.")
        ops += op_for(inst) + op_for(resp) + op_for(Assessment(
            id=inst.id, round=k, model_version="v0", response=resp, quality=Score(value=9), following=Score(value=9)))
        status = "kept" if n <= count else "rejected"
        ops += op_for(Verdict(id=inst.id, round=k, model_version="v0", status=status, stage="curator",
                              reason=None if status == "kept" else "low_quality:3"))
    store.write_sync(ops)


class Setup:
    def __init__(self, tmp_path: Path, pairs: dict[int, int], trainer_fail: str | None = None,
                 swap_fail: str | None = None, adapter: bool = False, merged: bool = False, **overrides) -> None:
        self.config = load_config(overrides={"endpoints": [{"base_url": "http://127.0.0.1:9/v1"}],
                                             "trainer.backend": "trl", **overrides}, environ={})
        self.folder = tmp_path / "run"
        self.store = RunStore.create(self.folder, {"run_name": "t"})
        self.base = ServedModel(version="v0", name="m", path=tmp_path / "base")
        self.store.write_sync([model_row_op("v0", parent=None, round=0, served_name="m", path=str(self.base.path),
                                            state="serving", detail={})])
        for k, count in pairs.items():
            keep_pairs(self.store, k, count)
        self.models = Models(policy=self.base, base=self.base)
        self.stats = RunStats(run_name="t", folder=str(self.folder), endpoints=[], rounds_total=2)
        self.trainer = FolderTrainer(self.config, trainer_fail, adapter, merged)
        self.swapper = RecordingSwap(swap_fail)
        self.updater = ModelUpdater(self.config, self.store, self.models, self.stats, self.trainer, self.swapper)

    def events(self, kind: str) -> list[tuple[str, str]]:
        return [(e["level"], e["message"]) for e in self.store.events_after(0) if e["kind"] == kind]

    def lineage(self) -> dict[str, str]:
        return {m["version"]: m["state"] for m in self.store.models()}

    def detail(self, version: str) -> dict:
        return json.loads(self.store.model(version)["detail"])


async def flush(store: RunStore) -> None:
    # Events are queued without waiting; an empty write commits them with its batch.
    await store.write([])


async def test_too_few_pairs_skip_training(tmp_path):
    s = Setup(tmp_path, {1: 2}, **{"trainer.min_examples": 3})
    await s.store.start()
    try:
        assert await s.updater.train(1) is None
        await flush(s.store)
        assert s.trainer.requests == []
        assert s.events("train") == [("info", "round 1: training skipped, 2 kept pair(s) (trainer.min_examples = 3)")]
        assert s.lineage() == {"v0": "serving"}
        assert s.store.rounds()[0].state == "generating"  # no training phase to resume into
    finally:
        await s.store.aclose()


async def test_a_trained_checkpoint_is_recorded_before_any_swap(tmp_path):
    s = Setup(tmp_path, {1: 3})
    await s.store.start()
    try:
        checkpoint = await s.updater.train(1)
        await flush(s.store)
        (request,) = s.trainer.requests
        assert (request.round, request.version, request.parent, request.init_path, request.init_adapter) == (
            1, "v1", "v0", s.base.path, None)
        assert request.out_dir == s.folder / "checkpoints" / "round-01"
        assert request.examples == s.store.kept_pairs(1) and len(request.examples) == 3
        assert checkpoint.path == request.out_dir and (checkpoint.path / "weights.json").is_file()
        assert s.lineage() == {"v0": "serving", "v1": "trained"}
        row = s.store.model("v1")
        assert (row["parent"], row["round"], row["served_name"], row["path"]) == ("v0", 1, "m", str(request.out_dir))
        assert s.detail("v1") == {"examples": 3, "loss": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.25}],
                                  "adapter": None, "kind": "full"}
        phase = s.store.rounds()[0]
        assert (phase.state, phase.detail, phase.model_version) == ("training", "3 pairs", "v0")
        assert s.events("train") == [("info", "round 1: trained v1 on 3 pairs, loss 2.000 -> 1.250")]
        assert s.stats.state == "training" and s.stats.training["examples"] == 3
        assert s.swapper.calls == [("prepare", "v0")]  # prepared while training, not swapped
    finally:
        await s.store.aclose()


@pytest.mark.parametrize("data,expected", [
    ("round", ["r02-000001", "r02-000002", "r02-000003"]),
    ("cumulative", ["r01-000001", "r01-000002", "r02-000001", "r02-000002", "r02-000003"]),
])
async def test_training_data_is_the_round_or_every_round_so_far(tmp_path, data, expected):
    s = Setup(tmp_path, {1: 2, 2: 3}, **{"trainer.data": data})
    await s.store.start()
    try:
        await s.updater.train(2)
        assert [e["id"] for e in s.trainer.requests[0].examples] == expected
    finally:
        await s.store.aclose()


@pytest.mark.parametrize("start_from,parent", [("previous", "v1"), ("base", "v0")])
async def test_start_from_picks_the_weights_trained_from(tmp_path, start_from, parent):
    s = Setup(tmp_path, {2: 2}, **{"trainer.start_from": start_from})
    s.models.policy = ServedModel(version="v1", name="m-v1", path=tmp_path / "ck-v1")
    await s.store.start()
    try:
        await s.updater.train(2)
        (request,) = s.trainer.requests
        assert request.parent == parent
        assert request.init_path == (tmp_path / "ck-v1" if start_from == "previous" else s.base.path)
        assert s.store.model("v2")["parent"] == parent
    finally:
        await s.store.aclose()


async def test_failed_training_goes_on_with_the_current_model(tmp_path):
    s = Setup(tmp_path, {1: 2}, trainer_fail="CUDA out of memory (log: train.log)",
              **{"trainer.on_failure": "continue"})
    await s.store.start()
    try:
        assert await s.updater.train(1) is None
        await flush(s.store)
        assert s.events("train") == [("error", "CUDA out of memory (log: train.log)")]
        assert s.stats.last_error == "CUDA out of memory (log: train.log)"
        assert s.lineage() == {"v0": "serving"}
    finally:
        await s.store.aclose()


async def test_failed_training_stops_the_run_when_told_to(tmp_path):
    s = Setup(tmp_path, {1: 2}, trainer_fail="job exited with status 1", **{"trainer.on_failure": "stop"})
    await s.store.start()
    try:
        with pytest.raises(UserError, match="job exited with status 1"):
            await s.updater.train(1)
        assert s.lineage() == {"v0": "serving"}
    finally:
        await s.store.aclose()


async def test_a_swap_serves_the_checkpoint_and_retires_the_previous_version(tmp_path):
    s = Setup(tmp_path, {1: 2, 2: 2})
    await s.store.start()
    try:
        for k in (1, 2):
            checkpoint = await s.updater.train(k)
            assert await s.updater.swap(k, checkpoint) == "serving"
            assert s.models.policy == ServedModel(version=f"v{k}", name=f"m-v{k}", path=checkpoint.path)
            assert s.stats.model_version == f"v{k}" and s.store.serving_model()["version"] == f"v{k}"
            phase = s.store.rounds()[k - 1]
            assert (phase.state, phase.detail) == ("swapping", f"to v{k}")
        assert s.lineage() == {"v0": "retired", "v1": "retired", "v2": "serving"}
        # Round 2 trained from the base (the recipe) and swapped from v1.
        assert s.swapper.calls[-1] == ("swap", "v2", "v1") and s.store.model("v2")["parent"] == "v0"
        swap = s.detail("v2")["swap"]
        assert (swap["strategy"], swap["served_name"], swap["weights_changed"]) == ("recording", "m-v2", True)
        assert swap["seconds"] >= 0 and s.detail("v2")["examples"] == 2  # training detail kept
        assert s.store.model("v2")["served_name"] == "m-v2"
    finally:
        await s.store.aclose()


async def test_a_failed_swap_keeps_the_policy_and_says_why(tmp_path):
    s = Setup(tmp_path, {1: 2}, swap_fail="reload of v1 failed, v0 restored: probe timed out")
    await s.store.start()
    try:
        checkpoint = await s.updater.train(1)
        assert await s.updater.swap(1, checkpoint) == "failed"
        await flush(s.store)
        assert s.models.policy == s.base and s.stats.model_version == "v0"
        assert s.lineage() == {"v0": "serving", "v1": "failed"}
        swap = s.detail("v1")["swap"]
        assert swap == {"restored_exactly": True, "strategy": "recording",
                        "error": "reload of v1 failed, v0 restored: probe timed out"}
        assert s.events("model") == [("error", "v1 rolled back: reload of v1 failed, v0 restored: probe timed out")]
        assert "swap to v1 failed" in s.stats.last_error
    finally:
        await s.store.aclose()


async def test_a_round_stopped_mid_swap_resumes_with_its_trained_checkpoint(tmp_path):
    s = Setup(tmp_path, {1: 2}, adapter=True)
    await s.store.start()
    checkpoint = await s.updater.train(1)
    await s.store.aclose()  # the run stops here, before the swap

    store = RunStore.open(s.folder)
    await store.start()
    try:
        models = Models(policy=s.base, base=s.base)
        updater = ModelUpdater(s.config, store, models, s.stats, FolderTrainer(s.config), RecordingSwap())
        resumed = updater.trained_checkpoint(1)
        assert (resumed.version, resumed.parent, resumed.round, resumed.path, resumed.adapter, resumed.kind) == (
            "v1", "v0", 1, checkpoint.path, checkpoint.path / "adapter", "adapter")
        assert resumed.detail["loss"] == checkpoint.detail["loss"]
        assert updater.trained_checkpoint(2) is None
        assert await updater.swap(1, resumed) == "serving"
        assert updater.trained_checkpoint(1) is None  # served: nothing left to resume
        assert models.policy.version == "v1"
    finally:
        await store.aclose()


async def test_keep_checkpoints_deletes_old_merged_models_but_never_adapters_or_the_serving_one(tmp_path):
    s = Setup(tmp_path, {k: 2 for k in range(1, 5)}, merged=True, **{"trainer.keep_checkpoints": 1})
    await s.store.start()
    try:
        round_dir = lambda k: s.folder / "checkpoints" / f"round-{k:02d}"  # noqa: E731
        checkpoint = await s.updater.train(1)
        assert await s.updater.swap(1, checkpoint) == "serving"
        s.swapper.fail = "probe timed out"  # rounds 2 and 3 fail to swap: v1 serves on
        for k in (2, 3):
            assert await s.updater.swap(k, await s.updater.train(k)) == "failed"
        # The newest merged model (v3) and the one serving (v1) stay; v2's weights go.
        assert [(round_dir(k) / "model").is_dir() for k in (1, 2, 3)] == [True, False, True]
        s.swapper.fail = None
        assert await s.updater.swap(4, await s.updater.train(4)) == "serving"
        await flush(s.store)
        assert [(round_dir(k) / "model").is_dir() for k in (1, 2, 3, 4)] == [False, False, False, True]
        for k in (1, 2, 3, 4):  # adapters, data and lineage are never deleted
            assert (round_dir(k) / "adapter" / "weights.bin").is_file() and (round_dir(k) / "weights.json").is_file()
        assert s.lineage() == {"v0": "retired", "v1": "retired", "v2": "failed", "v3": "failed", "v4": "serving"}
        assert "keep_checkpoints = 1" in s.detail("v2")["pruned"] and "pruned" not in s.detail("v4")
        freed = [m for _, m in s.events("train") if "merged weights deleted" in m]
        assert len(freed) == 3 and all(m.startswith(("v1:", "v2:", "v3:")) for m in freed)
    finally:
        await s.store.aclose()


async def test_keep_checkpoints_zero_keeps_every_merged_model(tmp_path):
    s = Setup(tmp_path, {1: 2, 2: 2}, merged=True)
    await s.store.start()
    try:
        for k in (1, 2):
            assert await s.updater.swap(k, await s.updater.train(k)) == "serving"
        assert all((s.folder / "checkpoints" / f"round-{k:02d}" / "model").is_dir() for k in (1, 2))
    finally:
        await s.store.aclose()


class SleepingSwap(RecordingSwap):
    """A colocated server: asleep from ``release`` until the swap (or ``reclaim``) wakes it."""

    asleep = False

    async def release(self) -> None:
        self.calls.append(("release",))
        self.asleep = True

    async def reclaim(self) -> None:
        self.calls.append(("reclaim",))
        self.asleep = False

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        self.asleep = False
        return await super().swap(checkpoint, current)

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        self.calls.append(("restore", previous.version))
        return previous


class ScoreByModel(Benchmark):
    """The gate's benchmark on 40 prompts: each served model passes a fixed set of them (a model
    the test names), and a sleeping server never answers."""

    name, metric = "fixed", "share of prompts passed"

    def __init__(self, swapper: SleepingSwap, passes: dict[str, int]) -> None:
        self.swapper, self.passes, self.asked = swapper, passes, []

    async def run(self, client, model: str, *, limit: int = 0) -> BenchResult:
        assert not self.swapper.asleep, f"{model} evaluated on a sleeping server: the gate would hang"
        self.asked.append(model)
        return BenchResult(self.name, model, {f"p{i}": float(i < self.passes[model]) for i in range(40)})


def gated(s: Setup, passes: dict[str, int], **evaluation) -> ScoreByModel:
    s.swapper = SleepingSwap()
    bench = ScoreByModel(s.swapper, passes)
    gate = Gate(s.config.evaluation.model_copy(update=evaluation), pool=None, bench=bench)
    s.updater = ModelUpdater(s.config, s.store, s.models, s.stats, s.trainer, s.swapper, gate)
    return bench


async def test_the_gate_measures_the_serving_model_before_a_colocated_server_sleeps(tmp_path):
    s = Setup(tmp_path, {1: 2, 2: 2}, **{"evaluation.enabled": True})
    bench = gated(s, {"m": 20, "m-v1": 24, "m-v2": 10})
    await s.store.start()
    try:
        assert await s.updater.swap(1, await s.updater.train(1)) == "serving"
        assert await s.updater.swap(2, await s.updater.train(2)) == "rejected"  # 10 of 40 vs v1's 24: beyond doubt
        assert bench.asked == ["m", "m-v1", "m-v2"]  # each measured once; v1's result is read back as a baseline
        assert s.stats.budget.evaluation > 0  # v0 measured before round 1 trained: a phase of its own
        assert [c[0] for c in s.swapper.calls] == ["prepare", "release", "swap", "prepare", "release", "swap",
                                                 "restore"]
        gate = s.detail("v2")["gate"]
        assert gate["decision"] == "rejected" and gate["best"] == "v1"
        assert gate["difference"]["mean"] == pytest.approx(-14 / 40) and gate["difference"]["high"] < 0
        assert s.detail("v1")["gate"]["decision"] == "kept" and s.lineage()["v2"] == "rejected"
        await flush(s.store)
        assert any("v2 scored 0.250" in m and "worse beyond doubt: rejected" in m for _, m in s.events("evaluation"))
        # The model card beside v2's weights says where they came from and what the gate found.
        card = (s.folder / "checkpoints" / "round-02" / "README.md").read_text()
        assert card.startswith("---\nbase_model:") and "# t v2" in card
        assert "version: v2 (round 2), parent: v0" in card and "trained on 2 self-generated pairs" in card
        assert "training loss: 2.000 -> 1.250" in card and "evaluation gate (fixed): 0.250" in card
        assert "gate decision: rejected against the best so far, v1 (difference -0.350" in card
        assert not (tmp_path / "base" / "README.md").exists()  # the base folder is the user's
    finally:
        await s.store.aclose()


async def test_the_gate_compares_with_the_best_model_so_far_not_only_the_last(tmp_path):
    """Each round a little worse than the one before, never beyond doubt by itself: the slide is caught."""
    s = Setup(tmp_path, {1: 2, 2: 2, 3: 2}, **{"evaluation.enabled": True})
    gated(s, {"m": 30, "m-v1": 27, "m-v2": 24, "m-v3": 21})
    await s.store.start()
    try:
        assert await s.updater.swap(1, await s.updater.train(1)) == "serving"  # -3 of 40 vs v0: not beyond doubt
        assert await s.updater.swap(2, await s.updater.train(2)) == "rejected"  # -6 vs v0, the best: beyond doubt
        assert s.detail("v2")["gate"]["best"] == "v0"
    finally:
        await s.store.aclose()


async def test_an_equal_model_is_kept_and_the_margin_forgives_a_small_loss(tmp_path):
    s = Setup(tmp_path, {1: 2, 2: 2}, **{"evaluation.enabled": True})
    gated(s, {"m": 30, "m-v1": 30, "m-v2": 22}, margin=0.3)
    await s.store.start()
    try:
        assert await s.updater.swap(1, await s.updater.train(1)) == "serving"
        assert s.detail("v1")["gate"]["difference"]["mean"] == 0.0
        assert await s.updater.swap(2, await s.updater.train(2)) == "serving"  # -0.2, within the 0.3 margin
    finally:
        await s.store.aclose()


class StuckAsleep(SleepingSwap):
    async def reclaim(self) -> None:
        raise SwapError("wake_up answered HTTP 500")


async def test_a_stop_during_training_is_what_the_caller_sees_even_when_the_server_does_not_wake(tmp_path):
    s = Setup(tmp_path, {1: 2})
    s.swapper = StuckAsleep()

    class Interrupted(FolderTrainer):
        async def train(self, request):
            raise KeyboardInterrupt

    s.updater = ModelUpdater(s.config, s.store, s.models, s.stats, Interrupted(s.config), s.swapper)
    await s.store.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            await s.updater.train(1)
        await flush(s.store)
        assert s.events("swap") == [("error", "round 1: the server did not wake after the stop: round 1: the server "
                                              "did not wake after training: wake_up answered HTTP 500")]
    finally:
        await s.store.aclose()
