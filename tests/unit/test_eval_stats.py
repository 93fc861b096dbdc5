"""Intervals of benchmark scores and the paired comparison the gate decides on.

The simulations replay the issue's finding about the old gate (24 prompts, a fixed 0.05
margin: an equal model rejected about 13% of the time, a real regression missed half the
time) on the benchmark's scale, with fixed seeds: an equal model is rarely called worse, and a
model that fails far more prompts is.
"""

from __future__ import annotations

import json
import random

import pytest

from isheep.runtime.core.config import EvaluationConfig
from isheep.runtime.evals import mean_interval, paired_difference, sign_test, worse_beyond_doubt
from isheep.runtime.pipeline.evaluation import Gate


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


def _result(scores: dict[str, float]) -> dict:
    return {"scores": scores, "interval": mean_interval(list(scores.values())).as_dict()}


def _losing(losses: int, n: int = 330) -> dict[str, float]:
    """A model that fails ``losses`` prompts the best one passes, and is the same on the rest."""
    return {str(i): 0.0 if i < losses else 1.0 if i < 10 else float(i % 3 == 0) for i in range(n)}


def test_the_sign_test_counts_the_prompts_where_two_models_differ():
    signs = sign_test({"a": 1.0, "b": 0.0, "c": 0.5, "d": 1.0}, {"a": 0.0, "b": 1.0, "c": 1.0, "d": 1.0})
    assert (signs.wins, signs.losses, signs.ties) == (1, 2, 1)
    assert signs.p_worse == pytest.approx(0.5)  # P(X >= 2), X ~ Binomial(3, 1/2)
    assert sign_test({"a": 1.0}, {"a": 1.0}).p_worse == 1.0
    assert sign_test(_losing(4), _losing(0)).p_worse == pytest.approx(0.0625)


def test_the_gate_keeps_a_model_only_four_prompts_worse_which_the_bootstrap_alone_rejected():
    gate = Gate(EvaluationConfig(), pool=None)  # type: ignore[arg-type]
    best = _result(_losing(0))
    four, eight = _result(_losing(4)), _result(_losing(8))
    assert worse_beyond_doubt(paired_difference(four["scores"], best["scores"]), 0.0)  # the old gate's verdict
    kept = gate.decide(four, {"v0": best})
    assert not kept.rejected and (kept.signs.losses, kept.signs.wins) == (4, 0)
    rejected = gate.decide(eight, {"v0": best})
    assert rejected.rejected and rejected.signs.p_worse < 0.05 and rejected.alpha == pytest.approx(0.05)
    assert rejected.as_dict()["sign_test"]["losses"] == 8 and "0 better / 8 worse" in str(rejected)


def test_the_best_of_several_models_is_tested_with_a_smaller_error():
    gate = Gate(EvaluationConfig(), pool=None)  # type: ignore[arg-type]
    best, five = _result(_losing(0)), _result(_losing(5))  # five losses, no win: p = 1/32
    assert gate.decide(five, {"v0": best}).rejected
    three = {"v0": _result(_losing(2)), "v1": best, "v2": _result(_losing(1))}
    decision = gate.decide(five, three)
    assert decision.best == "v1" and decision.compared == 3 and decision.alpha == pytest.approx(0.05 / 3)
    assert not decision.rejected


def test_a_stored_gate_result_counts_only_for_the_same_prompts_file(tmp_path):
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Say hi.", "checks": [{"type": "max_words", "value": 5}]}\n')
    gate = Gate(EvaluationConfig(prompts=prompts), pool=None)  # type: ignore[arg-type]
    stored = {"scores": {"a": 1.0}, "limit": 0, "fingerprint": gate.bench.fingerprint()}
    row = {"detail": json.dumps({"evaluation": stored})}
    assert gate.known(row) == stored
    prompts.write_text('{"id": "a", "prompt": "Say hello.", "checks": [{"type": "max_words", "value": 5}]}\n')
    assert gate.known(row) is None  # edited since: measured again, never compared across files
    assert Gate(EvaluationConfig(), pool=None).known(row) is None  # type: ignore[arg-type]


def test_a_judge_that_cannot_be_read_decides_nothing():
    from isheep.runtime.evals import BenchResult

    mute = BenchResult("judge", "m", {"a": 0.5}, {"unreadable": 0.9, "judge_errors": 0.9})
    assert not Gate.usable(mute) and Gate.usable(BenchResult("judge", "m", {"a": 0.0}, {"unreadable": 0.1}))
