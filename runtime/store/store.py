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
from pathlib import Path
from typing import Any, Iterable

from isheep.runtime.core.errors import UserError

from .queries import TIME_BUDGET, RunQueries
from .schema import DB_NAME, SCHEMA, SCHEMA_VERSION, connect

#: (sql, params) or (sql, params, item_id): the latter must change exactly one row, the item's.
Op = tuple[Any, ...]


class StoreIntegrityError(RuntimeError):
    """A transition found the item in an unexpected state (it would have been processed twice)."""


class RunStore(RunQueries):
    """One run's database. Synchronous reads (the named queries); writes go through :meth:`write`
    once :meth:`start` ran, and :meth:`write_sync` before that.

    Args:
        folder: The run folder holding ``isheep.db``.
        readonly: Open without any write (the monitor, the export).
    """

    def __init__(self, folder: Path, *, readonly: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.readonly = readonly
        self._conn = connect(self.path, readonly)
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
            store._conn.executescript(SCHEMA)
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
        """Commit ``ops`` in one transaction with whatever else is queued; return once durable.

        Args:
            ops: Statements from :mod:`isheep.runtime.store.records` (``op_for`` and friends).
                An op that names an item must change exactly that item's row.

        Raises:
            StoreIntegrityError: an op found its item in another state than it expected (it
                would have been processed twice); nothing of that op changed, the rest of the
                batch is committed.
            RuntimeError: the writer is not running (before :meth:`start`, after :meth:`aclose`).
        """
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

    async def amend_model(self, version: str, extra: dict[str, Any]) -> bool:
        """Merge ``extra`` into the detail of a version already in the lineage, the rest of its row
        unchanged (results added later: the gate's, ``isheep eval``'s, a pruning note); False when
        the lineage has no such version."""
        from .records import model_row_op  # records builds on this module's Op

        row = self.model(version)
        if row is None:
            return False
        detail = {**json.loads(row["detail"] or "{}"), **extra}
        await self.write([model_row_op(row["version"], parent=row["parent"], round=row["round"],
                                       served_name=row["served_name"], path=row["path"], state=row["state"],
                                       detail=detail)])
        return True

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

    def set_meta(self, key: str, value: Any) -> list[Op]:
        return [("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))]

    def set_time_budgets(self, sessions: list[dict[str, Any]]) -> list[Op]:
        """Every session's time budget, this one's last (each write replaces the whole list)."""
        return self.set_meta(TIME_BUDGET, {"sessions": sessions})

