"""The monitor driven as a person would: keys against a live run, and read-only attachment."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from support.runs import make_finished_run
from textual.widgets import DataTable, TabbedContent

import isheep
from isheep.runtime.core.loading import load_config
from isheep.tui import MonitorApp
from isheep.tui.header import RunHeader
from isheep.tui.samples import SampleScreen, SamplesTable


async def _until(pilot, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.1)


async def test_keys_do_what_the_footer_says_on_a_live_run(server_factory, tmp_path, clean_env):
    server = server_factory(delay_s=0.2)  # slow enough to still be running when the keys come
    config = load_config(overrides={"endpoints": [{"base_url": server.url}], "out": str(tmp_path / "run"),
                                    "rounds": 2, "round_size": 2000, "max_proposed": 20000}, environ={})
    app = MonitorApp(live=True, refresh_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        footer = {b.key: b.description for b in app.BINDINGS if b.show}
        assert footer == {"p": "Pause/resume", "f": "Finish round", "s": "Stop now", "1": "Tabs 1-5", "q": "Quit"}
        task = asyncio.create_task(isheep.arun(config, display=app))
        await _until(pilot, lambda: app.supervisor is not None and app.snapshot is not None
                     and app.snapshot.rounds and app.snapshot.rounds[-1].finished > 20)
        assert app.query_one(RunHeader).snapshot.state == "generating"

        await pilot.press("p")
        assert app.supervisor.paused
        await _until(pilot, lambda: app.snapshot.state == "paused")
        await pilot.press("p")
        assert not app.supervisor.paused

        for key, tab in (("2", "curation"), ("3", "rounds"), ("5", "log"), ("1", "overview"), ("4", "samples")):
            await pilot.press(key)
            assert app.query_one(TabbedContent).active == tab
        table = app.query_one(SamplesTable)
        await _until(pilot, lambda: table.row_count > 0)
        await pilot.press("enter")
        assert isinstance(app.screen, SampleScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, SampleScreen)

        assert not task.done()
        await pilot.press("f")
        assert app.supervisor.finish_after_round
        await pilot.press("s")
        result = await asyncio.wait_for(task, 60)
        assert result.stopped
        app.run_ended("stopped")
        await pilot.press("q")
    store = isheep.RunStore.open(result.folder, readonly=True)
    assert store.integrity() == []
    store.close_sync()


async def test_monitor_is_read_only_and_shows_a_finished_runs_history(tmp_path):
    folder = make_finished_run(tmp_path / "run")
    before = (folder / "isheep.db").read_bytes()
    app = MonitorApp(folder, refresh_s=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.snapshot is not None)
        header = app.query_one(RunHeader)
        assert header.mode == "read-only" and header.snapshot.state == "done"
        await pilot.press("p")
        await pilot.press("s")
        # Each steering key is answered with a warning, not acted on. (Textual keeps the
        # notifications it shows in a private list; it offers no public one to read.)
        warnings = [n.message for n in app._notifications if n.severity == "warning"]
        assert warnings == ["read-only monitor: it cannot steer the run"] * 2, warnings
        await pilot.press("3")
        rounds = app.query_one("#round-table", DataTable)
        assert rounds.row_count == 2
        swaps = app.query_one("#swap-table", DataTable)
        outcomes = [swaps.get_row_at(i)[2] for i in range(swaps.row_count)]
        assert outcomes == ["serving", "ROLLED BACK"]
        assert len(app.snapshot.losses) == 16
        await pilot.press("q")
    assert (folder / "isheep.db").read_bytes() == before  # attaching never writes


async def test_what_the_run_says_before_the_screen_exists_is_shown_and_a_failure_too():
    # `run --tui` starts the run beside the app: the managed server reports progress at once,
    # before Textual has a screen, and a failure may come before the run store exists.
    from isheep.tui.log import EventLog

    app = MonitorApp(live=True)
    app.say("starting vLLM (cpu) on http://127.0.0.1:1/v1")  # not mounted yet
    spoke = asyncio.Event()

    async def early_run():
        while not app.is_mounted:
            await asyncio.sleep(0)
        app.say("waiting for vLLM (0s)")  # mounted, but maybe no screen yet: must not raise
        spoke.set()

    task = asyncio.create_task(early_run())
    async with app.run_test(size=(100, 30)) as pilot:
        await asyncio.wait_for(spoke.wait(), 10)
        app.run_ended("failed", "isheep: error: vLLM exited during start-up")
        await pilot.pause(0.5)
        await app.refresh_data()
        await pilot.pause()
        lines = [event["message"] for event in app.query_one(EventLog)._events]
        assert any("starting vLLM" in line for line in lines) and any("waiting for vLLM" in line for line in lines)
        assert any("exited during start-up" in line for line in lines)
        assert "failed" in str(app.query_one(RunHeader).render())
    await task


async def test_a_refresh_that_ends_after_the_monitor_closed_draws_nothing(tmp_path):
    # The store is read on a thread; if the app closes meanwhile (q, or the end of a live run),
    # the read's result has no screen to go to. It once crashed the app with NoMatches.
    folder = make_finished_run(tmp_path / "run")
    app = MonitorApp(folder, refresh_s=60)
    async with app.run_test(size=(80, 24)) as pilot:
        await _until(pilot, lambda: app.snapshot is not None)
    await app.refresh_data()  # after the screen is gone: must not raise
    assert app.snapshot is not None and app.snapshot.state == "done"
    app.reader.close()


def test_closing_the_reader_while_a_poll_runs_in_its_thread_waits_for_it(tmp_path):
    """Found by CI: quitting closed the store under a poll still running in its worker thread, and
    the interpreter died (SIGSEGV in SQLite). Close now waits; a poll after it says it is closed."""
    import threading

    from isheep.tui.source import ReaderClosed, RunReader

    reader = RunReader(make_finished_run(tmp_path / "run", rounds=2, items=400))
    outcomes: list[str] = []

    def polling() -> None:
        try:
            for _ in range(50):
                reader.poll()
            outcomes.append("done")
        except ReaderClosed:
            outcomes.append("closed")

    worker = threading.Thread(target=polling)
    worker.start()
    while not reader._item_state:  # a poll is under way
        pass
    reader.close()
    reader.close()  # twice is harmless
    worker.join(timeout=60)
    assert outcomes in (["closed"], ["done"]) and not worker.is_alive()
    with pytest.raises(ReaderClosed):
        reader.poll()


async def test_the_rounds_tab_shows_each_versions_gate_and_benchmark_scores_with_intervals(tmp_path):
    from isheep.runtime.store import RunStore, model_row_op

    folder = make_finished_run(tmp_path / "run")
    store = RunStore.open(folder)
    result = {"scores": {"a": 1.0, "b": 0.0}, "interval": {"mean": 0.5, "low": 0.0, "high": 1.0, "n": 2, "level": 0.95}}
    rows = {row["version"]: row for row in store.models()}
    for version, detail in (("v0", {"benchmarks": {"instructions": result}}),
                            ("v1", {"evaluation": result, "benchmarks": {"instructions": result, "odd": {"x": 1}}})):
        row = rows[version]
        store.write_sync([model_row_op(version, parent=row["parent"], round=row["round"], served_name=row["served_name"],
                                       path=row["path"], state=row["state"],
                                       detail={**json.loads(row["detail"] or "{}"), **detail})])
    store.close_sync()
    app = MonitorApp(folder, refresh_s=0.2)
    async with app.run_test(size=(160, 40)) as pilot:
        await _until(pilot, lambda: app.snapshot is not None)
        await pilot.press("3")
        swaps = app.query_one("#swap-table", DataTable)
        table = {swaps.get_row_at(i)[0]: swaps.get_row_at(i) for i in range(swaps.row_count)}
        assert table["v0"][4:] == ["-", "instructions 0.50 [0.00, 1.00]"]
        assert table["v1"][4:] == ["0.50 [0.00, 1.00]", "instructions 0.50 [0.00, 1.00], odd ?"]
        await pilot.press("q")
