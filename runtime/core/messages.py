"""The messages that travel between roles, one frozen model per hop.

Every message names the item it is about (``id``), the ``round``, the model version that
produced it and when. Downstream messages carry their upstream message, so a role has the
whole context of an item without reading the store.
"""

from __future__ import annotations

import time
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field


def _now() -> float:
    return time.time()


class Message(BaseModel):
    """Fields every hop carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Item id, stable from proposal to verdict.")
    round: int = Field(ge=1)
    model_version: str = Field(description="Version of the model that produced this message.")
    created_at: float = Field(default_factory=_now)


class SeedTask(BaseModel):
    """One in-context example for the Proposer (a seed task or an earlier instruction)."""

    model_config = ConfigDict(frozen=True)

    instruction: str
    input: str = ""


class QuestionType(BaseModel):
    """A kind of question for topic-guided red-teaming proposals (Dromedary), with its topics and an example."""

    model_config = ConfigDict(frozen=True)

    type: str
    topics: tuple[str, ...]
    question: str


class ProposalRequest(BaseModel):
    """Ask the Proposer for one batch of new instructions."""

    model_config = ConfigDict(frozen=True)

    round: int
    call: int = Field(description="Sequence number of the call within the round (seeds its sampling).")


class Instruction(Message):
    """A new task written by the Proposer that passed the rule filters and the dedup."""

    instruction: str
    input: str = ""


class Response(Message):
    """The Responder's answer to an instruction."""

    instruction: Instruction
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Score(BaseModel):
    """One self-assessment: a 1-10 score (None when the reply could not be parsed)."""

    model_config = ConfigDict(frozen=True)

    value: int | None = Field(None, ge=1, le=10)
    explanation: str = ""
    raw: str = Field("", description="The critic's reply as received (kept for audit).")


class Assessment(Message):
    """The Self-Critic's two scores of a pair (``judged`` False: no critic this round, no scores)."""

    response: Response
    quality: Score
    following: Score
    judged: bool = True


Status = Literal["kept", "rejected", "failed"]

#: Item states on the way through a round, and the final ones (every item ends in exactly one).
PENDING_STATES = ("proposed", "responded", "assessed")
FINAL_STATES: tuple[str, ...] = get_args(Status)


def item_id(round: int, seq: int) -> str:
    """The id of a round's ``seq``-th item: ``r02-000017`` (the one place the format is written)."""
    return f"r{round:02d}-{seq:06d}"


def item_seq(item_id: str) -> int:
    """``r02-000017`` -> 17: an item's place in its round."""
    return int(item_id.rsplit("-", 1)[1])


def reason_kind(reason: str | None) -> str:
    """``"blacklist:image"`` -> ``"blacklist"``: reasons are counted by their kind."""
    return (reason or "?").split(":", 1)[0]


def acceptance(kept: int, finished: int) -> float:
    """The share of finished items that were kept (0 before any finished)."""
    return kept / finished if finished else 0.0


def user_turn(instruction: str, value: str) -> str:
    """The user turn of a pair: the instruction, then its input below it when there is one.

    The Responder asks with it and the trainer and the export train on it: one format, so what
    the model is trained on is what it was asked.
    """
    return f"{instruction}\n\n{value}" if value else instruction


class Verdict(Message):
    """The final state of an item: kept, rejected (a filter said no) or failed (an error)."""

    status: Status
    stage: Literal["proposer", "responder", "critic", "curator"]
    reason: str | None = Field(None, description="Which filter or score, or which error; None when kept.")
    instruction: str = ""
    input: str = ""
    response: Response | None = Field(None, description="The answer a responder-stage rejection was about.")
    assessment: Assessment | None = None


class RoundEvent(Message):
    """A round opened, closed or changed state; ``id`` is ``round-<n>``."""

    state: Literal["generating", "training", "swapping", "done", "rejected", "failed"]
    detail: str = ""


#: Round states after which the next round starts (a rejected round's model was rolled back).
ROUND_CLOSED_STATES = ("done", "rejected")


class ModelEvent(Message):
    """The served model changed (or a change failed and was rolled back)."""

    kind: Literal["serving", "swap_failed", "rolled_back", "rejected"]
    parent: str | None = None
    detail: str = ""
