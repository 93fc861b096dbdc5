"""Prompt files shipped with isheep: templates, recipes, seed tasks and evaluation prompts.

Plain package data, at the bottom of the layers (it imports nothing of isheep):
``prompts/recipes/<name>/`` holds each recipe's ``recipe.toml`` and its own prompt files, and
the files here are shared by every recipe (the judge-style critic prompts, the seed tasks, the
held-out evaluation prompts). Templates use ``str.format`` placeholders (``{name}``; a literal
brace is written ``{{``); ``isheep.runtime.data.templates`` reads and checks them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def default_path(name: str) -> Path:
    """Path of a shipped file (``seeds.jsonl``, ``judge_quality.txt``, ``recipes``...)."""
    return Path(str(resources.files(__package__).joinpath(name)))
