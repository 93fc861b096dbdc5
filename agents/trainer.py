"""The Trainer: receives the kept pairs of a round and, between rounds, turns them into the next
model through its training backend (recipe step 8).

The round's account (not the Trainer) says when enough pairs were kept: the Trainer is the
pipeline's sink, and its real work starts when the round's generation is over. Training reads
the round's kept pairs from the run store, so a resumed round trains on exactly the data it
kept. The built-in backend is TRL's ``SFTTrainer`` in a subprocess
(``isheep.runtime.training``); with no backend (``trainer.backend = "none"``, hosted APIs whose
weights cannot change) rounds are data-only and :meth:`Trainer.train` returns None.
"""

from __future__ import annotations

from typing import ClassVar

from isheep.runtime.core.config import TrainerConfig
from isheep.runtime.core.messages import Verdict
from isheep.runtime.core.roles import RoundContext, TrainerRole
from isheep.runtime.core.types import Checkpoint, TrainBackend, TrainRequest


class Trainer(TrainerRole):
    """Counts the round's kept pairs and trains on them with its backend.

    Args:
        config: The ``[trainer]`` section.
        backend: What trains (None: data-only rounds, nothing is trained).
    """

    name: ClassVar[str] = "trainer"

    def __init__(self, config: TrainerConfig, backend: TrainBackend | None = None) -> None:
        self.config = config
        self.backend = backend
        #: Kept pairs that reached the Trainer in the current round (this process's share of it).
        self.received = 0

    async def on_round_start(self, context: RoundContext) -> None:
        self.config = context.config.trainer
        self.received = 0

    async def handle(self, message: Verdict) -> None:
        assert message.status == "kept"
        self.received += 1

    def skip_reason(self, pairs: int) -> str | None:
        if pairs < self.config.min_examples:
            return f"{pairs} kept pair(s) (trainer.min_examples = {self.config.min_examples})"
        return None

    async def train(self, request: TrainRequest) -> Checkpoint | None:
        """Train on a round's kept pairs; None when training is off or there is too little data."""
        if self.backend is None or self.skip_reason(len(request.examples)) is not None:
            return None
        return await self.backend.train(request)
