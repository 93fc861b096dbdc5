"""The pipeline: one row per role with workers busy/total, queue depth, done, failed, mean latency."""

from __future__ import annotations

from textual.widgets import DataTable

from isheep.runtime.core.roles import ROLE_NAMES

from .source import Snapshot


class PipelineTable(DataTable):
    """A live table of the five roles."""

    DEFAULT_CSS = """
    PipelineTable {
        height: auto;
    }
    """

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.add_columns("role", "busy/workers", "queue", "done", "failed", "latency")
        for role in ROLE_NAMES:
            self.add_row(role, "-", "-", "0", "0", "-", key=role)

    def update_from(self, snapshot: Snapshot) -> None:
        for role in ROLE_NAMES:
            stats = snapshot.roles.get(role, {})
            queue = snapshot.queues.get(role)
            cells = (f"{stats.get('busy', 0)}/{stats.get('workers', 0)}", "-" if queue is None else str(queue),
                     str(stats.get("done", 0)), str(stats.get("failed", 0)),
                     f"{stats.get('mean_latency', 0.0):.2f}s" if stats else "-")
            for column, value in zip(list(self.columns)[1:], cells):
                self.update_cell(role, column, value)
