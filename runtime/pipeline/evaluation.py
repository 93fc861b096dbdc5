"""The evaluation gate between rounds: is the newly trained model worse than the one it replaces?

Both models answer a held-out prompt set (greedy), and each answer is scored twice: by the
Self-Critic (quality, 1-10) and by the prompt's verifiable checks (length limits, required words,
formats). The model's score is ``critic_weight * mean(quality) / 10 + (1 - critic_weight) *
share of checks passed``. A new model that scores lower than the old by more than
``evaluation.margin`` is rolled back and its round recorded as rejected.

Judging: the critic judges with the model it is configured for. With ``critic.model = "base"``
both models are judged by the same base model; with ``current`` each judges its own answers,
and the checks (which need no judge) are what keeps the comparison honest.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from isheep.runtime.core.config import EvaluationConfig
from isheep.runtime.core.endpoint import Client, EndpointError
from isheep.runtime.core.messages import Instruction, Response
from isheep.runtime.core.roles import CriticRole
from isheep.runtime.core.types import ServedModel
from isheep.runtime.data.checks import EvalPrompt, run_checks


@dataclass
class EvalResult:
    """How one model did on the held-out prompts."""

    version: str
    score: float
    critic_mean: float | None
    checks_rate: float | None
    failed_requests: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["answers"] = data["answers"][:50]
        return data

    @classmethod
    def from_answers(cls, version: str, rows: list[dict[str, Any]], critic_weight: float) -> "EvalResult":
        """Score rows of ``{"quality", "checks"}`` (or ``{"error"}`` for an unanswered prompt).

        The score mixes the mean critic score (out of 10) and the share of checks passed, by
        ``critic_weight``; either part alone when the other is missing. An unanswered prompt
        counts as a total failure: a model that cannot answer is not better.
        """
        answered = [r for r in rows if "error" not in r]
        qualities = [r["quality"] for r in answered if r["quality"] is not None]
        checks = [ok for r in answered for ok in r["checks"]]
        critic_mean = sum(qualities) / len(qualities) if qualities else None
        checks_rate = sum(checks) / len(checks) if checks else None
        parts = []
        if critic_mean is not None:
            parts.append((critic_weight, critic_mean / 10))
        if checks_rate is not None:
            parts.append((1 - critic_weight, checks_rate))
        weight = sum(w for w, _ in parts)
        if weight:
            score = sum(w * v for w, v in parts) / weight
        else:  # only the part weighted 0 is there (critic_weight 1 with no critic score, say): it alone
            score = sum(v for _, v in parts) / len(parts) if parts else 0.0
        score *= len(answered) / len(rows) if rows else 0.0
        return cls(version=version, score=round(score, 4), critic_mean=critic_mean, checks_rate=checks_rate,
                   failed_requests=len(rows) - len(answered), answers=rows)


class Evaluator:
    """Answers and scores the held-out prompts with one model.

    Args:
        config: The ``[evaluation]`` section.
        pool: Where the answers are asked.
        critic: Scores each answer's quality.
        prompts: The held-out prompts.
        judge: The model that judges every answer (the base model, with ``critic.model = "base"``);
            None: each model judges its own answers.
    """

    def __init__(self, config: EvaluationConfig, pool: Client, critic: CriticRole, prompts: list[EvalPrompt],
                 judge: ServedModel | None = None) -> None:
        self.config = config
        self.pool = pool
        self.critic = critic
        self.prompts = prompts
        self.judge = judge

    async def _one(self, item: EvalPrompt, model: ServedModel, judge: ServedModel,
                   slots: asyncio.Semaphore) -> dict[str, Any]:
        async with slots:
            try:
                completion = await self.pool.chat({
                    "model": model.name, "temperature": 0.0, "max_tokens": self.config.max_tokens,
                    "messages": [{"role": "user", "content": item.prompt}]})
            except EndpointError as err:
                return {"id": item.id, "error": err.reason}
            instruction = Instruction(id=f"eval-{item.id}", round=1, model_version=model.version,
                                      instruction=item.prompt)
            response = Response(id=instruction.id, round=1, model_version=model.version, instruction=instruction,
                                text=completion.text)
            try:
                quality = (await self.critic.score("quality", response, judge)).value
            except EndpointError:
                quality = None
            passed = run_checks(completion.text, item.checks)
            return {"id": item.id, "answer": completion.text[:2000], "quality": quality, "checks": passed}

    async def evaluate(self, model: ServedModel) -> EvalResult:
        slots = asyncio.Semaphore(self.config.workers)
        # The model under evaluation is not the roles' current model yet: name the judge explicitly.
        judge = self.judge or model
        rows = await asyncio.gather(*(self._one(p, model, judge, slots) for p in self.prompts))
        return EvalResult.from_answers(model.version, list(rows), self.config.critic_weight)
