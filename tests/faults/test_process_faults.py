"""Process and server faults with real training: kill -9 at random points, 20 times, resuming
each time; an endpoint that never comes back from a swap; the evaluation gate.

Training is real (TRL on the embedded SmolLM2, tiny settings); the endpoint is the test server,
and a `command` swap "redeploys" it (tests/support/redeploy.py renames what it serves), so a
kill can land during generation, store writes, training or a swap without a vLLM server.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.procs import ROOT, clean_environ, isheep_cmd, run_cli

import isheep
from isheep.runtime.core.loading import load_config

pytestmark = pytest.mark.slow
REDEPLOY = ROOT / "tests" / "support" / "redeploy.py"


def redeploy(port: int, **changes) -> str:
    """The shell command of a `command` swap that changes what the test server serves."""
    return " ".join([sys.executable, str(REDEPLOY), str(port), *(f"{k}={v}" for k, v in changes.items())])


def training_args(model_dir: Path, port: int, **deploy) -> list[str]:
    return ["--train", "trl", "--swap", "command",
            "--set", f"trainer.base_model='{model_dir}'", "--set", "trainer.epochs=1",
            "--set", "trainer.max_length=128", "--set", "trainer.batch_size=8",
            "--set", f"swap.command='{redeploy(port, **deploy)}'",
            "--set", "swap.expect_model='test-model-{version}'", "--set", "swap.timeout_s=20",
            # The swap redeploys the one test server in place: no base model is left to judge.
            "--set", "critic.model='current'"]


def check_store(db_path: Path) -> str | None:
    """The integrity promise after any kill; returns the open round's phase."""
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) - COUNT(DISTINCT id) FROM items").fetchone()[0] == 0
        unknown = db.execute("SELECT COUNT(*) FROM items WHERE state NOT IN "
                             "('proposed','responded','assessed','kept','rejected','failed')").fetchone()[0]
        assert unknown == 0
        unfinished = db.execute(
            "SELECT COUNT(*) FROM items i JOIN rounds r ON i.round = r.round WHERE r.state IN ('done','rejected')"
            " AND i.state IN ('proposed','responded','assessed')").fetchone()[0]
        assert unfinished == 0  # every item of a closed round is in exactly one final state
        open_round = db.execute("SELECT state FROM rounds WHERE state NOT IN ('done','rejected')"
                                " ORDER BY round DESC LIMIT 1").fetchone()
    return open_round[0] if open_round else None


def _phase(db_path: Path) -> str | None:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT state FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _run_with_kills(server, model_dir: Path, out: Path, rng: random.Random, targets: list[str]) -> list[str | None]:
    """Run with a kill -9 for each target phase (at a random moment inside it, or anywhere for
    ``any``), resuming after each; then let the run finish. Returns the phases the kills hit."""
    first = ["run", "--endpoint", server.url, "--out", str(out), "--rounds", "2", "--round-size", "12",
             "--max-proposed", "600", "--quiet", "--set", "close_on='kept'",  # 12 kept pairs to train on
             *training_args(model_dir, server.port, model="test-model-$ISHEEP_VERSION")]
    phases: list[str | None] = []
    for target in targets:
        args = first if not (out / "isheep.db").exists() else ["run", "--resume", str(out), "--quiet"]
        proc = subprocess.Popen(isheep_cmd(*args), env=clean_environ(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        if target == "any":
            deadline = time.time() + rng.uniform(0.5, 20.0)
            while time.time() < deadline and proc.poll() is None:
                time.sleep(0.02)
        else:  # wait for the phase, then kill at a random moment inside it
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None and _phase(out / "isheep.db") != target:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3 if target == "swapping" else 3.0))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            return phases  # it finished before this kill
        phase = _phase(out / "isheep.db") or "starting"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        phases.append(phase)
        if (out / "isheep.db").exists():
            check_store(out / "isheep.db")
    done = run_cli("run", "--resume", str(out), "--quiet", timeout=900)
    assert done.returncode == 0, done.stderr
    return phases


