"""How a HumanEval reply becomes a program: the prompt is kept whole, whatever form the reply takes.

Some prompts define helpers before the target function (HumanEval/10 ``is_palindrome``, /32
``poly``, /38 ``encode_cyclic``, /50 ``encode_shift``), which the solution or the tests use: a
reply that repeats the whole function must still find them. Each program runs, with the
problem's tests, in the real sandbox.
"""

from __future__ import annotations

import pytest

from isheep.runtime.evals.humaneval import problems, program
from isheep.runtime.evals.sandbox import run_program

pytestmark = pytest.mark.timeout(60)


def _problem(number: int) -> dict:
    return {p["task_id"]: p for p in problems()}[f"HumanEval/{number}"]


def _signature(problem: dict) -> str:
    """The prompt's ``def`` line for its target function."""
    [line] = [line for line in problem["prompt"].splitlines() if line.startswith(f"def {problem['entry_point']}(")]
    return line


@pytest.mark.parametrize("number", [10, 32, 38, 50])
async def test_a_whole_function_reply_keeps_the_prompts_helpers(number):
    problem = _problem(number)
    reply = f"{_signature(problem)}\n{problem['canonical_solution']}"
    outcome = await run_program(program(problem, reply))
    assert outcome.status == "passed", outcome.detail


@pytest.mark.parametrize("number", [10, 38])
async def test_the_replys_function_wins_over_the_prompts(number):
    """The prompt's target has only its docstring (it returns None): the reply's definition comes after it."""
    problem = _problem(number)
    built = program(problem, f"```python\n{_signature(problem)}\n{problem['canonical_solution']}```")
    assert built.startswith(problem["prompt"].rstrip("\n"))
    assert (await run_program(built)).status == "passed"


@pytest.mark.parametrize("form", ["body", "fenced body", "fenced function", "fenced prompt and body"])
async def test_every_form_of_reply_passes(form):
    problem = _problem(10)
    body, signature = problem["canonical_solution"], _signature(problem)
    reply = {"body": body,
             "fenced body": f"Sure:\n```python\n{body}```",
             "fenced function": f"Here it is:\n```python\n{signature}\n{body}```\nIt appends a reversed prefix.",
             "fenced prompt and body": f"```py\n{problem['prompt']}{body}```"}[form]
    outcome = await run_program(program(problem, reply))
    assert outcome.status == "passed", outcome.detail


async def test_an_indented_whole_function_is_dedented():
    problem = _problem(32)
    reply = "\n".join("    " + line for line in f"{_signature(problem)}\n{problem['canonical_solution']}".splitlines())
    assert (await run_program(program(problem, reply))).status == "passed"
