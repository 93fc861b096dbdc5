"""The run store's schema: one SQLite database (WAL) per run folder, and how it is opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1
DB_NAME = "isheep.db"

SCHEMA = """
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



def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
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

