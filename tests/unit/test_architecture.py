"""The layering rules of docs/architecture.md, checked on the code itself.

import-linter's contracts (in pyproject.toml) hold the layers; the rest are counted here:
who imports the roles, how many modules runtime/ keeps at its top, module and function sizes,
where SQL is written, and the docstrings of public classes and the public API.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("agents", "runtime", "tui", "prompts")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# The project writes SQL keywords in capitals; prose that says "select ... from" is not SQL.
_SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE|PRAGMA\s)",
                  re.DOTALL)


def product_files() -> list[Path]:
    files = [ROOT / "__init__.py"]
    for folder in PRODUCT:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def parsed() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in product_files()]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "2 kept" in done.stdout


def test_a_layer_violation_is_caught():
    # The contracts must bite: a core module that imports the pipeline breaks the layers.
    graph = grimp.build_graph("isheep")
    graph.add_import(importer="isheep.runtime.core.types", imported="isheep.runtime.pipeline.run")
    chains = graph.find_illegal_dependencies_for_layers(
        layers=("isheep.runtime.pipeline", "isheep.runtime.core"), containers=set())
    assert chains


def test_at_most_two_modules_outside_the_agents_import_them():
    graph = grimp.build_graph("isheep")
    importers = {module for module in graph.modules if not module.startswith("isheep.agents")
                 and any(m.startswith("isheep.agents") for m in graph.find_modules_directly_imported_by(module))}
    assert len(importers) <= 2, sorted(importers)


def test_runtime_keeps_at_most_eight_modules_at_its_top():
    modules = [p for p in (ROOT / "runtime").iterdir() if p.suffix == ".py"]
    assert len(modules) <= 8, modules


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_450_lines_and_no_function_over_80(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES, f"{path.name}:{node.name}"


def test_sql_is_written_in_the_store_only():
    store = ROOT / "runtime" / "store"
    found = []
    for path, tree in parsed():
        if store in path.parents:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_the_sql_check_sees_sql():
    assert _SQL.search("SELECT id FROM items WHERE round=?") and _SQL.search("UPDATE models SET state=?")
    assert not _SQL.search("select the best answer from the list below")
    assert not _SQL.search("update the settings")


def test_every_public_class_says_what_it_is():
    missing = [f"{path.relative_to(ROOT)}:{node.name}" for path, tree in parsed() for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and not ast.get_docstring(node)]
    assert missing == []


def test_the_public_api_documents_its_arguments_and_errors():
    import isheep
    from isheep.runtime.serving import EndpointPool
    from isheep.runtime.serving.swap import SwapStrategy

    for thing in (isheep.arun, isheep.Run, isheep.RunStore.write, EndpointPool, SwapStrategy.swap):
        doc = thing.__doc__ or ""
        assert "Args:" in doc and "Raises:" in doc, thing
