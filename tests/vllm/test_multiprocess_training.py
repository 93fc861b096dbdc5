"""A two-process CPU training (``trainer.num_processes = 2``, gloo) whose merged model is then served."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support.procs import ROOT

from isheep.runtime.core.config import ServerConfig, TrainerConfig
from isheep.runtime.core.types import Checkpoint, ServedModel, TrainRequest
from isheep.runtime.serving.server import ManagedServer
from isheep.runtime.serving.swap import ReloadSwap, ServerApi
from isheep.runtime.training import TrlBackend

pytestmark = pytest.mark.vllm
PAIRS, BATCH = 8, 2
EVENTS: list[dict] = []


def seed_examples(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "prompts" / "seeds.jsonl").read_text().splitlines()[:n]]
    return [{"id": r["id"], "round": 1, "instruction": r["instruction"], "input": r["input"], "response": r["output"]}
            for r in rows]


@pytest.fixture(scope="module")
def two_processes(embedded_model, tmp_path_factory) -> Checkpoint:
    """One round trained by two processes on the CPU, before the server starts (the machine is small)."""
    settings = TrainerConfig(backend="trl", epochs=1, max_length=128, batch_size=BATCH, num_processes=2)
    request = TrainRequest(round=1, version="v1", parent="v0", init_path=embedded_model,
                           examples=seed_examples(PAIRS), out_dir=tmp_path_factory.mktemp("train") / "round-01")
    return asyncio.run(TrlBackend(settings, on_progress=EVENTS.append).train(request))


@pytest.fixture(scope="module")
def swap_server(embedded_model, tmp_path_factory):
    """A server with vLLM's dev-mode routes (reload), on loopback."""
    log = tmp_path_factory.mktemp("swap") / "server.log"
    server = ManagedServer(ServerConfig(), embedded_model, log, served_name="smol", dev_mode=True)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    yield server, loop
    loop.run_until_complete(server.stop())
    loop.close()


@pytest.mark.timeout(900)
def test_two_processes_train_once_merge_once_and_the_result_is_served(two_processes, swap_server, embedded_model):
    out = Path(two_processes.path).parent
    phases = [e for e in EVENTS if e["event"] == "phase"]
    assert [e["phase"] for e in phases] == ["loading", "tokenizing", "training", "saving", "merging"]
    assert phases[0]["processes"] == 2 and phases[2]["processes"] == 2  # launched, and joined the gloo group
    # Each step takes BATCH pairs from each process: half the steps one process would take.
    assert phases[2]["max_steps"] == PAIRS // (BATCH * 2)
    steps = [e["step"] for e in EVENTS if e["event"] == "step"]
    assert steps == list(range(1, phases[2]["max_steps"] + 1))  # rank 0 alone reports, each step once
    assert [e["event"] for e in EVENTS].count("done") == 1 and EVENTS[-1]["event"] == "done"
    assert two_processes.kind == "full" and two_processes.path == out / "model"
    weights = sorted(str(p.relative_to(out)) for p in out.rglob("*.safetensors"))
    assert weights == ["adapter/adapter_model.safetensors", "model/model.safetensors"]  # one adapter, one merge

    server, loop = swap_server
    api = ServerApi(server.url, server.api_key)
    swap = ReloadSwap(api)
    base = ServedModel(version="v0", name="smol", path=embedded_model)
    original = loop.run_until_complete(api.fingerprint("smol"))
    served = loop.run_until_complete(swap.swap(two_processes, base))
    assert served == ServedModel(version="v1", name="smol", path=two_processes.path)
    assert swap.evidence["weights_changed"] and loop.run_until_complete(api.fingerprint("smol")) != original
    info = loop.run_until_complete(api.request("GET", f"{api.root}/weight_info"))
    assert info["weight_version"] == "v1"
    answer = loop.run_until_complete(api.probe("smol"))
    assert answer["choices"][0]["message"]["content"].strip()  # the merged model answers
    back = Checkpoint(version="v0", parent="v0", round=0, path=embedded_model)
    loop.run_until_complete(swap.swap(back, served))
    assert loop.run_until_complete(api.fingerprint("smol")) == original  # the old weights, exactly
