"""Processes the tests drive: the OpenAI-compatible test server and the isheep CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "support" / "openai_server.py"
PROXY = ROOT / "tests" / "support" / "fault_proxy.py"


class ReadyProcess:
    """A helper process that prints ``READY <port>`` once it listens on 127.0.0.1."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"{command[1]} did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         headers={"Content-Type": "application/json"},
                                         method="POST" if data is not None else "GET")
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ServerProcess(ReadyProcess):
    """The OpenAI-compatible test server, with live control of its behaviour."""

    def __init__(self, behaviour: dict[str, Any] | None = None) -> None:
        super().__init__([sys.executable, str(SERVER), "--port", "0", "--config", json.dumps(behaviour or {})])

    def control(self, **changes: Any) -> dict[str, Any]:
        return self._call("/_control", changes)

    def stats(self) -> dict[str, Any]:
        return self._call("/_stats")


class ProxyProcess(ReadyProcess):
    """The fault-injecting proxy in front of ``upstream`` (its base URL, with /v1)."""

    def __init__(self, upstream: str, **settings: Any) -> None:
        super().__init__([sys.executable, str(PROXY), "--upstream", upstream.rsplit("/v1", 1)[0],
                          "--config", json.dumps(settings)])

    def counts(self) -> dict[str, int]:
        return self._call("/_proxy")["counts"]

    def settings(self, **changes: Any) -> dict[str, Any]:
        return self._call("/_proxy", changes)["settings"]


def isheep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "isheep.runtime.cli", *args]


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(extra or {})
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(isheep_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=clean_environ(env), cwd=cwd)


def group_alive(pgid: int) -> list[psutil.Process]:
    """Processes still in a process group (a managed server's group is its pid)."""
    alive = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def vllm_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if "vllm.entrypoints" in line or "EngineCore" in (proc.info["name"] or "") or "VLLM::" in line:
            found.append(proc)
    return found


def wait_gone(pgid: int, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.5)
    return False
