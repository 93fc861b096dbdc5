"""``instructions``: verifiable instruction following, IFEval's way, on prompts of our own writing.

330 everyday tasks (``prompts/benchmarks/instructions.jsonl``), each with one to three
instructions a program can check (29 kinds: lengths, keywords, lists, JSON, case, start and
end phrases, punctuation, placeholders, language...). Answers are greedy. Four accuracies, as
IFEval reports them: per prompt (every instruction followed) and per instruction, each strict
(the answer as it is) and loose (also accepted once a preamble, a sign-off or Markdown emphasis
is taken away). The headline score, prompt by prompt, is the strict per-prompt one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from isheep.prompts import default_path
from isheep.runtime.core.endpoint import Client, EndpointError
from isheep.runtime.data.checks import EvalPrompt, load_eval_prompts, loose_checks, run_checks

from .base import BenchResult, Benchmark, file_fingerprint

SHIPPED = "benchmarks/instructions.jsonl"


def score_answer(item: EvalPrompt, answer: str) -> dict[str, Any]:
    """One answer's strict and loose verdicts, per instruction."""
    strict, loose = run_checks(answer, item.checks), loose_checks(answer, item.checks)
    return {"id": item.id, "strict": strict, "loose": loose, "kinds": [c["type"] for c in item.checks]}


def accuracies(rows: list[dict[str, Any]]) -> dict[str, float]:
    """IFEval's four numbers over scored answers (an unanswered prompt follows nothing)."""
    out = {}
    for mode in ("strict", "loose"):
        per_prompt = [all(r[mode]) if r[mode] else False for r in rows]
        per_instruction = [ok for r in rows for ok in r[mode]]
        out[f"prompt_{mode}"] = sum(per_prompt) / len(per_prompt) if per_prompt else 0.0
        out[f"instruction_{mode}"] = sum(per_instruction) / len(per_instruction) if per_instruction else 0.0
    return out


class InstructionsBenchmark(Benchmark):
    """IFEval-style accuracy on the shipped (or a given) prompt file.

    Args:
        prompts: A JSONL file of prompts with checks; default: the shipped 330.
        max_tokens: Tokens per answer.
        workers: Requests in flight.
    """

    name = "instructions"
    metric = "prompt-level strict accuracy"

    def __init__(self, prompts: Path | None = None, *, max_tokens: int = 512, workers: int = 8) -> None:
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.workers = workers

    def fingerprint(self) -> str:
        return file_fingerprint(self.prompts if self.prompts is not None else default_path(SHIPPED))

    async def run(self, client: Client, model: str, *, limit: int = 0) -> BenchResult:
        items = load_eval_prompts(self.prompts, limit, default=SHIPPED)
        slots = asyncio.Semaphore(self.workers)

        async def one(item: EvalPrompt) -> dict[str, Any]:
            async with slots:
                try:
                    reply = await client.chat({"model": model, "temperature": 0.0, "max_tokens": self.max_tokens,
                                               "messages": [{"role": "user", "content": item.prompt}]})
                except EndpointError as err:
                    failed = [False] * len(item.checks)
                    return {"id": item.id, "strict": failed, "loose": failed, "error": err.reason,
                            "kinds": [c["type"] for c in item.checks]}
            return {**score_answer(item, reply.text), "answer": reply.text[:1500]}

        rows = await asyncio.gather(*(one(item) for item in items))
        scores = {r["id"]: float(all(r["strict"])) for r in rows}
        return BenchResult(self.name, model, scores, accuracies(rows), sum(1 for r in rows if "error" in r), rows)
