"""Swap strategies: how the served model becomes the newly trained one (one module each)."""

from .base import ServerApi, SwapError, SwapStrategy
from .command import CommandSwap
from .lora import LoraSwap
from .none import NoSwap
from .reload import ReloadSwap
from .restart import RestartSwap

__all__ = ["CommandSwap", "LoraSwap", "NoSwap", "ReloadSwap", "RestartSwap", "ServerApi", "SwapError",
           "SwapStrategy"]
