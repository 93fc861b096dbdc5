"""Verifiable checks of an answer (length limits, required words, formats: "three bullet points"),
and the held-out prompts that carry them.

Used by the evaluation gate on its held-out prompts (``prompts/eval.jsonl``), where each prompt
lists the checks a good answer passes, e.g.::

    {"id": "eval-01", "prompt": "List three uses of vinegar as bullet points.",
     "checks": [{"type": "bullets", "value": 3}, {"type": "max_words", "value": 60}]}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from isheep.prompts import default_path
from isheep.runtime.core.errors import UserError

from .seeds import read_jsonl

_BULLET = re.compile(r"^\s*[-*\u2022]\s+\S")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+\S")
_SENTENCE = re.compile(r"[.!?]+(?:\s|$)")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _json_object(text: str) -> dict[str, Any] | None:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


CHECKS: dict[str, Callable[[str, Any], bool]] = {
    "max_words": lambda text, n: len(text.split()) <= n,
    "min_words": lambda text, n: len(text.split()) >= n,
    "contains": lambda text, word: word.lower() in text.lower(),
    "not_contains": lambda text, word: word.lower() not in text.lower(),
    "bullets": lambda text, n: sum(1 for line in _lines(text) if _BULLET.match(line)) == n,
    "numbered": lambda text, n: sum(1 for line in _lines(text) if _NUMBERED.match(line)) == n,
    "lines": lambda text, n: len(_lines(text)) == n,
    "max_sentences": lambda text, n: 0 < len(_SENTENCE.findall(text.strip() + " ")) <= n,
    "starts_with": lambda text, prefix: text.strip().lower().startswith(prefix.lower()),
    "ends_with": lambda text, suffix: text.strip().lower().endswith(suffix.lower()),
    "lowercase": lambda text, _: text == text.lower() and any(c.isalpha() for c in text),
    "uppercase": lambda text, _: text == text.upper() and any(c.isalpha() for c in text),
    "json_keys": lambda text, keys: (obj := _json_object(text)) is not None and all(k in obj for k in keys),
}


#: What each check's ``value`` must be (checked when the prompts are loaded, not mid-evaluation).
_COUNTS = ("max_words", "min_words", "bullets", "numbered", "lines", "max_sentences")
_PHRASES = ("contains", "not_contains", "starts_with", "ends_with")


def validate(check: Any) -> str | None:
    """Why a check description is unusable, or None."""
    if not isinstance(check, dict) or "type" not in check:
        return "a check must be an object with a 'type'"
    kind = check["type"]
    if kind not in CHECKS:
        return f"unknown check type {kind!r} (known: {', '.join(sorted(CHECKS))})"
    if kind in ("lowercase", "uppercase"):
        return None
    if "value" not in check:
        return f"check {kind!r} needs a 'value'"
    value = check["value"]
    if kind in _COUNTS and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        return f"check {kind!r} needs a whole number of at least 0 as its 'value', got {value!r}"
    if kind in _PHRASES and (not isinstance(value, str) or not value.strip()):
        return f"check {kind!r} needs a non-empty text as its 'value', got {value!r}"
    if kind == "json_keys" and (not isinstance(value, list) or not all(isinstance(k, str) for k in value)):
        return f"check 'json_keys' needs a list of key names as its 'value', got {value!r}"
    return None


def run_checks(text: str, checks: list[dict[str, Any]]) -> list[bool]:
    """One pass/fail per check."""
    return [bool(CHECKS[c["type"]](text, c.get("value"))) for c in checks]


@dataclass(frozen=True)
class EvalPrompt:
    """One held-out prompt and the checks a good answer to it passes."""

    id: str
    prompt: str
    checks: list[dict[str, Any]]


def load_eval_prompts(path: Path | None = None, limit: int = 0) -> list[EvalPrompt]:
    """Read held-out prompts (default: the shipped set), each check validated; problems are one UserError."""
    source = Path(path) if path is not None else default_path("eval.jsonl")
    prompts = []
    for number, where, row in read_jsonl(source, "evaluation prompts"):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise UserError(f"{where}: needs a non-empty 'prompt'")
        checks = row.get("checks", [])
        if not isinstance(checks, list):
            raise UserError(f"{where}: 'checks' must be a list of checks, got {checks!r}")
        for check in checks:
            problem = validate(check)
            if problem:
                raise UserError(f"{where}: {problem}")
        prompts.append(EvalPrompt(id=str(row.get("id", number)), prompt=row["prompt"], checks=checks))
    if not prompts:
        raise UserError(f"evaluation prompts {source} hold no prompt")
    return prompts[:limit] if limit else prompts
