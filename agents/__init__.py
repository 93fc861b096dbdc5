"""The five roles of the loop, one module each, and the small base they share."""

from .base import Models, Role, ServedModel
from .critic import Critic
from .curator import Curator
from .proposer import Proposer
from .responder import Responder
from .trainer import Checkpoint, TrainBackend, Trainer, TrainRequest

__all__ = ["Checkpoint", "Critic", "Curator", "Models", "Proposer", "Responder", "Role", "ServedModel",
           "TrainBackend", "TrainRequest", "Trainer"]
