"""The Trainer: consumes the kept pairs of a round, closes the round when its quota is met, and
(between rounds) turns the round's data into the next model through a training backend.

The backend interface is :class:`TrainBackend`; ``trainer.backend = "none"`` runs data-only
rounds (for hosted APIs whose weights cannot change), where :meth:`Trainer.train` returns None
and the served model stays as it is.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from isheep.runtime.config import TrainerConfig
from isheep.runtime.ledger import RoundLedger
from isheep.runtime.messages import Verdict

from .base import Role, ServedModel


class TrainRequest(BaseModel):
    """What a backend needs to train one round."""

    model_config = ConfigDict(frozen=True)

    round: int
    parent: str = Field(description="Model version trained from.")
    examples: list[dict[str, Any]] = Field(description="Chat examples: {'messages': [...]} each.")
    out_dir: Path


class Checkpoint(BaseModel):
    """A trained model ready to be served."""

    model_config = ConfigDict(frozen=True)

    version: str
    parent: str
    round: int
    path: Path
    kind: str = Field("full", description="full: a model folder; adapter: a LoRA adapter folder.")
    detail: dict[str, Any] = Field(default_factory=dict, description="Hyper-parameters, loss curve...")


class TrainBackend(abc.ABC):
    """Fine-tunes a model on one round's data."""

    @abc.abstractmethod
    async def train(self, request: TrainRequest) -> Checkpoint:
        """Train and return the checkpoint (raise on failure)."""


class Trainer(Role[Verdict, None]):
    name: ClassVar[str] = "trainer"

    def __init__(self, config: TrainerConfig, backend: TrainBackend | None = None) -> None:
        self.config = config
        self.backend = backend
        self.ledger: RoundLedger | None = None

    def open_round(self, ledger: RoundLedger) -> None:
        """Start consuming a round (also a resumed one whose quota may already be met)."""
        self.ledger = ledger
        ledger.quota_met = ledger.kept >= ledger.quota

    async def handle(self, message: Verdict) -> None:
        assert self.ledger is not None and message.status == "kept"
        if self.ledger.kept >= self.ledger.quota:
            self.ledger.quota_met = True  # the Proposer stops; what is in flight still finishes

    async def train(self, round: int, parent: ServedModel, examples: list[dict[str, Any]],
                    out_dir: Path) -> Checkpoint | None:
        """Train on a round's kept pairs; None when training is off or there is too little data."""
        if self.backend is None or len(examples) < self.config.min_examples:
            return None
        return await self.backend.train(TrainRequest(round=round, parent=parent.version, examples=examples,
                                                     out_dir=out_dir))
