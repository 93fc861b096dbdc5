"""``judge``: how often a model's answers beat a reference model's (the base, by default) on
held-out open prompts, in the eyes of a judge model.

120 open requests of our own writing (``prompts/benchmarks/open.jsonl``: advice, explanations,
writing, reasoning, code...), answered greedily by both models. The judge (the base model by
default, or any stronger model a user has at hand) sees each pair twice, once in each order,
because judges favour a position; it may call a tie. Each order gives the candidate 1 (better),
0.5 (tie, or a verdict that cannot be read) or 0 (worse), and a prompt's score is the mean of
the two: a win rate where 0.5 is "as good as the reference". Reported with it: wins, ties and
losses (prompts scored above, at and below 0.5), how often the two orders agreed, how often the
judge picked the first position, and how many verdicts could not be read.

Two phases, so that a run's versions can be served one at a time: :meth:`JudgeBenchmark.answers`
(the model being measured) and :meth:`JudgeBenchmark.compare` (the judge); :meth:`run` does
both when the reference and the judge can be asked at once.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from isheep.prompts import default_path
from isheep.runtime.core.endpoint import Client, EndpointError
from isheep.runtime.core.errors import UserError
from isheep.runtime.data.seeds import read_jsonl
from isheep.runtime.data.templates import read_text

from .base import BenchOptions, BenchResult, Benchmark, file_fingerprint

SHIPPED = "benchmarks/open.jsonl"
TEMPLATE = "benchmarks/pairwise_judge.txt"
#: Characters of each answer kept (and shown to the judge): enough for any answer of 512 tokens.
ANSWER_CHARS = 4000
_VERDICT = re.compile(r"(?i:\btie\b)|\b[AB]\b")
_HEAD = re.compile(r"^[\W_]*((?:an? )?tie|[ab])\b(?![-'])", re.IGNORECASE)
T = TypeVar("T")


@dataclass(frozen=True)
class Party:
    """A model to ask, and where: the reference answering the prompts, or the judge."""

    client: Client
    model: str


def load_open_prompts(path: Path | None = None, limit: int = 0) -> list[tuple[str, str]]:
    """(id, prompt) of a JSONL file of open prompts (default: the shipped 120); problems are one UserError."""
    source = Path(path) if path is not None else default_path(SHIPPED)
    prompts: dict[str, str] = {}
    for number, where, row in read_jsonl(source, "open prompts"):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise UserError(f"{where}: needs a non-empty 'prompt'")
        key = str(row.get("id", number))
        if key in prompts:
            raise UserError(f"{where}: id {key!r} is used twice")
        prompts[key] = row["prompt"]
    if not prompts:
        raise UserError(f"open prompts {source} hold no prompt")
    items = list(prompts.items())
    return items[:limit] if limit else items


def verdict(reply: str) -> str | None:
    """``A``, ``B`` or ``tie``: what the reply opens with ("a", "B.", "**A**", "A tie"), else the
    first one it names; None when it names none."""
    head = _HEAD.match(reply)
    if head is not None:
        word = head.group(1).lower()
        return "tie" if "tie" in word else word.upper()
    found = _VERDICT.search(reply)
    return None if found is None else ("tie" if found.group(0).lower() == "tie" else found.group(0))


def _points(said: str | None, candidate_is: str) -> float:
    """The candidate's points from one verdict (an unreadable one counts as a tie)."""
    if said in (None, "tie"):
        return 0.5
    return 1.0 if said == candidate_is else 0.0


