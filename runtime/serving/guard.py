"""The managed server's guard: the process a run starts in vLLM's place, so vLLM never outlives it.

``python -m isheep.runtime.serving.guard COMMAND...`` runs in a session of its own, with a
parent-death signal (SIGTERM when the runtime dies in any way, even ``kill -9``), starts
COMMAND in that session and waits for it, exiting with its status. On SIGTERM it passes the
signal to the whole process group, waits for COMMAND to exit (at most ``GRACE_S``), then
SIGKILLs the group, itself included, so nothing the server started is left behind.

Why not the parent-death signal on vLLM itself: measured here, a vLLM API server told to stop
while its engine was starting ignored SIGTERM for minutes, and its engine and resource tracker
outlive it when it is SIGKILLed. Only a process outside vLLM can take the group down for sure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

#: Seconds COMMAND gets to shut down after SIGTERM before the group is killed.
GRACE_S = 15.0
#: Seconds stragglers (an engine, a resource tracker) get once COMMAND itself has exited.
STRAGGLERS_S = 0.5


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: python -m isheep.runtime.serving.guard COMMAND...\n")
        return 2
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    child = subprocess.Popen(argv)  # in this session and process group
    while not stopping:
        try:
            return child.wait(timeout=0.2)  # the server exited by itself: the runtime's watchdog decides
        except subprocess.TimeoutExpired:
            continue
    os.killpg(os.getpgrp(), signal.SIGTERM)  # this process only sets its flag again
    deadline = time.monotonic() + GRACE_S
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(STRAGGLERS_S)
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the engine, the tracker, and this guard
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
