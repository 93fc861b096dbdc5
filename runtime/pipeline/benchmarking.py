"""Benchmarks of a run's model versions: each one served in turn by the run's own servers and swap
strategy, asked a benchmark's prompts, scored, and its results kept in the lineage.

Results live in each version's lineage detail (``benchmarks.<name>``: every prompt's score, the
metrics, the interval), so they are exported with the run and read by the report and the
monitor. A version already measured on a benchmark with the same prompt limit is not asked
again. Differences between versions are paired over the prompts both answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.types import ServedModel
from isheep.runtime.evals import Benchmark, BenchResult, Interval, paired_difference
from isheep.runtime.serving import SwapError, open_serving
from isheep.runtime.store import RunStore, checkpoint_from_row, model_row_op

from .modelcard import write_card

Progress = Callable[[str], None]


@dataclass(frozen=True)
class VersionScore:
    """One version on one benchmark, with its differences to the base and to the version before it."""

    version: str
    bench: str
    score: Interval
    metrics: dict[str, float]
    vs_base: Interval | None
    vs_previous: Interval | None


def stored_results(store: RunStore) -> dict[str, dict[str, dict[str, Any]]]:
    """version -> bench -> the stored summary, for every version measured so far."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in store.models():
        benches = json.loads(row["detail"] or "{}").get("benchmarks") or {}
        if benches:
            out[row["version"]] = benches
    return out


def compare(results: dict[str, dict[str, dict[str, Any]]], versions: list[str]) -> list[VersionScore]:
    """Each version's score per benchmark, with paired differences to the first version (the base)
    and to the one before it among ``versions``."""
    rows = []
    benches = sorted({b for v in versions for b in results.get(v, {})})
    for bench in benches:
        measured = [v for v in versions if bench in results.get(v, {})]
        for i, version in enumerate(measured):
            data = results[version][bench]
            scores = data["scores"]
            base = results[measured[0]][bench]["scores"] if i else None
            previous = results[measured[i - 1]][bench]["scores"] if i else None
            interval = Interval.from_dict(data["interval"])
            rows.append(VersionScore(version, bench, interval, data.get("metrics", {}),
                                     paired_difference(scores, base) if base is not None else None,
                                     paired_difference(scores, previous) if i > 1 else None))
    return rows


def _ordered(store: RunStore, wanted: list[str] | None) -> list[Any]:
    rows = {row["version"]: row for row in store.models()}
    if wanted is None:
        return list(rows.values())
    unknown = [v for v in wanted if v not in rows]
    if unknown:
        raise UserError(f"no model version {', '.join(unknown)} in this run (it has {', '.join(rows)})")
    return sorted((rows[v] for v in dict.fromkeys(wanted)), key=lambda r: (r["round"] or 0, r["version"]))


async def evaluate_run(config: RunConfig, store: RunStore, benches: list[Benchmark], *, versions: list[str] | None,
                       limit: int, environ: Mapping[str, str], progress: Progress) -> list[str]:
    """Serve each version of the run in turn and run ``benches`` on it; the versions measured, in order.

    Raises:
        UserError: an unknown version, a version whose weights are gone, a swap that failed, or
            a run on endpoints it does not manage asked about a version they do not serve.
    """
    chosen = _ordered(store, versions)
    known = stored_results(store)
    todo = [r for r in chosen if any(known.get(r["version"], {}).get(b.name, {}).get("limit") != limit
                                     for b in benches)]
    if not todo:
        return [r["version"] for r in chosen]
    # Benchmarks need no judge: no second server for a base-model critic.
    plain = config.model_copy(update={"critic": config.critic.model_copy(update={"model": "current", "endpoint": None})})
    serving = await open_serving(plain, store.folder, environ, progress)
    try:
        current = _first_served(store, serving.servers != [])
        if not serving.servers and any(r["version"] != current.version for r in todo):
            raise UserError(f"this run's endpoints are not managed by isheep and serve {current.version} now; "
                            f"evaluate that version, or serve another and use isheep eval --endpoint URL --model NAME")
        await serving.pool.verify(current.name)
        for row in todo:
            if row["version"] != current.version:
                current = await _serve(serving.swapper, row, current, progress)
            for bench in benches:
                if known.get(row["version"], {}).get(bench.name, {}).get("limit") == limit:
                    continue
                progress(f"{row['version']}: {bench.name} ({bench.metric})")
                result = await bench.run(serving.pool, current.name, limit=limit)
                await _keep(store, row["version"], result, limit)
    finally:
        await serving.aclose()
    return [r["version"] for r in chosen]


def _first_served(store: RunStore, managed: bool) -> ServedModel:
    """What the servers serve before any swap: a fresh managed server the base, an endpoint the last model."""
    row = store.model("v0") if managed else store.serving_model()
    if row is None:
        raise UserError(f"{store.folder} has no model lineage to evaluate")
    return ServedModel(version=row["version"], name=row["served_name"], path=Path(row["path"]) if row["path"] else None)


async def _serve(swapper: Any, row: Any, current: ServedModel, progress: Progress) -> ServedModel:
    checkpoint = checkpoint_from_row(row)  # never v0: it is served first, before any swap
    where = checkpoint.adapter if checkpoint.kind == "adapter" else checkpoint.path
    if where is None or not Path(where).exists():
        raise UserError(f"the weights of {row['version']} are gone ({where}): trainer.keep_checkpoints deleted "
                        f"them; evaluate the other versions with --versions")
    progress(f"serving {row['version']} from {where}")
    try:
        return await swapper.swap(checkpoint, current)
    except SwapError as exc:
        raise UserError(f"could not serve {row['version']} to evaluate it: {exc}") from None


async def _keep(store: RunStore, version: str, result: BenchResult, limit: int) -> None:
    row = store.model(version)
    detail = json.loads(row["detail"] or "{}")
    detail.setdefault("benchmarks", {})[result.bench] = {**result.summary(), "limit": limit}
    await store.write([model_row_op(row["version"], parent=row["parent"], round=row["round"],
                                    served_name=row["served_name"], path=row["path"], state=row["state"],
                                    detail=detail)])
    if version != "v0" and row["path"]:  # the card beside the weights says how they scored
        write_card(Path(row["path"]), store.model(version), store.meta())
