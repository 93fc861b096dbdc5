"""The ``instructions`` benchmark's prompts and scoring.

The shipped file is what its generator writes; it has the breadth the issue asks (300+
prompts, 20+ kinds of check, several checks on most prompts), no prompt asks for two things
one answer cannot both do, and IFEval's four accuracies come out right on hand-scored answers.
"""

from __future__ import annotations

import collections
import importlib.util
import json
from pathlib import Path

from isheep.prompts import default_path
from isheep.runtime.data.checks import CHECKS, load_eval_prompts, validate
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
