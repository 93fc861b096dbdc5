"""Training between rounds: the TRL backend and the SFT job it runs in a subprocess."""

from .backend import TrlBackend, training_rows

__all__ = ["TrlBackend", "training_rows"]
