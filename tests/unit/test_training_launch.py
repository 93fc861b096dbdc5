"""How the training job is launched: one process, or ``trainer.num_processes`` under ``accelerate launch``.

Nothing trains here: the command lines and environments are checked as text, and the
distributed line is read back by accelerate's own argument parser, which decides how many
processes it would start and with which launcher.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from isheep.runtime.core.config import TrainerConfig
from isheep.runtime.core.errors import ConfigError
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.types import TrainingFailed, TrainRequest
from isheep.runtime.training import TrlBackend
from isheep.runtime.training.backend import JOB_MODULE

SPEC = Path("/runs/r/round-01/spec.json")
JOB = ["-m", JOB_MODULE, str(SPEC)]


def request(tmp_path: Path, **settings) -> TrainRequest:
    return TrainRequest(round=1, version="v1", parent="v0", init_path=Path("/models/qwen-7b"), examples=[],
                        out_dir=tmp_path / "round-01", settings=TrainerConfig(**settings))


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_one_process_is_plain_python(tmp_path):
    assert TrlBackend(TrainerConfig()).command(request(tmp_path), SPEC) == [sys.executable, *JOB]
    ds = ["accelerate", "launch", "--config_file", "ds.yaml"]
    assert TrlBackend(TrainerConfig()).command(request(tmp_path, launcher=ds), SPEC) == [*ds, *JOB]


def test_two_processes_run_under_accelerate_launch(tmp_path):
    command = TrlBackend(TrainerConfig()).command(request(tmp_path, num_processes=2), SPEC)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"] and command[-3:] == JOB
    assert (flag(command, "--num_processes"), flag(command, "--num_machines"), flag(command, "--mixed_precision"),
            flag(command, "--dynamo_backend"), flag(command, "--main_process_port")) == ("2", "1", "no", "no", "0")
    # accelerate's --cpu starts one process whatever --num_processes says (its multi-CPU mode is mpirun).
    assert "--cpu" not in command


def test_accelerate_reads_the_line_as_two_processes_started_by_torchrun(tmp_path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    command = TrlBackend(TrainerConfig()).command(request(tmp_path, num_processes=2), SPEC)
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    assert args.num_processes == 2 and args.num_machines == 1 and args.gpu_ids == "all"
    assert args.multi_gpu and not args.cpu  # the torchrun launcher: the path that spawns the processes
    assert args.module and args.training_script == JOB_MODULE and args.training_script_args == [str(SPEC)]


def test_a_users_accelerate_launcher_gets_the_process_count(tmp_path):
    ds = ["accelerate", "launch", "--config_file", "ds.yaml"]
    command = TrlBackend(TrainerConfig()).command(request(tmp_path, num_processes=4, launcher=ds), SPEC)
    assert command == ["accelerate", "launch", "--num_processes", "4", "--config_file", "ds.yaml", *JOB]


@pytest.mark.parametrize("launcher", [["torchrun"], ["accelerate", "launch", "--num_processes", "2"]])
def test_a_hand_made_config_with_another_launcher_fails_the_round_not_the_runtime(tmp_path, launcher):
    backend = TrlBackend(TrainerConfig())
    with pytest.raises(ValueError, match="runs the job under 'accelerate launch'"):
        backend.command(request(tmp_path, num_processes=2, launcher=launcher), SPEC)
    import asyncio

    with pytest.raises(TrainingFailed, match="training round 1: trainer.num_processes = 2"):
        asyncio.run(backend.train(request(tmp_path, num_processes=2, launcher=launcher)))


def test_the_processes_keep_the_trainers_gpus_and_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    backend = TrlBackend(TrainerConfig())
    env = backend.environment(request(tmp_path, num_processes=4, gpus=[4, 5, 6, 7]))
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    assert env["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 4))
    command = backend.command(request(tmp_path, num_processes=4, gpus=[4, 5, 6, 7]), SPEC)
    assert flag(command, "--gpu_ids") == "all"  # accelerate leaves CUDA_VISIBLE_DEVICES as the job got it
    assert "OMP_NUM_THREADS" not in backend.environment(request(tmp_path))  # one process: torch's own default
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert backend.environment(request(tmp_path, num_processes=2))["OMP_NUM_THREADS"] == "3"  # the user's


@pytest.mark.parametrize("launcher,needle", [
    (["torchrun"], "trainer.launcher is 'torchrun': set the process count there instead"),
    (["accelerate", "launch", "--num_processes", "8"], "already sets --num_processes"),
])
def test_several_processes_under_another_launcher_are_refused_at_load(launcher, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides={"trainer.num_processes": 2, "trainer.launcher": launcher}, environ={})
