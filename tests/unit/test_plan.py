"""``isheep plan``: the processes a run would start, their memory, and whether they fit.

GPUs are given as ``nvidia-smi`` would print them (none run here); the model sizes are real
ones (7B-class parameter counts) or the embedded model's checkpoint read from its headers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from isheep.runtime.core.loading import load_config
from isheep.runtime.serving.placement import fits, fits_in_ram, parse_gpus, processes

SEVEN_B = 7_615_616_512  # Qwen2.5-7B
H100S = parse_gpus("\n".join(f"{i}, NVIDIA H100 80GB HBM3, 81559" for i in range(8)))


def plan(params: int, gpu: bool = True, **overrides):
    return processes(load_config(overrides={"critic.model": "current", **overrides}, environ={}), params, gpu)


def test_nvidia_smi_lines_are_read():
    gpus = parse_gpus("0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA A10G, 23028\nNo devices were found\n")
    assert [(g.index, g.name, round(g.memory_gib)) for g in gpus] == [(0, "NVIDIA H100 80GB HBM3", 80),
                                                                       (1, "NVIDIA A10G", 22)]


def test_a_7b_model_split_over_eight_gpus_fits():
    procs = plan(SEVEN_B, **{"server.gpus": [0, 1, 2, 3], "server.tensor_parallel_size": 2,
                             "server.data_parallel_size": 2, "trainer.gpus": [4, 5, 6, 7]})
    server, trainer = procs
    assert server.role == "vLLM server x DP 2" and server.devices == "GPU 0,1,2,3" and server.share == 0.9
    assert server.need_gib == pytest.approx(SEVEN_B * 2 / 2 / 2**30)  # bf16, half the weights per GPU (TP 2)
    assert trainer.role == "training job (lora)" and trainer.gpus == (4, 5, 6, 7)
    assert fits(procs, H100S) == []


def test_a_7b_model_on_one_small_gpu_does_not_fit_and_says_why():
    a10g = parse_gpus("0, NVIDIA A10G, 23028")
    problems = fits(plan(SEVEN_B, **{"trainer.method": "full", "swap.strategy": "reload"}), a10g)
    assert any(p.startswith("training job (full): needs ~") for p in problems)  # 16 B/param: ~136 GiB
    assert any(p.startswith("GPU 0: its processes together need") for p in problems)


def test_colocated_training_must_fit_beside_the_servers_share():
    shared = {"server.gpus": [0], "trainer.gpus": [0]}
    too_much = plan(SEVEN_B, **shared, **{"server.gpu_memory_utilization": 0.9})
    assert any("GPU 0: its processes together need" in p for p in fits(too_much, H100S))
    assert fits(plan(SEVEN_B, **shared, **{"server.gpu_memory_utilization": 0.5}), H100S) == []


def test_a_gpu_that_is_not_there_is_named():
    assert fits(plan(SEVEN_B, **{"server.gpus": [8]}), H100S)[0] == "vLLM server: GPU 8 not found here"


def test_the_base_judge_needs_a_second_server_when_weights_change_in_place():
    roles = [p.role for p in plan(SEVEN_B, **{"critic.model": "base"})]
    assert roles == ["vLLM server", "vLLM server (base judge)", "training job (lora)"]
    assert [p.role for p in plan(SEVEN_B, **{"critic.model": "base", "swap.strategy": "lora"})] == [
        "vLLM server", "training job (lora)"]


def test_on_cpu_everything_shares_the_ram():
    procs = plan(134_515_008, gpu=False)
    assert [p.devices for p in procs] == ["cpu", "cpu"] and 3.5 < procs[0].need_gib < 5  # ~4 GB measured
    assert fits_in_ram(procs, 24) == [] and "this machine has 2.0 GiB" in fits_in_ram(procs, 2)[0]


CONFIGS = Path(__file__).parents[2] / "examples" / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_every_example_config_loads(name):
    config = load_config(CONFIGS / name, environ={"OPENAI_API_KEY": "sk-test"})
    assert config.rounds >= 1


def test_the_split_example_gives_each_replica_its_gpus_and_fits_eight_h100s():
    procs = processes(load_config(CONFIGS / "gpu-split.toml", environ={}), SEVEN_B, True)
    assert [(p.role, p.devices) for p in procs] == [
        ("vLLM server (replica 1 of 2)", "GPU 0,1"), ("vLLM server (replica 2 of 2)", "GPU 2,3"),
        ("training job (lora)", "GPU 4,5,6,7")]
    assert fits(procs, H100S) == []


def test_the_colocate_example_fits_one_gpu_because_the_server_sleeps_while_training():
    config = load_config(CONFIGS / "gpu-colocate.toml", environ={})
    procs = processes(config, SEVEN_B, True)
    assert procs[0].sleeps and "asleep while training runs" in procs[0].note
    assert fits(procs, H100S[:1]) == []
    awake = processes(config.model_copy(update={"server": config.server.model_copy(update={"placement": "split"})}),
                      SEVEN_B, True)
    assert any("GPU 0: its processes together need" in p for p in fits(awake, H100S[:1]))
