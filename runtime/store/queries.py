"""Every read of the run store, by name: what the pipeline, the monitor and the export ask.

The SQL lives here and in :mod:`.records` (the writes), nowhere else in the runtime.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterator

from isheep.runtime.core.messages import FINAL_STATES, PENDING_STATES, ROUND_CLOSED_STATES


@dataclass(frozen=True)
class RoundRow:
    """One row of the rounds table: a round's phase, the model that generated it, its times."""

    round: int
    state: str
    model_version: str
    started_at: float
    ended_at: float | None
    detail: str


#: The meta key of the run's time budgets: ``{"sessions": [one budget per session, oldest first]}``.
TIME_BUDGET = "time_budget"


class RunQueries:
    """The named reads of :class:`~isheep.runtime.store.RunStore` (a mixin over its connection)."""

    _conn: sqlite3.Connection

    def meta(self) -> dict[str, Any]:
        return {row["key"]: json.loads(row["value"]) for row in self._conn.execute("SELECT key, value FROM meta")}

    def time_budgets(self) -> list[dict[str, Any]]:
        """Where each session of the run spent its wall time, oldest first (``TimeBudget.to_dict``)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (TIME_BUDGET,)).fetchone()
        stored = json.loads(row["value"]) if row is not None else {}
        sessions = stored.get("sessions") if isinstance(stored, dict) else None
        return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []

    def models(self) -> list[sqlite3.Row]:
        return self._conn.execute("SELECT * FROM models ORDER BY round, created_at").fetchall()

    def serving_model(self) -> sqlite3.Row | None:
        """The latest model version that was serving (what a resumed run must serve again)."""
        return self._conn.execute(
            "SELECT * FROM models WHERE state='serving' ORDER BY round DESC LIMIT 1").fetchone()

    def rounds(self) -> list[RoundRow]:
        rows = self._conn.execute("SELECT * FROM rounds ORDER BY round").fetchall()
        return [RoundRow(**dict(row)) for row in rows]

    # -- reads -------------------------------------------------------------------------------
    def counts(self, round: int | None = None) -> dict[str, int]:
        """Items per state, in one round or in the whole run."""
        where, args = ("WHERE round=?", (round,)) if round is not None else ("", ())
        rows = self._conn.execute(f"SELECT state, COUNT(*) FROM items {where} GROUP BY state", args)
        return {state: n for state, n in rows}

    def reasons(self, round: int | None = None) -> dict[tuple[str, str], int]:
        """(state, reason) -> count for rejected and failed items."""
        where, args = ("AND round=?", (round,)) if round is not None else ("", ())
        rows = self._conn.execute(
            f"SELECT state, reason, COUNT(*) FROM items WHERE state IN ('rejected','failed') {where}"
            " GROUP BY state, reason ORDER BY COUNT(*) DESC", args)
        return {(state, reason or "?"): n for state, reason, n in rows}

    def score_counts(self, aspect: str) -> dict[tuple[int, int], int]:
        """(round, score) -> how many items the Self-Critic gave that score for ``aspect``
        (``quality`` or ``following``)."""
        if aspect not in ("quality", "following"):
            raise ValueError(f"no critic aspect {aspect!r}")
        rows = self._conn.execute(f"SELECT round, {aspect}, COUNT(*) FROM items WHERE {aspect} IS NOT NULL"
                                  f" GROUP BY round, {aspect}")
        return {(k, score): n for k, score, n in rows}

    def max_seq(self, round: int) -> int:
        row = self._conn.execute("SELECT MAX(seq) FROM items WHERE round=?", (round,)).fetchone()
        return row[0] or 0

    def pending(self, round: int) -> Iterator[sqlite3.Row]:
        """Items of ``round`` that have not reached a final state, in proposal order."""
        yield from self._conn.execute(
            "SELECT * FROM items WHERE round=? AND state IN (?, ?, ?) ORDER BY seq", (round, *PENDING_STATES))

    def screened_tasks(self, round: int | None = None) -> Iterator[tuple[str, str]]:
        """(instruction, input) of every instruction that passed the Proposer's screening, all
        rounds or one, in proposal order: the dedup pool, the machine examples a Proposer may mix
        in, the instructions a round replays."""
        where, args = (" AND round=?", (round,)) if round is not None else ("", ())
        for row in self._conn.execute(
                "SELECT instruction, input FROM items WHERE NOT (stage='proposer' AND state='rejected')"
                f"{where} ORDER BY round, seq", args):
            yield row[0], row[1]

    def screened_finished(self, round: int) -> int:
        """Items of ``round`` that passed screening and reached a final state (a resumed round's pacing)."""
        return self._conn.execute("SELECT COUNT(*) FROM items WHERE round=? AND stage IS NOT NULL AND stage != "
                                  "'proposer'", (round,)).fetchone()[0]

    def kept_pairs(self, round: int, *, cumulative: bool = False) -> list[dict[str, Any]]:
        """The kept pairs of ``round`` (with ``cumulative``, of every round up to it): training data."""
        rounds = "round <= ?" if cumulative else "round = ?"
        rows = self._conn.execute(f"SELECT id, round, instruction, input, response FROM items WHERE state='kept'"
                                  f" AND {rounds} ORDER BY round, seq", (round,))
        return [dict(row) for row in rows]

    def model(self, version: str) -> sqlite3.Row | None:
        """One model version of the lineage, or None."""
        return self._conn.execute("SELECT * FROM models WHERE version=?", (version,)).fetchone()

    def trained_model(self, round: int) -> sqlite3.Row | None:
        """The model ``round`` trained and had not yet served (a run stopped mid-swap), or None."""
        return self._conn.execute("SELECT * FROM models WHERE round=? AND state='trained'", (round,)).fetchone()

    def round_generator(self, round: int) -> str | None:
        """The model version that generated ``round`` (what the rounds table names it by)."""
        row = self._conn.execute("SELECT model_version FROM rounds WHERE round=?", (round,)).fetchone()
        return row["model_version"] if row else None

    def items(self, round: int | None = None, state: str | None = None) -> Iterator[sqlite3.Row]:
        clauses, args = [], []
        if round is not None:
            clauses.append("round=?")
            args.append(round)
        if state is not None:
            clauses.append("state=?")
            args.append(state)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        yield from self._conn.execute(f"SELECT * FROM items {where} ORDER BY round, seq", args)

    def changed_items(self, since: float, limit: int = 5000) -> list[sqlite3.Row]:
        """Items updated at or after ``since`` (the monitor's incremental read), oldest change first.

        Only the columns that are counted: the texts are read for the few items shown
        (:meth:`items_by_id`), not for every change.
        """
        return self._conn.execute("SELECT id, round, stage, state, reason, quality, following, updated_at "
                                  "FROM items WHERE updated_at >= ? ORDER BY updated_at LIMIT ?",
                                  (since, limit)).fetchall()

    def items_by_id(self, ids: list[str]) -> list[sqlite3.Row]:
        """Whole rows of the given items, in the order given."""
        rows = {}
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(f"SELECT * FROM items WHERE id IN ({marks})", chunk):
                rows[row["id"]] = row
        return [rows[i] for i in ids if i in rows]

    def events_after(self, last_id: int, limit: int = 2000) -> list[sqlite3.Row]:
        return self._conn.execute("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)).fetchall()

    def metrics_after(self, last_rowid: int) -> list[tuple[int, float, str]]:
        return self._conn.execute("SELECT rowid, ts, data FROM metrics WHERE rowid > ? ORDER BY rowid",
                                  (last_rowid,)).fetchall()

    def latest_metrics(self) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT ts, data FROM metrics ORDER BY rowid DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {"ts": row["ts"], **json.loads(row["data"])}

    def integrity(self) -> list[str]:
        """Problems found (empty when sound): SQLite's own check, duplicates, unfinished items."""
        problems = []
        result = self._conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            problems.append(f"integrity_check: {result}")
        dup = self._conn.execute("SELECT COUNT(*) - COUNT(DISTINCT id) FROM items").fetchone()[0]
        if dup:
            problems.append(f"{dup} duplicate item ids")
        states = PENDING_STATES + FINAL_STATES
        bad = self._conn.execute(f"SELECT COUNT(*) FROM items WHERE state NOT IN ({','.join('?' * len(states))})",
                                 states).fetchone()[0]
        if bad:
            problems.append(f"{bad} items in an unknown state")
        done_rounds = [r.round for r in self.rounds() if r.state in ROUND_CLOSED_STATES]
        if done_rounds:
            marks = ",".join("?" * len(done_rounds))
            open_items = self._conn.execute(
                f"SELECT COUNT(*) FROM items WHERE round IN ({marks}) AND state IN (?, ?, ?)",
                (*done_rounds, *PENDING_STATES)).fetchone()[0]
            if open_items:
                problems.append(f"{open_items} items of finished rounds are not in a final state")
        return problems
