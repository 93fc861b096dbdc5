"""The isheep monitor: watch a run, and steer it when it runs in this process.

``isheep run --tui`` runs the loop and this app in one event loop (live: the keys pause,
finish or stop the run); ``isheep monitor DIR`` attaches to a run folder read-only, whether
the run is going on headless elsewhere or finished long ago. Both read the same run store;
the live mode adds the supervisor's in-memory counters. Reads happen on a thread, at most
once a second, so the loop is never blocked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.widgets import Footer, Static, TabbedContent, TabPane

from isheep.runtime.core.progress import add_budgets, describe_budget, describe_training

from .curation import CurationPanel
from .header import RunHeader
from .log import EventLog
from .pipeline import PipelineTable
from .rounds import RoundsPanel
from .samples import SamplesTable
from .source import ReaderClosed, RunReader, Snapshot, live_overlay
from .throughput import ThroughputPanel

TABS = ("overview", "curation", "rounds", "samples", "log")


class MonitorApp(App[None]):
    """Header, five tabs (overview, curation, rounds, samples, log) and the key bindings."""

    CSS_PATH = "monitor.tcss"
    TITLE = "isheep"
    BINDINGS = [
        Binding("p", "pause", "Pause/resume"),
        Binding("f", "finish", "Finish round"),
        Binding("s", "stop", "Stop now"),
        Binding("1", "tab('overview')", "Tabs 1-5"),
        Binding("2", "tab('curation')", "Curation", show=False),
        Binding("3", "tab('rounds')", "Rounds", show=False),
        Binding("4", "tab('samples')", "Samples", show=False),
        Binding("5", "tab('log')", "Log", show=False),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, folder: Path | None = None, *, live: bool = False, refresh_s: float = 1.0) -> None:
        super().__init__()
        self.live = live
        self.refresh_s = refresh_s
        self.reader: RunReader | None = RunReader(folder) if folder is not None else None
        self.supervisor: Any = None
        self.snapshot: Snapshot | None = None
        self.run_state: str | None = None  # "done", "stopped" or "failed" once the run task ends
        self._reading = False
        self._quitting = False  # q was pressed: no more reads or drawing
        self._pending_notes: list[tuple[str, str]] = []

    # -- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        header = RunHeader()
        header.mode = "live" if self.live else "read-only"
        yield header
        with TabbedContent(initial="overview"):
            with TabPane("1 Overview", id="overview"):
                yield ThroughputPanel()
                yield PipelineTable()
                yield Static(id="overview-summary")
            with TabPane("2 Curation", id="curation"):
                yield CurationPanel()
            with TabPane("3 Rounds", id="rounds"):
                yield RoundsPanel()
            with TabPane("4 Samples", id="samples"):
                yield SamplesTable()
            with TabPane("5 Log", id="log"):
                yield EventLog()
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(self.refresh_s, self.refresh_data)
        self._note_pending()
        if not self.live:
            self.notify("read-only monitor: keys that steer a run work with isheep run --tui", timeout=4)
        self.call_later(self.refresh_data)

    # -- the run's side (live mode) ----------------------------------------------------------
    def start(self, supervisor: Any) -> None:
        """Display protocol: the run is set up and about to start."""
        self.supervisor = supervisor
        self.reader = RunReader(supervisor.store.folder)

    def stop(self) -> None:
        """Display protocol: the run is over (its final state stays on screen until q)."""

    def say(self, message: str) -> None:
        """Start-up progress from the run (server start, model provisioning)."""
        self._note(message, "info")

    def _note(self, message: str, level: str) -> None:
        # The run starts with the app and talks before the screen exists: keep what it says until then.
        self._pending_notes.append((message, level))
        self._note_pending()

    def _note_pending(self) -> None:
        while self._pending_notes:
            message, level = self._pending_notes[0]
            try:
                self.query_one(EventLog).note(message, level)
            except (NoMatches, ScreenStackError):
                return
            self._pending_notes.pop(0)

    def run_ended(self, state: str, message: str = "") -> None:
        self.run_state = state
        if message and state == "failed":
            self._note_error(message)
        elif message:
            self.say(message)
        self.call_later(self.refresh_data)

    def _note_error(self, message: str) -> None:
        self._note(message, "error")
        if self.is_running:
            self.notify(message, severity="error", timeout=30)

    # -- refresh -----------------------------------------------------------------------------
    async def refresh_data(self) -> None:
        self._note_pending()
        if self.reader is None and self.run_state == "failed":  # it failed before its store existed
            self.query_one(RunHeader).early_state = "failed"
        if self.reader is None or self._reading:
            return
        self._reading = True
        try:
            snapshot = await asyncio.to_thread(self.reader.poll)
        except ReaderClosed:  # closed by a quit while this was queued
            return
        finally:
            self._reading = False
            if self._quitting:
                self.reader.close()  # waits for a poll still running in its thread
        if self._quitting:
            return
        if self.supervisor is not None and self.run_state is None:
            live_overlay(snapshot, self.supervisor)
        if self.run_state is not None:
            snapshot.state = self.run_state
            snapshot.live = False
        self.snapshot = snapshot
        try:
            self._show(snapshot)
        except (NoMatches, ScreenStackError):
            return  # the app closed while the store was being read: nothing left to draw on

    def _show(self, snapshot: Snapshot) -> None:
        self.query_one(RunHeader).snapshot = snapshot
        self.query_one(ThroughputPanel).update_from(snapshot)
        self.query_one(PipelineTable).update_from(snapshot)
        self.query_one(CurationPanel).snapshot = snapshot
        self.query_one(RoundsPanel).update_from(snapshot)
        self.query_one(SamplesTable).update_from(snapshot)
        self.query_one(EventLog).update_from(snapshot.events)
        current = snapshot.current()
        summary = "no round yet"
        if current is not None:
            reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in current.reasons.most_common(3) if v > 0)
            summary = (f"round {current.round}: {current.proposed} proposed, {current.counts['kept']} kept "
                       f"({current.acceptance:.0%} of {current.finished} finished)"
                       + (f"; not kept: {reasons}" if reasons else ""))
        if snapshot.state == "training" and snapshot.training:
            summary += f"\ntraining: {describe_training(snapshot.training)}"
        if snapshot.budget_sessions:
            sessions = snapshot.budget_sessions
            title = "time budget" if len(sessions) == 1 else f"time budget, {len(sessions)} sessions"
            summary += f"\n{describe_budget(add_budgets(sessions), title=title)}"
        if snapshot.last_error:
            summary += f"\nlast problem: {snapshot.last_error[:120]}"
        self.query_one("#overview-summary", Static).update(summary)

    # -- keys --------------------------------------------------------------------------------
    def _steerable(self) -> bool:
        if not self.live:
            self.notify("read-only monitor: it cannot steer the run", severity="warning")
            return False
        if self.supervisor is None or self.run_state is not None:
            self.notify("the run is not going", severity="warning")
            return False
        return True

    def action_pause(self) -> None:
        if self._steerable():
            paused = self.supervisor.toggle_pause()
            self.notify("generation paused: requests in flight finish" if paused else "generation resumed")

    def action_finish(self) -> None:
        if self._steerable():
            self.supervisor.request_finish()
            self.notify("the run stops after this round")

    def action_stop(self) -> None:
        if self._steerable():
            self.supervisor.request_stop()
            self.notify("stopping: in-flight writes finish; resume with isheep run --resume")

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # Enter should open the highlighted sample without a click first. (The log's filter is
        # not focused: typed keys would go to it instead of switching tabs.)
        if event.pane.id == "samples":
            self.query_one(SamplesTable).focus()

    async def action_quit(self) -> None:
        if self.live and self.supervisor is not None and self.run_state is None:
            self.supervisor.request_stop()  # quitting a live monitor stops its run cleanly
        if self.reader is not None and not self._reading:
            self.reader.close()  # (a read in flight closes it when it ends; close waits for its thread)
        self._quitting = True
        self.exit()
