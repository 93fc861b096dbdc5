"""Verifiable checks of an answer (length limits, required words, formats: "three bullet points"),
and the held-out prompts that carry them.

Used by the ``instructions`` benchmark (``prompts/benchmarks/instructions.jsonl``), which the
evaluation gate runs too, where each prompt lists the checks a good answer passes, e.g.::

    {"id": "inst-001", "prompt": "List three uses of vinegar as bullet points.",
     "checks": [{"type": "bullets", "value": 3}, {"type": "max_words", "value": 60}]}

The kinds are IFEval's (length in words, sentences and paragraphs; keywords; lists, JSON,
titles, sections; case; start and end phrases; punctuation; placeholders; language), written
here. Counts are exact unless the name says ``max_``/``min_``. Each check is strict by itself;
:func:`loose_checks` also accepts an answer once Markdown emphasis or a first or last line
(a preamble such as "Sure, here it is:") is taken away, as IFEval's loose accuracy does.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from isheep.prompts import default_path
from isheep.runtime.core.errors import UserError

from . import text as t
from .seeds import read_jsonl

_TITLE = re.compile(r"<<[^<>\n]+>>")
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]+\]")
_HIGHLIGHT = re.compile(r"(?<!\*)\*[^*\n]+\*(?!\*)|\*\*[^*\n]+\*\*")
_POSTSCRIPT = re.compile(r"^\s*P\.\s?S\.", re.IGNORECASE | re.MULTILINE)
_DIVIDER = "******"


def _section_count(text: str, _: Any) -> int:
    return len(re.findall(r"^\s*(?:#+\s*)?section\s+\d+", text, re.IGNORECASE | re.MULTILINE))


def _capital_words(text: str) -> int:
    return sum(1 for w in t.words(text) if len(w) > 1 and w.isupper())


def _json_keys(text: str, keys: list[str]) -> bool:
    try:
        value = t.json_value(text)
    except ValueError:
        return False
    return isinstance(value, dict) and all(k in value for k in keys)


def _is_json(text: str, _: Any) -> bool:
    try:
        t.json_value(text)
    except ValueError:
        return False
    return True


def _language(text: str, code: str) -> bool:
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # langdetect samples: fixed, the same answer gets the same verdict
    try:
        return detect(text) == code
    except LangDetectException:  # no letters at all
        return False


def _two_responses(text: str, _: Any) -> bool:
    parts = [p.strip() for p in text.split(_DIVIDER)]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


def _keyword_count(text: str, value: dict[str, Any]) -> bool:
    return len(t.phrase_pattern(value["word"]).findall(text)) >= value["at_least"]


def _cased(text: str, upper: bool) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and all(c.isupper() if upper else c.islower() for c in letters if c.upper() != c.lower())


CHECKS: dict[str, Callable[[str, Any], bool]] = {
    # length
    "max_words": lambda text, n: len(t.words(text)) <= n,
    "min_words": lambda text, n: len(t.words(text)) >= n,
    "sentences": lambda text, n: len(t.sentences(text)) == n,
    "max_sentences": lambda text, n: 0 < len(t.sentences(text)) <= n,
    "min_sentences": lambda text, n: len(t.sentences(text)) >= n,
    "paragraphs": lambda text, n: len(t.paragraphs(text)) == n,
    "lines": lambda text, n: len(t.lines(text)) == n,
    # keywords
    "contains": lambda text, phrase: t.phrase_pattern(phrase).search(text) is not None,
    "not_contains": lambda text, phrase: t.phrase_pattern(phrase).search(text) is None,
    "keyword_count": _keyword_count,
    # formats
    "bullets": lambda text, n: t.count_lines(text, t.BULLET) == n,
    "numbered": lambda text, n: t.count_lines(text, t.NUMBERED) == n,
    "json": _is_json,
    "json_keys": _json_keys,
    "title": lambda text, _: _TITLE.search(text) is not None,
    "sections": lambda text, n: _section_count(text, None) == n,
    "highlights": lambda text, n: len(_HIGHLIGHT.findall(text)) >= n,
    "placeholders": lambda text, n: len(_PLACEHOLDER.findall(text)) >= n,
    "postscript": lambda text, _: _POSTSCRIPT.search(text) is not None,
    "two_responses": _two_responses,
    # case
    "lowercase": lambda text, _: _cased(text, upper=False),
    "uppercase": lambda text, _: _cased(text, upper=True),
    "max_capital_words": lambda text, n: _capital_words(text) <= n,
    "min_capital_words": lambda text, n: _capital_words(text) >= n,
    # start and end, punctuation
    "starts_with": lambda text, prefix: text.strip().lower().startswith(prefix.strip().lower()),
    "ends_with": lambda text, suffix: text.strip().lower().endswith(suffix.strip().lower()),
    "repeat_prompt": lambda text, prompt: text.strip().startswith(prompt.strip()),
    "quoted": lambda text, _: len(body := text.strip()) > 1 and body[0] == body[-1] == '"',
    "no_commas": lambda text, _: "," not in text and "\uff0c" not in text,
    # language
    "language": _language,
}

#: What each check's ``value`` must be (checked when the prompts are loaded, not mid-evaluation).
_NONE = ("lowercase", "uppercase", "json", "title", "postscript", "two_responses", "quoted", "no_commas")
_COUNTS = ("max_words", "min_words", "sentences", "max_sentences", "min_sentences", "paragraphs", "lines", "bullets",
           "numbered", "sections", "highlights", "placeholders", "max_capital_words", "min_capital_words")
_PHRASES = ("contains", "not_contains", "starts_with", "ends_with", "repeat_prompt", "language")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def validate(check: Any) -> str | None:
    """Why a check description is unusable, or None."""
    if not isinstance(check, dict) or "type" not in check:
        return "a check must be an object with a 'type'"
    kind = check["type"]
    if kind not in CHECKS:
        return f"unknown check type {kind!r} (known: {', '.join(sorted(CHECKS))})"
    if kind in _NONE:
        return None
    if "value" not in check:
        return f"check {kind!r} needs a 'value'"
    value = check["value"]
    if kind in _COUNTS and not _count(value):
        return f"check {kind!r} needs a whole number of at least 0 as its 'value', got {value!r}"
    if kind in _PHRASES and (not isinstance(value, str) or not value.strip()):
        return f"check {kind!r} needs a non-empty text as its 'value', got {value!r}"
    if kind == "json_keys" and (not isinstance(value, list) or not all(isinstance(k, str) for k in value)):
        return f"check 'json_keys' needs a list of key names as its 'value', got {value!r}"
    if kind == "keyword_count" and not (isinstance(value, dict) and isinstance(value.get("word"), str)
                                        and value["word"].strip() and _count(value.get("at_least"))):
        return f"check 'keyword_count' needs {{\"word\": text, \"at_least\": count}} as its 'value', got {value!r}"
    return None


def _passes(text: str, check: dict[str, Any]) -> bool:
    """Whether the answer passes one check; a check that raises on it counts as failed."""
    judge = CHECKS[check["type"]]  # outside the try: an unknown type is a bug of ours, loading rules it out
    try:
        return bool(judge(text, check.get("value")))
    except Exception:  # RecursionError too: an answer is a model's and can be anything ("[" * 3000
        # sends the JSON parser too deep); that is a failed check, not a crashed evaluation gate.
        return False


def run_checks(text: str, checks: list[dict[str, Any]]) -> list[bool]:
    """One pass/fail per check, on the answer as it is (IFEval's strict accuracy)."""
    return [_passes(text, c) for c in checks]


def loose_variants(text: str) -> list[str]:
    """The answer, without Markdown emphasis, without its first line, its last line or both."""
    rows = text.split("\n")
    cuts = [text, "\n".join(rows[1:]).strip(), "\n".join(rows[:-1]).strip(), "\n".join(rows[1:-1]).strip()]
    return list(dict.fromkeys(itertools.chain(cuts, (c.replace("*", "") for c in cuts))))


def loose_checks(text: str, checks: list[dict[str, Any]]) -> list[bool]:
    """One pass/fail per check, passed when any loose variant of the answer passes it (IFEval's loose)."""
    variants = [v for v in loose_variants(text) if v.strip()]
    return [any(_passes(v, c) for v in variants) for c in checks]


@dataclass(frozen=True)
class EvalPrompt:
    """One held-out prompt and the checks a good answer to it passes."""

    id: str
    prompt: str
    checks: list[dict[str, Any]]


def load_eval_prompts(path: Path | None = None, limit: int = 0, *,
                      default: str = "benchmarks/instructions.jsonl") -> list[EvalPrompt]:
    """Read prompts with checks (default: the instructions benchmark's), each check validated;
    problems are one UserError. Every prompt has at least one check and an id of its own."""
    source = Path(path) if path is not None else default_path(default)
    prompts = []
    seen: dict[str, int] = {}  # id -> the line it was first used on
    for number, where, row in read_jsonl(source, "evaluation prompts"):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise UserError(f"{where}: needs a non-empty 'prompt'")
        checks = row.get("checks", [])
        if not isinstance(checks, list):
            raise UserError(f"{where}: 'checks' must be a list of checks, got {checks!r}")
        if not checks:  # all([]) is True: a prompt without checks would pass whatever the answer
            raise UserError(f"{where}: needs at least one check in 'checks'")
        for check in checks:
            problem = validate(check)
            if problem:
                raise UserError(f"{where}: {problem}")
        key = str(row.get("id", number))
        if key in seen:  # scores are kept per id: a second prompt with it would merge into the first
            raise UserError(f"{where}: id {key!r} is already used on line {seen[key]}")
        seen[key] = number
        prompts.append(EvalPrompt(id=key, prompt=row["prompt"], checks=checks))
    if not prompts:
        raise UserError(f"evaluation prompts {source} hold no prompt")
    return prompts[:limit] if limit else prompts
