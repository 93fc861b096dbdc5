"""Where the monitor's numbers come from: a run folder's store, read incrementally.

:class:`RunReader` keeps running aggregates (per-round counts and reasons, score histograms,
recent samples, events, losses, swaps) and each :meth:`RunReader.poll` reads only what changed
since the last one, so a 50,000-item run costs a handful of rows per refresh. It opens the
store read-only: attaching to a run never writes to it. In the ``--tui`` process, the live
counters of the run (roles, queues, tokens) replace the latest metrics snapshot.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isheep.runtime.core.messages import FINAL_STATES, acceptance, reason_kind
from isheep.runtime.store import RunStore


@dataclass
class RoundView:
    """One round as the monitor shows it."""

    round: int
    state: str = "generating"
    model_version: str = "v0"
    detail: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    quality: Counter[int] = field(default_factory=Counter)
    following: Counter[int] = field(default_factory=Counter)

    @property
    def proposed(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(self.counts[s] for s in FINAL_STATES)

    @property
    def acceptance(self) -> float:
        return acceptance(self.counts["kept"], self.finished)


@dataclass
class Snapshot:
    """Everything the monitor draws, at one moment."""

    run_name: str = ""
    folder: str = ""
    endpoints: list[str] = field(default_factory=list)
    state: str = "starting"
    round: int = 0
    rounds_total: int = 0
    model_version: str = "v0"
    started: float = 0.0
    updated: float = 0.0
    live: bool = False
    read_only: bool = True
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    tokens_source: str = "runtime"
    requests: int = 0
    retries: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    rounds: list[RoundView] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    losses: list[tuple[int, int, float]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    last_error: str = ""
    #: (time, {"generated", "prompted", "proposer", ...: cumulative counts}) points, oldest first.
    series: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    #: Where each session's wall time went, oldest first (``TimeBudget.to_dict``; empty: not known).
    budget_sessions: list[dict[str, Any]] = field(default_factory=list)

    def current(self) -> RoundView | None:
        return self.rounds[-1] if self.rounds else None


class ReaderClosed(RuntimeError):
    """A poll of a :class:`RunReader` that was closed."""


class RunReader:
    """Incremental reader of one run folder's store."""

    def __init__(self, folder: Path, *, samples: int = 200, events: int = 2000) -> None:
        self.folder = Path(folder)
        self.store = RunStore.open(self.folder, readonly=True)
        meta = self.store.meta()
        self._name = meta.get("run_name", self.folder.name)
        self._rounds_total = int((meta.get("config") or {}).get("rounds", 0))
        self._rounds: dict[int, RoundView] = {}
        self._item_state: dict[str, tuple[int, str, str, int | None, int | None]] = {}
        self._item_seen: dict[str, float] = {}
        self._since = 0.0
        self._last_event = 0
        self._samples: deque[dict[str, Any]] = deque(maxlen=samples)
        #: Items that finished since the last poll, newest last (only as many as can be shown).
        self._shown: deque[str] = deque(maxlen=samples)
        self._events: deque[dict[str, Any]] = deque(maxlen=events)
        self._losses: list[tuple[int, int, float]] = []
        self._last_error = ""
        self._last_metric = 0
        self._series: deque[tuple[float, dict[str, float]]] = deque(maxlen=600)
        # A poll runs in a worker thread and outlives a cancelled await: closing the connection
        # under it crashed the interpreter (SQLite is not safe against that), so they take turns.
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the store, once any poll in flight has finished; polls after it raise :class:`ReaderClosed`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.store.close_sync()

    def _round(self, k: int) -> RoundView:
        view = self._rounds.get(k)
        if view is None:
            view = self._rounds[k] = RoundView(round=k)
        return view

    def _apply_item(self, row: Any) -> None:
        """Move one item's contribution from its old state to its new one."""
        item_id = row["id"]
        old = self._item_state.get(item_id)
        if old is not None:
            k, state, reason, quality, following = old
            view = self._round(k)
            view.counts[state] -= 1
            if state in ("rejected", "failed"):
                view.reasons[f"{state}:{reason}"] -= 1
            if quality is not None:
                view.quality[quality] -= 1
            if following is not None:
                view.following[following] -= 1
        view = self._round(row["round"])
        reason = reason_kind(row["reason"]) if row["state"] in ("rejected", "failed") else ""
        view.counts[row["state"]] += 1
        if reason:
            view.reasons[f"{row['state']}:{reason}"] += 1
        if row["quality"] is not None:
            view.quality[row["quality"]] += 1
        if row["following"] is not None:
            view.following[row["following"]] += 1
        self._item_state[item_id] = (row["round"], row["state"], reason, row["quality"], row["following"])
        if row["state"] in FINAL_STATES and row["stage"] != "proposer":
            self._shown.append(item_id)

    def poll(self) -> Snapshot:
        with self._lock:
            if self._closed:
                raise ReaderClosed("the run reader is closed")
            return self._poll()

    def _poll(self) -> Snapshot:
        store = self.store
        while True:
            # ">=" and a per-item stamp: rows sharing the boundary timestamp are neither lost nor counted twice.
            rows = store.changed_items(self._since)
            fresh = [row for row in rows if self._item_seen.get(row["id"]) != row["updated_at"]]
            for row in fresh:
                self._apply_item(row)
                self._item_seen[row["id"]] = row["updated_at"]
                self._since = max(self._since, row["updated_at"])
            if len(rows) < 5000 or not fresh:
                break
        if self._shown:  # the newest finished items become samples, read in full
            self._samples.extend({key: row[key] for key in row.keys()} for row in store.items_by_id(list(self._shown)))
            self._shown.clear()
        for row in store.events_after(self._last_event):
            self._last_event = row["id"]
            event = {key: row[key] for key in row.keys()}
            if row["kind"] == "train_step":
                data = json.loads(row["data"] or "{}")
                if data.get("loss") is not None:
                    self._losses.append((row["round"] or 0, int(data.get("step") or 0), float(data["loss"])))
                continue
            if row["level"] in ("warning", "error"):
                self._last_error = row["message"]
            self._events.append(event)
        for r in store.rounds():
            view = self._round(r.round)
            view.state, view.model_version, view.detail = r.state, r.model_version, r.detail
            view.started_at, view.ended_at = r.started_at, r.ended_at
        for rowid, ts, data in store.metrics_after(self._last_metric):
            self._last_metric = rowid
            self._series.append((ts, counters(json.loads(data))))
        snapshot = Snapshot(run_name=self._name, folder=str(self.folder), rounds_total=self._rounds_total,
                            rounds=[self._rounds[k] for k in sorted(self._rounds)], samples=list(self._samples),
                            events=list(self._events), losses=list(self._losses), last_error=self._last_error,
                            models=[{key: m[key] for key in m.keys()} for m in store.models()],
                            series=list(self._series))
        metrics = store.latest_metrics()
        if metrics is not None:
            self._apply_metrics(snapshot, metrics)
        budgets = store.time_budgets()  # the run's own record: its teardown too, once it is over
        if budgets:
            snapshot.budget_sessions = budgets
        current = snapshot.current()
        if current is not None:
            snapshot.round = current.round
            if metrics is None or snapshot.state == "starting":
                snapshot.state = "done" if current.state == "done" else current.state
        if snapshot.models:
            serving = [m for m in snapshot.models if m["state"] == "serving"]
            if serving:
                snapshot.model_version = serving[-1]["version"]
        snapshot.updated = time.time()
        return snapshot

    @staticmethod
    def _apply_metrics(snapshot: Snapshot, metrics: dict[str, Any]) -> None:
        snapshot.state = metrics.get("state", snapshot.state)
        snapshot.roles = metrics.get("roles", {})
        snapshot.queues = metrics.get("queues", {})
        snapshot.requests = metrics.get("requests", 0)
        snapshot.retries = metrics.get("retries", 0)
        snapshot.training = metrics.get("training") or {}
        snapshot.endpoints = metrics.get("endpoints", [])
        snapshot.started = metrics.get("started", 0.0)
        snapshot.rounds_total = metrics.get("rounds_total", snapshot.rounds_total)
        budget = metrics.get("budget")
        if isinstance(budget, list):
            snapshot.budget_sessions = [s for s in budget if isinstance(s, dict)]
        server = metrics.get("server") or {}
        if "generation_tokens" in server:
            snapshot.prompt_tokens = server.get("prompt_tokens", 0.0)
            snapshot.completion_tokens = server["generation_tokens"]
            snapshot.tokens_source = "vLLM /metrics"
        else:
            snapshot.prompt_tokens = metrics.get("prompt_tokens", 0)
            snapshot.completion_tokens = metrics.get("completion_tokens", 0)
            snapshot.tokens_source = "runtime"


def counters(metrics: dict[str, Any]) -> dict[str, float]:
    """The cumulative counts a throughput rate is made of, from one metrics snapshot."""
    server = metrics.get("server") or {}
    out = {"generated": float(server.get("generation_tokens", metrics.get("completion_tokens", 0))),
           "prompted": float(server.get("prompt_tokens", metrics.get("prompt_tokens", 0)))}
    for role, stats in (metrics.get("roles") or {}).items():
        out[role] = float(stats.get("done", 0))
    return out


def live_overlay(snapshot: Snapshot, supervisor: Any) -> Snapshot:
    """Replace the store's last metrics snapshot with the running supervisor's own counters."""
    supervisor.refresh()
    stats = supervisor.stats
    RunReader._apply_metrics(snapshot, stats.snapshot())
    snapshot.live = True
    snapshot.read_only = False
    snapshot.series.append((time.time(), counters(stats.snapshot())))
    snapshot.model_version = stats.model_version
    snapshot.round = stats.round or snapshot.round
    if stats.last_error:
        snapshot.last_error = stats.last_error
    return snapshot
