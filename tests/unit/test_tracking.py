"""Experiment trackers: ``trainer.report_to`` checked at load, handed to TRL with each round's names
and folders, and the run's own per-round metrics written by each tracker and read back from its files.

Every tracker runs locally (tensorboard event files, wandb offline, an MLflow file store, trackio's
database): nothing here needs the network. A tracker whose package is not installed is skipped
(``make install`` installs them all, from the ``trackers`` extra).
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from isheep.runtime.core.config import TrainerConfig
from isheep.runtime.core.errors import ConfigError
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.types import TrainRequest
from isheep.runtime.pipeline.stats import RoundSummary
from isheep.runtime.pipeline.tracking import Tracker, Trackers, build_trackers, round_metrics
from isheep.runtime.training.backend import Tracking, TrlBackend


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'isheep[trackers]')")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No tracker setting or key from the developer's shell; wandb's own files kept in tmp_path."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR", "WANDB_RUN_GROUP", "WANDB_BASE_URL",
                 "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "TRACKIO_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    # Set and removed, so that what the trackers set in this process (MLflow's switch, the address
    # of wandb's service) is undone after the test.
    for name in ("MLFLOW_ALLOW_FILE_STORE", "WANDB_SERVICE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return tmp_path


# -- the config ----------------------------------------------------------------------------------
def test_no_tracker_by_default_and_the_job_reports_to_none(tmp_path):
    config = load_config(environ={})
    assert config.trainer.report_to == []
    backend = TrlBackend(config.trainer)
    req = request(tmp_path, config.trainer)
    assert backend.spec(req, tmp_path / "data.jsonl")["report_to"] == []
    assert "TENSORBOARD_LOGGING_DIR" not in backend.environment(req)


def test_an_unknown_tracker_is_one_line():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"trainer.report_to": ["tensorboard", "neptune"]}, environ={})
    assert str(err.value) == ("config: trainer.report_to.1: Input should be 'tensorboard', 'wandb', 'trackio' or "
                              "'mlflow' (got 'neptune')")


def test_a_tracker_that_is_not_installed_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"trainer.report_to": ["wandb"]}, environ={})
    assert str(err.value) == ("config: trainer.report_to: wandb not installed: "
                              "pip install 'isheep[trackers]' (or the package)")
    assert "\n" not in str(err.value)
    # A run stored with it still loads (to evaluate it, report on it) on a machine without wandb.
    stored = {"trainer": {"report_to": ["wandb"]}}
    assert load_config(base=stored, environ={}).trainer.report_to == ["wandb"]


# -- what the training job gets -------------------------------------------------------------------
def request(tmp_path: Path, settings: TrainerConfig, k: int = 2) -> TrainRequest:
    return TrainRequest(round=k, version=f"v{k}", parent="v0", init_path=Path("/models/m"), examples=[],
                        out_dir=tmp_path / "run" / "checkpoints" / f"round-{k:02d}", settings=settings)


def every_tracker() -> TrainerConfig:
    # model_construct: the environment, not the packages, is what these tests look at.
    return TrainerConfig.model_construct(report_to=["tensorboard", "wandb", "mlflow", "trackio"])


def test_each_round_is_a_named_run_of_the_runs_group_in_the_runs_folder(tmp_path, offline):
    settings = every_tracker()
    place = Tracking.for_run(settings, tmp_path / "run", "exp")
    place.job_tags["mlflow.parentRunId"] = "abc123"  # what the main process's MLflow run adds
    backend = TrlBackend(settings, tracking=place)
    req = request(tmp_path, settings)
    spec = backend.spec(req, tmp_path / "data.jsonl")
    assert (spec["report_to"], spec["run_name"], spec["project"]) == (
        ["tensorboard", "wandb", "mlflow", "trackio"], "exp-round-2", "isheep")
    env = backend.environment(req)
    tracking = tmp_path / "run" / "tracking"
    assert env["TENSORBOARD_LOGGING_DIR"] == str(tracking / "tensorboard" / "round-2")
    assert (env["WANDB_MODE"], env["WANDB_DIR"], env["WANDB_PROJECT"], env["WANDB_RUN_GROUP"], env["WANDB_JOB_TYPE"]) \
        == ("offline", str(tracking), "isheep", "exp", "train")
    assert env["MLFLOW_TRACKING_URI"] == f"file:{tracking / 'mlruns'}" and env["MLFLOW_ALLOW_FILE_STORE"] == "true"
    assert env["MLFLOW_EXPERIMENT_NAME"] == "isheep"
    assert json.loads(env["MLFLOW_TAGS"]) == {"isheep.run": "exp", "isheep.round": "2", "mlflow.parentRunId": "abc123"}
    assert env["TRACKIO_DIR"] == str(tracking / "trackio")


def test_without_a_tracking_place_the_run_folder_is_found_from_the_checkpoint(tmp_path, offline):
    settings = every_tracker()
    env = TrlBackend(settings).environment(request(tmp_path, settings, k=3))
    assert env["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "run" / "tracking" / "tensorboard" / "round-3")
    assert json.loads(env["MLFLOW_TAGS"])["isheep.run"] == "run"


def test_the_users_tracker_settings_win_and_no_key_is_written(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "secret-key-123")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team")
    monkeypatch.setenv("WANDB_PROJECT", "team-wandb")
    settings = every_tracker()
    backend = TrlBackend(settings)
    req = request(tmp_path, settings)
    env = backend.environment(req)
    assert "WANDB_MODE" not in env  # a key: online, as wandb itself would be
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000" and "MLFLOW_ALLOW_FILE_STORE" not in env
    assert (env["MLFLOW_EXPERIMENT_NAME"], env["WANDB_PROJECT"]) == ("team", "team-wandb")
    assert "secret-key-123" not in json.dumps(backend.spec(req, tmp_path / "data.jsonl"))
    named = every_tracker().model_copy(update={"tracking_project": "mine"})
    env = TrlBackend(named).environment(request(tmp_path, named))
    assert (env["MLFLOW_EXPERIMENT_NAME"], env["WANDB_PROJECT"]) == ("mine", "mine")  # the config, above all


def test_a_netrc_login_counts_as_a_wandb_key(tmp_path, offline, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    settings = every_tracker()
    assert "WANDB_MODE" not in TrlBackend(settings).environment(request(tmp_path, settings))


def test_trl_gets_report_to_and_the_rounds_run_name(tmp_path):
    needs("tensorboard")
    from trl import SFTConfig

    from isheep.runtime.training.sft_job import _sft_settings

    settings = load_config(overrides={"trainer.report_to": ["tensorboard"]}, environ={}).trainer
    spec = TrlBackend(settings, tracking=Tracking.for_run(settings, tmp_path, "exp")).spec(
        request(tmp_path, settings), tmp_path / "data.jsonl")
    args = SFTConfig(**_sft_settings(spec, tmp_path, cuda=False))
    assert args.report_to == ["tensorboard"] and args.run_name == "exp-round-2"
    assert SFTConfig(**_sft_settings({**spec, "report_to": []}, tmp_path, cuda=False)).report_to == []


# -- the run's own metrics ------------------------------------------------------------------------
class FakeStore:
    """The two reads round_metrics makes."""

    def __init__(self, scores: dict[str, dict[tuple[int, int], int]], models: dict[str, dict]) -> None:
        self.scores, self.models = scores, models

    def score_counts(self, aspect):
        return self.scores.get(aspect, {})

    def model(self, version):
        return self.models.get(version)


def summary(k: int = 1, **changes) -> RoundSummary:
    values = dict(round=k, model_version="v0", proposed=20, kept=6, rejected={"low_quality": 8, "blacklist": 2},
                  failed={"timeout": 4}, generation_s=12.5, prompt_tokens=1000, completion_tokens=2000,
                  training_s=30.0, swap_s=4.0)
    return RoundSummary(**{**values, **changes})


def test_a_rounds_metrics_come_from_its_summary_the_critic_and_the_lineage():
    detail = {"loss": [{"step": 1, "loss": 1.5}, {"step": 2, "loss": 0.9}], "metrics": {"train_runtime": 20.0},
              "examples": 6, "swap": {"seconds": 2.5},
              "evaluation": {"interval": {"mean": 0.61, "low": 0.55, "high": 0.67, "n": 330}, "failed": 1},
              "gate": {"decision": "kept", "difference": {"mean": 0.02, "low": -0.01, "high": 0.05},
                       "sign_test": {"p_worse": 0.8}}}
    store = FakeStore({"quality": {(1, 9): 3, (1, 7): 1, (2, 3): 5}, "following": {(1, 10): 2}},
                      {"v1": {"round": 1, "detail": json.dumps(detail)}})
    metrics = round_metrics(summary(), store)
    assert metrics["isheep/kept"] == 6 and metrics["isheep/proposed"] == 20
    assert metrics["isheep/acceptance"] == pytest.approx(6 / 20)
    assert metrics["isheep/rejected/low_quality"] == 8 and metrics["isheep/failed/timeout"] == 4
    assert metrics["isheep/critic/quality_mean"] == pytest.approx((9 * 3 + 7) / 4)  # round 1's scores only
    assert metrics["isheep/critic/following_mean"] == 10
    assert (metrics["isheep/train/loss_first"], metrics["isheep/train/loss_last"]) == (1.5, 0.9)
    assert metrics["isheep/train/train_runtime"] == 20 and metrics["isheep/swap_s"] == 2.5
    assert metrics["isheep/eval/score_mean"] == 0.61 and metrics["isheep/eval/unanswered"] == 1
    assert metrics["isheep/gate/kept"] == 1 and metrics["isheep/gate/difference_low"] == -0.01
    assert metrics["isheep/gate/p_worse"] == 0.8
    assert all(isinstance(v, float) for v in metrics.values())
    bare = round_metrics(summary(2, kept=0, rejected={}, failed={}), FakeStore({}, {}))
    assert bare["isheep/acceptance"] == 0 and not any(k.startswith("isheep/train/") for k in bare)


class Broken(Tracker):
    """Fails where it is told to; counts what reached it."""

    name = "broken"

    def __init__(self, fail: str) -> None:
        self.fail, self.logged, self.closed = fail, [], 0

    def open(self, config):
        if self.fail == "open":
            raise RuntimeError("no server")

    def log(self, metrics, step):
        if self.fail == "log":
            raise OSError("disk full")
        self.logged.append(step)

    def close(self):
        self.closed += 1


def test_a_failing_tracker_is_reported_once_and_turned_off_the_others_go_on():
    warnings: list[str] = []
    bad_open, bad_log, good = Broken("open"), Broken("log"), Broken("")
    with Trackers([bad_open, bad_log, good], warnings.append).open({}) as trackers:
        for k in (1, 2, 3):
            trackers.log_round({"isheep/kept": k}, k)
    assert good.logged == [1, 2, 3] and good.closed == 1
    assert warnings == [
        "the broken tracker failed to start (RuntimeError: no server); it is off for the rest of the run",
        "the broken tracker failed to log round 1 (OSError: disk full); it is off for the rest of the run"]
    assert trackers.active == []


# -- each tracker, written and read back ----------------------------------------------------------
def write_two_rounds(place: Tracking) -> list[str]:
    warnings: list[str] = []
    with build_trackers(place, warnings.append).open({"rounds": 2, "model": "m"}) as trackers:
        trackers.log_round({"isheep/kept": 10.0, "isheep/acceptance": 0.5}, 1)
        trackers.log_round({"isheep/kept": 14.0, "isheep/acceptance": 0.7}, 2)
    return warnings


def test_tensorboard_event_files(tmp_path, offline):
    needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    place = Tracking(("tensorboard",), tmp_path / "tracking", "exp")
    assert write_two_rounds(place) == []
    events = EventAccumulator(str(tmp_path / "tracking" / "tensorboard" / "rounds"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("isheep/kept")] == [(1, 10.0), (2, 14.0)]
    assert [e.value for e in events.Scalars("isheep/acceptance")] == pytest.approx([0.5, 0.7])


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: wandb's LevelDB-style log (32 KiB blocks of CRC, length, type, data)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, partial = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full, first
            partial = chunk
        elif kind in (3, 4):  # middle, last
            partial += chunk
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(partial))
    return records


def test_wandb_offline_run(tmp_path, offline):
    needs("wandb")
    place = Tracking(("wandb",), tmp_path / "tracking", "exp")
    assert write_two_rounds(place) == []
    (run_file,) = (tmp_path / "tracking" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.project, run.run_group, run.job_type) == ("exp", "isheep", "exp", "rounds")
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], h["isheep/kept"]) for h in history] == [(1, 10), (2, 14)]


def test_mlflow_file_store_and_the_rounds_parent(tmp_path, offline):
    needs("mlflow")
    from mlflow.tracking import MlflowClient

    place = Tracking(("mlflow",), tmp_path / "tracking", "exp")
    assert write_two_rounds(place) == []
    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'tracking' / 'mlruns'}")
    experiment = client.get_experiment_by_name("isheep")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "exp" and run.info.status == "FINISHED"
    assert run.data.tags["isheep.folder"] == str(tmp_path / "tracking")
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "isheep/kept")] == [(1, 10), (2, 14)]
    # A resumed isheep run goes on in the same MLflow run; the rounds' training runs hang under it.
    with build_trackers(place, print).open({}) as trackers:
        assert place.job_tags == {"mlflow.parentRunId": run.info.run_id}
        trackers.log_round({"isheep/kept": 20.0}, 3)
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert len(client.get_metric_history(run.info.run_id, "isheep/kept")) == 3


def test_trackio_local_database(tmp_path, offline, monkeypatch):
    needs("trackio")
    folder = tmp_path / "tracking" / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(folder))  # trackio reads it once, when first imported
    if "trackio" in sys.modules and str(sys.modules["trackio"].utils.TRACKIO_DIR) != str(folder):
        pytest.skip("trackio was imported earlier in this process with another folder")
    place = Tracking(("trackio",), tmp_path / "tracking", "exp")
    assert write_two_rounds(place) == []
    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs("isheep", "exp")
    assert [(row["step"], row["isheep/kept"]) for row in logs] == [(1, 10), (2, 14)]
    assert (folder / "isheep.db").is_file()
