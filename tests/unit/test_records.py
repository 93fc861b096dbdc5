"""The run store's records: messages written through ``op_for`` and read back as messages.

Covers the item round trip (proposed / responded / assessed rows rebuilt by
``message_from_row``), the final state each stage's verdict leaves, guarded transitions refused
when replayed, round and model events (rounds table, lineage), ``checkpoint_from_row``, and the
named queries the pipeline resumes and trains from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isheep.runtime.core.messages import (Assessment, Instruction, ModelEvent, Response, RoundEvent, Score,
                                          Verdict)
from isheep.runtime.store import (RunStore, StoreIntegrityError, checkpoint_from_row, message_from_row,
                                  model_row_op, op_for)
from isheep.runtime.core.messages import item_id, item_seq

T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_name": "records", "config": {"rounds": 2}})
    yield store
    store.close_sync()


def instruction(n: int, round: int = 1, text: str | None = None, input: str = "") -> Instruction:
    return Instruction(id=f"r{round:02d}-{n:06d}", round=round, model_version=f"v{round - 1}", created_at=T0 + n,
                       instruction=text or f"Describe item {n} of round {round}.", input=input)


def response(inst: Instruction, text: str = "An answer.", finish_reason: str | None = "stop") -> Response:
    return Response(id=inst.id, round=inst.round, model_version="resp-v", instruction=inst, text=text,
                    finish_reason=finish_reason, prompt_tokens=11, completion_tokens=7, created_at=inst.created_at + 1)


def assessment(resp: Response, q: int | None = 9, f: int | None = 10) -> Assessment:
    return Assessment(id=resp.id, round=resp.round, model_version="crit-v", response=resp,
                      created_at=resp.created_at + 1,
                      quality=Score(value=q, explanation=f"quality {q}", raw=f"{q}||quality {q}"),
                      following=Score(value=f, explanation=f"following {f}", raw=f"{f}||following {f}"))


def verdict(item_id: str, status: str, stage: str, reason: str | None = None, **extra) -> Verdict:
    return Verdict(id=item_id, round=int(item_id[1:3]), model_version="v0", status=status, stage=stage,
                   reason=reason, created_at=T0 + 100, **extra)


def row(store: RunStore, item_id: str):
    (found,) = store.items_by_id([item_id])
    return found


def test_an_item_id_and_its_seq_round_trip():
    assert item_seq("r02-000017") == 17 and item_id(2, 17) == "r02-000017"
    assert item_seq("r10-123456") == 123456 and item_id(10, 123456) == "r10-123456"


def test_pending_items_are_rebuilt_as_the_message_their_next_role_expects(store):
    proposed = instruction(1, input="with an input")
    inst2, inst3 = instruction(2), instruction(3)
    responded = response(inst2, text="Two sentences.\nOn two lines.", finish_reason="length")
    assessed = assessment(response(inst3), q=3, f=None)
    for ops in (op_for(proposed), op_for(inst2), op_for(inst3), op_for(responded), op_for(assessed.response),
                op_for(assessed)):
        store.write_sync(ops)
    rows = list(store.pending(1))
    assert [(r["id"], r["state"], r["seq"]) for r in rows] == [
        (proposed.id, "proposed", 1), (inst2.id, "responded", 2), (inst3.id, "assessed", 3)]
    # Tokens are summed into the row, the one place they are counted.
    assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"]) == (11, 7)

    got = [message_from_row(r) for r in rows]
    assert got[0] == proposed  # an instruction keeps everything, its timestamp included
    assert isinstance(got[1], Response) and not isinstance(got[1], Assessment)
    assert got[1].instruction == inst2
    assert (got[1].id, got[1].round, got[1].model_version, got[1].text, got[1].finish_reason) == (
        responded.id, 1, "resp-v", "Two sentences.\nOn two lines.", "length")
    assert isinstance(got[2], Assessment)
    assert (got[2].id, got[2].round, got[2].model_version) == (assessed.id, 1, "crit-v")
    assert got[2].quality == assessed.quality and got[2].following == assessed.following
    assert got[2].following.value is None and got[2].following.raw == "None||following None"
    assert got[2].response.instruction == inst3
    assert (got[2].response.text, got[2].response.finish_reason, got[2].response.model_version) == (
        "An answer.", "stop", "resp-v")


def test_explicit_seq_overrides_the_id_number(store):
    store.write_sync(op_for(instruction(5), 42))
    assert row(store, "r01-000005")["seq"] == 42


def test_each_stage_verdict_leaves_its_final_state(store):
    insts = [instruction(n) for n in range(1, 6)]
    for inst in insts[1:]:
        store.write_sync(op_for(inst))
    # Proposer: screened out, the row is inserted by the verdict itself (first and last row).
    store.write_sync(op_for(verdict("r01-000001", "rejected", "proposer", "blacklist:image",
                                    instruction=insts[0].instruction, input="in"), 9))
    # Responder: the answer it rejected is kept for audit.
    rejected = response(insts[1], text="cut off mid", finish_reason="length")
    store.write_sync(op_for(verdict(insts[1].id, "rejected", "responder", "truncated", response=rejected)))
    # Critic: the replies it could not use stay on the row.
    resp3 = response(insts[2])
    store.write_sync(op_for(resp3))
    store.write_sync(op_for(verdict(insts[2].id, "failed", "critic", "critic_unparseable",
                                    assessment=assessment(resp3, q=None, f=None))))
    # Curator: kept after assessment; and a failure with no payload at all.
    resp4 = response(insts[3])
    store.write_sync(op_for(resp4) + op_for(assessment(resp4)))
    store.write_sync(op_for(verdict(insts[3].id, "kept", "curator")))
    store.write_sync(op_for(verdict(insts[4].id, "failed", "responder", "http_500")))

    screened = row(store, "r01-000001")
    assert (screened["state"], screened["stage"], screened["reason"], screened["seq"]) == (
        "rejected", "proposer", "blacklist:image", 9)
    assert (screened["instruction"], screened["input"], screened["proposer_version"]) == (
        insts[0].instruction, "in", "v0")
    assert screened["created_at"] == screened["updated_at"] == T0 + 100
    resp_row = row(store, insts[1].id)
    assert (resp_row["state"], resp_row["stage"], resp_row["reason"]) == ("rejected", "responder", "truncated")
    assert (resp_row["response"], resp_row["finish_reason"], resp_row["prompt_tokens"]) == ("cut off mid", "length", 11)
    crit_row = row(store, insts[2].id)
    assert (crit_row["state"], crit_row["stage"], crit_row["reason"]) == ("failed", "critic", "critic_unparseable")
    assert (crit_row["quality_raw"], crit_row["following_raw"], crit_row["critic_version"]) == (
        "None||quality None", "None||following None", "crit-v")
    kept = row(store, insts[3].id)
    assert (kept["state"], kept["stage"], kept["reason"], kept["quality"], kept["following"]) == (
        "kept", "curator", None, 9, 10)
    assert kept["updated_at"] == T0 + 100
    failed = row(store, insts[4].id)
    assert (failed["state"], failed["stage"], failed["reason"], failed["response"]) == (
        "failed", "responder", "http_500", None)
    assert list(store.pending(1)) == []
    assert store.counts(1) == {"rejected": 2, "failed": 2, "kept": 1}
    assert store.reasons(1) == {("rejected", "blacklist:image"): 1, ("rejected", "truncated"): 1,
                                ("failed", "critic_unparseable"): 1, ("failed", "http_500"): 1}


@pytest.mark.parametrize("replay", ["response", "assessment", "verdict"])
async def test_a_guarded_transition_applied_twice_is_refused(store, replay):
    inst = instruction(1)
    resp = response(inst)
    judged = assessment(resp)
    store.write_sync(op_for(inst) + op_for(resp) + op_for(judged))
    final = verdict(inst.id, "kept", "curator")
    store.write_sync(op_for(final))
    message = {"response": resp, "assessment": judged, "verdict": final}[replay]
    await store.start()
    try:
        with pytest.raises(StoreIntegrityError, match=inst.id):
            await store.write(op_for(message))
    finally:
        await store.aclose()
    reopened = RunStore.open(store.folder, readonly=True)
    assert row(reopened, inst.id)["state"] == "kept"  # the replay changed nothing
    reopened.close_sync()


def test_round_events_fill_the_rounds_table_and_the_event_log(store):
    store.write_sync(op_for(RoundEvent(id="round-1", round=1, model_version="v0", state="generating",
                                       detail="on model v0", created_at=T0)))
    store.write_sync(op_for(RoundEvent(id="round-1", round=1, model_version="v0", state="training",
                                       detail="5 pairs", created_at=T0 + 10)))
    (training,) = store.rounds()
    # An update keeps the round's start and leaves it open.
    assert (training.state, training.started_at, training.ended_at, training.detail) == (
        "training", T0, None, "5 pairs")
    store.write_sync(op_for(RoundEvent(id="round-1", round=1, model_version="v0", state="done",
                                       detail="quota met", created_at=T0 + 20)))
    store.write_sync(op_for(RoundEvent(id="round-2", round=2, model_version="v1", state="generating",
                                       created_at=T0 + 30)))
    done, second = store.rounds()
    assert (done.state, done.ended_at, done.detail) == ("done", T0 + 20, "quota met")
    assert (second.round, second.model_version, second.state, second.ended_at) == (2, "v1", "generating", None)
    assert store.round_generator(2) == "v1" and store.round_generator(3) is None
    messages = [e["message"] for e in store.events_after(0)]
    assert messages == ["round 1 generating: on model v0", "round 1 training: 5 pairs", "round 1 done: quota met",
                        "round 2 generating"]
    assert json.loads(store.events_after(0)[2]["data"]) == {"state": "done"}


def lineage(store: RunStore) -> dict[str, str]:
    return {m["version"]: m["state"] for m in store.models()}


def test_model_events_move_the_lineage(store):
    rows = [model_row_op("v0", parent=None, round=0, served_name="m", path="/base", state="serving", detail={})]
    rows += [model_row_op(f"v{k}", parent="v0", round=k, served_name="m", path=f"/ck/v{k}", state="trained",
                          detail={"examples": k}) for k in (1, 2, 3)]
    store.write_sync(rows)
    assert store.serving_model()["version"] == "v0"
    store.write_sync(op_for(ModelEvent(id="v1", round=1, model_version="v1", kind="serving", parent="v0")))
    assert lineage(store) == {"v0": "retired", "v1": "serving", "v2": "trained", "v3": "trained"}
    store.write_sync(op_for(ModelEvent(id="v2", round=2, model_version="v2", kind="rolled_back", parent="v1",
                                       detail="reload failed, v1 restored")))
    store.write_sync(op_for(ModelEvent(id="v3", round=3, model_version="v3", kind="rejected", parent="v1")))
    assert lineage(store) == {"v0": "retired", "v1": "serving", "v2": "failed", "v3": "rejected"}
    assert store.serving_model()["version"] == "v1"
    events = [(e["level"], e["message"]) for e in store.events_after(0)]
    assert events == [("info", "v1 serving"), ("error", "v2 rolled back: reload failed, v1 restored"),
                      ("error", "v3 rejected")]
    assert store.model("v2")["path"] == "/ck/v2" and store.model("v9") is None


def test_a_model_row_becomes_the_checkpoint_it_records(store):
    detail = {"adapter": "/ck/v1/adapter", "kind": "adapter", "loss": [{"step": 1, "loss": 1.5}]}
    store.write_sync([model_row_op("v1", parent="v0", round=1, served_name="m", path="/ck/v1", state="trained",
                                   detail=detail),
                      model_row_op("v2", parent=None, round=2, served_name="m", path="/ck/v2", state="trained",
                                   detail={})])
    lora = checkpoint_from_row(store.trained_model(1))
    assert (lora.version, lora.parent, lora.round, lora.path) == ("v1", "v0", 1, Path("/ck/v1"))
    assert (lora.adapter, lora.kind, lora.detail) == (Path("/ck/v1/adapter"), "adapter", detail)
    full = checkpoint_from_row(store.model("v2"))
    assert (full.parent, full.adapter, full.kind, full.detail) == ("v0", None, "full", {})
    # Serving it leaves no trained model for the round (a resumed round would not swap it again).
    store.write_sync(op_for(ModelEvent(id="v1", round=1, model_version="v1", kind="serving", parent="v0")))
    assert store.trained_model(1) is None


def test_training_and_screening_queries(store):
    ops = []
    for k in (1, 2):
        for n in range(1, 5):
            inst = instruction(n, round=k)
            if n == 4:  # screened out by the proposer
                ops += op_for(verdict(inst.id, "rejected", "proposer", "too_short", instruction=inst.instruction))
                continue
            resp = response(inst, text=f"answer {k}.{n}")
            ops += op_for(inst) + op_for(resp) + op_for(assessment(resp))
            if n < 3:
                ops += op_for(verdict(inst.id, "kept", "curator"))
    store.write_sync(ops)
    store.write_sync(op_for(instruction(5, round=2)))  # still in flight

    pairs = store.kept_pairs(2)
    assert [(p["id"], p["round"], p["response"]) for p in pairs] == [
        ("r02-000001", 2, "answer 2.1"), ("r02-000002", 2, "answer 2.2")]
    assert set(pairs[0]) == {"id", "round", "instruction", "input", "response"}
    assert [p["id"] for p in store.kept_pairs(2, cumulative=True)] == [
        "r01-000001", "r01-000002", "r02-000001", "r02-000002"]
    assert [p["id"] for p in store.kept_pairs(1, cumulative=True)] == ["r01-000001", "r01-000002"]
    # Every instruction but the screened-out ones, pending ones included: the dedup pool.
    tasks = [tuple(t) for t in store.screened_tasks()]
    assert len(tasks) == 7 and ("Describe item 4 of round 1.", "") not in tasks
    assert tasks[0] == ("Describe item 1 of round 1.", "") and tasks[-1] == ("Describe item 5 of round 2.", "")
    # Finished after screening: 2 kept per round (item 3 is still assessed, item 5 proposed).
    assert store.screened_finished(1) == 2 and store.screened_finished(2) == 2
    assert store.max_seq(2) == 5


def test_integrity_reports_unfinished_items_of_a_finished_round(store):
    store.write_sync(op_for(RoundEvent(id="round-1", round=1, model_version="v0", state="generating")))
    store.write_sync(op_for(instruction(1)) + op_for(instruction(2)) + op_for(instruction(3)))
    store.write_sync(op_for(verdict("r01-000001", "failed", "responder", "http_500")))
    assert store.integrity() == []  # an open round may hold pending items
    store.write_sync(op_for(RoundEvent(id="round-1", round=1, model_version="v0", state="done")))
    assert store.integrity() == ["2 items of finished rounds are not in a final state"]
    # A round rejected by the evaluation gate is finished too; a failed one may be resumed.
    store.write_sync(op_for(RoundEvent(id="round-2", round=2, model_version="v0", state="rejected"))
                     + op_for(instruction(1, round=2))
                     + op_for(RoundEvent(id="round-3", round=3, model_version="v0", state="failed"))
                     + op_for(instruction(1, round=3)))
    assert store.integrity() == ["3 items of finished rounds are not in a final state"]
