"""Curation: acceptance this round and per round, the two critic score histograms, rejection reasons."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from .source import Snapshot


def histogram(counts: dict[int, int], width: int = 18) -> list[Text]:
    """Score 1..10 as labelled bars (readable without colour)."""
    top = max(counts.values(), default=0) or 1
    lines = []
    for score in range(10, 0, -1):
        n = counts.get(score, 0)
        bar = "█" * round(width * n / top) if n else ""
        lines.append(Text(f"{score:>2} {bar} {n}" if n else f"{score:>2}", style="bold" if score > 8 else ""))
    return lines


class CurationPanel(Widget):
    """What the Curator kept and why it refused the rest, for the round in progress."""

    DEFAULT_CSS = """
    CurationPanel {
        height: auto;
    }
    """

    snapshot: reactive[Snapshot | None] = reactive(None)
    """The latest snapshot; the panel shows its current round and the per-round acceptance."""

    def render(self) -> Table:
        snap = self.snapshot
        grid = Table.grid(padding=(0, 2))
        if snap is None or not snap.rounds:
            grid.add_row(Text("no items yet"))
            return grid
        current = snap.rounds[-1]
        per_round = "  ".join(f"r{r.round} {r.acceptance:.0%}" for r in snap.rounds[-8:])
        grid.add_row(Text(f"round {current.round}: {current.counts['kept']} kept of {current.finished} finished "
                          f"({current.acceptance:.1%});  per round: {per_round}"))
        scores = Table.grid(padding=(0, 3))
        reasons = Table("not kept", "items", box=None, padding=(0, 1), show_edge=False)
        for reason, n in current.reasons.most_common(10):
            if n > 0:
                reasons.add_row(reason, str(n))
        quality, following = histogram(dict(current.quality)), histogram(dict(current.following))
        scores.add_row(Text("quality", style="underline"), Text("following", style="underline"),
                       Text("reasons (this round)", style="underline"))
        scores.add_row(Text("\n").join(quality), Text("\n").join(following), reasons)
        grid.add_row(scores)
        return grid
