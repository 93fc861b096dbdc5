"""``trainer.keep_checkpoints``: which merged models a run may delete, from its lineage rows alone."""

from __future__ import annotations

import json
from pathlib import Path

from isheep.runtime.pipeline.retention import Prunable, prunable

CHECKPOINTS = Path("/runs/r/checkpoints")


def row(version: str, round: int | None, *, kind: str = "full", adapter: bool = True, path: Path | None = None,
        pruned: bool = False) -> dict:
    folder = CHECKPOINTS / f"round-{round or 0:02d}"
    detail = {"kind": kind, "adapter": str(folder / "adapter") if adapter else None}
    if pruned:
        detail["pruned"] = "merged weights deleted"
    return {"version": version, "round": round, "path": str(path or folder / "model"), "detail": json.dumps(detail)}


def versions(found: list[Prunable]) -> list[str]:
    return [p.version for p in found]


def test_keeps_the_newest_k_by_round_and_the_one_serving():
    rows = [row("v0", 0, path=Path("/models/base")), row("v3", 3), row("v1", 1), row("v2", 2), row("v4", 4)]
    assert versions(prunable(rows, 2, "v4", CHECKPOINTS)) == ["v2", "v1"]
    assert versions(prunable(rows, 1, "v2", CHECKPOINTS)) == ["v3", "v1"]
    assert versions(prunable(rows, 4, "v4", CHECKPOINTS)) == []
    assert prunable(rows, 1, "v4", CHECKPOINTS)[0] == Prunable("v3", CHECKPOINTS / "round-03" / "model",
                                                               str(CHECKPOINTS / "round-03" / "adapter"))


def test_zero_keeps_everything():
    assert prunable([row("v1", 1), row("v2", 2)], 0, "v2", CHECKPOINTS) == []


def test_only_merged_lora_models_inside_the_run_are_candidates():
    rows = [
        row("v1", 1, adapter=False),             # a full fine-tune: its folder is the only copy
        row("v2", 2, kind="adapter"),            # served as an adapter: small, and it is the model
        row("v3", 3, path=Path("/elsewhere/m")),  # not ours to delete
        row("v4", 4, pruned=True),               # already gone
        row("v5", None),                         # no round: not a trained checkpoint
        row("v6", 6), row("v7", 7),
    ]
    assert versions(prunable(rows, 1, "v7", CHECKPOINTS)) == ["v6"]
