"""The ``instructions`` benchmark's prompts and scoring.

The shipped file is what its generator writes; it has the breadth the issue asks (300+
prompts, 20+ kinds of check, several checks on most prompts), no prompt asks for two things
one answer cannot both do (nor, with any seed, text an answer must hold that another check
bans), and IFEval's four accuracies come out right on hand-scored answers.
"""

from __future__ import annotations

import collections
import importlib.util
import json
from pathlib import Path

from isheep.prompts import default_path
from isheep.runtime.data.checks import CHECKS, load_eval_prompts, run_checks, validate
from isheep.runtime.evals.instructions import SHIPPED, accuracies, score_answer

GENERATOR = Path(__file__).parents[2] / "prompts" / "benchmarks" / "make_instructions.py"


def _generator():
    spec = importlib.util.spec_from_file_location("make_instructions", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_prompts_are_the_generators_output():
    shipped = [json.loads(line) for line in default_path(SHIPPED).read_text(encoding="utf-8").splitlines()]
    assert shipped == _generator().build()


def test_the_suite_is_broad():
    prompts = load_eval_prompts(default=SHIPPED)
    kinds = collections.Counter(c["type"] for p in prompts for c in p.checks)
    assert len(prompts) >= 300 and len({p.id for p in prompts}) == len(prompts)
    assert len(kinds) >= 20 and set(kinds) <= set(CHECKS)
    assert min(kinds.values()) >= 10  # every kind is asked about often enough to be measured
    several = sum(1 for p in prompts if len(p.checks) > 1)
    assert several / len(prompts) > 0.6
    assert all(validate(c) is None for p in prompts for c in p.checks)


def test_no_prompt_asks_for_what_one_answer_cannot_do():
    never_together = [{"json", "bullets"}, {"json_keys", "numbered"}, {"lowercase", "uppercase"},
                      {"language", "contains"}, {"language", "starts_with"}, {"uppercase", "language"},
                      {"quoted", "starts_with"}, {"postscript", "ends_with"}, {"json", "no_commas"},
                      {"repeat_prompt", "lowercase"}, {"paragraphs", "title"}, {"sentences", "postscript"}]
    for prompt in load_eval_prompts(default=SHIPPED):
        kinds = {c["type"] for c in prompt.checks}
        assert len(kinds) == len(prompt.checks), prompt.id
        assert not [pair for pair in never_together if pair <= kinds], prompt.id


# What an answer holds word for word, by check kind, and the checks that whole text must then pass.
HELD = {"contains": lambda v: v, "starts_with": lambda v: v, "ends_with": lambda v: v, "repeat_prompt": lambda v: v,
        "keyword_count": lambda v: v["word"]}
BANS = ("not_contains", "no_commas")
# The repeated request begins the answer: a ban or a case the request breaks, the answer breaks.
ON_THE_REQUEST = BANS + ("lowercase", "uppercase", "max_capital_words")
# The request's words and sentence use up a length limit; two prescribed openings cannot both begin it.
NEVER_WITH_THE_REQUEST = ("max_words", "max_sentences", "sentences", "starts_with")


def _why_impossible(checks: list[dict]) -> list[str]:
    """What makes every answer fail some of ``checks``: text it must hold against a ban of another."""
    kinds = {c["type"]: c for c in checks}
    problems = []
    for check in checks:
        if check["type"] not in HELD:
            continue
        text = HELD[check["type"]](check["value"])
        bans = [c for c in checks if c["type"] in (ON_THE_REQUEST if check["type"] == "repeat_prompt" else BANS)]
        problems += [f"{check['type']} {text!r} fails {ban}" for ban in bans if run_checks(text, [ban]) != [True]]
    if "repeat_prompt" in kinds:
        problems += [f"repeat_prompt with {kind}" for kind in NEVER_WITH_THE_REQUEST if kind in kinds]
    return problems


def test_an_ideal_answer_to_every_shipped_prompt_is_possible():
    for prompt in load_eval_prompts(default=SHIPPED):
        assert _why_impossible(prompt.checks) == [], prompt.id


def test_the_generator_makes_no_impossible_prompt_with_other_seeds():
    # Other seeds pair other instructions: "Thanks for reading." with "do not use 'thanks'" was one.
    generator = _generator()
    for seed in range(50):
        for row in generator.build(seed=seed):
            assert _why_impossible(row["checks"]) == [], (seed, row["id"])
    assert generator._clash([{"type": "ends_with", "value": "Thanks for reading."},
                             {"type": "not_contains", "value": "thanks"}])
    assert not generator._clash([{"type": "ends_with", "value": "Thanks for reading."},
                                 {"type": "not_contains", "value": "than"}])  # whole words only


def test_why_impossible_finds_the_pairs_it_is_for():
    thanks = [{"type": "ends_with", "value": "Thanks for reading."}, {"type": "not_contains", "value": "thanks"}]
    request = "Write a message inviting coworkers to a farewell lunch, please."
    assert _why_impossible(thanks) == ["ends_with 'Thanks for reading.' fails " + repr(thanks[1])]
    assert len(_why_impossible([{"type": "repeat_prompt", "value": request}, {"type": "no_commas"},
                                {"type": "not_contains", "value": "lunch"}, {"type": "lowercase"}])) == 3
    assert _why_impossible([{"type": "repeat_prompt", "value": "Say hi."}, {"type": "max_words", "value": 40}]) == [
        "repeat_prompt with max_words"]
    assert _why_impossible([{"type": "contains", "value": "lunch"}, {"type": "lowercase"}]) == []


def test_the_four_accuracies_on_hand_scored_answers():
    prompts = {p.id: p for p in load_eval_prompts(default=SHIPPED)}
    item = next(p for p in prompts.values() if [c["type"] for c in p.checks] == ["max_words", "ends_with"])
    limit, end = item.checks[0]["value"], item.checks[1]["value"]
    good = score_answer(item, f"Keep it short. {end}")
    preamble = score_answer(item, f"Sure, here you are:\n{'word ' * 5}{end}\nHope it helps")
    bad = score_answer(item, "word " * (limit + 5))
    assert (good["strict"], good["loose"]) == ([True, True], [True, True])
    # Strictly, the sign-off line ends it; loosely, without the first and last lines, it ends right.
    assert (preamble["strict"], preamble["loose"]) == ([True, False], [True, True])
    assert (bad["strict"], bad["loose"]) == ([False, False], [False, False])
    assert accuracies([good, preamble, bad]) == {"prompt_strict": 1 / 3, "instruction_strict": 3 / 6,
                                                 "prompt_loose": 2 / 3, "instruction_loose": 4 / 6}
