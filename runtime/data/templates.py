"""Prompt templates: found in the user's file, the recipe's folder or the shared prompts, and checked.

Every kind of template has the placeholders its role fills (:data:`PLACEHOLDERS`); a template
that lacks a required one, or names one no role fills, is refused when the run starts, with one
line.
"""

from __future__ import annotations

import string
from pathlib import Path

from isheep.runtime.core.errors import UserError
from isheep.runtime.core.recipes import Recipe

#: Placeholders each kind of template must contain, and those it may (Self-Instruct's asks for no count).
PLACEHOLDERS: dict[str, tuple[set[str], set[str]]] = {
    "propose": ({"examples", "next"}, {"count"}),
    "propose_topics": ({"examples", "hints", "next", "type", "topic"}, set()),
    "respond_plain": ({"instruction", "input"}, set()),
    "respond_principles": ({"principles", "exemplars", "query"}, set()),
    "respond_verbose": ({"query"}, set()),
    "critic_quality": ({"task", "response"}, set()),
    "critic_following": ({"task", "response"}, set()),
    "judge_quality": ({"instruction", "input_block", "response", "format"}, set()),
    "judge_following": ({"instruction", "input_block", "response", "format"}, set()),
    # The judge's question after the pair replayed as chat turns (critic.layout = "conversation").
    "judge_quality_turn": ({"format"}, set()),
    "judge_following_turn": ({"format"}, set()),
}


def read_text(source: Path, what: str) -> str:
    """A prompt file's text; a missing, unreadable or non-UTF-8 file is one UserError."""
    try:
        return source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {source}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {source} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {source}: {exc.strerror}") from None


def load_template(kind: str, path: Path | None = None, recipe: Recipe | None = None) -> str:
    """The template of ``kind``: ``path`` if given, else the recipe's (or a shared) file; checked.

    Raises:
        UserError: the file is missing or unreadable, malformed, or its placeholders are not
            exactly those ``kind`` needs.
    """
    if path is not None:
        source = Path(path)
    elif recipe is not None:
        source = recipe.prompt(f"{kind}.txt")
    else:
        from isheep.prompts import default_path

        source = default_path(f"{kind}.txt")
    text = read_text(source, "prompt template")
    try:
        found = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise UserError(f"prompt template {source} is malformed ({exc}); write literal braces as {{{{ }}}}") from None
    required, optional = PLACEHOLDERS[kind]
    missing, unknown = required - found, found - required - optional
    if missing:
        raise UserError(f"prompt template {source} lacks placeholder(s): "
                        f"{', '.join('{' + m + '}' for m in sorted(missing))}")
    if unknown:
        raise UserError(f"prompt template {source} has unknown placeholder(s): "
                        f"{', '.join('{' + u + '}' for u in sorted(unknown))}")
    return text
