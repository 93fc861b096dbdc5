"""The installed distribution: one namespace, package data present, a working console script."""

import subprocess
import sys
import zipfile
from pathlib import Path

from isheep.prompts import default_path


def test_no_top_level_agents_or_runtime_module(tmp_path):
    probe = ("import importlib.util as u; "
             "print([n for n in ('agents', 'runtime', 'tui', 'prompts') if u.find_spec(n) is not None])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


SHIPPED = ("judge_quality.txt", "judge_following.txt", "judge_quality_turn.txt", "judge_following_turn.txt",
           "seeds.jsonl", "benchmarks/instructions.jsonl",
           "recipes/isheep/recipe.toml", "recipes/isheep/propose.txt", "recipes/isheep/critic_quality.txt",
           "recipes/isheep/critic_following.txt", "recipes/isheep/respond_plain.txt",
           "recipes/dromedary/recipe.toml", "recipes/dromedary/principles.txt", "recipes/dromedary/exemplars.txt",
           "recipes/dromedary/respond_principles.txt", "recipes/dromedary/respond_verbose.txt",
           "recipes/dromedary/propose_topics.txt", "recipes/dromedary/topics.jsonl",
           "recipes/self-instruct/recipe.toml", "recipes/self-instruct/propose.txt")


def test_prompts_recipes_and_seeds_ship_as_package_data():
    for name in SHIPPED:
        assert default_path(name).is_file(), name


def test_the_wheel_carries_every_prompt_file(tmp_path):
    # An installed isheep (not this source tree) must find its recipes: package-data globs.
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("isheep-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"isheep/prompts/{name}" for name in SHIPPED} <= names


def test_console_script_answers(tmp_path):
    out = subprocess.run([sys.executable, "-m", "isheep.runtime.cli", "--help"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout and "export" in out.stdout
