"""Data the loop starts from and judges by: seed tasks, ROUGE-L dedup, verifiable checks."""

from .checks import EvalPrompt, load_eval_prompts, run_checks
from .dedup import RougeIndex
from .seeds import load_seeds, read_jsonl

__all__ = ["EvalPrompt", "RougeIndex", "load_eval_prompts", "load_seeds", "read_jsonl", "run_checks"]
