"""The command line as a user meets it: errors in one line with exit 2, kill -9 and resume, Ctrl-C."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from support.procs import clean_environ, isheep_cmd, run_cli

SMALL = ["--rounds", "1", "--round-size", "10", "--max-proposed", "200", "--set", "close_on=kept"]


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("isheep: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_happy_path_prints_a_summary(server, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "--endpoint", server.url, *SMALL, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "isheep run summary" in proc.stdout and "kept" in proc.stdout
    assert f"run folder: {out}" in proc.stdout
    exported = run_cli("export", str(out))
    assert exported.returncode == 0 and (out / "exports" / "round-01.jsonl").exists()


@pytest.mark.parametrize("args,needle", [
    (["run", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m"], "cannot reach endpoint http://127.0.0.1:9/v1"),
    (["run", "--endpoint", "not a url", "--model", "m"], "endpoint URL must look like"),
    (["run", "--model", "m", "--set", "server.model='/nonexistent/model'"], "model folder not found: /nonexistent/model"),
    (["run", "--endpoint", "http://127.0.0.1:9/v1", "--rounds", "0"], "argument --rounds: expected a number of at least 1"),
    (["run", "--endpoint", "http://127.0.0.1:9/v1", "--set", "proposer.temperature=7"], "proposer.temperature"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["run", "--resume", "/nonexistent/run"], "run folder not found: /nonexistent/run"),
    (["export", "/nonexistent/run"], "run folder not found"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "runs").exists()  # nothing was written


def test_wrong_model_name_lists_what_is_served(server, tmp_path):
    proc = run_cli("run", "--endpoint", server.url, "--model", "gpt-5", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "model 'gpt-5' is not served by")
    assert "test-model" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_bad_key_is_named(server_factory, tmp_path):
    server = server_factory(api_key="right")
    proc = run_cli("run", "--endpoint", server.url, "--out", str(tmp_path / "r"), env={"OPENAI_API_KEY": "wrong"})
    assert_one_line_error(proc, "refused the API key (HTTP 401)")
    assert "wrong" not in proc.stderr


def test_malformed_seed_file_and_config(server, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "fine"}\n{oops\n')
    proc = run_cli("run", "--endpoint", server.url, "--set", f"proposer.seeds='{seeds}'", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "line 2: not valid JSON")
    config = tmp_path / "c.toml"
    config.write_text("[proposer]\nworkers = 'many'\n")
    proc = run_cli("run", "--endpoint", server.url, "--config", str(config), "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "proposer.workers: Input should be a valid integer")
    template = tmp_path / "t.txt"
    template.write_text("Write {count} tasks like these:\n{examples}\n")
    proc = run_cli("run", "--endpoint", server.url, "--set", f"proposer.template='{template}'", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "lacks placeholder(s): {next}")
    assert not (tmp_path / "r").exists()


def test_an_existing_run_is_never_overwritten(server, tmp_path):
    out = tmp_path / "run"
    assert run_cli("run", "--endpoint", server.url, *SMALL, "--out", str(out)).returncode == 0
    before = (out / "isheep.db").read_bytes()
    proc = run_cli("run", "--endpoint", server.url, *SMALL, "--out", str(out))
    assert_one_line_error(proc, f"{out} already holds a run; continue it with --resume {out}")
    assert (out / "isheep.db").read_bytes() == before


def test_resume_of_a_foreign_folder(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "isheep.db").write_text("not a database at all")
    assert_one_line_error(run_cli("run", "--resume", str(tmp_path / "other")), "not a readable isheep database")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("run", "--resume", str(tmp_path / "empty")), "is not an isheep run folder")


def test_a_model_that_returns_garbage_stops_with_exit_2(server_factory, tmp_path):
    server = server_factory(proposer_garbage=True)
    proc = run_cli("run", "--endpoint", server.url, *SMALL, "--out", str(tmp_path / "g"),
                   "--set", "proposer.max_barren_calls=5")
    assert_one_line_error(proc, "held no parseable instruction")
    server = server_factory(garbage_rate=1.0)
    proc = run_cli("run", "--endpoint", server.url, *SMALL, "--out", str(tmp_path / "h"),
                   "--set", "critic.max_unparseable_streak=10")
    assert_one_line_error(proc, "could not be read as scores")
    with sqlite3.connect(tmp_path / "h" / "isheep.db") as db:  # what was done before stays
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] > 0


def _wait_for_items(db_path: Path, finished: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db_path.exists():
            try:
                with sqlite3.connect(db_path, timeout=1) as db:
                    n = db.execute("SELECT COUNT(*) FROM items WHERE state IN ('kept','rejected','failed')"
                                   " AND stage != 'proposer'").fetchone()[0]
                if n >= finished:
                    return
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


def _final_items(db_path: Path) -> dict[str, tuple]:
    with sqlite3.connect(db_path) as db:
        return {r[0]: r[1:] for r in db.execute(
            "SELECT id, state, reason, response, quality, following, updated_at FROM items"
            " WHERE state IN ('kept','rejected','failed')")}


def test_kill_9_mid_round_then_resume(server_factory, tmp_path):
    server = server_factory(delay_s=0.05)
    out = tmp_path / "run"
    args = ["run", "--endpoint", server.url, "--rounds", "2", "--round-size", "40", "--max-proposed", "600",
            "--set", "close_on=kept",
            "--out", str(out), "--quiet"]
    proc = subprocess.Popen(isheep_cmd(*args), env=clean_environ(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _wait_for_items(out / "isheep.db", 15)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _final_items(out / "isheep.db")
    with sqlite3.connect(out / "isheep.db") as db:
        all_before = {r[0] for r in db.execute("SELECT id FROM items")}
        pending = db.execute("SELECT COUNT(*) FROM items WHERE state IN ('proposed','responded','assessed')").fetchone()[0]
    assert pending > 0  # it really died mid-round

    resumed = run_cli("run", "--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(out / "isheep.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [r[0] for r in db.execute("SELECT id FROM items")]
        assert len(ids) == len(set(ids))
        states = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        assert set(states) <= {"kept", "rejected", "failed"}
        rounds = db.execute("SELECT round, state FROM rounds ORDER BY round").fetchall()
        kept = dict(db.execute("SELECT round, COUNT(*) FROM items WHERE state='kept' GROUP BY round").fetchall())
    assert rounds == [(1, "done"), (2, "done")]
    assert kept[1] >= 40 and kept[2] >= 40
    assert all_before <= set(ids)  # nothing lost
    after = _final_items(out / "isheep.db")
    for item_id, value in before.items():
        assert after[item_id] == value  # finished work untouched


def _start_run(server, out) -> subprocess.Popen:
    """A one-round run in a subprocess, slow enough to be interrupted part-way."""
    return subprocess.Popen(isheep_cmd("run", "--endpoint", server.url, "--set", "close_on=kept", "--rounds", "1",
                                       "--round-size", "40",
                                       "--max-proposed", "600", "--out", str(out), "--quiet"),
                            env=clean_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_stops_cleanly_and_resume_finishes(server_factory, tmp_path):
    out = tmp_path / "run"
    proc = _start_run(server_factory(delay_s=0.05), out)
    _wait_for_items(out / "isheep.db", 10)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "stopping: finishing in-flight writes" in stderr and "Traceback" not in stderr
    assert f"isheep run --resume {out}" in stdout
    resumed = run_cli("run", "--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(out / "isheep.db") as db:
        assert db.execute("SELECT state FROM rounds").fetchall() == [("done",)]
        assert db.execute("SELECT COUNT(*) FROM items WHERE state IN ('proposed','responded','assessed')"
                          ).fetchone()[0] == 0


def test_second_ctrl_c_aborts(server_factory, tmp_path):
    out = tmp_path / "run"
    proc = _start_run(server_factory(delay_s=0.2), out)
    _wait_for_items(out / "isheep.db", 1)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr
    with sqlite3.connect(out / "isheep.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_plan_prints_each_process_and_whether_it_fits(tmp_path):
    proc = run_cli("plan", "--config", str(Path(__file__).parents[2] / "examples" / "configs" / "embedded.toml"),
                   "--set", "critic.model='base'")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith(("vLLM", "training"))] == [
        "vLLM server", "vLLM server (base judge)", "training job (lora)"]
    assert lines[-1].startswith(("fits: within this machine's", "does not fit:"))
    missing = run_cli("plan", "--set", f"server.model='{tmp_path / 'nowhere'}'")
    assert missing.returncode == 2 and missing.stderr.startswith("isheep: error: model folder not found")
