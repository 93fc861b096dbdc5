"""End to end on the real vLLM-CPU server with the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from support.procs import ROOT, clean_environ, group_alive, isheep_cmd, run_cli, wait_gone

import isheep
from isheep.runtime.core.loading import load_config

pytestmark = pytest.mark.vllm
EMBEDDED = str(ROOT / "examples" / "configs" / "embedded.toml")


def accounting(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        assert set(counts) <= {"kept", "rejected", "failed"}, counts
        assert db.execute("SELECT COUNT(*) FROM items WHERE state != 'kept' AND reason IS NULL").fetchone()[0] == 0
    return counts


def test_a_real_round_through_all_roles(vllm_server, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "--config", EMBEDDED, "--endpoint", vllm_server.url, "--rounds", "1",
                   "--round-size", "2", "--max-proposed", "16", "--out", str(out), "--quiet",
                   env={"OPENAI_API_KEY": vllm_server.key}, timeout=900)
    assert proc.returncode == 0, proc.stderr
    counts = accounting(out / "isheep.db")
    assert sum(counts.values()) == 16 or counts.get("kept", 0) >= 2
    with sqlite3.connect(out / "isheep.db") as db:
        answered = db.execute("SELECT response FROM items WHERE response IS NOT NULL").fetchall()
        scored = db.execute("SELECT quality, quality_raw FROM items WHERE quality_raw IS NOT NULL").fetchall()
    assert answered and all(r[0].strip() for r in answered[:5])  # the model really answered
    # JSON-schema output: every reply parsed to a score (one cut off by the token limit included)
    assert scored and all(q is not None and raw.lstrip().startswith("{") for q, raw in scored)
    assert vllm_server.key not in (out / "run.log").read_text()


def _server_of(supervisor):
    return supervisor.pool.endpoints[0].server


@pytest.mark.timeout(900)  # two server start-ups (the restart included) and a round
async def test_managed_server_survives_a_crash_and_leaves_nothing(embedded_model, tmp_path, clean_env):
    # No training: the crash and the restart are in the round (tests/vllm/test_training.py trains).
    config = load_config(EMBEDDED, {"out": str(tmp_path / "run"), "rounds": 1, "round_size": 3,
                                    "max_proposed": 20, "trainer.backend": "none"}, environ={})
    holder: dict = {}

    async def crash_once():
        while "s" not in holder or holder["s"].stats.account is None or holder["s"].stats.account.finished < 3:
            await asyncio.sleep(0.5)
        server = _server_of(holder["s"])
        holder["pgid"] = server.pid
        os.kill(server.server_pid, signal.SIGKILL)  # the API server dies mid-round

    crasher = asyncio.create_task(crash_once())
    result = await isheep.arun(config, on_supervisor=lambda s: holder.__setitem__("s", s))
    await crasher
    counts = accounting(result.folder / "isheep.db")
    assert sum(counts.values()) == result.rounds[0].proposed
    with sqlite3.connect(result.folder / "isheep.db") as db:
        events = [m for (m,) in db.execute("SELECT message FROM events WHERE kind='server'")]
    assert any("restarting" in m for m in events) and any("is back" in m for m in events), events
    server = _server_of(holder["s"])
    assert wait_gone(server.pid, 30) and wait_gone(holder["pgid"], 30)  # old and new groups are gone


def test_failed_start_is_one_line_and_leaves_no_process(embedded_model, tmp_path):
    before = {p.pid for p in psutil.process_iter()}
    proc = run_cli("run", "--config", EMBEDDED, "--set", "server.extra_args=['--no-such-flag']",
                   "--out", str(tmp_path / "run"), timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("isheep: error: vLLM exited during start-up"), lines[-1]
    assert "Traceback" not in proc.stderr

    def leftovers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"])
                if p.pid not in before and "vllm" in " ".join(p.info["cmdline"] or [])]

    deadline = time.time() + 10  # a process that is exiting may still be listed for a moment
    while leftovers() and time.time() < deadline:
        time.sleep(0.1)
    assert leftovers() == []
    assert (tmp_path / "run" / "server.log").is_file()
    assert not (tmp_path / "run" / "isheep.db").exists()


def _start_and_find_server(out: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(isheep_cmd("run", "--config", EMBEDDED, "--out", str(out), "--quiet"),
                            env=clean_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        children = [c for c in psutil.Process(proc.pid).children() if "vllm" in " ".join(c.cmdline())]
        # The hard moment: the engine is starting (vLLM was seen to ignore SIGTERM then).
        if children and any("EngineCore" in c.name() for c in children[0].children(recursive=True)):
            return proc, children[0].pid
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no vLLM process appeared")


def test_ctrl_c_during_start_leaves_no_server(embedded_model, tmp_path):
    proc, pgid = _start_and_find_server(tmp_path / "run")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert wait_gone(pgid, 60), group_alive(pgid)


def test_kill_9_of_the_runtime_takes_the_server_down(embedded_model, tmp_path):
    proc, pgid = _start_and_find_server(tmp_path / "run")
    proc.kill()
    proc.wait()
    assert wait_gone(pgid, 90), group_alive(pgid)  # the guard took the whole group down
