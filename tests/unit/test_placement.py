"""Where each process runs: the vLLM command line and environment, the training job's devices.

No GPU runs here, so what a GPU box would be given is checked as text: the flags vLLM gets for
its parallelism and memory share, and the ``CUDA_VISIBLE_DEVICES`` of the server and the job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from isheep.runtime.core.config import ServerConfig, TrainerConfig
from isheep.runtime.core.errors import ConfigError, UserError
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
    ({"server.replicas": 2, "server.gpus": [0, 1, 2], "server.tensor_parallel_size": 2},
     "server.replicas x tensor_parallel_size x data_parallel_size = 4 needs 4 GPUs; server.gpus lists 3"),
    ({"server.replicas": 2, "server.gpus": [0, 1, 2]}, "list exactly 2, 1 per replica"),
    ({"server.replicas": 2, "server.port": 8000}, "each replica needs its own port"),
    ({"server.replicas": 2, "endpoints": [{"base_url": "http://gpu-1:8000/v1"}]}, "list the replicas you run as"),
    ({"server.placement": "colocate", "swap.strategy": "restart"}, "it needs the reload swap, not 'restart'"),
    ({"server.placement": "colocate", "endpoints": [{"base_url": "http://gpu-1:8000/v1"}]},
     "it does not apply to \\[\\[endpoints\\]\\]"),
    ({"server.placement": "colocate", "critic.model": "base"}, "keep a second server \\(the base judge\\) awake"),
    ({"trainer.num_processes": 4, "trainer.gpus": [4, 5]}, "needs a GPU each; trainer.gpus lists 2"),
    ({"endpoints": [{"base_url": "http://gpu-1:8000/v1"}, {"base_url": "http://gpu-2:8000/v1"}],
      "swap.strategy": "command", "swap.command": "redeploy", "critic.model": "current"},
     "the command swap on 2 endpoints needs swap.rollback_command"),
    ({"evaluation.enabled": True, "evaluation.judge": True, "critic.model": "current"},
     "evaluation.judge asks the base model, which this run does not serve beside the policy with the reload swap"),
])
def test_placements_that_cannot_work_are_refused_at_load(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=overrides, environ={})


@pytest.mark.parametrize("overrides", [
    {"critic.model": "base"},  # the base judge's second managed server judges
    {"critic.model": "current", "swap.strategy": "lora"},  # the base stays served beside the adapters
    {"critic.model": "current", "evaluation.judge_endpoint": {"base_url": "http://judge:8000/v1"}},
])
def test_the_gate_judge_loads_where_the_base_model_is_served(overrides):
    config = load_config(overrides={"evaluation.enabled": True, "evaluation.judge": True, **overrides}, environ={})
    assert config.evaluation.judge


def test_replicas_each_get_their_slice_of_the_gpus(tmp_path):
    from isheep.runtime.serving.placement import replica_configs

    config = load_config(overrides={"server.replicas": 2, "server.gpus": [0, 1, 2, 3],
                                    "server.tensor_parallel_size": 2, "trainer.gpus": [4, 5, 6, 7]}, environ={})
    slices = [c.gpus for c in replica_configs(config)]
    assert slices == [[0, 1], [2, 3]]
    envs = [ManagedServer(c.model_copy(update={"device": "cuda"}), Path("/m"), tmp_path / f"s{i}.log",
                          served_name="m").environment()["CUDA_VISIBLE_DEVICES"]
            for i, c in enumerate(replica_configs(config))]
    assert envs == ["0,1", "2,3"]


def test_replicas_on_gpus_must_be_given_their_devices():
    from isheep.runtime.serving.placement import replica_configs

    config = load_config(overrides={"server.replicas": 2}, environ={})
    assert [c.gpus for c in replica_configs(config, "cpu")] == [[], []]  # vLLM-CPU: no devices to split
    with pytest.raises(UserError, match=r"server.replicas = 2 on GPUs needs server.gpus"):
        replica_configs(config, "cuda")  # each would start on every GPU and take 90% of it


def test_colocated_servers_can_sleep_on_gpus_and_keep_the_cpu_flags_valid(tmp_path):
    """vLLM-CPU refuses --enable-sleep-mode (and answers the sleep routes anyway): only GPUs get it."""
    gpu = ManagedServer(ServerConfig(device="cuda", placement="colocate"), Path("/m"), tmp_path / "g.log",
                        served_name="m", dev_mode=True, sleep_mode=True)
    cpu = ManagedServer(ServerConfig(device="cpu", placement="colocate"), Path("/m"), tmp_path / "c.log",
                        served_name="m", dev_mode=True, sleep_mode=True)
    assert "--enable-sleep-mode" in gpu.command() and "--enable-sleep-mode" not in cpu.command()
    assert gpu.environment()["VLLM_SERVER_DEV_MODE"] == "1"


def test_colocated_training_may_share_the_servers_gpus_without_a_memory_share():
    config = load_config(overrides={"server.placement": "colocate", "server.gpus": [0], "trainer.gpus": [0],
                                    "critic.model": "current"}, environ={})
    assert config.server.placement == "colocate" and config.swap_strategy() == "reload"


def test_sharing_a_gpu_with_a_memory_share_set_is_allowed():
    config = load_config(overrides={"server.gpus": [0], "trainer.gpus": [0], "server.gpu_memory_utilization": 0.4},
                         environ={})
    assert config.server.gpu_memory_utilization == 0.4


def test_the_cpu_server_gets_isheeps_top_p_plugin_unless_told_not_to(tmp_path, monkeypatch):
    """vLLM-CPU sorts the vocabulary for top-p; the managed CPU server turns on isheep's windowed filter."""
    monkeypatch.setenv("ISHEEP_CPU_TOP_P", "window")  # left over in a user's shell: off means off
    on, off, gpu = (ManagedServer(ServerConfig(device=device, fast_top_p=fast), Path("/m"), tmp_path / "s.log",
                                  served_name="m") for device, fast in (("cpu", True), ("cpu", False), ("cuda", True)))
    assert on.environment()["ISHEEP_CPU_TOP_P"] == "window"
    assert "ISHEEP_CPU_TOP_P" not in off.environment()
    assert "ISHEEP_CPU_TOP_P" not in gpu.environment()  # vLLM samples with FlashInfer there


def test_the_server_logs_at_its_configured_level_whatever_trl_set(tmp_path, monkeypatch):
    """Importing TRL sets VLLM_LOGGING_LEVEL=ERROR in the importing process; server.log keeps vLLM's lines."""
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "ERROR")  # what `import trl` leaves (trl/_compat.py)
    server = ManagedServer(ServerConfig(device="cpu"), Path("/m"), tmp_path / "s.log", served_name="m")
    assert server.environment()["VLLM_LOGGING_LEVEL"] == "INFO"
    quiet = ManagedServer(ServerConfig(device="cpu", log_level="WARNING"), Path("/m"), tmp_path / "s.log",
                          served_name="m")
    assert quiet.environment()["VLLM_LOGGING_LEVEL"] == "WARNING"
