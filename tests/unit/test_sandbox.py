"""The sandbox that runs model-written code (HumanEval), and how a reply becomes a program.

Real subprocesses: a canonical HumanEval solution passes and a wrong one fails; a program that
loops is killed at its timeout, one that allocates too much fails, one that prints without end
is stopped at the output limit, one that reaches for the network finds none, one that walks
/proc finds none of the runtime's keys (where the namespaces can be made, as on this project's
machines: elsewhere those tests are skipped), the runtime's environment is not passed on, and
nothing a program starts outlives it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tracemalloc
import uuid

import pytest

from isheep.runtime.evals.humaneval import problems, program
from isheep.runtime.evals import sandbox
from isheep.runtime.evals.sandbox import OUTPUT_LIMIT, isolation, namespaces, run_program

pytestmark = pytest.mark.timeout(60)


def test_humaneval_ships_its_164_problems():
    shipped = problems()
    assert len(shipped) == 164 and shipped[0]["task_id"] == "HumanEval/0"


@pytest.mark.parametrize("index", [0, 1, 2])
async def test_a_canonical_solution_passes_and_a_wrong_one_fails(index):
    problem = problems()[index]
    whole = f"Here you go:\n```python\n{problem['prompt']}{problem['canonical_solution']}```\nDone."
    assert (await run_program(program(problem, whole))).status == "passed"
    body_only = problem["canonical_solution"]  # a reply that is the body alone completes the prompt
    assert (await run_program(program(problem, body_only))).status == "passed"
    wrong = f"```python\ndef {problem['entry_point']}(*args):\n    return None\n```"
    failed = await run_program(program(problem, wrong))
    assert failed.status == "failed" and "AssertionError" in failed.detail


async def test_a_program_that_never_ends_is_killed_at_its_timeout():
    assert (await run_program("import time\nwhile True:\n    time.sleep(0.01)\n", timeout_s=1.5)).status == "timeout"


async def test_a_program_that_allocates_too_much_fails():
    outcome = await run_program("block = bytearray(3 * 2**30)\n", memory_mb=512)
    assert outcome.status == "failed" and "MemoryError" in outcome.detail


@pytest.mark.skipif("net" not in namespaces(), reason="no network namespace can be made on this machine")
async def test_a_program_has_no_network():
    outcome = await run_program("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)\n")
    assert outcome.status == "failed" and "unreachable" in outcome.detail.lower()


async def test_a_program_sees_none_of_the_runtimes_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-of-the-runtime")
    outcome = await run_program("import os, sys\nsys.exit(1 if 'OPENAI_API_KEY' in os.environ else 0)\n")
    assert outcome.status == "passed"
    here = os.getcwd()
    outcome = await run_program(f"import os, sys\nsys.exit(0 if os.getcwd() != {here!r} else 1)\n")
    assert outcome.status == "passed"  # it runs in a temporary folder


async def test_its_temporary_folder_is_deleted_afterwards():
    outcome = await run_program("import os, sys\nprint(os.getcwd())\nsys.exit(1)\n")
    assert outcome.status == "failed" and "isheep-exec-" in outcome.detail
    assert not os.path.exists(outcome.detail)


_WALK = """import os, sys
secret, found, read = {secret!r}.encode(), [], 0
paths = [f"/proc/{{os.getppid()}}/environ"] + [f"/proc/{{p}}/environ" for p in os.listdir("/proc") if p.isdigit()]
for path in paths:
    try:
        with open(path, "rb") as handle:
            found += [path] if secret in handle.read() else []
            read += 1
    except OSError:
        pass
print("read", read, "found", found)
sys.exit(2 if not read else 1 if found else 0)
"""


@pytest.mark.skipif("pid" not in namespaces(), reason="no PID namespace can be made on this machine: "
                    "a program can read the runtime's environment through /proc here")
def test_a_program_cannot_read_the_runtimes_keys_through_proc():
    """The key is in the environment the runtime was started with, as OPENAI_API_KEY would be."""
    secret = f"sk-{uuid.uuid4().hex}"
    runner = ("import asyncio, sys\nfrom isheep.runtime.evals.sandbox import run_program\n"
              "outcome = asyncio.run(run_program(sys.stdin.read()))\nprint(outcome.status, outcome.detail)\n")
    done = subprocess.run([sys.executable, "-c", runner], input=_WALK.format(secret=secret), text=True,
                          capture_output=True, timeout=30, env={**os.environ, "OPENAI_API_KEY": secret})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("passed"), done.stdout  # it read /proc, and found no key


_BACKGROUND = """import subprocess, sys
subprocess.Popen(["sh", "-c", "sleep 1.5; touch {marker}"], start_new_session={new_session})
sys.exit(0)
"""


@pytest.mark.parametrize("new_session", [
    False,
    pytest.param(True, marks=pytest.mark.skipif("pid" not in namespaces(), reason="no PID namespace can be made "
                                                "here: a process that leaves the program's session survives it")),
])
async def test_nothing_a_program_started_outlives_it(tmp_path, new_session):
    """The child holds the program's output open and would leave a marker later: it is killed at once."""
    marker = tmp_path / "still-alive"
    start = time.monotonic()
    outcome = await run_program(_BACKGROUND.format(marker=marker, new_session=new_session), timeout_s=10)
    assert outcome.status == "passed" and time.monotonic() - start < 5  # not waiting on the child's output
    await asyncio.sleep(2.5)
    assert not marker.exists()


async def test_a_program_that_prints_without_end_is_stopped_at_the_output_limit():
    """About 50 MB printed: the program is killed past 1 MiB and fails, and the runner never holds it all."""
    flood = "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(50 * 1024):\n    sys.stdout.write(line)\n"
    tracemalloc.start()
    try:
        outcome = await run_program(flood, timeout_s=20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.status == "failed" and outcome.detail.startswith("output limit")
    assert peak < 4 * OUTPUT_LIMIT


async def test_below_the_output_limit_the_detail_is_the_last_line():
    chatty = "for i in range(20000):\n    print('line', i)\nraise ValueError('the last line')\n"
    outcome = await run_program(chatty)
    assert outcome == sandbox.Outcome("failed", "ValueError: the last line")


def test_isolation_says_what_this_machine_gives(monkeypatch):
    have = namespaces()
    said = isolation()
    assert ("its own processes only (a PID namespace)" in said) == ("pid" in have)
    assert ("no network (a network namespace)" in said) == ("net" in have)
    assert "1024 MiB of memory" in said and "1 MiB of output" in said and "16 MiB files" in said
    monkeypatch.setattr(sandbox, "_unshare", lambda: ())  # a machine where no namespace can be made
    said = isolation(memory_mb=512)
    assert namespaces() == frozenset() and "512 MiB of memory" in said
    assert "no PID namespace can be made here" in said and "no network namespace can be made here" in said
