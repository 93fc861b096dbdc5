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
number of models it was picked from (Bonferroni). A rejected model is swapped back out; the
decision and its numbers go to the lineage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from isheep.runtime.core.config import EvaluationConfig
from isheep.runtime.core.endpoint import Client
from isheep.runtime.core.types import ServedModel
from isheep.runtime.evals import (Benchmark, InstructionsBenchmark, Interval, SignTest, paired_difference, sign_test,
                                  worse_beyond_doubt)


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
    #: The error allowed after the correction for picking the best of ``compared`` models.
    alpha: float
    compared: int

    def as_dict(self) -> dict[str, Any]:
        return {"decision": "rejected" if self.rejected else "kept", "best": self.best,
                "score": self.score.as_dict(), "best_score": self.best_score.as_dict(),
                "difference": self.difference.as_dict(), "margin": self.margin, "sign_test": self.signs.as_dict(),
                "alpha": round(self.alpha, 6), "compared": self.compared}

    def __str__(self) -> str:
        verdict = "worse beyond doubt: rejected" if self.rejected else "kept"
        return (f"scored {self.score} vs the best so far, {self.best}, {self.best_score}: "
                f"difference {self.difference.mean:+.3f} [{self.difference.low:+.3f}, {self.difference.high:+.3f}], "
                f"{self.signs.wins} better / {self.signs.losses} worse (sign test p {self.signs.p_worse:.3g}, "
                f"alpha {self.alpha:.3g}), margin {self.margin}; {verdict}")


def _interval(summary: dict[str, Any]) -> Interval:
    return Interval.from_dict(summary["interval"])


class Gate:
    """Measures models on the gate's benchmark and decides on new ones.

    Args:
        config: The ``[evaluation]`` section.
        pool: Where the answers are asked.
        bench: The benchmark; default: the ``instructions`` suite (or ``evaluation.prompts``).
    """

    def __init__(self, config: EvaluationConfig, pool: Client, bench: Benchmark | None = None) -> None:
        self.config = config
        self.pool = pool
        self.bench = bench or InstructionsBenchmark(config.prompts, max_tokens=config.max_tokens,
                                                    workers=config.workers)

    async def measure(self, model: ServedModel) -> dict[str, Any]:
        """The model's result on the benchmark, as the lineage keeps it (every prompt's score)."""
        result = await self.bench.run(self.pool, model.name, limit=self.config.limit)
        return {**result.summary(keep=10), "version": model.version, "limit": self.config.limit,
                "fingerprint": self.bench.fingerprint()}

    def decide(self, new: dict[str, Any], accepted: dict[str, dict[str, Any]]) -> Decision:
        """Compare ``new`` with the best of the ``accepted`` versions' results (version -> result)."""
        best = max(accepted, key=lambda v: (accepted[v]["interval"]["mean"], v))
        alpha = (1 - self.config.confidence) / len(accepted)
        difference = paired_difference(new["scores"], accepted[best]["scores"], level=1 - alpha)
        signs = sign_test(new["scores"], accepted[best]["scores"])
        rejected = worse_beyond_doubt(difference, self.config.margin) and signs.p_worse < alpha
        return Decision(rejected, best, _interval(new), _interval(accepted[best]), difference, self.config.margin,
                        signs, alpha, len(accepted))

    def known(self, row: Any) -> dict[str, Any] | None:
        """A version's stored result when it was measured on the same prompts, else None."""
        if row is None:
            return None
        stored = json.loads(row["detail"] or "{}").get("evaluation")
        if not stored or "scores" not in stored or stored.get("limit") != self.config.limit \
                or stored.get("fingerprint", "") != self.bench.fingerprint():
            return None
        return stored
