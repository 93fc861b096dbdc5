"""Counting what a verifiable instruction asks about: words, sentences, paragraphs, list items.

Kept apart from the checks so each rule is written once: the evaluation gate, the
``instructions`` benchmark and their tests all count the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any

_WORD = re.compile(r"[^\W_]+(?:(?:['\u2019-]|(?<=\d)[.,](?=\d))[^\W_]+)*")
# Abbreviations whose period does not end a sentence (titles, Latin, times).
_ABBREVIATIONS = ("dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "cf", "al",
                  "approx", "fig", "a.m", "p.m", "u.s", "inc", "ltd", "co", "dept", "est")
_ABBREVIATION = re.compile(r"\b(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")\.", re.IGNORECASE)
# "No." abbreviates "number" only before one ("No. 5"); "No. That is wrong." is two sentences.
_NUMBER_SIGN = re.compile(r"\b(no)\.(?=\s*\d)", re.IGNORECASE)
_DECIMAL = re.compile(r"(\d)\.(\d)")
# Words that begin sentences, not names: after "option A." one of them starts a new sentence,
# while "J. R. R. Tolkien" and "by J. Smith" keep their initials.
_OPENERS = ("a", "an", "the", "this", "that", "these", "those", "it", "its", "i", "we", "you", "he", "she", "they",
            "my", "our", "your", "his", "her", "their", "there", "here", "but", "and", "so", "then", "if", "when",
            "what", "why", "how", "yes", "no", "in", "on", "at", "for", "to", "as", "also")
_INITIAL = re.compile(r"\b([A-Z])\.(?=\s*(?:[A-Z]\.|(?!(?i:" + "|".join(_OPENERS) + r")\b)[A-Z]))")
# A list item's marker at the start of a line ("1.", "2)", "-", "*", "+", a bullet sign).
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+\u2022]|\d+[.)])[ \t]+(?=\S)", re.MULTILINE)
_ITEM = "\x1e"  # what a list marker becomes: a boundary of its own (in an answer, the character is a space)
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s|$)|" + _ITEM)
_BLANK_LINES = re.compile(r"\n\s*\n|^\s*\*\*\*+\s*$", re.MULTILINE)
BULLET = re.compile(r"^\s*[-*+\u2022]\s+\S")
NUMBERED = re.compile(r"^\s*\d+[.)]\s+\S")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def words(text: str) -> list[str]:
    """Words: runs of letters or digits, with inner apostrophes and hyphens ("don't", "well-known") and
    numbers whole ("3.5", "1,200")."""
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    """Sentences, a last one without its full stop included.

    A full stop, "!", "?" or an ellipsis ends one, except in "Dr.", "e.g.", "3.5", "No. 5" and
    initials ("J. R. R. Tolkien"); a single capital letter followed by a word that begins
    sentences ("I pick option A. It is cheaper.") does end one. Each item of a list (a line
    starting "1.", "2)", "-", "*", "+" or a bullet sign) is a sentence of its own, or several if
    it holds several, and its marker is not one: "1. Apples\n2. Pears" is two sentences, as is
    "Tips:\n- Sleep early" (the line before a list ends where the list starts).
    """
    protected = _LIST_MARKER.sub(_ITEM, text.replace(_ITEM, " "))
    protected = _ABBREVIATION.sub(lambda m: m.group(1).replace(".", "\0") + "\0", protected)
    protected = _NUMBER_SIGN.sub("\\1\0", protected)
    protected = _INITIAL.sub("\\1\0", _DECIMAL.sub("\\1\0\\2", protected))
    parts = _SENTENCE_END.split(protected)
    return [part.replace("\0", ".").strip() for part in parts if any(c.isalnum() for c in part)]


def paragraphs(text: str) -> list[str]:
    """Blocks of text separated by blank lines (or by a line of ``***``, a Markdown divider)."""
    return [block.strip() for block in _BLANK_LINES.split(text) if block and block.strip()]


def lines(text: str) -> list[str]:
    """Lines with something on them."""
    return [line for line in text.splitlines() if line.strip()]


def count_lines(text: str, pattern: re.Pattern[str]) -> int:
    return sum(1 for line in lines(text) if pattern.match(line))


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A phrase as whole words, case-insensitive: "Au" is not found in "because"."""
    body = r"\s+".join(re.escape(part) for part in phrase.split())
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])", re.IGNORECASE)


def unfenced(text: str) -> str:
    """The body of a Markdown code fence around the whole text (any language tag, any case)."""
    fenced = _FENCE.match(text)
    return fenced.group(1) if fenced else text.strip()


def json_value(text: str) -> Any:
    """The JSON value the whole text is (fenced or not); ``ValueError`` when it is none."""
    return json.loads(unfenced(text))
