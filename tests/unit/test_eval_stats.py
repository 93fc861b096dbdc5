"""Intervals of benchmark scores and the paired comparison the gate decides on.

The simulations replay the issue's finding about the old gate (24 prompts, a fixed 0.05
margin: an equal model rejected about 13% of the time, a real regression missed half the
time) on the benchmark's scale, with fixed seeds: an equal model is rarely called worse, and a
model that fails far more prompts is.
"""

from __future__ import annotations

import random

import pytest

from isheep.runtime.evals import mean_interval, paired_difference, worse_beyond_doubt


def test_an_interval_holds_its_mean_and_narrows_with_more_prompts():
    rng = random.Random(0)
    small = mean_interval([float(rng.random() < 0.5) for _ in range(40)])
    large = mean_interval([float(rng.random() < 0.5) for _ in range(400)])
    assert small.low <= small.mean <= small.high and large.low <= large.mean <= large.high
    assert large.high - large.low < small.high - small.low
    assert 0.3 < large.low < 0.5 < large.high < 0.7


def test_identical_values_give_an_interval_of_width_zero():
    assert mean_interval([1.0, 1.0, 1.0]).as_dict() == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3, "level": 0.95}
    assert str(mean_interval([0.5])) == "0.500 [0.500, 0.500]"
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])


def test_a_paired_difference_uses_the_prompts_both_answered():
    new = {"a": 1.0, "b": 1.0, "c": 0.0, "only-new": 1.0}
    old = {"a": 0.0, "b": 1.0, "c": 0.0, "only-old": 0.0}
    diff = paired_difference(new, old)
    assert diff.n == 3 and diff.mean == pytest.approx(1 / 3)
    assert paired_difference(old, old).as_dict()["high"] == 0.0
    with pytest.raises(ValueError, match="share no prompt"):
        paired_difference({"x": 1.0}, {"y": 1.0})


def _pair(rng: random.Random, p_old: float, p_new: float, n: int) -> tuple[dict, dict]:
    # Prompts differ in difficulty, and both models find the same ones hard: the pairing helps.
    difficulty = [rng.random() for _ in range(n)]
    old = {str(i): float(d < p_old) for i, d in enumerate(difficulty)}
    new = {str(i): float((d + rng.gauss(0, 0.15)) < p_new) for i, d in enumerate(difficulty)}
    return new, old


def test_an_equal_model_is_rarely_called_worse_and_a_worse_one_is():
    rng = random.Random(7)
    trials = 60
    equal = sum(worse_beyond_doubt(paired_difference(*_pair(rng, 0.5, 0.5, 300), seed=t), margin=0.0)
                for t in range(trials))
    worse = sum(worse_beyond_doubt(paired_difference(*_pair(rng, 0.5, 0.38, 300), seed=t), margin=0.0)
                for t in range(trials))
    assert equal / trials <= 0.1  # about the 2.5% a one-sided 95% bound allows, with sampling noise
    assert worse / trials >= 0.9


def test_the_margin_forgives_a_small_loss():
    new = {str(i): float(i % 20 != 0) for i in range(400)}  # 0.95
    old = {str(i): 1.0 for i in range(400)}
    diff = paired_difference(new, old)
    assert worse_beyond_doubt(diff, margin=0.0) and not worse_beyond_doubt(diff, margin=0.1)
