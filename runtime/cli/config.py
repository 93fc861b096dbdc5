"""``isheep config [--recipe NAME]``: every config key with its default (the recipe's, where it sets
one) and its doc, generated from the config model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, ClassVar

import tomli_w
from pydantic import BaseModel

from isheep.runtime.core.config import EndpointConfig, RunConfig
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.recipes import DEFAULT_RECIPE

from .base import Command


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if hasattr(value, "__fspath__"):
        value = str(value)
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def reference_toml(recipe: str = DEFAULT_RECIPE) -> str:
    """Every key with its default under ``recipe`` and its one-line doc, as commented TOML."""
    lines = [f"# isheep config reference: every key, its default under the recipe {recipe!r}, and what it does.",
             "# Copy what you need into your own file; unset keys keep these defaults.", ""]
    defaults = load_config(overrides={"recipe": recipe}, environ={})
    sections: list[tuple[str, BaseModel]] = []
    for name, field in RunConfig.model_fields.items():
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            sections.append((name, value))
            continue
        if name in ("endpoints", "per_round"):
            continue
        lines.append(f"# {field.description or ''}")
        lines.append(f"{'# ' if value is None else ''}{name} = {_value(value)}")
    lines += ["", "# One [[endpoints]] table per server of the pool (or --endpoint / OPENAI_BASE_URL).",
              "[[endpoints]]"]
    for name, field in EndpointConfig.model_fields.items():
        default = field.default if field.default is not None and not field.is_required() else None
        example = "http://127.0.0.1:8000/v1" if name == "base_url" else default
        lines.append(f"# {field.description or ''}")
        lines.append(f"{'' if name == 'base_url' else '# '}{name} = {_value(example)}")
    for section, model in sections:
        lines += ["", f"[{section}]"]
        if type(model).__doc__:
            lines.append(f"# {type(model).__doc__.strip().splitlines()[0]}")
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            doc = field.description or ""
            lines.append(f"# {doc}" if doc else "#")
            lines.append(f"{'# ' if value is None else ''}{name} = {_value(value)}")
    lines += ["", f"# {RunConfig.model_fields['per_round'].description}"]
    if defaults.per_round:
        lines.append(tomli_w.dumps({"per_round": {str(k): v for k, v in defaults.per_round.items()}}).strip())
    return "\n".join(lines) + "\n"


class ConfigCommand(Command):
    """Prints the config reference as commented TOML."""

    name: ClassVar[str] = "config"
    help: ClassVar[str] = "print every config key with its default and doc (TOML)"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="show the defaults of this recipe")

    def run(self, args: argparse.Namespace) -> int:
        sys.stdout.write(reference_toml(args.recipe))
        return 0
