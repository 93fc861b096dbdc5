"""RoundAccount: item ids under the proposal cap, the round's end, verdict counters, and the
pacing estimate ``enough_in_flight`` that decides when proposers pause and resume.

Expected values are computed by hand in the comments, never by calling the code under test.
"""

from __future__ import annotations

from collections import Counter

import pytest

from isheep.runtime.core.messages import Verdict
from isheep.runtime.pipeline.account import RoundAccount

_seq = iter(range(1, 10_000))


def verdict(status: str, stage: str, reason: str | None = None) -> Verdict:
    return Verdict(id=f"r01-{next(_seq):06d}", round=1, model_version="base", status=status, stage=stage,
                   reason=reason)


# -- ids ---------------------------------------------------------------------------------------
def test_allocate_numbers_ids_from_one_and_stops_at_the_cap():
    account = RoundAccount(round=1, quota=10, cap=5)
    assert account.allocate(3) == ["r01-000001", "r01-000002", "r01-000003"]
    # Only two ids are left under the cap of five: the call gets fewer than it asked for.
    assert account.allocate(3) == ["r01-000004", "r01-000005"]
    assert account.allocate(1) == []
    assert (account.proposed, account.next_seq) == (5, 6)


def test_allocate_continues_from_next_seq_of_a_resumed_round():
    # A resumed round 12: 95 items recorded before the restart, the next id is 96.
    account = RoundAccount(round=12, quota=50, cap=100, proposed=95, next_seq=96)
    assert account.allocate(10) == [f"r12-{n:06d}" for n in range(96, 101)]
    assert account.proposed == 100 and account.next_seq == 101


@pytest.mark.parametrize("wanted", [0, -4])
def test_allocate_of_nothing_changes_nothing(wanted):
    account = RoundAccount(round=1, quota=10, cap=5)
    assert account.allocate(wanted) == []
    assert (account.proposed, account.next_seq) == (0, 1)


def test_next_call_counts_calls():
    account = RoundAccount(round=1, quota=10, cap=5)
    assert [account.next_call() for _ in range(3)] == [1, 2, 3]


# -- the round's end ---------------------------------------------------------------------------
def test_quota_met_stops_proposing_and_names_the_reason():
    account = RoundAccount(round=1, quota=2, cap=100)
    account.allocate(3)
    assert account.wants_more() and not account.quota_met
    account.record(verdict("kept", "curator"))
    assert account.wants_more() and not account.quota_met
    account.record(verdict("kept", "curator"))
    assert account.quota_met and not account.wants_more()
    assert account.closing_reason() == "quota met (2 kept)"


def test_cap_reached_stops_proposing_before_the_quota():
    account = RoundAccount(round=1, quota=50, cap=4)
    account.allocate(3)
    assert account.wants_more()
    account.allocate(1)
    account.record(verdict("kept", "curator"))
    assert not account.wants_more() and not account.quota_met
    assert account.closing_reason() == "proposal cap reached (4 proposed, 1 kept)"


# -- verdicts ----------------------------------------------------------------------------------
def test_record_counts_by_reason_kind_and_adds_up_to_proposed():
    account = RoundAccount(round=1, quota=100, cap=100)
    account.allocate(8)
    account.admitted(5)  # three of the eight drafts were screened out by the Proposer
    for v in [verdict("rejected", "proposer", "blacklist:image"), verdict("rejected", "proposer", "blacklist:graph"),
              verdict("rejected", "proposer", "rouge:0.82"), verdict("kept", "curator"),
              verdict("kept", "curator"), verdict("rejected", "critic", "low_score:quality"),
              verdict("failed", "responder", "http_500"), verdict("failed", "critic", None)]:
        account.record(v)
    assert account.rejected == Counter({"blacklist": 2, "rouge": 1, "low_score": 1})
    assert account.failed == Counter({"http_500": 1, "?": 1})  # no reason is counted as "?"
    assert account.kept == 2 and account.finished == 8 == account.proposed
    assert account.acceptance == pytest.approx(2 / 8)
    # Only the five screened items went through the pipeline; all of them are done.
    assert (account.in_pipeline, account.screened_finished) == (0, 5)


def test_proposer_verdicts_leave_the_pipeline_counts_alone():
    account = RoundAccount(round=1, quota=10, cap=100)
    account.admitted(4)
    account.record(verdict("rejected", "proposer", "too_short"))
    account.record(verdict("rejected", "proposer", "dup"))
    assert (account.in_pipeline, account.screened_finished) == (4, 0)
    account.record(verdict("rejected", "responder", "empty_response"))
    assert (account.in_pipeline, account.screened_finished) == (3, 1)


