"""The monitor's incremental reader, ``isheep.tui.source.RunReader``, against a real run store.

A run is written in stages through the store API (as the pipeline would) and polled between
them: per-round counts, reasons (``state:reason_kind``), score histograms, finished count and
acceptance; an item that moves is counted once; rows sharing the boundary timestamp are
neither lost nor counted twice; samples are finished screened items only; ``train_step`` events
become losses; and polling a finished run leaves its database bytes as they were.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from support.runs import make_finished_run

from isheep.runtime.core.messages import Assessment, Instruction, Response, RoundEvent, Score, Verdict, reason_kind
from isheep.runtime.store import DB_NAME, RunStore, op_for
from isheep.tui.source import RunReader

T0 = 1_800_000_000.0


def inst(k: int, n: int, t: float) -> Instruction:
    return Instruction(id=f"r{k:02d}-{n:06d}", round=k, model_version=f"v{k - 1}", created_at=t,
                       instruction=f"Explain item {n} of round {k} briefly.")


def answered(i: Instruction, q: int, f: int, t: float) -> list:
    """The ops that take a proposed item to 'assessed' with scores q and f."""
    resp = Response(id=i.id, round=i.round, model_version=i.model_version, instruction=i, text=f"Answer {i.id}.",
                    created_at=t)
    judged = Assessment(id=i.id, round=i.round, model_version=i.model_version, response=resp, created_at=t + 0.1,
                        quality=Score(value=q, raw=f"{q}||ok"), following=Score(value=f, raw=f"{f}||ok"))
    return op_for(resp) + op_for(judged)


def verdict(item_id: str, status: str, stage: str, reason: str | None, t: float, **extra) -> list:
    return op_for(Verdict(id=item_id, round=int(item_id[1:3]), model_version="v0", status=status, stage=stage,
                          reason=reason, created_at=t, **extra))


def round_event(k: int, t: float) -> list:
    return op_for(RoundEvent(id=f"round-{k}", round=k, model_version=f"v{k - 1}", state="generating", created_at=t))


@pytest.fixture
def store(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_name": "watched", "config": {"rounds": 3}})
    yield store
    store.close_sync()


@pytest.fixture
def reader(store):
    # Opened after the store exists, as the monitor attaches to a run that is being written.
    reader = RunReader(store.folder)
    yield reader
    reader.close()


def no_negative(view) -> None:
    # A state decremented without having been counted would show as a negative count.
    for counter in (view.counts, view.reasons, view.quality, view.following):
        assert min(counter.values(), default=0) >= 0, counter


def test_counts_follow_items_from_state_to_state(store, reader):
    ops = round_event(1, T0)
    items = [inst(1, n, T0 + n) for n in range(1, 7)]
    for i in items:
        ops += op_for(i)
    ops += verdict("r01-000007", "rejected", "proposer", "blacklist:image", T0 + 7, instruction="Draw a map now.")
    store.write_sync(ops)
    snap = reader.poll()
    (view,) = snap.rounds
    assert (snap.run_name, snap.round, snap.state, snap.rounds_total) == ("watched", 1, "generating", 3)
    assert view.counts == Counter(proposed=6, rejected=1)
    assert view.reasons == Counter({"rejected:blacklist": 1})
    assert (view.proposed, view.finished, view.acceptance) == (7, 1, 0.0)
    assert snap.samples == []  # screened out by the proposer: never a sample

    store.write_sync(answered(items[0], 9, 10, T0 + 10) + verdict(items[0].id, "kept", "curator", None, T0 + 11)
                     + answered(items[1], 5, 9, T0 + 12)
                     + verdict(items[1].id, "rejected", "curator", "low_quality:5", T0 + 13)
                     + verdict(items[2].id, "failed", "responder", "http_500", T0 + 14)
                     + answered(items[3], 9, 9, T0 + 15)
                     + round_event(2, T0 + 20) + op_for(inst(2, 1, T0 + 21)))
    snap = reader.poll()
    first, second = snap.rounds
    assert first.counts == Counter(proposed=2, assessed=1, kept=1, rejected=2, failed=1)
    assert first.reasons == Counter({"rejected:blacklist": 1, "rejected:low_quality": 1, "failed:http_500": 1})
    assert first.quality == Counter({9: 2, 5: 1}) and first.following == Counter({10: 1, 9: 2})
    assert (first.proposed, first.finished, first.acceptance) == (7, 4, 0.25)
    assert second.counts == Counter(proposed=1) and snap.round == 2
    no_negative(first)
    assert {s["id"] for s in snap.samples} == {"r01-000001", "r01-000002", "r01-000003"}
    kept = next(s for s in snap.samples if s["id"] == "r01-000001")
    assert (kept["response"], kept["quality_raw"]) == ("Answer r01-000001.", "9||ok")  # whole rows

    # The assessed item is kept: it leaves 'assessed', and its scores are still counted once.
    store.write_sync(verdict(items[3].id, "kept", "curator", None, T0 + 30))
    snap = reader.poll()
    first = snap.rounds[0]
    assert first.counts == Counter(proposed=2, kept=2, rejected=2, failed=1)
    assert first.quality == Counter({9: 2, 5: 1}) and first.following == Counter({10: 1, 9: 2})
    assert first.acceptance == pytest.approx(2 / 5)
    no_negative(first)
    assert [s["id"] for s in snap.samples].count("r01-000004") == 1
    assert len(snap.samples) == 4


def test_rows_on_the_boundary_timestamp_are_counted_once(store, reader):
    t = T0 + 5
    store.write_sync(op_for(inst(1, 1, t)) + op_for(inst(1, 2, t)))
    assert reader.poll().rounds[0].counts == Counter(proposed=2)
    # Written after the poll with the very timestamp the reader stopped at: not lost...
    store.write_sync(op_for(inst(1, 3, t)) + op_for(inst(1, 4, t)))
    assert reader.poll().rounds[0].counts == Counter(proposed=4)
    # ...and not counted again by the next poll, which reads from that timestamp on.
    assert reader.poll().rounds[0].counts == Counter(proposed=4)
    # Two transitions sharing a later timestamp, written on either side of a poll.
    store.write_sync(verdict("r01-000001", "failed", "responder", "timeout", t + 1))
    assert reader.poll().rounds[0].counts == Counter(proposed=3, failed=1)
    store.write_sync(verdict("r01-000002", "failed", "critic", "timeout", t + 1) + op_for(inst(1, 5, t + 1)))
    view = reader.poll().rounds[0]
    assert view.counts == Counter(proposed=3, failed=2)
    assert view.reasons == Counter({"failed:timeout": 2})
    no_negative(view)
    assert view.counts == Counter(store.counts(1))


def test_train_steps_become_losses_not_log_lines(store, reader):
    store.write_sync(round_event(1, T0))
    store.event("train_step", "step 1: loss 2.0000", round=1, data={"step": 1, "max_steps": 3, "loss": 2.0})
    store.event("train_step", "loading the model", round=1, data={"phase": "loading"})  # no loss: nothing drawn
    store.event("retry", "127.0.0.1:9/v1: http_500 (attempt 1)", level="warning", round=1)
    store.event("train_step", "step 2: loss 1.5000", round=1, data={"step": 2, "max_steps": 3, "loss": 1.5})
    snap = reader.poll()
    assert snap.losses == [(1, 1, 2.0), (1, 2, 1.5)]
    assert [e["kind"] for e in snap.events] == ["round", "retry"]
    assert snap.last_error == "127.0.0.1:9/v1: http_500 (attempt 1)"
    store.event("train_step", "step 3: loss 1.2500", round=1, data={"step": 3, "max_steps": 3, "loss": 1.25})
    snap = reader.poll()
    # Only the new event is read: nothing appended twice.
    assert snap.losses == [(1, 1, 2.0), (1, 2, 1.5), (1, 3, 1.25)]
    assert [e["kind"] for e in snap.events] == ["round", "retry"]


def test_polling_a_finished_run_matches_the_store_and_writes_nothing(tmp_path):
    folder = make_finished_run(tmp_path / "run", rounds=2, items=30)
    db = folder / DB_NAME
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    reader = RunReader(folder)
    try:
        for _ in range(3):
            snap = reader.poll()
    finally:
        reader.close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert reader.store.readonly

    store = RunStore.open(folder, readonly=True)
    try:
        assert [v.round for v in snap.rounds] == [1, 2] and snap.state == "done"
        for view in snap.rounds:
            assert view.counts == Counter(store.counts(view.round))
            reasons = Counter()
            for (state, reason), n in store.reasons(view.round).items():
                reasons[f"{state}:{reason_kind(reason)}"] += n
            assert view.reasons == reasons
            assert view.state == "done"
        # Samples: every item that passed screening and finished, none of the screened-out ones.
        finished = {r["id"] for r in store.items() if r["stage"] not in (None, "proposer")}
        assert {s["id"] for s in snap.samples} == finished
        assert len(snap.samples) == len(finished)
        assert len(snap.losses) == 16 and not any(e["kind"] == "train_step" for e in snap.events)
        assert snap.model_version == "v1"  # v2's swap was rolled back
    finally:
        store.close_sync()
