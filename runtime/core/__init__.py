"""The bottom layer: config, messages, errors, the shared types, the role and endpoint interfaces.

Everything else in isheep may import from here; nothing here imports anything else of isheep.
"""

from .config import RunConfig
from .endpoint import Client, Completion, EndpointError
from .errors import ConfigError, EndpointUnavailable, GarbageOutput, UserError
from .loading import load_config
from .roles import ROLE_NAMES, CriticRole, Role, Roles, RoundContext, TrainerRole
from .types import Checkpoint, Models, ServedModel, TrainBackend, TrainingFailed, TrainRequest

__all__ = ["ROLE_NAMES", "Checkpoint", "Client", "Completion", "ConfigError", "CriticRole", "EndpointError",
           "EndpointUnavailable", "GarbageOutput", "Models", "Role", "Roles", "RoundContext", "RunConfig",
           "ServedModel", "TrainBackend", "TrainRequest", "TrainerRole", "TrainingFailed", "UserError",
           "load_config"]