def test_lost_item_leaves_the_pipeline_without_a_verdict():
    account = RoundAccount(round=1, quota=10, cap=100)
    account.admitted(3)
    account.lost()
    assert account.in_pipeline == 2
    assert (account.finished, account.screened_finished, account.kept) == (0, 0, 0)


def test_acceptance_is_zero_before_anything_finished():
    assert RoundAccount(round=1, quota=10, cap=100).acceptance == 0.0


# -- the pacing estimate -----------------------------------------------------------------------
def test_first_proposals_stop_at_quota_items_in_flight():
    # Nothing finished: rate = (0+10)/(0+10) = 1, and a call in flight counts tasks_per_call.
    account = RoundAccount(round=1, quota=20, cap=1000, tasks_per_call=20)
    assert not account.enough_in_flight()  # coming = 0
    account.calls_in_flight = 1
    assert account.enough_in_flight()  # 0 + 20 * 1 >= 20
    account.tasks_per_call = 19
    assert not account.enough_in_flight()  # 19 < 20


@pytest.mark.parametrize("in_pipeline, expected", [(40, True), (39, False)])
def test_keep_rate_is_pulled_towards_one_by_ten_pseudo_items(in_pipeline, expected):
    # rate = (5+10)/(30+10) = 0.375; 5 + 40*0.375 = 20 meets the quota exactly, 5 + 39*0.375 = 19.625 does not.
    # A raw ratio (5/30) would ask for 90 in flight.
    account = RoundAccount(round=1, quota=20, cap=1000, kept=5, screened_finished=30, in_pipeline=in_pipeline)
    assert account.enough_in_flight() is expected


@pytest.mark.parametrize("quota, expected", [(15, True), (16, False)])
def test_calls_in_flight_count_what_finished_calls_admitted(quota, expected):
    # per_call = 30/4 = 7.5 (tasks_per_call=100 no longer matters); coming = 0 + 2*7.5 = 15, rate 1.
    account = RoundAccount(round=1, quota=quota, cap=1000, tasks_per_call=100, calls_done=4, admitted_total=30,
                           calls_in_flight=2)
    assert account.enough_in_flight() is expected


def test_calls_that_admitted_nothing_make_calls_in_flight_worth_nothing():
    # per_call = 0/3 = 0: only the 9 in the pipeline count, and 9 < 10.
    account = RoundAccount(round=1, quota=10, cap=1000, calls_done=3, admitted_total=0, calls_in_flight=5,
                           in_pipeline=9)
    assert not account.enough_in_flight()
    account.in_pipeline = 10
    assert account.enough_in_flight()


@pytest.mark.parametrize("min_pending, expected", [(0, True), (10, True), (11, False), (30, False)])
def test_min_pending_keeps_proposing_whatever_the_estimate(min_pending, expected):
    # coming = 10 would meet a quota of 5 (rate 1), but not a floor above 10.
    account = RoundAccount(round=1, quota=5, cap=1000, in_pipeline=10, min_pending=min_pending)
    assert account.enough_in_flight() is expected


def test_floor_counts_calls_in_flight_too():
    # coming = 4 + 1*20 = 24 >= 24: the floor is met by the call under way.
    account = RoundAccount(round=1, quota=5, cap=1000, in_pipeline=4, calls_in_flight=1, min_pending=24)
    assert account.enough_in_flight()
    account.min_pending = 25
    assert not account.enough_in_flight()


# A recorded round (quota 6, five tasks asked per call), replayed through the same calls the
# pipeline makes; after each step, whether proposers would pause (True) or go on (False).
# Hand computation: rate = (kept+10)/(screened_finished+10), per_call = admitted_total/calls_done.
TRACE = [
    ("start", None, False),                        # cif 1: coming 5 (tasks_per_call), 5 < 6
    ("start", None, True),                         # cif 2: coming 10
    ("finish", 4, True),                           # cif 1, pipe 4, per_call 4: coming 8
    ("proposer", "rouge:0.91", True),              # screened out by the Proposer: no change
    ("finish", 3, True),                           # cif 0, pipe 7, per_call 3.5: coming 7
    ("responder", "empty_response", False),        # pipe 6, rate 10/11: 6*10/11 = 5.45 < 6, resume
    ("start", None, True),                         # cif 1: coming 6+3.5 = 9.5, 9.5*10/11 = 8.64
    ("kept", None, True),                          # kept 1, pipe 5, rate 11/12: 1 + 8.5*11/12 = 8.79
    ("critic", "low_score:quality", True),         # pipe 4, rate 11/13: 1 + 7.5*11/13 = 7.35
    ("critic", "low_score:following", True),       # pipe 3, rate 11/14: 1 + 6.5*11/14 = 6.11
    ("critic", "low_score:quality", False),        # pipe 2, rate 11/15: 1 + 5.5*11/15 = 5.03, resume
    ("lost", None, False),                         # pipe 1: 1 + 4.5*11/15 = 4.3
    ("finish", 5, False),                          # cif 0, pipe 6, per_call 12/3 = 4: 1 + 6*11/15 = 5.4
    ("kept", None, False),                         # kept 2, pipe 5, rate 12/16: 2 + 5*0.75 = 5.75
    ("start", None, True),                         # cif 1: coming 5+4 = 9, 2 + 9*0.75 = 8.75
]


