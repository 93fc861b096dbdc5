"""The shape of a role, and what a role is told when a round starts.

A role is a small object with one ``async def handle(message)``. Roles never touch queues or
the store: the supervisor hands them a message and records and forwards what they return, so a
role's whole behaviour is in its own module and the wiring of all of them in one place
(``isheep.runtime.pipeline``). Each round is bracketed by :meth:`Role.on_round_start` and
:meth:`Role.on_round_end`; between the two, the :class:`RoundContext` is how a role reaches the
round (its number, item ids, notable events) without owning any of its state.

The supervisor works against these interfaces only, so a replacement role subclasses
:class:`Role` (or :class:`CriticRole` / :class:`TrainerRole`), never a built-in role.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar, Generic, Literal, TypeVar

from .config import RunConfig
from .messages import Assessment, Response, Score, SeedTask, Verdict
from .types import Checkpoint, ServedModel, TrainRequest

In = TypeVar("In")
Out = TypeVar("Out")

#: The roles in pipeline order; their names key metrics, reasons and the monitor's rows.
ROLE_NAMES = ("proposer", "responder", "critic", "curator", "trainer")

Aspect = Literal["quality", "following"]


@dataclass(frozen=True)
class RoundContext:
    """The round a role works in, as the pipeline lends it.

    ``config`` is the config this round runs with (a recipe may change keys in given rounds);
    ``replay`` holds the instructions the round asks again (``proposer.replay_round``), if any;
    ``allocate(n)`` grants ids for up to ``n`` new items (fewer, or none, near the round's
    proposal cap): the round's account is the one place ids come from. ``note(kind, message,
    level)`` records a notable event (the monitor's log shows it).
    """

    round: int
    config: RunConfig
    allocate: Callable[[int], list[str]]
    note: Callable[[str, str, str], None]
    replay: tuple[SeedTask, ...] = ()


class Role(abc.ABC, Generic[In, Out]):
    """One step of the loop: ``handle`` one message, return what goes downstream (or a verdict)."""

    #: Short name used in metrics, reasons and the monitor (one of :data:`ROLE_NAMES`).
    name: ClassVar[str]

    async def on_round_start(self, context: RoundContext) -> None:
        """Called before round ``context.round`` (new or resumed) sends this role anything."""

    async def on_round_end(self) -> None:
        """Called when the round is over (generated, trained and swapped), before the next starts."""

    @abc.abstractmethod
    async def handle(self, message: In) -> Out:
        """Process one message and return what goes downstream (or a final verdict)."""


class CriticRole(Role[Response, "Assessment | Verdict"]):
    """A critic: assesses pairs in the round, and scores any answer on demand (the evaluation gate)."""

    name: ClassVar[str] = "critic"

    @abc.abstractmethod
    async def score(self, aspect: Aspect, response: Response, model: ServedModel | None = None) -> Score:
        """One assessment of one answer, judged by ``model`` (default: the critic's own model).

        Raises:
            EndpointError: the request failed after its retries.
        """


class TrainerRole(Role[Verdict, None]):
    """The trainer: receives the round's kept pairs; between rounds it turns them into a model."""

    name: ClassVar[str] = "trainer"

    def skip_reason(self, pairs: int) -> str | None:
        """Why a round with ``pairs`` kept pairs is not trained (too few, say), or None to train it."""
        return None

    @abc.abstractmethod
    async def train(self, request: TrainRequest) -> Checkpoint | None:
        """Train on the request's pairs; None when this trainer does not train (data-only rounds).

        Raises:
            TrainingFailed: the training job failed.
        """


@dataclass
class Roles:
    """The five roles of a run, as the supervisor sees them."""

    proposer: Role
    responder: Role
    critic: CriticRole
    curator: Role
    trainer: TrainerRole

    def all(self) -> tuple[Role, ...]:
        return (self.proposer, self.responder, self.critic, self.curator, self.trainer)