# Twenty kills, each resumed, with a real training job per round: past the 600 s default on CI.
@pytest.mark.timeout(1500)
def test_kill_9_twenty_times_during_generation_writes_training_and_swaps(server_factory, embedded_model, tmp_path):
    rng = random.Random(2026)
    plan = ["generating", "any", "generating", "training", "any", "swapping", "generating", "training",
            "any", "swapping"] * 2
    phases: list[str | None] = []
    runs = 0
    while len(phases) < 20:  # a run that completes early leaves the rest of the kills to the next one
        server = server_factory(delay_s=0.15)  # generation lasts seconds, so kills land in it too
        out = tmp_path / f"run{runs}"
        runs += 1
        phases += _run_with_kills(server, embedded_model, out, rng, plan[len(phases):])
        assert check_store(out / "isheep.db") is None
        with sqlite3.connect(out / "isheep.db") as db:
            rounds = db.execute("SELECT round, state FROM rounds ORDER BY round").fetchall()
            versions = dict(db.execute("SELECT version, state FROM models").fetchall())
            kept = dict(db.execute("SELECT round, COUNT(*) FROM items WHERE state='kept' GROUP BY round").fetchall())
        assert rounds == [(1, "done"), (2, "done")]
        assert versions["v2"] == "serving" and all(kept[k] >= 12 for k in (1, 2))
    assert {"generating", "training", "swapping"} <= set(phases), phases  # kills landed in every phase


def test_a_swap_to_an_endpoint_that_never_comes_back_stops_cleanly(server_factory, embedded_model, tmp_path):
    server = server_factory()
    out = tmp_path / "run"
    proc = run_cli("run", "--endpoint", server.url, "--out", str(out), "--rounds", "2", "--round-size", "8",
                   "--max-proposed", "400", "--quiet", *training_args(embedded_model, server.port, kill=server.proc.pid),
                   "--set", "swap.timeout_s=5", timeout=600)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no longer answers" in lines[0] and "data so far is safe" in lines[0], lines
    assert check_store(out / "isheep.db") == "swapping"  # resumable where it stopped
    with sqlite3.connect(out / "isheep.db") as db:
        assert db.execute("SELECT COUNT(*) FROM items WHERE round=1 AND state='kept'").fetchone()[0] >= 8
        assert db.execute("SELECT state FROM models WHERE version='v1'").fetchone()[0] == "failed"


def gate_prompts(folder, n: int):
    """A gate prompts file of the user's (``evaluation.prompts``): each asks for a word every test
    server answer holds."""
    prompts = folder / "gate.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"g{i}", "prompt": f"Describe tool number {i} with care.",
                                           "checks": [{"type": "contains", "value": "careful"}]}) + "\n"
                               for i in range(n)), encoding="utf-8")
    return prompts


