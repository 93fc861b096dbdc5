"""How the evaluation gate scores a model: ``EvalResult.from_answers`` and ``EvalResult.summary``.

The score is ``w * mean(quality) / 10 + (1 - w) * share of checks passed`` (either part alone
when the other is missing), scaled down by the share of prompts that got no answer. Every
expected number below is worked out by hand from that formula.
"""

from __future__ import annotations

import pytest

from isheep.runtime.pipeline.evaluation import EvalResult


def answer(quality: int | None, *checks: bool, id: str = "p") -> dict:
    return {"id": id, "answer": "text", "quality": quality, "checks": list(checks)}


def unanswered(id: str = "x") -> dict:
    return {"id": id, "error": "http_500"}


def test_critic_only():
    # No prompt has checks: the critic's mean (8 + 6) / 2 = 7 alone, whatever its weight.
    for weight in (0.5, 0.2):
        result = EvalResult.from_answers("v1", [answer(8), answer(6)], weight)
        assert (result.version, result.critic_mean, result.checks_rate) == ("v1", 7.0, None)
        assert result.score == pytest.approx(0.7)
        assert result.failed_requests == 0


def test_unparseable_critic_scores_are_left_out_of_the_mean():
    # (9 + 5) / 2 = 7: the None quality is not a zero.
    result = EvalResult.from_answers("v1", [answer(9), answer(None), answer(5)], 0.5)
    assert result.critic_mean == 7.0 and result.score == pytest.approx(0.7)


def test_checks_only():
    # Every quality is None: 3 of 4 checks passed, 0.75 alone.
    rows = [answer(None, True, False), answer(None, True, True)]
    result = EvalResult.from_answers("v1", rows, 0.5)
    assert (result.critic_mean, result.checks_rate) == (None, 0.75)
    assert result.score == pytest.approx(0.75)


@pytest.mark.parametrize("weight, rows, expected", [
    (1.0, [answer(None, True, False)], 0.5),  # all weight on a critic that gave no score: checks alone
    (0.0, [answer(8)], 0.8),  # all weight on checks that no prompt has: the critic alone
])
def test_the_part_that_is_there_counts_even_when_its_weight_is_zero(weight, rows, expected):
    # It used to score 0.0: a model would be rejected for a part that was not measured.
    assert EvalResult.from_answers("v1", rows, weight).score == pytest.approx(expected)


@pytest.mark.parametrize("weight,expected", [
    (0.5, 0.5 * 0.8 + 0.5 * 0.5),  # 0.65
    (0.2, 0.2 * 0.8 + 0.8 * 0.5),  # 0.56
])
def test_critic_and_checks_mixed_by_weight(weight, expected):
    # Quality mean (10 + 6) / 2 = 8 -> 0.8; checks: 2 passed of 4 -> 0.5 (pooled over prompts,
    # not averaged per prompt: per prompt it would be (1/3 + 1) / 2).
    rows = [answer(10, True, False, False), answer(6, True)]
    result = EvalResult.from_answers("v2", rows, weight)
    assert (result.critic_mean, result.checks_rate) == (8.0, 0.5)
    assert result.score == pytest.approx(expected)


def test_unanswered_prompts_scale_the_score_down():
    # The two answers score 0.5 * 0.9 + 0.5 * 1.0 = 0.95 between them; 2 of 4 prompts were
    # answered, so 0.95 * 2 / 4 = 0.475: a model that cannot answer is not better.
    rows = [answer(9, True), unanswered("a"), answer(9, True), unanswered("b")]
    result = EvalResult.from_answers("v3", rows, 0.5)
    assert result.failed_requests == 2
    assert (result.critic_mean, result.checks_rate) == (9.0, 1.0)
    assert result.score == pytest.approx(0.475)
    assert result.answers == rows  # the errors stay in the record


def test_nothing_answered_scores_zero():
    result = EvalResult.from_answers("v3", [unanswered(), unanswered()], 0.5)
    assert (result.score, result.critic_mean, result.checks_rate, result.failed_requests) == (0.0, None, None, 2)


def test_no_rows_at_all():
    result = EvalResult.from_answers("v0", [], 0.5)
    assert (result.score, result.critic_mean, result.checks_rate, result.failed_requests) == (0.0, None, None, 0)
    assert result.answers == []


def test_score_is_rounded_to_four_places():
    # (7 + 8 + 8) / 3 = 7.666..., one check of three passed: 0.5 * 0.7667 + 0.5 * 0.3333 = 0.55
    rows = [answer(7, True), answer(8, False), answer(8, False)]
    result = EvalResult.from_answers("v1", rows, 0.5)
    assert result.score == round(0.5 * (23 / 30) + 0.5 * (1 / 3), 4)
    assert result.score == round(result.score, 4)


def test_summary_keeps_the_first_fifty_answers():
    rows = [answer(5 + n % 5, n % 2 == 0, id=f"p{n}") for n in range(60)]
    result = EvalResult.from_answers("v1", rows, 0.5)
    summary = result.summary()
    assert [a["id"] for a in summary["answers"]] == [f"p{n}" for n in range(50)]
    assert len(result.answers) == 60  # the result itself keeps them all
    assert {k: summary[k] for k in ("version", "score", "critic_mean", "checks_rate", "failed_requests")} == {
        "version": "v1", "score": result.score, "critic_mean": result.critic_mean,
        "checks_rate": result.checks_rate, "failed_requests": 0}
