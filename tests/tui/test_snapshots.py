"""Snapshots of the monitor's main screens at two sizes, on a run with fixed content."""

from __future__ import annotations

import time

import pytest
from support.runs import make_finished_run

from isheep.tui import MonitorApp


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    time.tzset()


@pytest.fixture
def fixture_run(tmp_path):
    return make_finished_run(tmp_path / "fixture-run")


async def _settle(pilot) -> None:
    await pilot.pause(0.3)
    await pilot.app.refresh_data()
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@pytest.mark.parametrize("tab", ["1", "2", "3", "4", "5"])
def test_screens(snap_compare, fixture_run, size, tab):
    app = MonitorApp(fixture_run, refresh_s=60)  # one read, no refresh during the snapshot

    async def run_before(pilot) -> None:
        await _settle(pilot)
        await pilot.press(tab)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=run_before)

