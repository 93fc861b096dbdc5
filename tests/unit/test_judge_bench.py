"""The ``judge`` benchmark's parts: reading a judge's verdict, scoring both orders, the prompts."""

from __future__ import annotations

import json

import pytest

from isheep.runtime.core.errors import UserError
from isheep.runtime.evals.judge import _points, load_open_prompts, verdict


@pytest.mark.parametrize("reply, said", [
    ("A", "A"), ("B", "B"), ("tie", "tie"), ("Tie.", "tie"), ("**B**", "B"), ("Reply A is better.", "A"),
    ("It is a tie: both are fine.", "tie"), ("Answer: B", "B"), ("a tie", "tie"),
    ("A tie.", "tie"), ("a", "A"), ("b.", "B"), ("Tie - both are fine", "tie"),
    ("Both replies are good.", None), ("", None), ("AB", None), ("Banana", None),
])
def test_a_verdict_is_the_first_of_a_b_or_tie_the_reply_names(reply, said):
    assert verdict(reply) == said


def test_both_orders_cancel_a_judge_that_always_picks_the_first_reply():
    # The candidate is A in the first order and B in the second: always "A" scores it 1 then 0.
    assert (_points("A", "A") + _points("A", "B")) / 2 == 0.5
    assert (_points("A", "A") + _points("B", "B")) / 2 == 1.0  # better in both orders
    assert (_points("tie", "A") + _points(None, "B")) / 2 == 0.5  # a tie, and an unreadable verdict


def test_the_shipped_open_prompts_are_many_varied_and_unique():
    prompts = load_open_prompts()
    assert len(prompts) >= 100 and len({key for key, _ in prompts}) == len(prompts)
    assert load_open_prompts(limit=7) == prompts[:7]


def test_bad_open_prompt_files_are_one_line(tmp_path):
    path = tmp_path / "open.jsonl"
    path.write_text(json.dumps({"id": "x", "prompt": "Say hi."}) + "\n" + json.dumps({"id": "x", "prompt": "Hi."}) + "\n")
    with pytest.raises(UserError, match="id 'x' is used twice"):
        load_open_prompts(path)
    path.write_text(json.dumps({"id": "x", "prompt": " "}) + "\n")
    with pytest.raises(UserError, match="needs a non-empty 'prompt'"):
        load_open_prompts(path)
