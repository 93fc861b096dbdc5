"""The shared types of a run: models as requests name them, checkpoints, training requests.

They are passed between the roles, the store, the trainer backend and the swap strategies, so
they live here, below all of them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .config import TrainerConfig


@dataclass
class ServedModel:
    """A model as requests name it: ``name`` goes in the request, ``version`` in the lineage,
    ``path`` is its weights (a model folder, or a LoRA adapter) when this run knows them."""

    version: str
    name: str
    path: Path | None = None


@dataclass
class Models:
    """The models the roles talk to; the model updater replaces ``policy`` between rounds."""

    policy: ServedModel
    base: ServedModel


class TrainRequest(BaseModel):
    """What a training backend needs to train one round."""

    model_config = ConfigDict(frozen=True)

    round: int
    version: str = Field(description="Version the new model will have.")
    parent: str = Field(description="Model version trained from.")
    init_path: Path = Field(description="Model folder the weights start from.")
    init_adapter: Path | None = Field(None, description="LoRA adapter to continue (lora swaps, start_from=previous).")
    examples: list[dict[str, Any]] = Field(description="{'instruction', 'input', 'response', 'id', 'round'} each.")
    out_dir: Path
    settings: TrainerConfig | None = Field(None, description="The round's training settings (default: the backend's).")


class Checkpoint(BaseModel):
    """A trained model ready to be served."""

    model_config = ConfigDict(frozen=True)

    version: str
    parent: str
    round: int
    path: Path = Field(description="Full model folder (merged), or the adapter when not merged.")
    adapter: Path | None = Field(None, description="The LoRA adapter, when trained with LoRA.")
    kind: str = Field("full", description="full: a model folder; adapter: only a LoRA adapter.")
    detail: dict[str, Any] = Field(default_factory=dict, description="Hyper-parameters, loss curve...")


class TrainingFailed(RuntimeError):
    """The training job failed; the message names why (its last error line)."""


class TrainBackend(abc.ABC):
    """Fine-tunes a model on one round's data (TRL in a subprocess is the built-in one)."""

    @abc.abstractmethod
    async def train(self, request: TrainRequest) -> Checkpoint:
        """Train and return the checkpoint.

        Raises:
            TrainingFailed: the job failed; the message says why and where its log is.
        """


class DuplicateIndex(Protocol):
    """The pool of earlier instructions a new one must not nearly repeat (ROUGE-L in practice)."""

    def check_and_add(self, text: str) -> tuple[bool, float, int | None]:
        """(is_duplicate, best score, matching entry); a text that is not a duplicate joins the pool."""
        ...
