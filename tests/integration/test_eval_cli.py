"""``isheep eval --endpoint URL --model NAME``: the benchmarks against a real HTTP server.

The test server answers by quoting the instruction, so it follows few of them: the point is
that every prompt is asked, scored and kept, the table and the JSON agree, and bad input is one
line with exit status 2.
"""

from __future__ import annotations

import json

import pytest

from isheep.runtime.core.loading import load_config
from isheep.runtime.store import RunStore, model_row_op
from support.procs import run_cli

pytestmark = pytest.mark.timeout(120)


def test_eval_prints_each_benchmark_with_its_interval_and_writes_every_prompts_score(server_factory, tmp_path):
    server = server_factory(api_key="k-eval", delay_s=0.0)
    out = tmp_path / "results.json"
    done = run_cli("eval", "--endpoint", server.url, "--model", "test-model", "--limit", "25", "--json", str(out),
                   "--api-key-env", "EVAL_KEY", env={"EVAL_KEY": "k-eval"})
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.strip().splitlines()
    assert header.split()[:5] == ["bench", "model", "score", "95%", "interval"]
    assert row.startswith("instructions") and "test-model" in row and "prompt_loose" in row
    [result] = json.loads(out.read_text())
    assert result["bench"] == "instructions" and len(result["scores"]) == 25 and result["failed"] == 0
    assert set(result["scores"].values()) <= {0.0, 1.0}
    ci = result["interval"]
    assert ci["n"] == 25 and ci["low"] <= ci["mean"] <= ci["high"]
    assert f"{ci['mean']:.3f}" in row and f"[{ci['low']:.3f}, {ci['high']:.3f}]" in row
    assert set(result["metrics"]) == {"prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"}
    assert all("answer" in d and len(d["strict"]) == len(d["kinds"]) for d in result["detail"])
    assert "k-eval" not in done.stdout + done.stderr + out.read_text()
    assert server.stats()["routes"].get("POST /v1/chat/completions") == 25


@pytest.mark.parametrize("args, needle", [
    (["--bench", "instructions,nope"], "unknown benchmark nope (known: humaneval, instructions, judge)"),
    (["--model", "other"], "model 'other' is not served by"),
    (["--limit", "0"], "expected a number of at least 1"),
    (["--json", "/no/such/folder/r.json"], "--json: folder /no/such/folder does not exist"),
    (["--json", "/"], "--json: / is a folder, not a file"),
    (["--json", "/etc/passwd/r.json"], "--json: /etc/passwd is not a folder"),
    (["--bench", "instructions,humaneval"], "humaneval runs model-written code: pass --allow-code-execution"),
])
def test_bad_eval_input_is_one_line_and_status_2(server_factory, args, needle):
    server = server_factory()
    base = {"--endpoint": server.url, "--model": "test-model"}
    for flag in ("--model",):
        if flag in args:
            base.pop(flag)
    done = run_cli("eval", *[x for kv in base.items() for x in kv], *args)
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _external_run(folder, url: str) -> None:
    """A finished run on an endpoint it does not manage, which serves v1 now."""
    config = load_config(overrides={"endpoints": [{"base_url": url}], "model": "test-model", "out": str(folder)},
                         environ={})
    store = RunStore.create(folder, {"run_name": "ext", "config": config.public_dict(), "model": "test-model"})
    store.write_sync([model_row_op("v0", parent=None, round=0, served_name="test-model", path=None, state="retired",
                                   detail={}),
                      model_row_op("v1", parent="v0", round=1, served_name="test-model-v1", path="/ckpt/v1",
                                   state="serving", detail={"examples": 8})])
    store.close_sync()


def test_eval_of_a_run_keeps_each_versions_results_in_its_lineage(server_factory, tmp_path):
    server = server_factory(model="test-model-v1")
    folder = tmp_path / "run"
    _external_run(folder, server.url)
    done = run_cli("eval", str(folder), "--versions", "v1", "--limit", "12")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.strip().splitlines()
    assert "vs base (95%)" in header and row.split()[:2] == ["instructions", "v1"]
    store = RunStore.open(folder, readonly=True)
    detail = json.loads(store.model("v1")["detail"])
    store.close_sync()
    kept = detail["benchmarks"]["instructions"]
    assert detail["examples"] == 8  # the training detail stays
    assert len(kept["scores"]) == 12 and kept["limit"] == 12 and kept["model"] == "test-model-v1"
    asked = server.stats()["routes"]["POST /v1/chat/completions"]
    again = run_cli("eval", str(folder), "--versions", "v1", "--limit", "12")
    assert again.returncode == 0 and again.stdout == done.stdout
    assert server.stats()["routes"]["POST /v1/chat/completions"] == asked  # measured once, read back
    other = run_cli("eval", str(folder), "--limit", "12")  # v0 too: the endpoint serves v1 only
    assert other.returncode == 2 and "not managed by isheep and serve v1 now" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, needle", [
    (["--versions", "v7"], "no model version v7 in this run (it has v0, v1)"),
    (["--endpoint", "http://127.0.0.1:9/v1"], "give a run folder, or --endpoint URL --model NAME (not both)"),
    # Serving v0 on the user's own endpoint to judge would leave it there: a judge must be named.
    (["--bench", "judge"], "the judge benchmark needs a judge: --judge-endpoint URL"),
    (["--bench", "judge", "--judge-model", "x"], "--judge-model names the judge at --judge-endpoint"),
    (["--reference-endpoint", "http://127.0.0.1:9/v1"], "apply to --bench judge"),
])
def test_bad_run_eval_input_is_one_line_and_status_2(server_factory, tmp_path, args, needle):
    server = server_factory(model="test-model-v1")
    _external_run(tmp_path / "run", server.url)
    done = run_cli("eval", str(tmp_path / "run"), *args)
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_humaneval_runs_each_answer_in_the_sandbox_only_when_allowed(server_factory, tmp_path):
    """The test server's answers are prose, not code: every program fails, and each is recorded."""
    server = server_factory()
    out = tmp_path / "he.json"
    done = run_cli("eval", "--endpoint", server.url, "--model", "test-model", "--bench", "humaneval", "--limit", "5",
                   "--allow-code-execution", "--json", str(out))
    assert done.returncode == 0, done.stderr
    [result] = json.loads(out.read_text())
    assert list(result["scores"]) == [f"HumanEval/{i}" for i in range(5)] and set(result["scores"].values()) == {0.0}
    assert result["metrics"] == {"pass@1": 0.0} and all(d["outcome"] == "failed" for d in result["detail"])


