"""Which merged models a run may delete: ``trainer.keep_checkpoints`` keeps the newest K.

A merged model is the whole network again (517 MB for the 135M embedded model, tens of GB for
7B), written every round. The adapter it was merged from is small and, with the base model,
makes it again, so the adapter, the round's data, spec and log are never deleted, nor is the
lineage. The choice is a pure function of the lineage rows so that tests can replay it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Prunable:
    """A merged model that may go: its version, its folder and the adapter that stays."""

    version: str
    path: Path
    adapter: str | None


def prunable(rows: Iterable[Mapping[str, Any]], keep: int, serving: str, checkpoints: Path) -> list[Prunable]:
    """Merged models beyond the newest ``keep`` trained ones, never the one serving.

    Only merged LoRA models are candidates: a full fine-tune has no adapter to rebuild it from.

    Args:
        rows: The run's lineage rows (``version``, ``round``, ``path``, ``detail``).
        keep: How many of the newest merged models to keep (0 keeps all).
        serving: The version being served: kept whatever its age (a failed swap or a rejected
            model falls back to it, and a resumed run serves it again).
        checkpoints: The run's checkpoint folder; nothing outside it is ever a candidate.
    """
    if keep <= 0:
        return []
    checkpoints = checkpoints.resolve()  # a resumed run may name its folder another way
    merged: list[tuple[int, Prunable]] = []
    for row in rows:
        detail = json.loads(row["detail"] or "{}")
        path = Path(row["path"]).resolve() if row["path"] else None
        # Without an adapter (a full fine-tune) the folder is the only copy of the weights.
        if (row["round"] is None or path is None or detail.get("kind") != "full" or not detail.get("adapter")
                or detail.get("pruned") or not path.is_relative_to(checkpoints)):
            continue
        merged.append((int(row["round"]), Prunable(row["version"], path, detail.get("adapter"))))
    merged.sort(key=lambda pair: pair[0], reverse=True)
    return [p for i, (_, p) in enumerate(merged) if i >= keep and p.version != serving]
