"""Live counters of a run, updated by the pipeline and read by the displays and the metrics table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from isheep.runtime.core.messages import acceptance
from isheep.runtime.core.roles import ROLE_NAMES

from .account import RoundAccount
from .budget import TimeBudget


@dataclass
class RoleStats:
    """One role's pipeline row: workers busy/total, messages done, items failed, latency."""

    name: str
    workers: int = 0
    busy: int = 0
    done: int = 0
    failed: int = 0
    latency_total: float = 0.0

    @property
    def mean_latency(self) -> float:
        return self.latency_total / self.done if self.done else 0.0


@dataclass
class RoundSummary:
    """What one finished round produced, for the summary table.

    ``generation_s`` is the whole of the round's generation, its tail included: ``tail_s`` of
    it went by after proposing ended (the quota met or the cap reached), while the items in
    flight finished; ``past_quota`` answers were generated that the round did not need (see
    :meth:`~.account.RoundAccount.answered`). ``saturated_share``: of the generation before the
    tail, the share the server had requests waiting (None: unknown, no metrics).
    """

    round: int
    model_version: str
    proposed: int
    kept: int
    rejected: dict[str, int]
    failed: dict[str, int]
    generation_s: float
    prompt_tokens: int
    completion_tokens: int
    state: str = "done"
    training_s: float = 0.0
    swap_s: float = 0.0
    checkpoint: str | None = None
    tail_s: float = 0.0
    past_quota: int = 0
    saturated_share: float | None = None

    @property
    def acceptance(self) -> float:
        return acceptance(self.kept, self.kept + sum(self.rejected.values()) + sum(self.failed.values()))


@dataclass
class RunStats:
    """Everything a display shows about a run in progress."""

    run_name: str
    folder: str
    endpoints: list[str]
    rounds_total: int
    started: float = field(default_factory=time.time)
    state: str = "starting"
    round: int = 0
    model_version: str = "v0"
    roles: dict[str, RoleStats] = field(default_factory=lambda: {n: RoleStats(n) for n in ROLE_NAMES})
    queue_depth: dict[str, int] = field(default_factory=dict)
    #: The account of the round being generated (read only: the round's pipeline owns it).
    account: RoundAccount | None = None
    finished_rounds: list[RoundSummary] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    retries: int = 0
    last_error: str = ""
    #: The training job's latest progress: round, examples, phase, step, max_steps, loss, tokens_per_s.
    training: dict[str, Any] = field(default_factory=dict)
    #: The serving engine's own counters (vLLM's /metrics), when it exposes them.
    server: dict[str, float] = field(default_factory=dict)
    state_before_pause: str = ""
    #: Where this session's wall time went (the run's, the rounds' and the updater's phases).
    budget: TimeBudget = field(default_factory=TimeBudget)
    #: The time budgets of the run's earlier sessions (a resumed run), as stored.
    budget_before: list[dict[str, Any]] = field(default_factory=list)

    def budget_sessions(self) -> list[dict[str, Any]]:
        """Every session's time budget, this one's (as of now) last: what the store keeps."""
        return [*self.budget_before, self.budget.to_dict()]

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the metrics table (the monitor reads it back)."""
        account = self.account
        return {
            "state": self.state,
            "round": self.round,
            "model_version": self.model_version,
            "roles": {n: {"workers": r.workers, "busy": r.busy, "done": r.done, "failed": r.failed,
                          "mean_latency": round(r.mean_latency, 4)} for n, r in self.roles.items()},
            "queues": dict(self.queue_depth),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
            "retries": self.retries,
            "training": dict(self.training),
            "server": dict(self.server),
            "endpoints": list(self.endpoints),
            "rounds_total": self.rounds_total,
            "started": self.started,
            "budget": self.budget_sessions(),
            "round_counts": None if account is None else {
                "proposed": account.proposed, "kept": account.kept, "quota": account.quota, "cap": account.cap,
                "rejected": dict(account.rejected), "failed": dict(account.failed)},
        }
