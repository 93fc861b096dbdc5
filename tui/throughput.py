"""Throughput: tokens/s generated and prompted, and items/s per role, as sparklines with values."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Label, Sparkline

from .source import Snapshot

SERIES = ("generated", "prompted", "proposer", "responder", "critic", "curator")


def rates(series: list[tuple[float, dict[str, float]]], name: str) -> list[float]:
    """Per-second rates between consecutive points of a cumulative series."""
    out = []
    for (t0, a), (t1, b) in zip(series, series[1:]):
        if t1 > t0:
            out.append(max(0.0, (b.get(name, 0.0) - a.get(name, 0.0)) / (t1 - t0)))
    return out or [0.0]


class ThroughputPanel(Widget):
    """Rates over the last minutes (the run's metric snapshots, plus the live point in --tui mode)."""

    DEFAULT_CSS = """
    ThroughputPanel {
        height: auto;
        layout: vertical;
    }
    ThroughputPanel Horizontal {
        height: 1;
    }
    ThroughputPanel Label {
        width: 36;
    }
    ThroughputPanel Sparkline {
        width: 1fr;
        height: 1;
    }
    """

    def compose(self) -> ComposeResult:
        for name in SERIES:
            with Horizontal():
                yield Label(name, id=f"label-{name}")
                yield Sparkline([0.0], summary_function=max, id=f"spark-{name}")

    def update_from(self, snapshot: Snapshot) -> None:
        for name in SERIES:
            values = rates(snapshot.series, name)
            unit = "tokens/s" if name in ("generated", "prompted") else "items/s"
            source = f" ({snapshot.tokens_source})" if name == "generated" else ""
            self.query_one(f"#label-{name}", Label).update(f"{name:10s}{values[-1]:8.1f} {unit}{source}"[:36])
            self.query_one(f"#spark-{name}", Sparkline).data = values[-240:]
