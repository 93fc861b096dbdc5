"""The interface every benchmark implements, and the result they all give.

A benchmark asks a served model its prompts and scores each one; the per-prompt scores are what
intervals and paired differences are computed from (:mod:`.stats`), so they are kept whole.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from isheep.runtime.core.endpoint import Client

from .stats import Interval, mean_interval


@dataclass
class BenchResult:
    """One model on one benchmark.

    ``scores`` maps each prompt's id to its score in [0, 1] (the headline metric, prompt by
    prompt); ``metrics`` holds the benchmark's other numbers (IFEval reports four accuracies).
    """

    bench: str
    model: str
    scores: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    detail: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interval(self) -> Interval:
        return mean_interval(list(self.scores.values()))

    def summary(self, keep: int = 20) -> dict[str, Any]:
        """What the run store and the report keep: scores whole, a few answers to read."""
        return {"bench": self.bench, "model": self.model, "scores": self.scores, "metrics": self.metrics,
                "failed": self.failed, "interval": self.interval.as_dict(), "detail": self.detail[:keep]}


@dataclass(frozen=True)
class BenchOptions:
    """What a user sets for every benchmark of one ``isheep eval``."""

    #: Requests in flight.
    workers: int = 8
    #: Tokens per answer (greedy).
    max_tokens: int = 512
    #: Consent to run model-written code (``humaneval``).
    allow_code_execution: bool = False


def file_fingerprint(path: Path) -> str:
    """A prompt file's fingerprint (a hash of its bytes); empty when it cannot be read (loading the
    prompts then says why in one line)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


class Benchmark(abc.ABC):
    """Asks a served model a benchmark's prompts and scores the answers."""

    #: The name ``--bench`` takes.
    name: ClassVar[str]
    #: What the headline score is, for tables.
    metric: ClassVar[str]

    @classmethod
    def build(cls, options: BenchOptions) -> "Benchmark":
        """The benchmark as ``options`` ask for it."""
        return cls(workers=options.workers, max_tokens=options.max_tokens)  # type: ignore[call-arg]

    def fingerprint(self) -> str:
        """What identifies the prompts asked (a file's hash): a stored result measured on other
        prompts is not compared with a new one. Empty: the prompts never change."""
        return ""

    @abc.abstractmethod
    async def run(self, client: Client, model: str, *, limit: int = 0) -> BenchResult:
        """Evaluate the model served as ``model`` through ``client`` (at most ``limit`` prompts, 0: all)."""
