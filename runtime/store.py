"""The run store: one SQLite database (WAL) per run folder.

It holds every item with its state, every round, model lineage, events and metric snapshots,
and it is the only truth a resumed run starts from. Writes from the event loop are
group-committed: a role's transition is committed before the item is handed on, yet a
thousand items a second cost a few hundred commits, not thousands. Commits run on the loop
itself (in WAL mode with synchronous=NORMAL they never wait for the disk; a commit thread cost
a fifth of the throughput in GIL hand-offs); the checkpoints that do wait for the disk run
on a thread of their own, with their own connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import UserError

SCHEMA_VERSION = 1
DB_NAME = "isheep.db"

#: Item states; the last three are final.
PENDING_STATES = ("proposed", "responded", "assessed")
FINAL_STATES = ("kept", "rejected", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    model_version TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    stage TEXT,
    reason TEXT,
    instruction TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    response TEXT,
    finish_reason TEXT,
    quality INTEGER,
    quality_explanation TEXT,
    quality_raw TEXT,
    following INTEGER,
    following_explanation TEXT,
    following_raw TEXT,
    proposer_version TEXT,
    responder_version TEXT,
    critic_version TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (round, seq)
);
CREATE INDEX IF NOT EXISTS items_round_state ON items (round, state);
CREATE INDEX IF NOT EXISTS items_updated ON items (updated_at);
CREATE TABLE IF NOT EXISTS models (
    version TEXT PRIMARY KEY,
    parent TEXT,
    round INTEGER,
    served_name TEXT NOT NULL,
    path TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    round INTEGER,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
);
CREATE TABLE IF NOT EXISTS metrics (ts REAL NOT NULL, round INTEGER, data TEXT NOT NULL);
"""

#: (sql, params) or (sql, params, item_id): the latter must change exactly one row, the item's.
Op = tuple[Any, ...]


@dataclass(frozen=True)
class RoundRow:
    round: int
    state: str
    model_version: str
    started_at: float
    ended_at: float | None
    detail: str


class StoreIntegrityError(RuntimeError):
    """A transition found the item in an unexpected state (it would have been processed twice)."""


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; only a power cut can lose the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it
    conn.execute("PRAGMA busy_timeout=10000")
    conn.row_factory = sqlite3.Row
    return conn


