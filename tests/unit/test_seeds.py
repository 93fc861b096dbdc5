"""Seed files: the shipped set, Self-Instruct's format, and every way a file can be wrong."""

import json

import pytest

from isheep.agents.proposer import Draft, blacklist_pattern, screen
from isheep.runtime.core.config import ProposerConfig
from isheep.runtime.data.dedup import RougeIndex
from isheep.runtime.core.errors import UserError
from isheep.runtime.data.seeds import load_seeds


def test_shipped_seeds_are_many_diverse_and_pass_the_recipes_filters():
    seeds = load_seeds()
    assert len(seeds) >= 100
    config = ProposerConfig()
    blacklist = blacklist_pattern(config.blacklist)
    index = RougeIndex(config.rouge_threshold)
    for seed in seeds:
        assert screen(Draft(seed.instruction, seed.input), config, blacklist) is None, seed.instruction
        assert not index.check_and_add(seed.instruction)[0], seed.instruction


def test_self_instruct_format(tmp_path):
    path = tmp_path / "seed_tasks.jsonl"
    rows = [{"id": "seed_task_0", "name": "breakfast", "instruction": "Suggest a breakfast.",
             "instances": [{"input": "", "output": "Oats."}], "is_classification": False},
            {"id": "seed_task_1", "name": "sort", "instruction": "Sort the numbers.",
             "instances": [{"input": "3, 1", "output": "1, 3"}], "is_classification": False}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    seeds = load_seeds(path)
    assert [(s.instruction, s.input) for s in seeds] == [("Suggest a breakfast.", ""), ("Sort the numbers.", "3, 1")]


@pytest.mark.parametrize("content,needle", [
    (b"", "holds no tasks"),
    (b"\n\n", "holds no tasks"),
    (b"not json\n", "line 1: not valid JSON"),
    (b'{"instruction": "ok"}\n[1, 2]\n', "line 2: expected a JSON object"),
    (b'{"task": "x"}\n', "unknown field(s) task"),
    (b'{"instruction": ""}\n', "'instruction' must be a non-empty string"),
    (b'{"instruction": 3}\n', "'instruction' must be a non-empty string"),
    (b'{"instruction": "x", "input": 5}\n', "'input' must be a string"),
    (b'{"instruction": "x", "instances": []}\n', "'instances' must be a non-empty list"),
    (b'\xff\xfe{"instruction": "x"}\n', "not UTF-8"),
])
def test_malformed_seed_files(tmp_path, content, needle):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_seeds(path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_too_few_and_missing_and_huge(tmp_path, monkeypatch):
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"instruction": "one"}\n')
    with pytest.raises(UserError, match="holds 1 task"):
        load_seeds(path, minimum=5)
    with pytest.raises(UserError, match="seed file not found"):
        load_seeds(tmp_path / "none.jsonl")
    monkeypatch.setattr("isheep.runtime.data.seeds.MAX_SEED_BYTES", 10)
    with pytest.raises(UserError, match="too large"):
        load_seeds(path)
