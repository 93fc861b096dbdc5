"""The loop itself: a run and its rounds, the streaming pipeline of each, training and swaps
between them, the evaluation gate, and the wiring of the roles (the one place they are built)."""

from .run import Display, Run, RunResult, arun, run
from .stats import RoundSummary, RunStats
from .supervisor import Supervisor

__all__ = ["Display", "RoundSummary", "Run", "RunResult", "RunStats", "Supervisor", "arun", "run"]
