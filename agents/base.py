"""The shape of a role: a small object with one ``async def handle(message)``.

Roles never touch queues or the store: the supervisor hands them a message and records
and forwards what they return. That keeps each role's whole behaviour in its own module and
the wiring of all of them in one place (``isheep.runtime.supervisor``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class ServedModel:
    """A model as requests name it: ``name`` goes in the request, ``version`` in the lineage,
    ``path`` is its weights (a model folder, or a LoRA adapter) when this run knows them."""

    version: str
    name: str
    path: Path | None = None


@dataclass
class Models:
    """The models the roles talk to; the swap step replaces ``policy`` between rounds."""

    policy: ServedModel
    base: ServedModel


class Role(abc.ABC, Generic[In, Out]):
    """One step of the loop."""

    #: Short name used in metrics, reasons and the monitor.
    name: ClassVar[str]

    @abc.abstractmethod
    async def handle(self, message: In) -> Out:
        """Process one message and return what goes downstream (or a final verdict)."""
