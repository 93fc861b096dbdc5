"""Prompt templates and the default seed tasks, shipped as plain text files.

Templates use ``str.format`` placeholders (``{name}``; a literal brace is written ``{{``).
:func:`load_template` checks that a template has exactly the placeholders its role fills.
"""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path

from isheep.runtime.core.errors import UserError

#: Placeholders each template must contain.
PLACEHOLDERS = {
    "propose": {"count", "examples", "next"},
    "critic_quality": {"instruction", "input_block", "response", "format"},
    "critic_following": {"instruction", "input_block", "response", "format"},
}


def default_path(name: str) -> Path:
    """Path of a shipped file (``propose.txt``, ``seeds.jsonl``...)."""
    return Path(str(resources.files(__package__).joinpath(name)))


def load_template(kind: str, path: Path | None = None) -> str:
    """Read the template for ``kind`` (a user's file or the shipped one) and check its placeholders."""
    source = Path(path) if path is not None else default_path(f"{kind}.txt")
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"prompt template not found: {source}") from None
    except UnicodeDecodeError:
        raise UserError(f"prompt template {source} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read prompt template {source}: {exc.strerror}") from None
    try:
        found = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise UserError(f"prompt template {source} is malformed ({exc}); write literal braces as {{{{ }}}}") from None
    required = PLACEHOLDERS[kind]
    missing = required - found
    unknown = found - required
    if missing:
        raise UserError(f"prompt template {source} lacks placeholder(s): {', '.join('{' + m + '}' for m in sorted(missing))}")
    if unknown:
        raise UserError(f"prompt template {source} has unknown placeholder(s): {', '.join('{' + u + '}' for u in sorted(unknown))}")
    return text
