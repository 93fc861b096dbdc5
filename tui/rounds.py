"""Rounds: a timeline of rounds, the training loss curve, and each model version: its swap, the
gate's score and its benchmark scores, each with its 95% interval."""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable
from textual_plotext import PlotextPlot

from .source import Snapshot


def scored(result: object) -> str:
    """A stored result as "mean [low, high]"; a lineage row is data from disk: odd data shows as "?"."""
    try:
        ci = result["interval"]  # type: ignore[index]
        return f"{ci['mean']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"
    except (KeyError, TypeError, ValueError):
        return "?"


class RoundsPanel(Widget):
    """Round by round: kept pairs, the model that generated it, training and swap outcomes."""

    DEFAULT_CSS = """
    RoundsPanel {
        height: 1fr;
    }
    RoundsPanel #round-table {
        height: auto;
        max-height: 10;
    }
    RoundsPanel Horizontal {
        height: 1fr;
    }
    RoundsPanel #loss-plot {
        width: 1fr;
        min-height: 8;
    }
    RoundsPanel #swap-table {
        width: 1fr;
    }
    """

    def compose(self) -> ComposeResult:
        yield DataTable(id="round-table", cursor_type="none")
        with Horizontal():
            yield PlotextPlot(id="loss-plot")
            yield DataTable(id="swap-table", cursor_type="none")

    def on_mount(self) -> None:
        self.query_one("#round-table", DataTable).add_columns(
            "round", "state", "model", "proposed", "kept", "accept", "closed because")
        self.query_one("#swap-table", DataTable).add_columns("model", "from", "outcome", "swap", "gate", "benchmarks")
        self._drawn_losses = -1

    def update_from(self, snapshot: Snapshot) -> None:
        table = self.query_one("#round-table", DataTable)
        table.clear()
        for r in snapshot.rounds:
            table.add_row(str(r.round), r.state, r.model_version, str(r.proposed), str(r.counts["kept"]),
                          f"{r.acceptance:.0%}", r.detail[:40])
        swaps = self.query_one("#swap-table", DataTable)
        swaps.clear()
        for model in snapshot.models:
            detail = json.loads(model.get("detail") or "{}")
            benches = detail.get("benchmarks") if isinstance(detail.get("benchmarks"), dict) else {}
            if model["version"] == "v0" and not benches and not detail.get("evaluation"):
                continue
            swap = detail.get("swap") or {}
            outcome = {"failed": "ROLLED BACK", "serving": "serving", "retired": "served, retired",
                       "trained": "trained", "rejected": "REJECTED"}.get(model["state"], model["state"])
            # A lineage row is data from disk: anything odd in it shows as "?", never a crash.
            took = swap.get("seconds")
            seconds = (f"{took:.1f}s" if isinstance(took, (int, float)) else "?") if "seconds" in swap \
                else ("-" if not swap else "failed")
            gate = scored(detail["evaluation"]) if detail.get("evaluation") else "-"
            measured = ", ".join(f"{name} {scored(result)}" for name, result in sorted(benches.items())) or "-"
            swaps.add_row(model["version"], model.get("parent") or "-", outcome, seconds, gate, measured)
        if len(snapshot.losses) != self._drawn_losses:
            self._drawn_losses = len(snapshot.losses)
            plot = self.query_one("#loss-plot", PlotextPlot)
            plt = plot.plt
            plt.clear_data()
            plt.title("training loss")
            for k in sorted({k for k, _, _ in snapshot.losses}):
                points = [(step, loss) for r, step, loss in snapshot.losses if r == k]
                plt.plot([p[0] for p in points], [p[1] for p in points], label=f"round {k}", marker="braille")
            plot.refresh()