async def _bounded(workers: int, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    slots = asyncio.Semaphore(workers)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


class JudgeBenchmark(Benchmark):
    """Pairwise win rate against a reference model's answers, both orders, ties counted.

    Args:
        prompts: A JSONL file of open prompts; default: the shipped 120.
        max_tokens: Tokens per answer (greedy).
        workers: Requests in flight.
        reference: Who answers for comparison in :meth:`run` (``isheep eval --reference-model``).
        judge: Who judges in :meth:`run`; default: the reference model.
    """

    name = "judge"
    metric = "win rate vs the base (ties 0.5)"

    def __init__(self, prompts: Path | None = None, *, max_tokens: int = 512, workers: int = 8,
                 reference: Party | None = None, judge: Party | None = None) -> None:
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.workers = workers
        self.reference = reference
        self.judge = judge

    @classmethod
    def build(cls, options: BenchOptions) -> "JudgeBenchmark":
        return cls(max_tokens=options.max_tokens, workers=options.workers)

    def fingerprint(self) -> str:
        return file_fingerprint(self.prompts if self.prompts is not None else default_path(SHIPPED))

    async def answers(self, client: Client, model: str, *, limit: int = 0) -> dict[str, str]:
        """The model's greedy answer to each prompt (an empty one where the request failed)."""
        items = load_open_prompts(self.prompts, limit)

        async def ask(prompt: str) -> str:
            try:
                reply = await client.chat({"model": model, "temperature": 0.0, "max_tokens": self.max_tokens,
                                           "messages": [{"role": "user", "content": prompt}]})
            except EndpointError:
                return ""  # no answer loses to any answer, as it should
            return reply.text[:ANSWER_CHARS]

        texts = await _bounded(self.workers, [lambda p=prompt: ask(p) for _, prompt in items])
        return {key: text for (key, _), text in zip(items, texts)}

    async def compare(self, judge: Party, candidate: dict[str, str], reference: dict[str, str], *,
                      model: str, limit: int = 0) -> BenchResult:
        """Judge ``candidate``'s answers against ``reference``'s, prompt by prompt, in both orders."""
        template = read_text(default_path(TEMPLATE), "the judge's prompt")
        items = [(key, prompt) for key, prompt in load_open_prompts(self.prompts, limit)
                 if key in candidate and key in reference]
        if not items:
            raise UserError("the two models' answers share no prompt to judge")

        async def ask(prompt: str, first: str, second: str) -> tuple[str | None, str]:
            body = {"model": judge.model, "temperature": 0.0, "max_tokens": 16, "messages": [
                {"role": "user", "content": template.format(instruction=prompt, answer_a=first, answer_b=second)}]}
            try:
                reply = await judge.client.chat(body)
            except EndpointError as err:
                return None, f"error: {err.reason}"
            return verdict(reply.text), reply.text[:80]

        jobs = []
        for key, prompt in items:
            jobs.append(lambda p=prompt, k=key: ask(p, candidate[k], reference[k]))  # candidate is A
            jobs.append(lambda p=prompt, k=key: ask(p, reference[k], candidate[k]))  # candidate is B
        said = await _bounded(self.workers, jobs)
        rows, scores = [], {}
        for i, (key, _) in enumerate(items):
            (first, first_text), (second, second_text) = said[2 * i], said[2 * i + 1]
            scores[key] = (_points(first, "A") + _points(second, "B")) / 2
            rows.append({"id": key, "verdicts": [first, second], "replies": [first_text, second_text],
                         "score": scores[key], "answer": candidate[key][:1500]})
        verdicts = [v for r in rows for v in r["verdicts"]]
        read = [v for v in verdicts if v is not None]
        n = len(scores)
        metrics = {
            "win_rate": sum(scores.values()) / n,
            "wins": sum(s > 0.5 for s in scores.values()) / n,
            "ties": sum(s == 0.5 for s in scores.values()) / n,
            "losses": sum(s < 0.5 for s in scores.values()) / n,
            # The same winner named in both orders (A then B, B then A, or tie twice).
            "consistent": sum(r["verdicts"] in (["A", "B"], ["B", "A"], ["tie", "tie"]) for r in rows) / n,
            "first_position": sum(v == "A" for v in read) / len(read) if read else 0.0,
            "unreadable": (len(verdicts) - len(read)) / len(verdicts),
            # Of those, the requests that failed (a judge that cannot answer at all, not a tie).
            "judge_errors": sum(t.startswith("error:") for r in rows for t in r["replies"]) / len(verdicts),
        }
        return BenchResult(self.name, model, scores, metrics, sum(1 for key in scores if not candidate[key]), rows)

    async def run(self, client: Client, model: str, *, limit: int = 0) -> BenchResult:
        if self.reference is None:
            raise UserError("the judge benchmark compares two models: name the reference (--reference-model)")
        candidate = await self.answers(client, model, limit=limit)
        reference = await self.answers(self.reference.client, self.reference.model, limit=limit)
        return await self.compare(self.judge or self.reference, candidate, reference, model=model, limit=limit)
