"""Experiment trackers in a whole run: the run's per-round metrics at each round's end (against the
test server), and a real TRL training round reporting to TensorBoard (slow: the embedded model)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

import isheep
from isheep.runtime.core.config import TrainerConfig
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.types import TrainRequest
from isheep.runtime.pipeline.tracking import build_trackers
from isheep.runtime.store import RunStore
from isheep.runtime.training.backend import Tracking, TrlBackend

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                reason="tensorboard is not installed (pip install 'isheep[trackers]')")


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


async def test_each_rounds_numbers_reach_the_trackers_at_its_end(server, tmp_path, clean_env, monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # what the MLflow tracker sets here is undone after
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    trackers = ["tensorboard", *(["mlflow"] if importlib.util.find_spec("mlflow") else [])]
    config = load_config(overrides={
        "endpoints": [{"base_url": server.url}], "close_on": "kept", "out": str(tmp_path / "run"), "name": "exp",
        "rounds": 2, "round_size": 12, "max_proposed": 400, "client.backoff_s": 0.01, "client.timeout_s": 5,
        "proposer.workers": 2, "responder.workers": 8, "critic.workers": 8, "trainer.report_to": trackers,
    }, environ={})
    result = await isheep.arun(config)
    seen = scalars(tmp_path / "run" / "tracking" / "tensorboard" / "rounds")
    assert seen["isheep/kept"] == [(s.round, s.kept) for s in result.rounds]
    assert seen["isheep/proposed"] == [(s.round, s.proposed) for s in result.rounds]
    assert [step for step, _ in seen["isheep/critic/quality_mean"]] == [1, 2]
    assert any(tag.startswith("isheep/rejected/") for tag in seen)
    store = RunStore.open(tmp_path / "run", readonly=True)
    try:
        assert [e for e in store.events_after(0) if e["kind"] == "tracking"] == []  # no tracker failed
    finally:
        store.close_sync()
    if "mlflow" in trackers:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"file:{(tmp_path / 'run' / 'tracking' / 'mlruns').resolve()}")
        (run,) = client.search_runs([client.get_experiment_by_name("isheep").experiment_id])
        history = client.get_metric_history(run.info.run_id, "isheep/kept")
        assert [(m.step, m.value) for m in history] == [(s.round, s.kept) for s in result.rounds]


@pytest.mark.slow
def test_a_real_training_round_reports_to_its_trackers(embedded_model, tmp_path, monkeypatch):
    """One optimizer step of TRL on the embedded SmolLM2 (about 10 s on an idle 2-core machine), its
    logs in TensorBoard and, where installed, wandb (offline) and MLflow (under the run's own run)."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-home"))
    for name in ("MLFLOW_ALLOW_FILE_STORE", "WANDB_SERVICE"):  # what the trackers set here is undone after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    trackers = ["tensorboard", *(t for t in ("wandb", "mlflow") if importlib.util.find_spec(t))]
    settings = TrainerConfig(report_to=trackers, epochs=1, batch_size=1, max_length=64, merge=False,
                             lora_r=2, lora_targets=["q_proj"], sft_overrides={"max_steps": 1})
    pairs = [{"id": f"p{i}", "instruction": f"Say the number {i}.", "input": "", "response": f"The number is {i}."}
             for i in range(2)]
    run = tmp_path / "run"
    request = TrainRequest(round=1, version="v1", parent="v0", init_path=embedded_model, examples=pairs,
                           out_dir=run / "checkpoints" / "round-01", settings=settings)
    place = Tracking.for_run(settings, run, "exp")
    with build_trackers(place, pytest.fail).open({}):  # the run's own tracker runs, as isheep run opens them
        checkpoint = asyncio.run(TrlBackend(settings, tracking=place).train(request))
    loss = checkpoint.detail["loss"][0]["loss"]
    seen = scalars(run / "tracking" / "tensorboard" / "round-1")
    assert [step for step, _ in seen["train/loss"]] == [1] and seen["train/loss"][0][1] == pytest.approx(loss, rel=1e-4)
    if "wandb" in trackers:
        assert len(list((run / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))) == 2  # the round's, the run's
    if "mlflow" in trackers:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"file:{(run / 'tracking' / 'mlruns').resolve()}")
        runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("isheep").experiment_id])}
        assert set(runs) == {"exp", "exp-round-1"}
        tags = runs["exp-round-1"].data.tags
        assert tags["mlflow.parentRunId"] == runs["exp"].info.run_id and tags["isheep.round"] == "1"
        assert runs["exp-round-1"].data.metrics["loss"] == pytest.approx(loss, rel=1e-4)
