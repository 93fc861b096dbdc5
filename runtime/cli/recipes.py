"""``isheep recipes [NAME]``: the recipes there are, and every default each one sets, with its source."""

from __future__ import annotations

import argparse
import json
from typing import ClassVar

from isheep.runtime.core.recipes import DEFAULT_RECIPE, flatten, load_recipe, recipe_names

from .base import Command


def describe(name: str) -> list[str]:
    """One recipe: its name and description, then ``key = value`` for what it sets, each with its source."""
    recipe = load_recipe(name)
    title = name + (" (the default)" if name == DEFAULT_RECIPE else "")
    parent = recipe.folders[1].name if len(recipe.folders) > 1 else None
    lines = [title, f"  {recipe.description}"]
    if parent:
        lines.append(f"  on top of {parent}: everything {parent} sets applies unless changed below")
    own = flatten(recipe.own)
    width = min(48, max((len(key) for key in own), default=0))
    for key, value in own.items():
        shown = f"{key} = {json.dumps(value)}"
        lines.append(f"  {shown:<{width + 12}}  {recipe.own_sources.get(key, '')}".rstrip())
    return lines


class RecipesCommand(Command):
    """Lists the recipes with what each sets; with a NAME, that recipe alone."""

    name: ClassVar[str] = "recipes"
    help: ClassVar[str] = "list the recipes (published methods) and the defaults each one sets"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", nargs="?", help="one recipe only")

    def run(self, args: argparse.Namespace) -> int:
        names = [args.name] if args.name else recipe_names()
        blocks = ["\n".join(describe(name)) for name in names]
        print("\n\n".join(blocks))
        if not args.name:
            print("\nrun one with: isheep run --recipe NAME (your config and --set override what it sets)")
        return 0