def test_a_version_whose_weights_are_gone_is_skipped_with_a_note_before_anything_is_asked(server_factory, tmp_path):
    server = server_factory(model="test-model-v2")
    folder = tmp_path / "run"
    config = load_config(overrides={"endpoints": [{"base_url": server.url}], "model": "test-model",
                                    "out": str(folder)}, environ={})
    store = RunStore.create(folder, {"run_name": "ext", "config": config.public_dict(), "model": "test-model"})
    store.write_sync([
        model_row_op("v0", parent=None, round=0, served_name="test-model", path=None, state="retired", detail={}),
        model_row_op("v1", parent="v0", round=1, served_name="test-model-v1", path=str(tmp_path / "pruned"),
                     state="retired", detail={"pruned": "merged weights deleted"}),
        model_row_op("v2", parent="v1", round=2, served_name="test-model-v2", path="/ckpt/v2", state="serving",
                     detail={})])
    store.close_sync()
    done = run_cli("eval", str(folder), "--versions", "v1,v2", "--limit", "6")
    assert done.returncode == 0, done.stderr
    assert f"skipping v1: its weights are gone ({tmp_path / 'pruned'}" in done.stderr
    rows = done.stdout.strip().splitlines()[1:]
    assert [r.split()[1] for r in rows] == ["v2"]  # v1 skipped; the base is not served by this endpoint
    assert server.stats()["routes"]["POST /v1/chat/completions"] == 6


def test_the_judge_benchmark_asks_both_orders_and_counts_a_first_position_judge_as_even(server_factory, tmp_path):
    candidate = server_factory(model="cand", empty_rate=0.0, answer_suffix=" With one more useful detail.")
    base = server_factory(model="base", empty_rate=0.0)  # its replies are shorter: the test judge prefers longer
    biased = server_factory(model="referee", pairwise="first")
    out = tmp_path / "judge.json"
    common = ["eval", "--endpoint", candidate.url, "--model", "cand", "--bench", "judge", "--limit", "10",
              "--reference-endpoint", base.url, "--reference-model", "base"]
    done = run_cli(*common, "--json", str(out))
    assert done.returncode == 0, done.stderr
    [result] = json.loads(out.read_text())
    metrics = result["metrics"]
    assert result["bench"] == "judge" and len(result["scores"]) == 10 and set(result["scores"].values()) == {1.0}
    assert metrics["win_rate"] == 1.0 and metrics["wins"] == 1.0 and metrics["consistent"] == 1.0
    assert metrics["first_position"] == 0.5 and metrics["unreadable"] == 0.0
    assert all(d["verdicts"] == ["A", "B"] for d in result["detail"])
    # The base judged (its default: the reference model): both its answers and 20 verdicts.
    assert base.stats()["routes"]["POST /v1/chat/completions"] == 10 + 20
    assert candidate.stats()["routes"]["POST /v1/chat/completions"] == 10
    biased_run = run_cli(*common, "--judge-endpoint", biased.url, "--judge-model", "referee", "--json", str(out))
    assert biased_run.returncode == 0, biased_run.stderr
    [result] = json.loads(out.read_text())
    assert set(result["scores"].values()) == {0.5} and result["metrics"]["consistent"] == 0.0
    assert result["metrics"]["first_position"] == 1.0 and result["metrics"]["ties"] == 1.0
    assert biased.stats()["routes"]["POST /v1/chat/completions"] == 20
    header, row = biased_run.stdout.strip().splitlines()
    assert row.startswith("judge") and "0.500" in row


def test_the_judge_benchmark_with_an_endpoint_needs_a_reference(server_factory):
    server = server_factory()
    done = run_cli("eval", "--endpoint", server.url, "--model", "test-model", "--bench", "judge")
    assert done.returncode == 2 and "name the other with --reference-model" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
