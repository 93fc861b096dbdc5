"""How each message is recorded in the run store, and how a stored row becomes a message again.

Every transition of an item is one of these operations, committed before the item moves on;
a resumed run rebuilds its unfinished items (and trained checkpoints) from the rows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from isheep.runtime.core.messages import (PENDING_STATES, ROUND_CLOSED_STATES, Assessment, Instruction, ModelEvent,
                                          Response, RoundEvent, Score, Verdict, item_seq)
from isheep.runtime.core.types import Checkpoint

from .store import Op


def model_row_op(version: str, *, parent: str | None, round: int, served_name: str, path: str | None, state: str,
                 detail: dict[str, Any]) -> Op:
    """Record a model version (lineage): what it came from, what it was trained on, where it is."""
    return (
        "INSERT INTO models (version, parent, round, served_name, path, state, created_at, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(version) DO UPDATE SET parent=excluded.parent,"
        " round=excluded.round, served_name=excluded.served_name, path=excluded.path, state=excluded.state,"
        " detail=excluded.detail",
        (version, parent, round, served_name, path, state, time.time(), json.dumps(detail)),
    )


def op_for(message: Instruction | Response | Assessment | Verdict | RoundEvent | ModelEvent,
           seq: int | None = None) -> list[Op]:
    """The SQL that records one transition.

    Updates name the state they expect to leave, so replaying or double-processing an item
    changes nothing (and is detected by :meth:`RunStore.write`). A new item's ``seq`` (its
    order in the round) defaults to the number its id ends with.
    """
    if isinstance(message, Instruction):
        return _proposed(message, item_seq(message.id) if seq is None else seq)
    if isinstance(message, Response):
        return _responded(message)
    if isinstance(message, Assessment):
        return _assessed(message)
    if isinstance(message, Verdict):
        return _verdict(message, seq)
    if isinstance(message, RoundEvent):
        return _round(message)
    if isinstance(message, ModelEvent):
        return _model(message)
    raise TypeError(f"no store operation for {type(message).__name__}")


def _proposed(message: Instruction, seq: int) -> list[Op]:
    now = message.created_at
    return [(
        "INSERT INTO items (id, round, seq, state, instruction, input, proposer_version, created_at, updated_at)"
        " VALUES (?, ?, ?, 'proposed', ?, ?, ?, ?, ?)",
        (message.id, message.round, seq, message.instruction, message.input, message.model_version, now, now),
    )]


def _responded(message: Response) -> list[Op]:
    return [(
        "UPDATE items SET state='responded', response=?, finish_reason=?, responder_version=?,"
        " prompt_tokens=prompt_tokens+?, completion_tokens=completion_tokens+?, updated_at=?"
        " WHERE id=? AND state='proposed'",
        (message.text, message.finish_reason, message.model_version, message.prompt_tokens,
         message.completion_tokens, message.created_at, message.id),
        message.id,
    )]


def _assessed(message: Assessment) -> list[Op]:
    q, f = message.quality, message.following
    return [(
        "UPDATE items SET state='assessed', quality=?, quality_explanation=?, quality_raw=?,"
        " following=?, following_explanation=?, following_raw=?, critic_version=?, updated_at=?"
        " WHERE id=? AND state='responded'",
        (q.value, q.explanation, q.raw, f.value, f.explanation, f.raw,
         message.model_version if message.judged else None, message.created_at, message.id),
        message.id,
    )]


def _verdict(message: Verdict, seq: int | None) -> list[Op]:
    now = message.created_at
    if message.stage == "proposer":  # screened out: the item's first and last row
        return [(
            "INSERT INTO items (id, round, seq, state, stage, reason, instruction, input, proposer_version,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'proposer', ?, ?, ?, ?, ?, ?)",
            (message.id, message.round, item_seq(message.id) if seq is None else seq, message.status, message.reason,
             message.instruction, message.input, message.model_version, now, now),
        )]
    ops: list[Op] = []
    if message.response is not None:
        ops += _responded(message.response)  # the rejected answer is kept for audit
        ops[-1] = ops[-1][:2]  # and the verdict's own update below is the guarded one
    assessment = message.assessment
    if assessment is not None and message.stage == "critic":
        # A critic-stage verdict still records the replies it could not use.
        ops += [(
            "UPDATE items SET quality=?, quality_explanation=?, quality_raw=?, following=?,"
            " following_explanation=?, following_raw=?, critic_version=? WHERE id=?",
            (assessment.quality.value, assessment.quality.explanation, assessment.quality.raw,
             assessment.following.value, assessment.following.explanation, assessment.following.raw,
             assessment.model_version, message.id),
        )]
    ops.append((
        "UPDATE items SET state=?, stage=?, reason=?, updated_at=? WHERE id=? AND state IN (?, ?, ?)",
        (message.status, message.stage, message.reason, now, message.id, *PENDING_STATES),
        message.id,
    ))
    return ops


def _round(message: RoundEvent) -> list[Op]:
    ended = message.created_at if message.state in (*ROUND_CLOSED_STATES, "failed") else None
    return [(
        "INSERT INTO rounds (round, state, model_version, started_at, ended_at, detail) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(round) DO UPDATE SET state=excluded.state, ended_at=excluded.ended_at,"
        " detail=excluded.detail, model_version=excluded.model_version",
        (message.round, message.state, message.model_version, message.created_at, ended, message.detail),
    ), (
        "INSERT INTO events (ts, round, level, kind, message, data) VALUES (?, ?, 'info', 'round', ?, ?)",
        (message.created_at, message.round, f"round {message.round} {message.state}"
         + (f": {message.detail}" if message.detail else ""), json.dumps({"state": message.state})),
    )]


def _model(message: ModelEvent) -> list[Op]:
    state = {"serving": "serving", "swap_failed": "failed", "rolled_back": "failed",
             "rejected": "rejected"}[message.kind]
    ops: list[Op] = [("UPDATE models SET state=? WHERE version=?", (state, message.model_version))]
    if message.kind == "serving" and message.parent:
        ops.append(("UPDATE models SET state='retired' WHERE state='serving' AND version != ?",
                    (message.model_version,)))
    ops.append((
        "INSERT INTO events (ts, round, level, kind, message, data) VALUES (?, ?, ?, 'model', ?, ?)",
        (message.created_at, message.round, "info" if message.kind == "serving" else "error",
         f"{message.model_version} {message.kind.replace('_', ' ')}" + (f": {message.detail}" if message.detail else ""),
         json.dumps({"version": message.model_version, "kind": message.kind, "parent": message.parent})),
    ))
    return ops


def message_from_row(row: sqlite3.Row) -> Instruction | Response | Assessment:
    """An unfinished item as the message its next role expects."""
    instruction = Instruction(id=row["id"], round=row["round"], model_version=row["proposer_version"] or "v0",
                              instruction=row["instruction"], input=row["input"], created_at=row["created_at"])
    if row["state"] == "proposed":
        return instruction
    response = Response(id=row["id"], round=row["round"], model_version=row["responder_version"] or "v0",
                        instruction=instruction, text=row["response"] or "", finish_reason=row["finish_reason"])
    if row["state"] == "responded":
        return response
    return Assessment(
        id=row["id"], round=row["round"], model_version=row["critic_version"] or "v0", response=response,
        judged=row["critic_version"] is not None,  # an unjudged pair (no critic that round) has no critic
        quality=Score(value=row["quality"], explanation=row["quality_explanation"] or "", raw=row["quality_raw"] or ""),
        following=Score(value=row["following"], explanation=row["following_explanation"] or "",
                        raw=row["following_raw"] or ""))


def checkpoint_from_row(row: sqlite3.Row) -> Checkpoint:
    """A model version of the lineage table as a checkpoint that can be served again."""
    detail = json.loads(row["detail"] or "{}")
    return Checkpoint(version=row["version"], parent=row["parent"] or "v0", round=row["round"] or 0,
                      path=Path(row["path"]), adapter=Path(detail["adapter"]) if detail.get("adapter") else None,
                      kind=detail.get("kind", "full"), detail=detail)
