"""Where each process runs: the vLLM command line and environment, the training job's devices.

No GPU runs here, so what a GPU box would be given is checked as text: the flags vLLM gets for
its parallelism and memory share, and the ``CUDA_VISIBLE_DEVICES`` of the server and the job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from isheep.runtime.core.config import ServerConfig, TrainerConfig
from isheep.runtime.core.errors import ConfigError
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.types import TrainRequest
from isheep.runtime.serving.server import ManagedServer
from isheep.runtime.training import TrlBackend


def server(tmp_path: Path, **settings) -> ManagedServer:
    return ManagedServer(ServerConfig(device="cuda", **settings), Path("/models/qwen-7b"), tmp_path / "server.log",
                         served_name="qwen")


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_one_gpu_by_default_and_nothing_pinned(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    s = server(tmp_path)
    args, env = s.command(), s.environment()
    assert [flag(args, f) for f in ("--tensor-parallel-size", "--data-parallel-size", "--gpu-memory-utilization")] \
        == [None, None, None]
    assert "--dtype" not in args  # float32 and eager mode are for the CPU build only
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_a_sharded_replicated_server_on_four_gpus(tmp_path):
    s = server(tmp_path, gpus=[0, 1, 2, 3], tensor_parallel_size=2, data_parallel_size=2, gpu_memory_utilization=0.85)
    args, env = s.command(), s.environment()
    assert (flag(args, "--tensor-parallel-size"), flag(args, "--data-parallel-size"),
            flag(args, "--gpu-memory-utilization")) == ("2", "2", "0.85")
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and env["VLLM_API_KEY"] == s.api_key
    assert "OPENAI_API_KEY" not in env


def test_the_training_job_runs_on_its_own_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-job")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    request = TrainRequest(round=1, version="v1", parent="v0", init_path=Path("/models/qwen-7b"), examples=[],
                           out_dir=tmp_path / "round-01", settings=TrainerConfig(gpus=[4, 5, 6, 7]))
    env = TrlBackend(TrainerConfig()).environment(request)
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7" and "OPENAI_API_KEY" not in env
    everywhere = request.model_copy(update={"settings": TrainerConfig()})
    assert TrlBackend(TrainerConfig()).environment(everywhere)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"


def test_eight_gpus_split_between_serving_and_training_load():
    config = load_config(overrides={"server.gpus": [0, 1, 2, 3], "server.tensor_parallel_size": 2,
                                    "server.data_parallel_size": 2, "trainer.gpus": [4, 5, 6, 7]}, environ={})
    assert config.server.gpus == [0, 1, 2, 3] and config.trainer.gpus == [4, 5, 6, 7]


@pytest.mark.parametrize("overrides,needle", [
    ({"server.gpus": [0, 1], "server.tensor_parallel_size": 4}, "= 4 needs 4 GPUs; server.gpus lists 2"),
    ({"server.gpus": [0, 1], "trainer.gpus": [1, 2]}, "server.gpus and trainer.gpus share GPU 1"),
    ({"endpoints": [{"base_url": "http://gpu-1:8000/v1"}, {"base_url": "http://gpu-2:8000/v1"}],
      "trainer.backend": "trl", "swap.strategy": "reload", "critic.model": "current"},
     "the reload swap reaches one server, and the other endpoints would keep serving the old weights"),
])
def test_placements_that_cannot_work_are_refused_at_load(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=overrides, environ={})


def test_sharing_a_gpu_with_a_memory_share_set_is_allowed():
    config = load_config(overrides={"server.gpus": [0], "trainer.gpus": [0], "server.gpu_memory_utilization": 0.4},
                         environ={})
    assert config.server.gpu_memory_utilization == 0.4
