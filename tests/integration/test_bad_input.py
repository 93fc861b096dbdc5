"""Every bad input is one line on stderr naming the problem, exit status 2, and nothing written.

Table-driven: each case builds its files in a fresh folder, runs the real CLI in a subprocess,
and checks the message, the status, that no traceback was printed, and that the run folder
was not created (or, for an existing run, not changed by a single byte).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Callable

import pytest
from support.procs import run_cli
from support.runs import make_finished_run

GOOD_SEED = '{"instruction": "Name three fruits that are red."}\n'


def seeds(content: bytes | str, count: int = 1) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / "seeds.jsonl"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["--set", f"proposer.seeds='{path}'", "--set", f"proposer.num_examples={count}"]
    return build


def config(text: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / "config.toml"
        path.write_text(text)
        return ["--config", str(path)]
    return build


def template(kind: str, text: str) -> Callable[[Path], list[str]]:
    key = {"propose": "proposer.template", "quality": "critic.quality_template"}[kind]

    def build(tmp: Path) -> list[str]:
        path = tmp / f"{kind}.txt"
        path.write_text(text)
        return ["--set", f"{key}='{path}'"]
    return build


def flags(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(args)


# (id, builder of extra arguments, expected text in the one line, needs the test server)
CASES = [
    ("rounds-zero", config("rounds = 0"), "rounds: Input should be greater than or equal to 1", True),
    ("rounds-string", config('rounds = "two"'), "rounds: Input should be a valid integer", True),
    ("round-size-negative", config("round_size = -5"), "round_size: Input should be greater than or equal to 1", True),
    ("temperature-range", config("[proposer]\ntemperature = 5"), "proposer.temperature", True),
    ("top-p-zero", config("[responder]\ntop_p = 0"), "responder.top_p: Input should be greater than 0", True),
    ("structured-enum", config('[critic]\nstructured = "yaml"'), "critic.structured: Input should be", True),
    ("threshold-range", config("[curator]\nquality_threshold = 11"), "curator.quality_threshold", True),
    ("timeout-zero", config("[client]\ntimeout_s = 0"), "client.timeout_s: Input should be greater than 0", True),
    ("queue-zero", config("queue_size = 0"), "queue_size: Input should be greater than or equal to 1", True),
    ("unknown-key", config("colour = 'red'"), "colour: unknown key", True),
    ("unknown-section-key", config("[proposer]\ntemprature = 1.0"), "proposer.temprature: unknown key", True),
    ("unknown-section", config("[propser]\nworkers = 1"), "propser: unknown key", True),
    ("not-toml", config("rounds = [1,"), "is not valid TOML", True),
    ("cap-below-quota", config("round_size = 50\nmax_proposed = 10"), "max_proposed (10) is smaller than round_size (50)", True),
    ("command-swap-without-command", config('[swap]\nstrategy = "command"'), "swap.strategy = 'command' needs swap.command", True),
    ("lora-swap-full-method", config('[swap]\nstrategy = "lora"\n[trainer]\nmethod = "full"'), "the lora swap serves LoRA adapters", True),
    ("missing-config", flags("--config", "/nonexistent/c.toml"), "config file not found: /nonexistent/c.toml", True),
    ("url-no-scheme", flags("--endpoint", "localhost:8000"), "endpoint URL must look like http://host:port/v1", False),
    ("url-ftp", flags("--endpoint", "ftp://example.com/v1"), "endpoint URL must look like", False),
    ("url-no-host", flags("--endpoint", "http://"), "endpoint URL must look like", False),
    ("url-bad-port", flags("--endpoint", "http://127.0.0.1:99999/v1"), "invalid port", False),
    ("unreachable", flags("--endpoint", "http://127.0.0.1:9/v1"), "cannot reach endpoint http://127.0.0.1:9/v1", False),
    ("wrong-model", flags("--model", "gpt-9"), "model 'gpt-9' is not served by", True),
    ("seeds-empty", seeds(b""), "holds no tasks", True),
    ("seeds-not-json", seeds("{nope\n"), "line 1: not valid JSON", True),
    ("seeds-wrong-fields", seeds('{"task": "x"}\n'), "unknown field(s) task", True),
    ("seeds-no-instruction", seeds('{"input": "x"}\n'), "'instruction' must be a non-empty string", True),
    ("seeds-not-object", seeds("[1, 2, 3]\n"), "expected a JSON object", True),
    ("seeds-non-utf8", seeds(b'{"instruction": "caf\xe9 au lait"}\n'), "is not UTF-8 text", True),
    ("seeds-too-few", seeds(GOOD_SEED, count=5), "holds 1 task(s); the proposer samples 5", True),
    ("seeds-missing", flags("--set", "proposer.seeds='/nonexistent/seeds.jsonl'"), "seed file not found", True),
    ("template-missing-placeholder", template("propose", "List {count} tasks:\n{examples}\n"),
     "lacks placeholder(s): {next}", True),
    ("template-unknown-placeholder", template("quality", "Rate: {task} {response} {extra}"),
     "unknown placeholder(s): {extra}", True),
    ("template-wrong-style", template("quality", "{instruction} {input_block} {response} {format}"),
     "lacks placeholder(s): {task}", True),
    # The judge's conversation layout asks only the question: the pair comes as chat turns of its own.
    ("template-wrong-layout", lambda tmp: [*template("quality", "{instruction} {input_block} {response} {format}")(
        tmp), "--set", "critic.style='judge'", "--set", "critic.layout='conversation'"],
     "unknown placeholder(s): {input_block}, {instruction}, {response}", True),
    ("recipe-unknown", flags("--recipe", "alpaca"), "unknown recipe 'alpaca' (recipes: isheep, dromedary, dromedary-verbose, self-instruct)",
     False),
    ("base-judge-in-place", flags("--set", "swap.strategy='command'", "--set", "swap.command='true'",
                                  "--set", "trainer.backend='trl'"),
     "critic.model = 'base' with the command swap on an external endpoint would judge with the new weights", True),
    ("critic-endpoint-not-base", flags("--set", "critic.endpoint.base_url='http://127.0.0.1:9/v1'",
                                       "--set", "critic.model='current'"),
     "critic.endpoint is a server of the base model: it needs critic.model = 'base'", False),
    ("filter-unknown", flags("--set", "proposer.filters=['length', 'vibes']"), "unknown instruction filter(s) vibes",
     False),
    ("per-round-bad-value", flags("--set", "per_round.1.critic.temperature=9"),
     "per_round.1.critic.temperature: Input should be less than or equal to 2", False),
    ("template-bad-braces", template("propose", "Tasks {count} {examples} {next} {"), "is malformed", True),
    ("usage-unknown-flag", flags("--colour"), "unrecognized arguments: --colour", False),
    ("usage-rounds-zero", flags("--rounds", "0"), "argument --rounds: expected a number of at least 1", False),
    ("usage-set-no-value", flags("--set", "rounds"), "--set expects key=value", False),
]


@pytest.mark.parametrize("case,build,needle,needs_server", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, build, needle, needs_server, server, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet"]  # no size flags: they would override the config under test
    if needs_server:
        args += ["--endpoint", server.url]
    proc = run_cli(*args, *build(tmp_path), timeout=120)
    assert proc.returncode == 2, (case, proc.returncode, proc.stderr[-500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("isheep: error: "), (case, proc.stderr)
    assert needle in lines[0], (case, lines[0])
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists(), case  # nothing written


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "isheep.db").read_bytes()).hexdigest()


def test_existing_runs_are_never_touched_by_bad_commands(server, tmp_path):
    folder = make_finished_run(tmp_path / "run")
    before = _digest(folder)
    cases = [
        (["run", "--endpoint", server.url, "--out", str(folder)], f"{folder} already holds a run"),
        (["run", "--resume", str(folder), "--config", "x.toml"], "--resume continues a run with its own config"),
        (["run", "--resume", str(folder), "--out", str(tmp_path / "elsewhere")], "--resume DIR and --out name"),
    ]
    for args, needle in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, args
    assert _digest(folder) == before
    with sqlite3.connect(folder / "isheep.db") as db:
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (json.dumps(999),))
    other = _digest(folder)
    proc = run_cli("run", "--resume", str(folder))
    assert proc.returncode == 2 and "written by another isheep version (store schema 999" in proc.stderr
    proc = run_cli("monitor", str(folder))
    assert proc.returncode == 2 and "another isheep version" in proc.stderr
    assert _digest(folder) == other


@pytest.mark.parametrize("kind", ["missing", "foreign", "empty"])
def test_resume_and_monitor_refuse_what_is_not_a_run(kind, tmp_path):
    folder = tmp_path / kind
    if kind == "foreign":
        folder.mkdir()
        (folder / "isheep.db").write_bytes(b"SQLite format 2 - not really")
    elif kind == "empty":
        folder.mkdir()
    for command in (["run", "--resume", str(folder)], ["monitor", str(folder)], ["export", str(folder)]):
        proc = run_cli(*command)
        assert proc.returncode == 2, (command, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
