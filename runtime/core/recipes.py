"""Recipes: a published method as a named set of config defaults and prompt files, in one folder.

``prompts/recipes/<name>/recipe.toml`` holds the recipe's description, the defaults it sets
(any config key, per-round overrides included), and where each default comes from; the
prompt files of the recipe sit beside it. A recipe may inherit another (``inherits``): its
defaults apply on top of the parent's, and a prompt it lacks is looked up in the parent's
folder, then among the shared prompts (``prompts/``). The user's config overrides the recipe.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from isheep.prompts import default_path

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_RECIPE = "isheep"


@dataclass(frozen=True)
class Recipe:
    """One recipe: its defaults (parents' included), their sources, and its prompt folders."""

    name: str
    description: str
    #: Config defaults as nested tables, the parent's merged under this recipe's own.
    defaults: dict[str, Any]
    #: Dotted key -> where the default comes from (a paper, a script of the authors, a measurement).
    sources: dict[str, str]
    #: This recipe's folder first, then its parents' folders.
    folders: tuple[Path, ...] = field(default_factory=tuple)
    #: The recipe's own defaults only (what ``isheep recipes`` lists as what it sets), and their sources.
    own: dict[str, Any] = field(default_factory=dict)
    own_sources: dict[str, str] = field(default_factory=dict)

    def prompt(self, filename: str) -> Path:
        """A prompt file of this recipe: its folder, its parents', else the shared prompts."""
        for folder in self.folders:
            if (folder / filename).is_file():
                return folder / filename
        return default_path(filename)


def recipes_root() -> Path:
    return default_path("recipes")


def recipe_names() -> list[str]:
    """Every shipped recipe, the default first."""
    names = sorted(p.name for p in recipes_root().iterdir() if (p / "recipe.toml").is_file())
    return sorted(names, key=lambda n: n != DEFAULT_RECIPE)


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, table by table (a later source overrides single keys, not whole sections)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"critic": {"model": "base"}}`` -> ``{"critic.model": "base"}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def unflatten(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"critic.model": "base"}`` -> ``{"critic": {"model": "base"}}``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


@lru_cache(maxsize=None)
def load_recipe(name: str) -> Recipe:
    """The recipe called ``name`` with its parents applied.

    Raises:
        ConfigError: no such recipe (the message lists those there are), or a broken recipe file.
    """
    return _load(name, ())


def _load(name: str, seen: tuple[str, ...]) -> Recipe:
    folder = recipes_root() / name
    path = folder / "recipe.toml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r} (recipes: {', '.join(recipe_names())})")
    if name in seen:
        raise ConfigError(f"recipe {name!r} inherits itself ({' -> '.join((*seen, name))})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe file {path} is broken: {exc}") from None
    own = data.get("defaults", {})
    parent_name = data.get("inherits")
    if parent_name:
        parent = _load(parent_name, (*seen, name))
        return Recipe(name=name, description=data.get("description", ""), defaults=merge(parent.defaults, own),
                      sources={**parent.sources, **data.get("sources", {})}, folders=(folder, *parent.folders),
                      own=own, own_sources=dict(data.get("sources", {})))
    return Recipe(name=name, description=data.get("description", ""), defaults=own,
                  sources=dict(data.get("sources", {})), folders=(folder,), own=own,
                  own_sources=dict(data.get("sources", {})))
