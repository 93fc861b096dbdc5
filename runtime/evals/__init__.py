"""Benchmarks of a served model, and the statistics that say whether one model beat another.

One small base (:class:`Benchmark`), implementations side by side (``instructions``...), one
result type (:class:`BenchResult`, scores kept prompt by prompt) and paired bootstrap intervals
(:mod:`.stats`).
"""

from .base import BenchResult, Benchmark
from .instructions import InstructionsBenchmark
from .stats import Interval, mean_interval, paired_difference, worse_beyond_doubt

#: The benchmarks ``--bench`` names.
BENCHMARKS: dict[str, type[Benchmark]] = {InstructionsBenchmark.name: InstructionsBenchmark}

__all__ = ["BENCHMARKS", "BenchResult", "Benchmark", "InstructionsBenchmark", "Interval", "mean_interval",
           "paired_difference", "worse_beyond_doubt"]
