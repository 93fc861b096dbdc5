"""The running account of one round, shared by the roles that decide when the round ends."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .messages import Verdict


def reason_kind(reason: str | None) -> str:
    """``"blacklist:image"`` -> ``"blacklist"``: reasons are grouped by their kind."""
    return (reason or "?").split(":", 1)[0]


@dataclass
class RoundLedger:
    """Counts of one round: what was proposed, what became of it, and how much may still come.

    ``proposed`` counts every instruction recorded (screened out or not), so at the end of a
    round ``proposed == kept + sum(rejected) + sum(failed)``.
    """

    round: int
    quota: int
    cap: int
    proposed: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    next_seq: int = 1
    #: Set by the Trainer when enough pairs were kept; the Proposer then stops.
    quota_met: bool = False
    #: Screened instructions not yet finished, and screened ones finished (kept or not).
    in_pipeline: int = 0
    screened_finished: int = 0
    #: Proposal requests under way, and what finished ones admitted (for the pacing estimate).
    calls_in_flight: int = 0
    calls_done: int = 0
    admitted_total: int = 0
    tasks_per_call: int = 20
    #: In flight at least, whatever the estimate (a slow server batches better with more).
    min_pending: int = 0

    def take(self, wanted: int) -> int:
        """Grant up to ``wanted`` proposals under the cap (the rest are dropped unrecorded)."""
        granted = max(0, min(wanted, self.cap - self.proposed))
        self.proposed += granted
        return granted

    def new_id(self) -> str:
        seq = self.next_seq
        self.next_seq += 1
        return f"r{self.round:02d}-{seq:06d}"

    def next_call(self) -> int:
        self.calls += 1
        return self.calls

    def wants_more(self) -> bool:
        return not self.quota_met and self.proposed < self.cap

    def enough_in_flight(self) -> bool:
        """Would the pairs already in the pipeline likely meet the quota?

        The keep rate is estimated from the round so far, pulled towards 1 by ten pseudo-items
        (the first items to finish are mostly quick rejections, which would make a raw ratio
        far too gloomy): the first proposals stop at ``quota`` items in flight. Proposers wait
        while this holds,
        which bounds the overshoot of a round without starving the pipeline: if the estimate
        was too hopeful, the in-flight items finish, this turns false, and proposing resumes.
        """
        rate = (self.kept + 10) / (self.screened_finished + 10)
        per_call = self.admitted_total / self.calls_done if self.calls_done else self.tasks_per_call
        coming = self.in_pipeline + self.calls_in_flight * per_call
        if coming < self.min_pending:
            return False
        return self.kept + coming * rate >= self.quota

    def admitted(self, count: int) -> None:
        self.in_pipeline += count
        self.admitted_total += count
        self.calls_done += 1

    def record(self, verdict: Verdict) -> None:
        if verdict.stage != "proposer":
            self.in_pipeline -= 1
            self.screened_finished += 1
        if verdict.status == "kept":
            self.kept += 1
        elif verdict.status == "rejected":
            self.rejected[reason_kind(verdict.reason)] += 1
        else:
            self.failed[reason_kind(verdict.reason)] += 1

    @property
    def finished(self) -> int:
        return self.kept + sum(self.rejected.values()) + sum(self.failed.values())

    @property
    def acceptance(self) -> float:
        return self.kept / self.finished if self.finished else 0.0


def seq_of(item_id: str) -> int:
    return int(item_id.rsplit("-", 1)[1])
