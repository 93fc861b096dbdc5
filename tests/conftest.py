"""Fixtures shared by the suite: the OpenAI-compatible test server as a real subprocess."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.procs import ProxyProcess, ServerProcess  # noqa: E402


@pytest.fixture
def server_factory() -> Iterator[Any]:
    """Start test servers with given behaviours; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(**behaviour: Any) -> ServerProcess:
        server = ServerProcess(behaviour)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def proxy_factory() -> Iterator[Any]:
    """Start fault-injecting proxies in front of servers; all are stopped after the test."""
    started: list[ProxyProcess] = []

    def start(upstream: str, **settings: Any) -> ProxyProcess:
        proxy = ProxyProcess(upstream, **settings)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def server(server_factory) -> ServerProcess:
    """A fresh test server with the default behaviour."""
    return server_factory()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OpenAI variables from the developer's shell leak into a test."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2 folder (provisioned once, cached in ~/.cache/isheep)."""
    from isheep.runtime.serving.models import ensure_embedded

    return ensure_embedded()
