"""Running model-written code: a fresh Python in a subprocess, never the runtime's own process.

Each program runs in ``python -I`` (isolated: no user site, no PYTHON* variables) with an empty
environment, in a temporary folder deleted afterwards, in a session of its own (killed as a
group on timeout), with limits on memory, CPU seconds, file size and processes, and without a
network where the system allows a new network namespace (``unshare --net``; as root, or
unprivileged with ``--map-root-user``). What it has is said by :func:`isolation`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """How a program ended: ``passed`` (exit 0), ``failed`` (with the last line it printed), ``timeout``."""

    status: str
    detail: str = ""


@functools.lru_cache(maxsize=1)
def _unshare() -> tuple[str, ...]:
    """The prefix that gives a program no network, or () where no namespace can be made here."""
    tool = shutil.which("unshare")
    if tool is None:
        return ()
    for prefix in ((tool, "--net"), (tool, "--net", "--map-root-user")):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return ()


def isolation() -> str:
    """What the sandbox has on this machine, in words (printed before code runs)."""
    network = "no network (a new network namespace)" if _unshare() else \
        "the network (no network namespace can be made here)"
    return f"subprocess, temporary folder, memory and CPU limits, {network}"


def _limits(memory_mb: int, cpu_s: int) -> None:  # runs in the child, before exec
    os.setsid()
    for limit, value in ((resource.RLIMIT_AS, memory_mb * 2**20), (resource.RLIMIT_CPU, cpu_s),
                         (resource.RLIMIT_FSIZE, 16 * 2**20), (resource.RLIMIT_NPROC, 64),
                         (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass  # a limit the system does not let us set: the others still hold


async def run_program(source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> Outcome:
    """Run ``source`` as a Python program in the sandbox."""
    with tempfile.TemporaryDirectory(prefix="isheep-exec-") as folder:
        program = os.path.join(folder, "program.py")
        with open(program, "w", encoding="utf-8") as handle:
            handle.write(source)
        command = [*_unshare(), sys.executable, "-I", program]
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=folder, env={"PATH": "/usr/bin:/bin", "HOME": folder, "TMPDIR": folder},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=functools.partial(_limits, memory_mb, int(timeout_s) + 1))
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        except asyncio.TimeoutError:
            _kill(proc.pid)
            await proc.wait()
            return Outcome("timeout")
        finally:
            if proc.returncode is None:
                _kill(proc.pid)
                await proc.wait()
        last = (output.decode(errors="replace").strip().splitlines() or [""])[-1][:300]
        return Outcome("passed") if proc.returncode == 0 else Outcome("failed", last)


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the program's whole session: whatever it started goes too
    except (ProcessLookupError, PermissionError):
        pass
