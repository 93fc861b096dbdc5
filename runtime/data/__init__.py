"""Data the loop starts from and judges by: seed tasks, ROUGE-L dedup, verifiable checks."""

from .checks import EvalPrompt, load_eval_prompts, run_checks
from .dedup import RougeIndex
from .seeds import load_seeds, load_topics, read_jsonl
from .templates import load_template, read_text

__all__ = ["EvalPrompt", "RougeIndex", "load_eval_prompts", "load_seeds", "load_template", "load_topics",
           "read_jsonl", "read_text", "run_checks"]
