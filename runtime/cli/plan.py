"""``isheep plan [run's flags]``: before anything starts, each process the run would start, its
devices, its memory estimate, and whether it fits the GPUs here (``nvidia-smi``; on CPU it says so)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import ClassVar

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.errors import UserError
from isheep.runtime.serving.models import MARKER, SMOLLM2, cache_root
from isheep.runtime.serving.placement import fits, fits_in_ram, local_gpus, parameter_count, processes

from .base import Command
from .run import RunCommand, config_for


def weights_folder(config: RunConfig) -> Path | None:
    """The checkpoint the run serves or trains, where it is already on disk (plan fetches nothing)."""
    if config.managed:
        if config.server.model == "embedded":
            folder = cache_root() / "models" / SMOLLM2.name
            return folder if (folder / MARKER).is_file() else None
        folder = Path(config.server.model).expanduser()
        if not folder.is_dir():
            raise UserError(f"model folder not found: {folder} (give a Hugging Face model folder, or 'embedded')")
        return folder
    return Path(config.trainer.base_model).expanduser() if config.trainer.base_model else None


def describe(config: RunConfig, gpus: list | None) -> list[str]:
    """The plan as lines of text."""
    folder = weights_folder(config)
    params = parameter_count(folder) if folder is not None and folder.is_dir() else None
    shown = folder or config.model or "(the endpoint's model)"
    lines = [f"model    {shown}: "
             + (f"{params / 1e6:,.1f}M parameters" if params else "size unknown (no safetensors here yet)")]
    if gpus is None:
        lines.append("devices  no GPU here (no nvidia-smi)" + (": the managed server runs vLLM-CPU, training on CPU"
                                                               if config.managed else ""))
    else:
        lines += [f"devices  GPU {g.index}: {g.name}, {g.memory_gib:.0f} GiB" for g in gpus] or ["devices  none"]
    plan = processes(config, params, gpu=bool(gpus))
    lines.append("")
    width = max(len(p.role) for p in plan) if plan else 0
    for proc in plan:
        need = f"~{proc.need_gib:.1f} GiB" if proc.need_gib is not None else "-"
        lines.append(f"{proc.role:<{width}}  {proc.devices:<24}  {need:>10}  {proc.note}")
    lines.append("")
    if gpus is None:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        problems = fits_in_ram(plan, ram)
        lines += [f"does not fit: {p}" for p in problems] or [f"fits: within this machine's {ram:.0f} GiB of RAM"]
    else:
        problems = fits(plan, gpus)
        lines += [f"does not fit: {p}" for p in problems] or ["fits: every process within its GPUs' memory"]
    return lines


class PlanCommand(Command):
    """Prints what ``isheep run`` with the same flags would start, where, and whether it fits."""

    name: ClassVar[str] = "plan"
    help: ClassVar[str] = "show the processes a run would start, their devices and memory, and whether they fit"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        RunCommand.add_arguments(parser)  # the very flags of the run being planned

    def run(self, args: argparse.Namespace) -> int:
        print("\n".join(describe(config_for(args), local_gpus())))
        return 0
