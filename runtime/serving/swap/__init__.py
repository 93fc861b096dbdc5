"""Swap strategies: how the served model becomes the newly trained one (one module each).

One small abstract base (:class:`SwapStrategy`; :class:`FolderSwap` for strategies that make a
server load a model folder) and the implementations side by side: ``reload``, ``lora``,
``restart``, ``command`` and ``none``; :class:`FleetSwap` applies one of them to every
replica of a pool as one transaction.
"""

from ..api import ServerApi, SwapError
from .base import FolderSwap, Phases, SwapStrategy
from .command import CommandSwap
from .fleet import FleetSwap, Replica
from .lora import LoraSwap
from .none import NoSwap
from .reload import ReloadSwap
from .restart import RestartSwap

__all__ = ["CommandSwap", "FleetSwap", "FolderSwap", "LoraSwap", "NoSwap", "Phases", "ReloadSwap", "Replica", "RestartSwap", "ServerApi",
           "SwapError", "SwapStrategy"]
