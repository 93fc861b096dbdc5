"""The sandbox that runs model-written code (HumanEval), and how a reply becomes a program.

Real subprocesses: a canonical HumanEval solution passes and a wrong one fails; a program that
loops is killed at its timeout, one that allocates too much fails, one that reaches for the
network finds none (where a network namespace can be made, as on this project's machines), and
the runtime's environment (its keys) is not passed on.
"""

from __future__ import annotations

import os

import pytest

from isheep.runtime.evals.humaneval import problems, program
from isheep.runtime.evals.sandbox import _unshare, run_program

pytestmark = pytest.mark.timeout(60)


def test_humaneval_ships_its_164_problems():
    shipped = problems()
    assert len(shipped) == 164 and shipped[0]["task_id"] == "HumanEval/0"


@pytest.mark.parametrize("index", [0, 1, 2])
async def test_a_canonical_solution_passes_and_a_wrong_one_fails(index):
    problem = problems()[index]
    whole = f"Here you go:\n```python\n{problem['prompt']}{problem['canonical_solution']}```\nDone."
    assert (await run_program(program(problem, whole))).status == "passed"
    body_only = problem["canonical_solution"]  # a reply that is the body alone completes the prompt
    assert (await run_program(program(problem, body_only))).status == "passed"
    wrong = f"```python\ndef {problem['entry_point']}(*args):\n    return None\n```"
    failed = await run_program(program(problem, wrong))
    assert failed.status == "failed" and "AssertionError" in failed.detail


async def test_a_program_that_never_ends_is_killed_at_its_timeout():
    assert (await run_program("import time\nwhile True:\n    time.sleep(0.01)\n", timeout_s=1.5)).status == "timeout"


async def test_a_program_that_allocates_too_much_fails():
    outcome = await run_program("block = bytearray(3 * 2**30)\n", memory_mb=512)
    assert outcome.status == "failed" and "MemoryError" in outcome.detail


@pytest.mark.skipif(not _unshare(), reason="no network namespace can be made on this machine")
async def test_a_program_has_no_network():
    outcome = await run_program("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)\n")
    assert outcome.status == "failed" and "unreachable" in outcome.detail.lower()


async def test_a_program_sees_none_of_the_runtimes_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-of-the-runtime")
    outcome = await run_program("import os, sys\nsys.exit(1 if 'OPENAI_API_KEY' in os.environ else 0)\n")
    assert outcome.status == "passed"
    here = os.getcwd()
    outcome = await run_program(f"import os, sys\nsys.exit(0 if os.getcwd() != {here!r} else 1)\n")
    assert outcome.status == "passed"  # it runs in a temporary folder
