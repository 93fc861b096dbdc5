"""The evaluation gate between rounds: is the newly trained model worse than the best one so far?

Each model the run serves answers the same prompts of a benchmark (greedy; by default the
``instructions`` suite: 330 prompts whose instructions a program checks, so no model judges
itself). The new model is compared, prompt by prompt, with the best model accepted so far (not
only the one it replaces: six rounds that each lose a little would otherwise never be caught).

It is rejected only when it is worse beyond doubt, by two tests that must both agree at
``evaluation.confidence``: the paired bootstrap interval of the difference lies wholly below
``-evaluation.margin``, and the exact sign test on the prompts where the two differ finds more
losses than chance allows (the bootstrap alone rejected 4 losses and no win in 330 prompts,
where the exact p is 0.0625). Picking the best of several accepted models and then testing
against it favours rejection (the best was partly lucky), so the error allowed is divided by the
number of models it was picked from (Bonferroni).

With ``evaluation.judge`` on, the base model also judges the new model's answers to open
prompts against the best model's (both orders, ties half; :mod:`isheep.runtime.evals.judge`):
a win rate below one half beyond doubt, by the same two tests, rejects it too, and each of the
two benchmarks gets half the error allowed. A rejected model is swapped back out; the decision
and its numbers go to the lineage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from isheep.runtime.core.config import EvaluationConfig
from isheep.runtime.core.endpoint import Client
from isheep.runtime.core.types import ServedModel
from isheep.runtime.evals import (Benchmark, BenchResult, InstructionsBenchmark, Interval, JudgeBenchmark, Party, SignTest,
                                  paired_difference, sign_test, worse_beyond_doubt)


#: Above this share of unreadable verdicts (or failed judge requests) the judge decides nothing.
UNREADABLE_LIMIT = 0.5


@dataclass(frozen=True)
class Judged:
    """The base model's pairwise verdicts on the new model against the best so far: the new
    model's win rate (0.5: as good) and the sign test of its losses."""

    win_rate: Interval
    signs: SignTest
    worse: bool
    judge: str

    def as_dict(self) -> dict[str, Any]:
        return {"win_rate": self.win_rate.as_dict(), "sign_test": self.signs.as_dict(), "worse": self.worse,
                "judge": self.judge}


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on a new model, with the numbers behind it."""

    rejected: bool
    best: str
    score: Interval
    best_score: Interval
    difference: Interval
    margin: float
    signs: SignTest
    #: The error allowed each test, after the corrections for picking the best of ``compared``
    #: models and for asking two tests when the judge is on.
    alpha: float
    compared: int
    judged: Judged | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"decision": "rejected" if self.rejected else "kept", "best": self.best,
                "score": self.score.as_dict(), "best_score": self.best_score.as_dict(),
                "difference": self.difference.as_dict(), "margin": self.margin, "sign_test": self.signs.as_dict(),
                "alpha": round(self.alpha, 6), "compared": self.compared,
                **({"judged": self.judged.as_dict()} if self.judged is not None else {})}

    def __str__(self) -> str:
        verdict = "worse beyond doubt: rejected" if self.rejected else "kept"
        judged = "" if self.judged is None else (
            f"; judged by {self.judged.judge}: win rate {self.judged.win_rate}, {self.judged.signs.wins} better / "
            f"{self.judged.signs.losses} worse (p {self.judged.signs.p_worse:.3g})")
        return (f"scored {self.score} vs the best so far, {self.best}, {self.best_score}: "
                f"difference {self.difference.mean:+.3f} [{self.difference.low:+.3f}, {self.difference.high:+.3f}], "
                f"{self.signs.wins} better / {self.signs.losses} worse (sign test p {self.signs.p_worse:.3g}, "
                f"alpha {self.alpha:.3g}){judged}, margin {self.margin}; {verdict}")


def _interval(summary: dict[str, Any]) -> Interval:
    return Interval.from_dict(summary["interval"])


class Gate:
    """Measures models on the gate's benchmark and decides on new ones.

    Args:
        config: The ``[evaluation]`` section.
        pool: Where the answers are asked.
        bench: The benchmark; default: the ``instructions`` suite (or ``evaluation.prompts``).
        judge: Who judges pairs when ``evaluation.judge`` is on: the base model, where it is served.
    """

    def __init__(self, config: EvaluationConfig, pool: Client, bench: Benchmark | None = None,
                 judge: Party | None = None) -> None:
        self.config = config
        self.pool = pool
        self.bench = bench or InstructionsBenchmark(config.prompts, max_tokens=config.max_tokens,
                                                    workers=config.workers)
        self.pairwise = JudgeBenchmark(max_tokens=config.max_tokens, workers=config.workers) if config.judge else None
        self.judge = judge

    async def measure(self, model: ServedModel) -> dict[str, Any]:
        """The model's result on the benchmark, as the lineage keeps it (every prompt's score), with
        its answers to the open prompts when the judge is on."""
        result = await self.bench.run(self.pool, model.name, limit=self.config.limit)
        out = {**result.summary(keep=10), "version": model.version, "limit": self.config.limit,
               "fingerprint": self.bench.fingerprint()}
        if self.pairwise is not None:
            out["answers"] = {"fingerprint": self.pairwise.fingerprint(), "limit": self.config.judge_limit,
                              "texts": await self.pairwise.answers(self.pool, model.name,
                                                                   limit=self.config.judge_limit)}
        return out

    def best(self, accepted: dict[str, dict[str, Any]]) -> str:
        """The accepted version that scored highest (the latest of equals)."""
        return max(accepted, key=lambda v: (accepted[v]["interval"]["mean"], v))

    async def judge_pair(self, new: dict[str, Any], best: dict[str, Any], served_name: str) -> BenchResult:
        """The base model's verdicts on the new model's answers against the best's (scores: prompt ->
        win rate). A result whose verdicts are mostly unreadable (:meth:`usable`) decides nothing."""
        assert self.pairwise is not None and self.judge is not None, "the judge is off"
        return await self.pairwise.compare(self.judge, new["answers"]["texts"], best["answers"]["texts"],
                                           model=served_name, limit=self.config.judge_limit)

    @staticmethod
    def usable(judged: BenchResult) -> bool:
        """Whether the judge said something readable often enough to count: a judge that fails or
        rambles would otherwise score every pair a tie, and never reject anything."""
        return judged.metrics.get("unreadable", 1.0) <= UNREADABLE_LIMIT

    def decide(self, new: dict[str, Any], accepted: dict[str, dict[str, Any]],
               judged: dict[str, float] | None = None) -> Decision:
        """Compare ``new`` with the best of the ``accepted`` versions' results (version -> result), and
        with the judge's verdicts on the two (``judged``, from :meth:`judge_pair`) when given."""
        best = self.best(accepted)
        alpha = (1 - self.config.confidence) / len(accepted) / (2 if judged is not None else 1)
        difference = paired_difference(new["scores"], accepted[best]["scores"], level=1 - alpha)
        signs = sign_test(new["scores"], accepted[best]["scores"])
        rejected = worse_beyond_doubt(difference, self.config.margin) and signs.p_worse < alpha
        verdict = None
        if judged is not None:
            even = {k: 0.5 for k in judged}
            win_rate = paired_difference(judged, even, level=1 - alpha)
            judge_signs = sign_test(judged, even)
            worse = worse_beyond_doubt(win_rate, self.config.margin) and judge_signs.p_worse < alpha
            verdict = Judged(Interval(win_rate.mean + 0.5, win_rate.low + 0.5, win_rate.high + 0.5, win_rate.n,
                                      win_rate.level), judge_signs, worse, self.judge.model if self.judge else "?")
            rejected = rejected or worse
        return Decision(rejected, best, _interval(new), _interval(accepted[best]), difference, self.config.margin,
                        signs, alpha, len(accepted), verdict)

    def known(self, row: Any) -> dict[str, Any] | None:
        """A version's stored result when it was measured on the same prompts, else None."""
        if row is None:
            return None
        stored = json.loads(row["detail"] or "{}").get("evaluation")
        if not stored or "scores" not in stored or stored.get("limit") != self.config.limit \
                or stored.get("fingerprint", "") != self.bench.fingerprint():
            return None
        if self.pairwise is not None:  # the judge needs its answers too
            answers = stored.get("answers") or {}
            if answers.get("fingerprint") != self.pairwise.fingerprint() \
                    or answers.get("limit") != self.config.judge_limit:
                return None
        return stored
