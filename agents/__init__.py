"""The five roles of the loop, one module each.

Their shared interface (:class:`Role`, and :class:`CriticRole` / :class:`TrainerRole` for the
two roles the model updater also calls) lives in ``isheep.runtime.core.roles``; a replacement
role subclasses that, never a built-in role (see ``examples/custom_role.py``).
"""

from isheep.runtime.core.roles import CriticRole, Role, RoundContext, TrainerRole

from .critic import Critic
from .curator import Curator
from .proposer import Proposer
from .responder import Responder
from .trainer import Trainer

__all__ = ["Critic", "CriticRole", "Curator", "Proposer", "Responder", "Role", "RoundContext", "Trainer",
           "TrainerRole"]
