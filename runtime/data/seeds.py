"""Seed tasks: the few examples the Proposer imitates.

The format is JSON Lines, one task per line::

    {"instruction": "Give three tips for a job interview.", "input": "", "output": "...", "category": "advice"}

``instruction`` is required; ``input``, ``output``, ``id`` and ``category`` are optional.
Self-Instruct's seed file (``{"instruction": ..., "instances": [{"input": ..., "output": ...}]}``)
is read as well, so users can bring theirs unchanged. Blank lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from isheep.prompts import default_path

from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import QuestionType, SeedTask

#: Seed files larger than this are refused (a seed set is a few hundred tasks, not a corpus).
MAX_SEED_BYTES = 64 * 1024 * 1024
_KNOWN = {"id", "name", "category", "instruction", "input", "output", "instances", "is_classification"}


def _task_from(obj: object, where: str) -> SeedTask:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - _KNOWN
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} (expected instruction, input, ...)")
    instruction = obj.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise UserError(f"{where}: 'instruction' must be a non-empty string")
    value = obj.get("input", "")
    if "instances" in obj:  # Self-Instruct format
        instances = obj["instances"]
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise UserError(f"{where}: 'instances' must be a non-empty list of objects")
        value = instances[0].get("input", "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise UserError(f"{where}: 'input' must be a string")
    return SeedTask(instruction=instruction.strip(), input=value.strip())


def read_jsonl(source: Path, what: str, *, max_bytes: int | None = None) -> Iterator[tuple[int, str, object]]:
    """Yield (line number, "<what> <source> line N", parsed JSON) for each non-blank line.

    Every problem with the file itself (missing, unreadable, too large, not UTF-8, a line that
    is not JSON) is one UserError naming ``what`` and the file.
    """
    max_bytes = MAX_SEED_BYTES if max_bytes is None else max_bytes
    try:
        size = source.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{what} not found: {source}") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {source}: {exc.strerror}") from None
    if size > max_bytes:
        raise UserError(f"{what} {source} is too large ({size / 2**20:.0f} MiB; the limit is "
                        f"{max_bytes / 2**20:.0f} MiB)")
    try:
        text = source.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {source} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {source}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{what} {source} line {number}"
        try:
            yield number, where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg})") from None


def load_seeds(path: Path | None = None, *, minimum: int = 1) -> list[SeedTask]:
    """Read a seed file (default: the shipped one); every problem is one clear UserError."""
    source = Path(path) if path is not None else default_path("seeds.jsonl")
    tasks = [_task_from(obj, where) for _, where, obj in read_jsonl(source, "seed file")]
    if not tasks:
        raise UserError(f"seed file {source} holds no tasks")
    if len(tasks) < minimum:
        raise UserError(f"seed file {source} holds {len(tasks)} task(s); the proposer samples {minimum} per call "
                        "(lower proposer.num_examples or add seeds)")
    return tasks


def load_topics(path: Path) -> list[QuestionType]:
    """Question types for topic-guided proposals: one JSON object a line with ``type``, ``topics`` (a
    non-empty list of short phrases) and an example ``question``; every problem is one UserError."""
    types = []
    for _, where, row in read_jsonl(path, "topics file"):
        if not isinstance(row, dict) or set(row) != {"type", "topics", "question"}:
            raise UserError(f"{where}: expected an object with exactly 'type', 'topics' and 'question'")
        topics = row["topics"]
        if not isinstance(row["type"], str) or not isinstance(row["question"], str) or not isinstance(topics, list) \
                or not topics or not all(isinstance(t, str) and t.strip() for t in topics):
            raise UserError(f"{where}: 'type' and 'question' must be text and 'topics' a non-empty list of text")
        types.append(QuestionType(type=row["type"].strip(), topics=tuple(t.strip() for t in topics),
                                  question=row["question"].strip()))
    if len(types) < 2:
        raise UserError(f"topics file {path} needs at least two question types")
    return types
