"""Running model-written code: a fresh Python in a subprocess, never the runtime's own process.

Each program runs in ``python -I`` (isolated: no user site, no PYTHON* variables) with an empty
environment, in a temporary folder deleted afterwards, in a session of its own, with limits:
memory (``RLIMIT_AS``), CPU seconds (its timeout and one more), 16 MiB per file it writes, 64
processes (set inside its namespaces; root, outside a user namespace, is exempt), no core
files, and :data:`OUTPUT_LIMIT` bytes of output: a program that prints more is killed and fails
with ``output limit`` as its detail; of what it prints only the last 64 KiB is held, for its
last line. When it ends, however it ends, its process group is killed, so what it started in
the background does not outlive it.

Where the system allows it (as root, or unprivileged through a user namespace with
``--map-root-user``), ``unshare`` gives it namespaces of its own, each tried in turn and dropped
where it cannot be made:

* PID and mount, with /proc mounted anew: it sees only its own processes, so it cannot read the
  runtime's environment (its keys) through ``/proc/<pid>/environ``; and when it ends the kernel
  kills whatever is left in the namespace, even processes that left its session;
* network: it has no network.

Without a PID namespace, the runtime's processes and their environments are open to it (same
user), and a process it started in a session of its own can outlive it. What this machine gives
is said by :func:`isolation` and, for code, :func:`namespaces`.
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

OUTPUT_LIMIT = 2**20  # bytes a program may print: HumanEval's tests print nothing, so more is a runaway
_TAIL = 64 * 2**10  # bytes of its output held, for the last line
_FILE_MB = 16
_PROCESSES = 64
_PID = ("--pid", "--fork", "--kill-child", "--mount-proc")
_NET = ("--net",)
_USER = ("--map-root-user",)
# RLIMIT_NPROC counts every task of the real user: set before ``unshare --fork`` forks, a busy
# user's limit would already be spent and every program would fail to start. So it is set in the
# namespaces, by the program's own Python, which then becomes the program (exec: no fork).
_START = ("import os, resource, sys\n"
          "try:\n"
          f"    resource.setrlimit(resource.RLIMIT_NPROC, ({_PROCESSES}, {_PROCESSES}))\n"
          "except (ValueError, OSError):\n"
          "    pass\n"
          "os.execv(sys.executable, [sys.executable, '-I', sys.argv[1]])\n")


@dataclass(frozen=True)
class Outcome:
    """How a program ended: ``passed`` (exit 0), ``failed`` (with the last line it printed), ``timeout``."""

    status: str
    detail: str = ""


@functools.lru_cache(maxsize=1)
def _unshare() -> tuple[str, ...]:
    """The ``unshare`` prefix with the most namespaces this machine allows, or () where none can be made."""
    tool = shutil.which("unshare")
    if tool is None:
        return ()
    # A PID namespace first: without it the program can read the runtime's keys in /proc.
    for spaces in (_PID + _NET, _PID, _NET):
        for user in ((), _USER):
            prefix = (tool, *spaces, *user)
            try:
                if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                    return prefix
            except (OSError, subprocess.TimeoutExpired):
                continue
    return ()


def namespaces() -> frozenset[str]:
    """The namespaces each program gets here: ``pid`` (its own processes only) and ``net`` (no network)."""
    prefix = _unshare()
    return frozenset(name for name, flag in (("pid", "--pid"), ("net", "--net")) if flag in prefix)


def isolation(memory_mb: int = 1024) -> str:
    """What the sandbox gives a program on this machine, in words (printed before code runs)."""
    have = namespaces()
    exempt = os.geteuid() == 0 and "--map-root-user" not in _unshare()
    processes = "no process limit (it runs as root, which is exempt)" if exempt else f"{_PROCESSES} processes"
    pid = ("its own processes only (a PID namespace)" if "pid" in have else
           "the runtime's processes and their environments in sight (no PID namespace can be made here)")
    net = ("no network (a network namespace)" if "net" in have else
           "the network (no network namespace can be made here)")
    return (f"subprocess with an empty environment in a temporary folder; {memory_mb} MiB of memory, CPU seconds "
            f"up to its timeout, {_FILE_MB} MiB files, {processes}, {OUTPUT_LIMIT // 2**20} MiB of output; "
            f"{pid}; {net}")


def _limits(memory_mb: int, cpu_s: int) -> None:  # runs in the child, before exec
    os.setsid()
    for limit, value in ((resource.RLIMIT_AS, memory_mb * 2**20), (resource.RLIMIT_CPU, cpu_s),
                         (resource.RLIMIT_FSIZE, _FILE_MB * 2**20), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass  # a limit the system does not let us set: the others still hold


class _Output:
    """What a program prints: counted as it comes, its last :data:`_TAIL` bytes held."""

    def __init__(self) -> None:
        self.tail = b""
        self.size = 0

    async def read(self, stream: asyncio.StreamReader, pid: int) -> None:
        while chunk := await stream.read(_TAIL):
            self.size += len(chunk)
            self.tail = (self.tail + chunk)[-_TAIL:]
            if self.size > OUTPUT_LIMIT:
                _kill(pid)  # a runaway: stop it rather than read on
                return

    def last_line(self) -> str:
        return (self.tail.decode(errors="replace").strip().splitlines() or [""])[-1][:300]


async def run_program(source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> Outcome:
    """Run ``source`` as a Python program in the sandbox."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="isheep-exec-") as folder:
        program = os.path.join(folder, "program.py")
        with open(program, "w", encoding="utf-8") as handle:
            handle.write(source)
        # A pipe of our own, not asyncio's: its wait() would also wait for every process that
        # holds the pipe, and this one is closed by us when we are done, whoever still holds it.
        read_end, write_end = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *_unshare(), sys.executable, "-I", "-c", _START, program, cwd=folder,
                env={"PATH": "/usr/bin:/bin", "HOME": folder, "TMPDIR": folder},
                stdin=asyncio.subprocess.DEVNULL, stdout=write_end, stderr=write_end,
                preexec_fn=functools.partial(_limits, memory_mb, int(timeout_s) + 1))
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        stream = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream),
                                                    os.fdopen(read_end, "rb", buffering=0))
        output = _Output()
        reader = asyncio.ensure_future(output.read(stream, proc.pid))
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
        finally:
            _kill(proc.pid)  # always, not only on timeout: what it left running goes too
            if proc.returncode is None:
                await proc.wait()
            try:  # the rest of what it printed; only a process that escaped the kill can hold the pipe
                await asyncio.wait_for(reader, 2.0)
            except asyncio.TimeoutError:
                pass
            finally:
                transport.close()
        if output.size > OUTPUT_LIMIT:
            return Outcome("failed", f"output limit: printed more than {OUTPUT_LIMIT} bytes")
        if timed_out:
            return Outcome("timeout")
        return Outcome("passed") if proc.returncode == 0 else Outcome("failed", output.last_line())


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the program's whole session: whatever it started goes too
    except (ProcessLookupError, PermissionError):
        pass
