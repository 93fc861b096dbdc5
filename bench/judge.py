"""How to serve the recipe's base-model judge on the embedded CPU profile: measured side by side.

The I-SHEEP recipe judges with the base model in every round, so the base weights must stay
served while the policy's change. On one CPU box that costs either a second managed server
(``critic.model = "base"`` with the ``reload`` swap: ~4 GB more and half the cores) or LoRA
serving (the ``lora`` swap: one server, adapters beside the base, slower per token). This runs
the embedded profile's two rounds each way, one after the other in the same minutes, and prints
the wall time and generated tokens/s of each against the profile's own setting (the current
model judges, ``reload`` swap), as ratios.

    python bench/judge.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "examples" / "configs" / "embedded.toml"
VARIANTS = {
    "current judge, reload swap (the profile)": [],
    "base judge, second server, reload swap": ["--set", "critic.model=base"],
    "base judge, one server, lora swap": ["--set", "critic.model=base", "--swap", "lora"],
}


def run(name: str, extra: list[str], folder: Path) -> tuple[float, int, int]:
    """Wall seconds, kept pairs and generated tokens of one run of the profile."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "isheep.runtime.cli", "run", "--config", str(PROFILE), "--out",
                           str(folder), "--quiet", *extra], capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    kept = tokens = 0
    for line in done.stdout.splitlines():
        if line.startswith(("96 proposed", " ")) or "proposed =" in line:
            parts = line.split()
            if "proposed" in parts and "kept" in parts:
                kept = int(parts[parts.index("kept") - 1])
        if "tokens generated" in line:
            tokens = int(line.split("·")[1].split("tokens")[0].strip().replace(",", ""))
    return seconds, kept, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, (name, extra) in enumerate(VARIANTS.items()):
                seconds, kept, tokens = run(name, extra, Path(tmp) / f"r{repeat}-{i}")
                results[name].append((seconds, kept, tokens))
                print(f"run {repeat + 1}: {name}: {seconds:.0f}s, {kept} kept, {tokens / seconds:.0f} tokens/s",
                      flush=True)
    baseline = next(iter(results.values()))
    base_s = sum(r[0] for r in baseline) / len(baseline)
    base_rate = sum(r[2] / r[0] for r in baseline) / len(baseline)
    for name, rows in results.items():
        seconds = sum(r[0] for r in rows) / len(rows)
        rate = sum(r[2] / r[0] for r in rows) / len(rows)
        print(f"{name}: wall {seconds:.0f}s ({seconds / base_s:.2f}x the profile's), "
              f"{rate:.0f} tokens/s ({rate / base_rate:.2f}x)")


if __name__ == "__main__":
    main()
