"""Secrets and exposure: a planted key appears nowhere; the managed server stays on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

import isheep
from isheep.runtime.core.config import ServerConfig
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.errors import UserError
from isheep.runtime.serving.server import ManagedServer
from isheep.tui import MonitorApp

KEY = "sk-planted-7f3a9c2e5b1d4086"


async def test_a_planted_key_is_in_no_log_store_export_or_monitor_screen(server_factory, tmp_path, monkeypatch):
    server = server_factory(api_key=KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config = load_config(overrides={"endpoints": [{"base_url": server.url}], "out": str(tmp_path / "run"),
                                    "rounds": 1, "round_size": 10, "max_proposed": 300, "close_on": "kept"})
    result = await isheep.arun(config)
    assert result.rounds[0].kept >= 10  # the key was used: the server refuses requests without it
    isheep.export_run(result.folder)
    screens = []
    app = MonitorApp(result.folder, refresh_s=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.refresh_data()
        for tab in "12345":
            await pilot.press(tab)
            await pilot.pause(0.1)
            screens.append(app.export_screenshot())
        await pilot.press("q")
    for path in result.folder.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert all(KEY not in screen for screen in screens)
    assert (result.folder.stat().st_mode & 0o077) == 0


def test_the_managed_server_refuses_a_non_loopback_bind(tmp_path):
    with pytest.raises(UserError, match="refusing to bind the managed server to 0.0.0.0"):
        ManagedServer(ServerConfig(host="0.0.0.0"), tmp_path, tmp_path / "log", served_name="m")
    # Asked for explicitly, a remote bind is allowed, but never with the dev-mode (reload) routes.
    ManagedServer(ServerConfig(host="0.0.0.0", allow_remote=True, device="cpu"), tmp_path, tmp_path / "log",
                  served_name="m")
    with pytest.raises(UserError, match="only ever served on 127.0.0.1"):
        ManagedServer(ServerConfig(host="0.0.0.0", allow_remote=True, device="cpu"), tmp_path, tmp_path / "log",
                      served_name="m", dev_mode=True)


def test_the_key_of_a_managed_server_is_not_on_its_command_line(tmp_path):
    server = ManagedServer(ServerConfig(device="cpu"), Path("/models/x"), tmp_path / "log", served_name="m")
    assert server.api_key not in " ".join(server.command())
    assert server.environment()["VLLM_API_KEY"] == server.api_key
