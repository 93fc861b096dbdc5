"""Benchmarks of a served model, and the statistics that say whether one model beat another.

One small base (:class:`Benchmark`), implementations side by side (``instructions``,
``humaneval``, ``judge``), one
result type (:class:`BenchResult`, scores kept prompt by prompt) and paired bootstrap intervals
(:mod:`.stats`).
"""

from .base import BenchOptions, BenchResult, Benchmark
from .humaneval import HumanEvalBenchmark
from .instructions import InstructionsBenchmark
from .judge import JudgeBenchmark, Party
from .stats import Interval, SignTest, mean_interval, paired_difference, sign_test, worse_beyond_doubt

#: The benchmarks ``--bench`` names.
BENCHMARKS: dict[str, type[Benchmark]] = {
    b.name: b for b in (InstructionsBenchmark, HumanEvalBenchmark, JudgeBenchmark)}

__all__ = ["BENCHMARKS", "BenchOptions", "BenchResult", "Benchmark", "HumanEvalBenchmark", "InstructionsBenchmark",
           "JudgeBenchmark", "Party", "Interval", "SignTest", "mean_interval", "paired_difference", "sign_test", "worse_beyond_doubt"]
