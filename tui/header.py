"""The monitor's header line: which run, where, which round and model, how long, what state."""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from .source import Snapshot

#: State names as shown; the word carries the meaning, the colour only repeats it.
STATE_STYLE = {"starting": "yellow", "generating": "green", "training": "magenta", "swapping": "cyan",
               "paused": "yellow", "stopped": "red", "failed": "bold red", "done": "bold green"}


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(max(0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunHeader(Widget):
    """Run name, endpoints, round and model version, elapsed time and state, in one line."""

    DEFAULT_CSS = """
    RunHeader {
        height: 1;
        background: $panel;
        color: $text;
    }
    """

    snapshot: reactive[Snapshot | None] = reactive(None)
    """The latest snapshot of the run; set by the app on every refresh."""

    mode: reactive[str] = reactive("live")
    """``live`` (steering the run in this process) or ``read-only`` (attached to a run folder)."""

    early_state: reactive[str] = reactive("starting")
    """The state shown before the run store exists (``starting``, or ``failed`` if it never will)."""

    def render(self) -> Text:
        snap = self.snapshot
        if snap is None:
            return Text(f" isheep · {self.early_state}", style="bold red" if self.early_state == "failed" else "bold")
        state = snap.state.upper()
        finished = snap.state in ("done", "stopped", "failed")
        end = time.time() if snap.live and not finished else snap.updated
        if finished and snap.rounds and snap.rounds[-1].ended_at:
            end = snap.rounds[-1].ended_at
        first = snap.rounds[0].started_at if snap.rounds and snap.rounds[0].started_at else end
        started = snap.started or first
        endpoints = ", ".join(e.replace("http://", "") for e in snap.endpoints[:2]) or "-"
        text = Text(" isheep ", style="bold")
        text.append(f"· {snap.run_name} · round {snap.round}/{snap.rounds_total or '?'} · model {snap.model_version} · ")
        text.append(state, style=STATE_STYLE.get(snap.state, "bold"))
        text.append(f" · {elapsed(end - started)} · {endpoints}")
        if self.mode == "read-only":
            text.append(" · READ-ONLY", style="reverse")
        return text

    def on_mount(self) -> None:
        self.set_interval(1.0, self.refresh)  # the clock moves between snapshots