def test_replayed_round_pauses_and_resumes_proposing():
    account = RoundAccount(round=1, quota=6, cap=100, tasks_per_call=5)
    observed = []
    for event, arg, _ in TRACE:
        if event == "start":
            account.calls_in_flight += 1
        elif event == "finish":
            account.calls_in_flight -= 1
            account.admitted(arg)
        elif event == "lost":
            account.lost()
        elif event == "kept":
            account.record(verdict("kept", "curator"))
        else:
            account.record(verdict("rejected", event, arg))
        observed.append(account.enough_in_flight())
    assert observed == [expected for _, _, expected in TRACE]
    assert (account.kept, account.in_pipeline, account.screened_finished) == (2, 5, 6)
    assert account.rejected == Counter({"low_score": 3, "rouge": 1, "empty_response": 1})


# -- pacing by the servers' limits ---------------------------------------------------------------
def test_a_previous_rounds_keep_rate_is_the_prior():
    # 0 kept of 0 finished, 10 in the pipeline, quota 5. Prior 1: 10 x 1 = 10 >= 5, enough.
    # Prior 0.2 (the previous round kept 1 in 5): 10 x (0 + 10 x 0.2) / (0 + 10) = 2 < 5, not enough.
    assert RoundAccount(round=2, quota=5, cap=1000, in_pipeline=10).enough_in_flight()
    assert not RoundAccount(round=2, quota=5, cap=1000, in_pipeline=10, prior_rate=0.2).enough_in_flight()


def test_far_from_the_quota_proposers_keep_twice_the_servers_limit_queued_or_coming():
    # Quota far away. 20 queued + 1 call in flight worth 20 (none finished yet) = 40 against a target
    # of 2 x 16 = 32: wait. With 5 queued: 25 < 32, propose.
    account = RoundAccount(round=1, quota=10_000, cap=100_000, in_pipeline=30, calls_in_flight=1)
    assert account.should_wait(queued=20, target=32, room=True)
    assert not account.should_wait(queued=5, target=32, room=False)


def test_an_empty_queue_and_a_server_with_room_get_another_call_whatever_is_coming():
    # Three calls in flight promise 60 > 32, but nothing is queued and the server has room: the
    # instructions come only when a call is written whole, so the idle server gets one more call.
    account = RoundAccount(round=1, quota=10_000, cap=100_000, in_pipeline=4, calls_in_flight=3)
    assert not account.should_wait(queued=0, target=32, room=True)
    assert account.should_wait(queued=0, target=32, room=False)  # a full server: wait for the calls
    assert account.should_wait(queued=1, target=32, room=True)   # something to answer: wait


def test_the_rounds_tail_wins_over_an_idle_server():
    # Quota 5, 10 in the pipeline at the prior 1: expected to meet it. An idle server gets no call.
    account = RoundAccount(round=1, quota=5, cap=1000, in_pipeline=10)
    assert account.should_wait(queued=0, target=64, room=True)


def test_calls_under_way_that_would_fill_the_cap_hold_the_next_one():
    # Cap 48, 24 proposed; calls so far took 24/3 = 8 ids each. Two calls in flight: 24 + 16 = 40 < 48,
    # a third may go; three: 24 + 24 = 48, it would only bring drafts that are dropped unrecorded.
    account = RoundAccount(round=1, quota=100, cap=48, proposed=24, drafted=24, calls_done=3, calls_in_flight=2,
                           min_pending=1000)
    assert not account.enough_in_flight()
    account.calls_in_flight = 3
    assert account.enough_in_flight()  # whatever min_pending says: the cap is the round's end
    # The three brought 3 ids between them (27/6 = 4.5 a call now): 27 + 4.5 < 48, room for another call.
    account.calls_in_flight, account.calls_done, account.drafted, account.proposed = 1, 6, 27, 27
    assert not account.enough_in_flight()


def test_before_any_call_finished_a_call_is_expected_to_take_tasks_per_call_ids():
    account = RoundAccount(round=1, quota=100, cap=40, tasks_per_call=20, calls_in_flight=1)
    assert not account.enough_in_flight()  # 0 + 20 < 40
    account.calls_in_flight = 2
    assert account.enough_in_flight()  # 0 + 40 >= 40
    account.allocate(5)
    assert account.drafted == 5 and account.proposed == 5
