"""The running account of one round: what was proposed, what became of it, how much may still come.

One :class:`RoundAccount` per round, owned by the round's pipeline (:mod:`.stages`): it alone
allocates item ids (roles ask through their :class:`~isheep.runtime.core.roles.RoundContext`),
records every verdict, and says when the round has enough. The displays only read it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from isheep.runtime.core.messages import Verdict, acceptance, item_id, reason_kind


@dataclass
class RoundAccount:
    """Counts of one round and the pacing of its proposals.

    ``proposed`` counts every instruction recorded (screened out or not), so at the end of a
    round ``proposed == kept + sum(rejected) + sum(failed)``. The round has enough when
    ``quota`` pairs are kept (``close_on = "kept"``), or when ``quota`` instructions passed the
    filters (``"instructions"``, I-SHEEP's authors: all of them are then answered and judged).

    Its tail: ``closed_at`` is when proposing ended for good (the quota met or the cap reached,
    on ``clock``), ``on_close`` is told of that moment once, and ``past_quota`` counts the answers
    generated that the round did not need (:meth:`answered`).
    """

    round: int
    quota: int
    cap: int
    close_on: str = "kept"
    proposed: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    next_seq: int = 1
    #: Screened instructions not yet finished, and screened ones finished (kept or not).
    in_pipeline: int = 0
    screened_finished: int = 0
    #: Proposal requests under way, and what finished ones admitted (for the pacing estimate).
    calls_in_flight: int = 0
    calls_done: int = 0
    admitted_total: int = 0
    #: Ids the calls of this process were granted (drafts screened out or not), for the cap's estimate.
    drafted: int = 0
    tasks_per_call: int = 20
    #: In flight at least, whatever the estimate (a slow server batches better with more).
    min_pending: int = 0
    #: The keep rate expected before this round's own verdicts (the previous round's; 1 at first).
    prior_rate: float = 1.0
    #: When proposing ended (``clock``'s time), None while it goes on; told once to ``on_close``.
    closed_at: float | None = None
    #: Answers the Responder finished, and those of them past the quota (see :meth:`answered`).
    answers: int = 0
    past_quota: int = 0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    on_close: Callable[[], None] | None = field(default=None, repr=False)

    # -- ids and calls -----------------------------------------------------------------------
    def allocate(self, wanted: int) -> list[str]:
        """Ids for up to ``wanted`` new items under the proposal cap (the rest go unrecorded)."""
        granted = max(0, min(wanted, self.cap - self.proposed))
        self.proposed += granted
        self.drafted += granted
        first = self.next_seq
        self.next_seq += granted
        self.note_close()
        return [item_id(self.round, seq) for seq in range(first, first + granted)]

    def next_call(self) -> int:
        """The sequence number of a new proposal call (it seeds the call's example draw)."""
        self.calls += 1
        return self.calls

    # -- the round's end ---------------------------------------------------------------------
    @property
    def screened(self) -> int:
        """Instructions that passed the filters: in the pipeline, or finished after it."""
        return self.in_pipeline + self.screened_finished

    @property
    def quota_met(self) -> bool:
        return (self.screened if self.close_on == "instructions" else self.kept) >= self.quota

    def wants_more(self) -> bool:
        """Should proposing go on? Not once the quota is met (in-flight items still finish) or the cap reached."""
        return not self.quota_met and self.proposed < self.cap

    def enough_in_flight(self) -> bool:
        """Would the pairs already in the pipeline likely meet the quota, or the calls under way
        fill the proposal cap? (The round's tail.)

        The cap first: drafts past it are dropped unrecorded, so a call that would only bring
        some is not sent while the calls in flight are expected (at the drafts a call has brought
        so far, ``tasks_per_call`` before any) to reach it; if they bring fewer, proposing resumes.

        The keep rate is estimated from the round so far, pulled towards ``prior_rate`` (the
        previous round's, 1 for a first round) by ten pseudo-items (the first items to finish
        are mostly quick rejections, which would make a raw ratio far too gloomy). Proposers wait
        while this holds, which bounds the overshoot of a round without starving the pipeline:
        if the estimate was too hopeful, the in-flight items finish, this turns false, and
        proposing resumes. Closing on instructions, the calls in flight are expected to bring
        their share of screened instructions, whatever becomes of them later. Below
        ``min_pending`` in flight the quota's estimate never holds.
        """
        if self.proposed + self.calls_in_flight * self.drafts_per_call >= self.cap:
            return True
        per_call = self.per_call
        if self.close_on == "instructions":
            return self.screened + self.calls_in_flight * per_call >= self.quota
        rate = (self.kept + 10 * self.prior_rate) / (self.screened_finished + 10)
        coming = self.in_pipeline + self.calls_in_flight * per_call
        if coming < self.min_pending:
            return False
        return self.kept + coming * rate >= self.quota

    @property
    def per_call(self) -> float:
        """Instructions a proposal call admits, on average so far (the call's asking before any finished)."""
        return self.admitted_total / self.calls_done if self.calls_done else self.tasks_per_call

    @property
    def drafts_per_call(self) -> float:
        """Ids a proposal call takes, on average so far (the call's asking before any finished)."""
        return self.drafted / self.calls_done if self.calls_done else self.tasks_per_call

    def should_wait(self, queued: int, target: int, room: bool) -> bool:
        """Should a Proposer wait for progress rather than send another call now?

        Args:
            queued: Instructions waiting for a Responder now.
            target: Instructions worth having queued or coming (the servers' limits on requests
                in flight, twice over: enough to keep them full while the next calls are written).
            room: The servers could take another request now.

        It waits in the round's tail (:meth:`enough_in_flight`), and when the queue and the calls
        in flight already promise ``target``, unless the Responders' queue is empty and the servers
        have room: a call's instructions arrive only when the whole call is written, so an idle
        server is given another call meanwhile. ``workers`` caps the calls all the same.
        """
        if self.enough_in_flight():
            return True
        if queued + self.calls_in_flight * self.per_call < target:
            return False
        return not (room and queued == 0)

    def closing_reason(self) -> str:
        """Why the round's generation ended, for the rounds table."""
        if self.quota_met and self.close_on == "instructions":
            return f"{self.screened} instructions passed the filters ({self.kept} kept)"
        if self.quota_met:
            return f"quota met ({self.kept} kept)"
        return f"proposal cap reached ({self.proposed} proposed, {self.kept} kept)"

    def note_close(self) -> None:
        """Record the moment proposing ended (the quota met or the cap reached), the first time it has.

        The counts that can end it call this as they change (ids allocated, drafts admitted,
        verdicts); the pipeline asks once more when it starts, for a resumed round that had
        met its quota before it was stopped.
        """
        if self.closed_at is None and not self.wants_more():
            self.closed_at = self.clock()
            if self.on_close is not None:
                self.on_close()

    def answered(self) -> None:
        """The Responder finished an item with an answer (handed on, or refused by the Responder
        itself, say as truncated: either way the server generated it; a failed request is not one).

        It is past the quota when the round no longer needed it: closing on kept pairs, when the
        quota was already met as it finished; closing on instructions (every one is answered),
        when ``quota`` answers had already finished. Counted as they finish in this process: a
        resumed round counts its answers from the store, not which of them were past the quota.
        """
        self.answers += 1
        if (self.answers > self.quota) if self.close_on == "instructions" else self.quota_met:
            self.past_quota += 1

    # -- what happened to items --------------------------------------------------------------
    def admitted(self, count: int) -> None:
        """A proposal call finished and ``count`` of its drafts went on to the Responder."""
        self.in_pipeline += count
        self.admitted_total += count
        self.calls_done += 1
        self.note_close()

    def record(self, verdict: Verdict) -> None:
        """An item reached its final state."""
        if verdict.stage != "proposer":
            self.in_pipeline -= 1
            self.screened_finished += 1
        if verdict.status == "kept":
            self.kept += 1
        elif verdict.status == "rejected":
            self.rejected[reason_kind(verdict.reason)] += 1
        else:
            self.failed[reason_kind(verdict.reason)] += 1
        self.note_close()

    def lost(self) -> None:
        """A screened item left the pipeline without a verdict of this process (the store refused it)."""
        self.in_pipeline -= 1

    @property
    def finished(self) -> int:
        return self.kept + sum(self.rejected.values()) + sum(self.failed.values())

    @property
    def acceptance(self) -> float:
        return acceptance(self.kept, self.finished)
