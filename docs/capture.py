"""Capture the monitor as a person sees it: `isheep run --tui` on the embedded default in tmux.

Saves the first screen of each state (generating, training, swapping, done) as plain text in
docs/tui-<state>.txt. Run from the repository root with the project's virtual environment:

    .venv/bin/python docs/capture.py [--size 100x30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
STATES = ("GENERATING", "TRAINING", "SWAPPING", "DONE")


def pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100x30")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    width, height = args.size.split("x")
    session = "isheep-capture"
    out = Path(tempfile.mkdtemp(prefix="isheep-capture-")) / "run"
    command = (f"{sys.executable} -m isheep.runtime.cli run --tui --config examples/configs/embedded.toml "
               f"--out {out} --set curator.quality_threshold=3 --set curator.following_threshold=3; sleep 600")
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", width, "-y", height, command], check=True)
    seen: dict[str, str] = {}
    deadline = time.time() + args.timeout
    try:
        while time.time() < deadline and "DONE" not in seen:
            screen = pane(session)
            header = screen.splitlines()[0] if screen else ""
            for state in STATES:
                if f"· {state} ·" in header and state not in seen:
                    if state == "GENERATING":
                        time.sleep(20)  # let the tables fill
                        screen = pane(session)
                    seen[state] = screen
                    path = DOCS / f"tui-{state.lower()}.txt"
                    path.write_text(screen)
                    print(f"captured {state.lower()}: {path}", flush=True)
            time.sleep(0.1)
        subprocess.run(["tmux", "send-keys", "-t", session, "3"])  # the rounds tab at the end
        time.sleep(2)
        (DOCS / "tui-rounds.txt").write_text(pane(session))
    finally:
        subprocess.run(["tmux", "send-keys", "-t", session, "q"])
        time.sleep(5)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    missing = [s for s in STATES if s not in seen]
    if missing:
        raise SystemExit(f"not captured: {', '.join(missing)}")


if __name__ == "__main__":
    main()
