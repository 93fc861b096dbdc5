"""Reading scores out of whatever the critic model says."""

import pytest

from isheep.agents.critic import parse_score


@pytest.mark.parametrize("raw,value", [
    ('{"score": 9, "explanation": "Good."}', 9),
    ('{"score": 9, "explanation": "Good.", "confidence": "high"}', 9),   # extra fields ignored
    ('```json\n{"score": 10, "explanation": "ok"}\n```', 10),
    ('{"score": "8", "explanation": "ok"}', 8),
    ("9||Clear and correct.", 9),
    ("9/10||Clear and correct.", 9),
    (" **7** || Partly right.", 7),
    ("10||", 10),
    ("11||Too good.", None),
    ('{"score": 11, "explanation": "x"}', None),
    ('{"score": 0, "explanation": "x"}', None),
    ('{"score": true, "explanation": "x"}', None),
    ('{"score": "high"}', None),
    ("nine||Good.", None),
    ("The answer is fine.", None),
    ("", None),
    ('{"score": 9, "explanation": ', 9),             # cut off by the token limit after the score
    ('{"score": 9', None),
    ('{"score": 12, "explanation": "Very', None),
])
def test_parse_score(raw, value):
    score = parse_score(raw)
    assert score.value == value
    assert score.raw == raw


def test_explanation_is_kept():
    assert parse_score("8||Correct but long.").explanation == "Correct but long."
    assert parse_score('{"score": 8, "explanation": "Correct."}').explanation == "Correct."
