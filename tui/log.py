"""Log: warnings, errors and notable events (retries, server restarts, swaps), filterable."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input, RichLog, Select

LEVELS = [("all events", "all"), ("warnings and errors", "warning"), ("errors only", "error")]
_STYLE = {"error": "bold red", "warning": "yellow"}


class EventLog(Widget):
    """The run's events, newest last; type to filter, pick a level."""

    DEFAULT_CSS = """
    EventLog {
        height: 1fr;
    }
    EventLog Horizontal {
        height: 3;
    }
    EventLog Input {
        width: 1fr;
    }
    EventLog Select {
        width: 28;
    }
    """

    text_filter: reactive[str] = reactive("")
    """Only events whose message or kind contains this text (case-insensitive)."""

    level: reactive[str] = reactive("all")
    """``all``, ``warning`` (warnings and errors) or ``error``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._events: list[dict[str, Any]] = []
        self._last_id = 0

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Input(placeholder="filter (e.g. retry, swap, server)", id="log-filter")
            yield Select(LEVELS, value="all", allow_blank=False, id="log-level")
        yield RichLog(id="log-lines", wrap=True, markup=False)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.text_filter = event.value

    def on_select_changed(self, event: Select.Changed) -> None:
        self.level = str(event.value)

    def watch_text_filter(self) -> None:
        self._redraw()

    def watch_level(self) -> None:
        self._redraw()

    def _keep(self, event: dict[str, Any]) -> bool:
        level = event.get("level", "info")
        if self.level == "error" and level != "error":
            return False
        if self.level == "warning" and level not in ("warning", "error"):
            return False
        needle = self.text_filter.lower()
        return not needle or needle in event.get("message", "").lower() or needle in event.get("kind", "").lower()

    def _line(self, event: dict[str, Any]) -> Text:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.get("ts", 0)))
        level = event.get("level", "info")
        return Text(f"{stamp} {level:7s} {event.get('kind', ''):9s} {event.get('message', '')}",
                    style=_STYLE.get(level, ""))

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        lines = self.query_one("#log-lines", RichLog)
        lines.clear()
        for event in self._events:
            if self._keep(event):
                lines.write(self._line(event))

    def note(self, message: str, level: str = "info") -> None:
        """A line from the monitor itself (server start-up progress, control actions)."""
        self.update_from([{"id": None, "ts": time.time(), "level": level, "kind": "monitor", "message": message}])

    def update_from(self, events: list[dict[str, Any]]) -> None:
        """Append the events not shown yet (store events carry increasing ids)."""
        lines = self.query_one("#log-lines", RichLog)
        for event in events:
            event_id = event.get("id")
            if event_id is not None:
                if event_id <= self._last_id:
                    continue
                self._last_id = event_id
            self._events.append(event)
            if len(self._events) > 5000:
                del self._events[:1000]
            if self._keep(event):
                lines.write(self._line(event))
