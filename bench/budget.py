"""Does the time budget account for a whole run? The README's demo (``isheep run --config
examples/configs/embedded.toml``) as a subprocess, its wall time measured from outside (launch to
exit), against the budget the run stored: the sum of its parts, and each part's share.

The budget starts when the run object is made, so the interpreter's start and the imports
before it are outside it by design; they are printed apart. Target: budget/wall >= 0.98.

    python bench/budget.py [--config examples/configs/embedded.toml] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "configs" / "embedded.toml"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from isheep.runtime.pipeline.budget import PHASES
    from isheep.runtime.store import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "isheep.runtime.cli", "run", "--config", args.config, "--out", str(out),
                               "--rounds", str(args.rounds), "--quiet"], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "100"})  # the summary's table unclipped
        wall = time.monotonic() - started
        if proc.returncode != 0:
            sys.exit(f"the run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        print(proc.stdout)  # the run's own summary, the budget line among it
        store = RunStore.open(out, readonly=True)
        try:
            [budget] = store.time_budgets()
        finally:
            store.close_sync()
    parts = {name: float(budget[f"{name}_s"]) for name in (*PHASES, "idle")}
    total = sum(parts.values())
    print(f"wall time of the process: {wall:.1f} s; the run's budget: {budget['wall_s']:.1f} s, its parts sum to "
          f"{total:.1f} s; outside it (interpreter start, imports): {wall - budget['wall_s']:.1f} s")
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<13} {seconds:7.1f} s  {seconds / wall:6.1%}")
    share = budget.get("saturated_share")
    print(f"  server saturated during {'an unknown share' if share is None else f'{share:.0%}'} of generation")
    print(f"budget/wall: {total / wall:.3f} (target >= 0.98)")


if __name__ == "__main__":
    main()
