"""Samples: recent pairs with their scores and verdict; Enter opens one in full."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from .source import Snapshot


def _short(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class SamplesTable(DataTable):
    """The most recent finished pairs, newest first."""

    BINDINGS = [Binding("enter", "open", "Open sample")]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("verdict", "q", "f", "instruction", "response")
        self._rows: dict[str, dict[str, Any]] = {}
        self._shown: list[str] = []

    def update_from(self, snapshot: Snapshot) -> None:
        recent = list(reversed(snapshot.samples[-100:]))
        ids = [row["id"] for row in recent]
        if ids == self._shown:
            return
        cursor = self.cursor_row
        self._rows = {row["id"]: row for row in recent}
        self._shown = ids
        self.clear()
        for row in recent:
            verdict = row["state"] if row["state"] == "kept" else f"{row['state']}: {row['reason'] or ''}"
            self.add_row(_short(verdict, 22), str(row["quality"] or "-"), str(row["following"] or "-"),
                         _short(row["instruction"], 40), _short(row["response"], 40), key=row["id"])
        if recent:
            self.move_cursor(row=min(cursor, len(recent) - 1))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        if not self._shown:
            return
        item_id = self._shown[min(self.cursor_row, len(self._shown) - 1)]
        self.app.push_screen(SampleScreen(self._rows[item_id]))


class SampleScreen(ModalScreen[None]):
    """One pair in full: instruction, input, answer, both scores with the critic's explanations."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    DEFAULT_CSS = """
    SampleScreen {
        align: center middle;
    }
    SampleScreen > VerticalScroll {
        width: 90%;
        height: 90%;
        border: round $accent;
        padding: 0 1;
        background: $surface;
    }
    """

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        row = self.row
        text = Text()
        text.append(f"{row['id']} · round {row['round']} · {row['state'].upper()}", style="bold")
        if row.get("reason"):
            text.append(f" ({row['reason']})")
        text.append(f"\nproposed by {row['proposer_version']}, answered by {row['responder_version'] or '-'}, "
                    f"judged by {row['critic_version'] or '-'}\n")
        for title, key in (("Instruction", "instruction"), ("Input", "input"), ("Response", "response")):
            if row.get(key):
                text.append(f"\n{title}\n", style="bold underline")
                text.append(f"{row[key]}\n")
        for title, key in (("Quality", "quality"), ("Instruction following", "following")):
            text.append(f"\n{title}: {row[key] if row[key] is not None else 'unparseable'}\n", style="bold")
            text.append(f"{row.get(key + '_explanation') or ''}\n")
        text.append("\nEsc closes", style="dim")
        with VerticalScroll():
            yield Static(text)
