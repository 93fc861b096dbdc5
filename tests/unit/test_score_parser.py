"""The critic's score parser against replies as real models write them.

The base is the I-SHEEP authors' parser (``extract_number_from_eval``): strip leading
whitespace and non-word characters, read a leading number (decimals rounded half to even),
accept it only from 1 to 10. Extensions only read more real forms (a leading ``Score:``-like
label, a JSON object) or are safely stricter (a negative number, a number outside 1-10 before
rounding, a scale other than 10 are refused). ``authors`` is what their parser gives, so every
difference from it is visible in the table.
"""

from __future__ import annotations

import pytest

from isheep.agents.critic import parse_score

# (reply, ours, authors'): None means rejected (the pair is refused as critic_unparseable).
CASES = [
    ("9", 9, 9),
    ("10", 10, 10),
    ("1||The answer is wrong.", 1, 1),
    ("9||The response is correct and concise.", 9, 9),
    ("9. The response is correct.", 9, 9),
    ("9.5||fine", 10, 10),
    ("8.5||good", 8, 8),  # rounding half to even, as theirs
    ("7.6||good", 8, 8),
    ("9.0", 9, 9),
    ("  \n 9||leading space and newline", 9, 9),
    ("**9**", 9, 9),
    ("**9**||markdown bold", 9, 9),
    ("[[8]]", 8, 8),
    ("<9>||angle brackets", 9, 9),
    ("(7) The answer misses a step.", 7, 7),
    ("9/10", 9, 9),
    ("9 / 10 - clear and correct", 9, 9),
    ("9 out of 10", 9, 9),
    ("9\n\nExplanation: the response follows the format.", 9, 9),
    ("9 - The answer is fine.", 9, 9),
    ("||9", 9, 9),
    ("Score: 9", 9, None),
    ("Score: 9/10||correct", 9, None),
    ("**Score:** 8", 8, None),
    ("**Score: 9**", 9, None),
    ("Rating: [[8]]", 8, None),
    ("Score (1-10): 7", 7, None),
    ("Quality: 9||clear", 9, None),
    ("Instruction following: 8", 8, None),
    ("The score is 9.", 9, None),
    ("Final score: 10", 10, None),
    ('{"score": 9, "explanation": "Correct."}', 9, None),
    ('```json\n{"score": 8, "explanation": "Fine."}\n```', 8, None),
    ('```JSON\n{"score": 7, "explanation": "Fine."}\n```', 7, None),
    ('{"score": "9", "explanation": "as a string"}', 9, None),
    ('{"score": 8, "explanation": "The answer is cut o', 8, None),
    ("-3||negative", None, 3),  # a minus sign is not punctuation to strip
    ("0.6||too low", None, 1),  # below the scale before rounding
    ("0||zero", None, None),
    ("11||better than perfect", None, None),
    ("10.6||just over", None, None),
    ("85/100", None, None),
    ("8/100||another scale", None, 8),  # a scale other than 10 is not this scale
    ("nine||a word, not a number", None, None),
    ("_9", None, None),
    ("I would give it a 9.", None, None),  # free text before the number: not guessed at
    ("The response is clear. Score: 9", None, None),
    ("Score: N/A", None, None),
    ('{"score": 11, "explanation": "x"}', None, None),
    ('{"score": true, "explanation": "x"}', None, None),
    ('{"score": "high", "explanation": "x"}', None, None),
    ("", None, None),
]


def authors(text: str) -> int | None:
    """Their parser, restated from its logic (for the table's third column)."""
    import re

    cleaned = re.sub(r"^\s*\W*", "", text)
    match = re.match(r"^\d+(\.\d+)?", cleaned)
    if match:
        number = round(float(match.group()))
        return number if 1 <= number <= 10 else None
    return None


@pytest.mark.parametrize("reply, ours, theirs", CASES, ids=[repr(c[0])[:40] for c in CASES])
def test_reads_real_replies(reply, ours, theirs):
    assert parse_score(reply).value == ours
    assert authors(reply) == theirs  # the table says truly what their parser does


def test_the_table_is_long_and_differs_from_theirs_only_where_it_says():
    assert len(CASES) >= 30
    differs = [c for c in CASES if c[1] != c[2]]
    # More forms read (labels, JSON) or a stricter refusal (minus sign, off-scale): nothing else.
    assert all(ours is not None and theirs is None or ours is None and theirs is not None
               for _, ours, theirs in differs)


def test_explanation_and_raw_reply_are_kept():
    score = parse_score("9||The response is correct.")
    assert (score.value, score.explanation, score.raw) == (9, "The response is correct.", "9||The response is correct.")
    assert parse_score("9. The response is correct.").explanation == "The response is correct."
    assert parse_score('{"score": 9, "explanation": "Correct."}').explanation == "Correct."
    assert parse_score("nine").raw == "nine"
