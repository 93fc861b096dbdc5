"""Curation thresholds and the recipe's response filters."""

import pytest

from isheep.agents.curator import decide
from isheep.agents.responder import response_reason
from isheep.runtime.core.config import CuratorConfig, ResponderConfig
from isheep.runtime.core.messages import Assessment, Instruction, Response, Score


def assessment(quality, following):
    inst = Instruction(id="r01-000001", round=1, model_version="v0", instruction="Name a fruit please now.")
    resp = Response(id=inst.id, round=1, model_version="v0", instruction=inst, text="Apple.")
    return Assessment(id=inst.id, round=1, model_version="v0", response=resp,
                      quality=Score(value=quality), following=Score(value=following))


@pytest.mark.parametrize("q,f,keep,reason", [
    (9, 9, True, None), (10, 10, True, None),
    (8, 10, False, "low_quality:8"), (10, 8, False, "low_following:8"),
    (None, 10, False, "critic_unparseable:quality"), (10, None, False, "critic_unparseable:following"),
])
def test_recipe_thresholds(q, f, keep, reason):
    assert decide(assessment(q, f), CuratorConfig()) == (keep, reason)


def test_thresholds_are_configurable():
    assert decide(assessment(6, 6), CuratorConfig(quality_threshold=5, following_threshold=5)) == (True, None)


@pytest.mark.parametrize("text,finish,expected", [
    ("", "stop", "empty_response"),
    ("   \n", "stop", "empty_response"),
    ("A long answer", "length", "truncated"),
    ("Sure.\nassistant: and more", "stop", "role_leak"),
    ("Sure.\nUser: what next?", "stop", "role_leak"),
    ("Fine <|im_start|>user", "stop", "role_leak"),
    ("Answer Choices: (a) 1 (b) 2", "stop", "answer_choices"),
    ("The input is <noinput> so nothing.", "stop", "noinput_in_response"),
    ("Paris is the capital of France.", "stop", None),
])
def test_response_filters(text, finish, expected):
    assert response_reason(text, finish, ResponderConfig(drop_truncated=True)) == expected


def test_truncated_answers_can_be_kept():
    assert response_reason("A long answer", "length", ResponderConfig(drop_truncated=False)) is None


AUTHORS = ResponderConfig(drop_truncated=False, filters=[
    "role_lines", "answer_choices", "noinput_in_response", "can_you", "do_you", "question_after_break",
    "choice_letters", "cjk", "empty_response"])


@pytest.mark.parametrize("text,expected", [
    ("Sure.\nQuestion: what else?", "role_lines"),
    ("Sure.\noutput\nmore", "role_lines"),
    ("It is sunny.\n\nCan you tell me more?", "can_you"),
    ("What do you need?", "do_you"),  # as theirs: 'do you' and anything after it
    ("Here it is.\n\nIs that enough?", "question_after_break"),
    ("Pick one: A. red B. blue", "choice_letters"),
    ("It works, e.g. here.", "choice_letters"),  # their pattern catches 'e.' too
    ("答案是四", "cjk"),
    ("A long answer", None),  # the authors keep answers cut off by the token limit
    ("Paris is the capital of France.", None),
])
def test_the_authors_response_filters_as_they_wrote_them(text, expected):
    assert response_reason(text, "length" if text == "A long answer" else "stop", AUTHORS) == expected


def test_an_unjudged_pair_is_kept():
    # No critic this round (Self-Instruct; Dromedary's first round): the filters alone decided.
    unjudged = assessment(None, None).model_copy(update={"judged": False})
    assert decide(unjudged, CuratorConfig()) == (True, None)
