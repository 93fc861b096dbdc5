"""Intervals for benchmark scores: a bootstrap over prompts, paired when two models are compared.

Two models answer the same prompts, so their difference is measured prompt by prompt: the
interval of the mean per-prompt difference (a paired bootstrap) is far narrower than two
separate intervals would suggest, and it is what the gate decides on. scipy's ``bootstrap``
does the resampling. Percentile intervals: on pass/fail scores with few differing prompts, BCa's
corrections pushed the bound past zero where a sign test finds nothing (3 losses of 40: p = 0.25),
and a gate must not reject a model on that. The gate also asks an exact test of the same
question: on the prompts where the two models differ, is "new is worse" more common than a
fair coin allows (a sign test; McNemar's exact test when scores are pass/fail)?
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np

#: Resamples per interval: enough for a stable 95% bound on a few hundred prompts.
RESAMPLES = 4000


@dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> "Interval":
        """The interval :meth:`as_dict` wrote (a stored result's ``interval``)."""
        return cls(data["mean"], data["low"], data["high"], int(data["n"]), data["level"])

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": round(self.mean, 4), "low": round(self.low, 4), "high": round(self.high, 4), "n": self.n,
                "level": self.level}


def mean_interval(values: list[float], level: float = 0.95, seed: int = 0) -> Interval:
    """The mean of ``values`` with a bootstrap interval (a single value: an interval of width 0)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values to take an interval of")
    mean = float(data.mean())
    if data.size == 1 or np.all(data == data[0]):
        return Interval(mean, mean, mean, int(data.size), level)
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's notes on near-degenerate resamples
        result = bootstrap((data,), np.mean, confidence_level=level, n_resamples=RESAMPLES, method="percentile",
                           rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Interval(mean, float(low), float(high), int(data.size), level)


def paired_difference(new: Mapping[str, float], old: Mapping[str, float], level: float = 0.95,
                      seed: int = 0) -> Interval:
    """``new - old`` on the prompts both answered, with a paired bootstrap interval.

    Raises:
        ValueError: the two share no prompt.
    """
    shared = sorted(set(new) & set(old))
    if not shared:
        raise ValueError("the two results share no prompt")
    return mean_interval([new[k] - old[k] for k in shared], level, seed)


def worse_beyond_doubt(difference: Interval, margin: float) -> bool:
    """True when the new model is worse by more than ``margin`` at the interval's confidence: the
    whole interval of ``new - best`` lies below ``-margin``."""
    return difference.high < -margin


@dataclass(frozen=True)
class SignTest:
    """Prompts where ``new`` did better (wins), worse (losses) or the same (ties) as ``old``, and
    the exact one-sided p-value of that many losses among the differing prompts, had neither
    model been better."""

    wins: int
    losses: int
    ties: int
    p_worse: float

    def as_dict(self) -> dict[str, float | int]:
        return {"wins": self.wins, "losses": self.losses, "ties": self.ties, "p_worse": round(self.p_worse, 6)}


def sign_test(new: Mapping[str, float], old: Mapping[str, float]) -> SignTest:
    """Exact sign test of ``new`` being worse than ``old`` on the prompts both answered."""
    from scipy.stats import binomtest

    shared = set(new) & set(old)
    wins = sum(1 for k in shared if new[k] > old[k])
    losses = sum(1 for k in shared if new[k] < old[k])
    p = binomtest(losses, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    return SignTest(wins, losses, len(shared) - wins - losses, float(p))
