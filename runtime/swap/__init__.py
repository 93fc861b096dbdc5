"""Swap strategies: how the served model becomes the newly trained one (one module each)."""

from .base import SwapError, SwapStrategy
from .none import NoSwap

__all__ = ["NoSwap", "SwapError", "SwapStrategy"]