class RunStore:
    """One run's database. Synchronous reads; writes go through :meth:`write` once started."""

    def __init__(self, folder: Path, *, readonly: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.readonly = readonly
        self._conn = _connect(self.path, readonly)
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_stop = threading.Event()
        self._pending: list[tuple[list[Op], asyncio.Future[None] | None]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, meta: dict[str, Any]) -> "RunStore":
        """Create a new run folder (user-only permissions) and its database."""
        folder = Path(folder)
        if (folder / DB_NAME).exists():
            raise UserError(f"{folder} already holds a run; continue it with --resume {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(folder, 0o700)
        except OSError as exc:
            raise UserError(f"cannot create run folder {folder}: {exc.strerror}") from None
        store = cls(folder)
        with store._conn:
            store._conn.executescript(_SCHEMA)
            rows = {"schema_version": SCHEMA_VERSION, "created_at": time.time(), **meta}
            store._conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()]
            )
        os.chmod(store.path, 0o600)
        return store

    @classmethod
    def open(cls, folder: Path, *, readonly: bool = False) -> "RunStore":
        """Open an existing run folder, refusing missing, foreign or incompatible ones."""
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"run folder not found: {folder}")
        if not (folder / DB_NAME).is_file():
            raise UserError(f"{folder} is not an isheep run folder (no {DB_NAME})")
        try:
            store = cls(folder, readonly=readonly)
            version = store.meta().get("schema_version")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{folder / DB_NAME} is not a readable isheep database: {exc}") from None
        if version != SCHEMA_VERSION:
            store.close_sync()
            raise UserError(
                f"{folder} was written by another isheep version (store schema {version}, this is {SCHEMA_VERSION})"
            )
        return store

    async def start(self) -> None:
        """Start the group-commit writer (writes before this fail)."""
        if self.readonly:
            raise RuntimeError("read-only store")
        self._wake = asyncio.Event()
        self._checkpoint_stop.clear()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="isheep-checkpoint", daemon=True)
        self._checkpointer.start()
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    async def aclose(self) -> None:
        """Commit everything queued, stop the writer and close the database."""
        if self._writer is not None:
            self._closed = True
            assert self._wake is not None
            self._wake.set()
            await asyncio.shield(self._writer)
            self._writer = None
        if self._checkpointer is not None:
            self._checkpoint_stop.set()
            self._checkpointer.join()
            self._checkpointer = None
        self.close_sync()

    def _checkpoint_loop(self, interval_s: float = 2.0) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        try:
            while not self._checkpoint_stop.wait(interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass  # busy: the next turn will do it
        finally:
            conn.close()

    def close_sync(self) -> None:
        try:
            if not self.readonly:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
        except sqlite3.Error:
            pass

    # -- writing ---------------------------------------------------------------------------
    async def write(self, ops: list[Op]) -> None:
        """Commit ``ops`` in one transaction with whatever else is queued; return once durable."""
        if self._writer is None or self._closed:
            raise RuntimeError("store writer is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((ops, future))
        assert self._wake is not None
        self._wake.set()
        await future

    def submit(self, ops: list[Op]) -> None:
        """Queue ``ops`` without waiting (events, metrics): committed with the next batch."""
        if self._writer is None or self._closed:
            self._commit(ops)
            return
        self._pending.append((ops, None))
        assert self._wake is not None
        self._wake.set()

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            # Let the tasks that are ready now queue their writes too: bigger batches, fewer
            # commits, at the cost of one loop turn of latency.
            await asyncio.sleep(0)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                ops = [op for item_ops, _ in batch for op in item_ops]
                try:
                    conflicts = self._commit(ops)
                except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
                    error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
                    for _, future in batch:
                        if future is not None and not future.done():
                            future.set_exception(error)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for item_ops, future in batch:
                        if future is None or future.done():
                            continue
                        clash = [op[2] for op in item_ops if len(op) == 3 and op[2] in conflicts]
                        if clash:
                            future.set_exception(StoreIntegrityError(f"item {clash[0]} was not in the expected state"))
                        else:
                            future.set_result(None)
            if self._closed and not self._pending:
                return

    def _commit(self, ops: list[Op]) -> set[str]:
        """Run ``ops`` in one transaction; return the ids of guarded updates that matched no row."""
        conn = self._conn
        conflicts: set[str] = set()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                cursor = conn.execute(op[0], op[1])
                if len(op) == 3 and cursor.rowcount != 1:
                    # Nothing changed, so nothing to undo: the other items of the batch stand.
                    conflicts.add(op[2])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return conflicts

    def write_sync(self, ops: Iterable[Op]) -> None:
        """Commit now, from synchronous code (set-up, tests); never while the writer runs."""
        self._commit(list(ops))

    # -- events, metrics, meta ---------------------------------------------------------------
    def event(self, kind: str, message: str, *, level: str = "info", round: int | None = None,
              data: dict[str, Any] | None = None) -> None:
        self.submit([(
            "INSERT INTO events (ts, round, level, kind, message, data) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), round, level, kind, message, json.dumps(data) if data else None),
        )])

    def metrics(self, round: int | None, data: dict[str, Any]) -> None:
        self.submit([("INSERT INTO metrics (ts, round, data) VALUES (?, ?, ?)", (time.time(), round, json.dumps(data)))])

    def meta(self) -> dict[str, Any]:
        return {row["key"]: json.loads(row["value"]) for row in self._conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, key: str, value: Any) -> list[Op]:
        return [("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))]

    # -- rounds ------------------------------------------------------------------------------
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

    def max_seq(self, round: int) -> int:
        row = self._conn.execute("SELECT MAX(seq) FROM items WHERE round=?", (round,)).fetchone()
        return row[0] or 0

    def pending(self, round: int) -> Iterator[sqlite3.Row]:
        """Items of ``round`` that have not reached a final state, in proposal order."""
        yield from self._conn.execute(
            "SELECT * FROM items WHERE round=? AND state IN (?, ?, ?) ORDER BY seq", (round, *PENDING_STATES))

    def screened_instructions(self) -> Iterator[str]:
        """Every instruction that passed the Proposer's screening, all rounds (the dedup pool)."""
        for (text,) in self._conn.execute(
            "SELECT instruction FROM items WHERE NOT (stage='proposer' AND state='rejected') ORDER BY round, seq"
        ):
            yield text

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

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, args).fetchall()

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
        bad = self._conn.execute(
            "SELECT COUNT(*) FROM items WHERE state NOT IN ('proposed','responded','assessed','kept','rejected','failed')"
        ).fetchone()[0]
        if bad:
            problems.append(f"{bad} items in an unknown state")
        done_rounds = [r.round for r in self.rounds() if r.state in ("done", "rejected")]
        if done_rounds:
            marks = ",".join("?" * len(done_rounds))
            open_items = self._conn.execute(
                f"SELECT COUNT(*) FROM items WHERE round IN ({marks}) AND state IN ('proposed','responded','assessed')",
                done_rounds).fetchone()[0]
            if open_items:
                problems.append(f"{open_items} items of finished rounds are not in a final state")
        return problems
