"""The installed distribution: one namespace, package data present, a working console script."""

import subprocess
import sys

from isheep.prompts import default_path


def test_no_top_level_agents_or_runtime_module(tmp_path):
    probe = ("import importlib.util as u; "
             "print([n for n in ('agents', 'runtime', 'tui', 'prompts') if u.find_spec(n) is not None])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_prompts_and_seeds_ship_as_package_data():
    for name in ("propose.txt", "critic_quality.txt", "critic_following.txt", "seeds.jsonl"):
        assert default_path(name).is_file(), name


def test_console_script_answers(tmp_path):
    out = subprocess.run([sys.executable, "-m", "isheep.runtime.cli", "--help"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout and "export" in out.stdout