@pytest.mark.parametrize("after,expected", [(1.0, "rejected"), (0.0, "serving")])
async def test_evaluation_gate_rolls_back_a_worse_model_and_keeps_an_equal_one(
        server_factory, embedded_model, tmp_path, clean_env, after, expected):
    """The gate's prompts (a file of the user's, as ``evaluation.prompts`` allows) check for a word
    the test server's answers hold; a model redeployed to answer nothing (``empty_rate = 1``) is
    worse beyond doubt, one redeployed unchanged is equal and kept."""
    server = server_factory(empty_rate=0.0)
    prompts = gate_prompts(tmp_path, 30)
    overrides = {"endpoints": [{"base_url": server.url}], "out": str(tmp_path / "run"), "rounds": 2,
                 "round_size": 8, "max_proposed": 400, "trainer.backend": "trl",
                 "trainer.base_model": str(embedded_model), "trainer.epochs": 1, "trainer.max_length": 128,
                 "swap.strategy": "command", "swap.expect_model": "test-model-{version}", "swap.timeout_s": 20,
                 "swap.command": redeploy(server.port, model="test-model-$ISHEEP_VERSION", empty_rate=after),
                 "swap.rollback_command": redeploy(server.port, model="test-model", empty_rate=0.0),
                 "evaluation.enabled": True, "evaluation.prompts": str(prompts), "critic.model": "current"}
    result = await isheep.arun(load_config(overrides=overrides, environ={}))
    with sqlite3.connect(result.folder / "isheep.db") as db:
        rounds = db.execute("SELECT round, state FROM rounds ORDER BY round").fetchall()
        v1 = db.execute("SELECT state, detail FROM models WHERE version='v1'").fetchone()
        generated = dict(db.execute("SELECT round, GROUP_CONCAT(DISTINCT responder_version) FROM items"
                                    " WHERE responder_version IS NOT NULL GROUP BY round").fetchall())
        evaluations = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind='evaluation'")]
    assert v1[0] in (expected, "retired")
    detail = json.loads(v1[1])
    assert len(detail["evaluation"]["scores"]) == 30
    assert detail["gate"]["best"] == "v0" and detail["gate"]["decision"] == ("rejected" if after else "kept")
    assert detail["gate"]["difference"]["mean"] == (-1.0 if after else 0.0)
    assert {e["version"] for e in evaluations} >= {"v0", "v1"}
    if expected == "rejected":
        assert rounds[0] == (1, "rejected")
        assert generated[2] == "v0"  # the rejected model never generated anything
        assert result.rounds[0].state == "rejected"
    else:
        assert rounds[0] == (1, "done") and generated[2] == "v1"


async def test_the_gate_judge_rejects_a_model_the_checks_find_equal(server_factory, embedded_model, tmp_path,
                                                                     clean_env):
    """With ``evaluation.judge`` the judge's pairwise verdicts count too: a model redeployed with
    shorter answers passes the same checks, but the judge (a test server that prefers the longer
    reply, at ``evaluation.judge_endpoint``) finds it worse in both orders, so it is rejected."""
    detail = "--with-one-more-useful-detail"  # plain characters: it goes through the swap's shell command
    server = server_factory(empty_rate=0.0, answer_suffix=detail)
    judge = server_factory(model="referee")
    prompts = gate_prompts(tmp_path, 20)
    overrides = {"endpoints": [{"base_url": server.url}], "out": str(tmp_path / "run"), "rounds": 1,
                 "round_size": 8, "max_proposed": 400, "trainer.backend": "trl",
                 "trainer.base_model": str(embedded_model), "trainer.epochs": 1, "trainer.max_length": 128,
                 "swap.strategy": "command", "swap.expect_model": "test-model-{version}", "swap.timeout_s": 20,
                 "swap.command": redeploy(server.port, model="test-model-$ISHEEP_VERSION", answer_suffix=""),
                 "swap.rollback_command": redeploy(server.port, model="test-model", answer_suffix=detail),
                 "evaluation.enabled": True, "evaluation.prompts": str(prompts), "evaluation.judge": True,
                 "evaluation.judge_limit": 12, "evaluation.judge_endpoint": {"base_url": judge.url},
                 "evaluation.judge_model": "referee", "critic.model": "current"}
    result = await isheep.arun(load_config(overrides=overrides, environ={}))
    with sqlite3.connect(result.folder / "isheep.db") as db:
        state, v1, path = db.execute("SELECT state, detail, path FROM models WHERE version='v1'").fetchone()
        v0 = json.loads(db.execute("SELECT detail FROM models WHERE version='v0'").fetchone()[0])
    gate = json.loads(v1)["gate"]
    assert state == "rejected" and gate["decision"] == "rejected"
    assert gate["difference"]["mean"] == 0.0  # the checks alone would have kept it
    judged = gate["judged"]
    assert judged["worse"] and judged["judge"] == "referee" and judged["win_rate"]["mean"] == 0.0
    assert judged["sign_test"]["losses"] == 12 and gate["alpha"] == pytest.approx(0.025)  # half each
    assert len(v0["evaluation"]["answers"]["texts"]) == 12  # the best's answers, kept for the judge
    assert judge.stats()["pairwise"] == 24  # both orders of each of the 12 prompts
    card = (Path(path) / "README.md").read_text()
    assert "- judged by referee against v0: win rate 0.000" in card
