"""Export a run's data: JSON Lines per round and a Hugging Face ``datasets`` folder.

``exports/round-01.jsonl`` holds the kept pairs of round 1 (with ``--all``, every item and its
verdict); ``exports/dataset`` is a ``DatasetDict`` with one split per round, loadable with
``datasets.load_from_disk``, each row carrying chat ``messages`` ready for SFT.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import user_turn

from .store import RunStore

_FIELDS = ("id", "round", "state", "stage", "reason", "instruction", "input", "response", "quality",
           "quality_explanation", "following", "following_explanation", "proposer_version", "responder_version",
           "critic_version")


def _record(row: Any) -> dict[str, Any]:
    record = {key: row[key] for key in _FIELDS}
    record["messages"] = [{"role": "user", "content": user_turn(row["instruction"], row["input"])},
                          {"role": "assistant", "content": row["response"] or ""}]
    return record


def export_run(folder: Path, out: Path | None = None, *, include_all: bool = False) -> dict[str, Any]:
    """Write the exports; returns {round: rows written} and the paths. Safe on a live run (reads only)."""
    store = RunStore.open(Path(folder), readonly=True)
    target = Path(out) if out else Path(folder) / "exports"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create export folder {target}: {exc.strerror}") from None
    written: dict[int, int] = {}
    by_round: dict[int, list[dict[str, Any]]] = {}
    try:
        rounds = [r.round for r in store.rounds()]
        for k in rounds:
            rows = [_record(r) for r in store.items(round=k, state=None if include_all else "kept")]
            by_round[k] = rows
            path = target / f"round-{k:02d}.jsonl"
            # Write beside, then rename: an interrupted export never leaves a half file.
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".round-{k:02d}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
            written[k] = len(rows)
    finally:
        store.close_sync()
    dataset_path = target / "dataset"
    if by_round:
        import datasets
        from datasets import Dataset, DatasetDict

        datasets.disable_progress_bars()

        splits = {f"round_{k}": Dataset.from_list(rows) for k, rows in by_round.items() if rows}
        if splits:
            staging = target / ".dataset.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            DatasetDict(splits).save_to_disk(str(staging))
            shutil.rmtree(dataset_path, ignore_errors=True)
            os.replace(staging, dataset_path)
    return {"rounds": written, "folder": str(target), "dataset": str(dataset_path)}
