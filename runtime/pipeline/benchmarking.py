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
from isheep.runtime.store import RunStore, checkpoint_from_row

from .modelcard import refresh_card

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
    """Each version's score per benchmark, with paired differences to the base (v0, when it was
    measured on that benchmark) and to the version before it among ``versions``."""
    rows = []
    benches = sorted({b for v in versions for b in results.get(v, {})})
    for bench in benches:
        measured = [v for v in versions if bench in results.get(v, {})]
        base = results.get("v0", {}).get(bench, {}).get("scores")
        for i, version in enumerate(measured):
            data = results[version][bench]
            scores = data["scores"]
            previous = results[measured[i - 1]][bench]["scores"] if i else None
            rows.append(VersionScore(version, bench, Interval.from_dict(data["interval"]), data.get("metrics", {}),
                                     paired_difference(scores, base) if base is not None and version != "v0" else None,
                                     paired_difference(scores, previous) if previous is not None and (
                                         i > 1 or measured[0] != "v0") else None))
    return rows


def _ordered(store: RunStore, wanted: list[str] | None) -> list[Any]:
    """The lineage rows to evaluate in order: all, or the ``wanted`` ones and the base (the
    differences are to it)."""
    rows = {row["version"]: row for row in store.models()}
    if wanted is None:
        return list(rows.values())
    unknown = [v for v in wanted if v not in rows]
    if unknown:
        raise UserError(f"no model version {', '.join(unknown)} in this run (it has {', '.join(rows)})")
    wanted = ["v0", *wanted] if "v0" in rows else list(wanted)
    return sorted((rows[v] for v in dict.fromkeys(wanted)), key=lambda r: (r["round"] or 0, r["version"]))


def weights_of(row: Any) -> Path | None:
    """Where a trained version's weights are (its adapter for an adapter checkpoint), or None."""
    checkpoint = checkpoint_from_row(row)
    return checkpoint.adapter if checkpoint.kind == "adapter" else checkpoint.path


def _gone(row: Any, first: str | None) -> Path | None | bool:
    """False when the version can be served; else where its weights were (deleted by
    ``trainer.keep_checkpoints``). The version served first needs no swap."""
    if row["version"] in ("v0", first):  # the base is the user's folder, never pruned
        return False
    where = weights_of(row)
    return False if where is not None and Path(where).exists() else where


async def evaluate_run(config: RunConfig, store: RunStore, benches: list[Benchmark], *, versions: list[str] | None,
                       limit: int, environ: Mapping[str, str], progress: Progress) -> list[str]:
    """Serve each version of the run in turn and run ``benches`` on it; the versions measured, in order.

    Versions whose weights are gone are skipped with a note; with ``versions`` the base is
    measured too (the differences are to it) where it can be served.

    Raises:
        UserError: an unknown version, a swap that failed, or a run on endpoints it does not
            manage asked about a version they do not serve.
    """
    known = stored_results(store)

    def measured(row: Any, bench: Benchmark) -> bool:
        stored = known.get(row["version"], {}).get(bench.name, {})
        return stored.get("limit") == limit and stored.get("fingerprint", "") == bench.fingerprint()

    first = store.model("v0") if config.managed else store.serving_model()
    chosen = []
    for row in _ordered(store, versions):
        done = all(measured(row, b) for b in benches)
        if not done and (where := _gone(row, first and first["version"])) is not False:
            # Skipped up front: stopping there after measuring the others would waste them.
            progress(f"skipping {row['version']}: its weights are gone ({where}; trainer.keep_checkpoints "
                     f"deleted them)")
            continue
        chosen.append(row)
    todo = [r for r in chosen if not all(measured(r, b) for b in benches)]
    if not todo:
        return [r["version"] for r in chosen]
    # Benchmarks need no judge: no second server for a base-model critic.
    plain = config.model_copy(update={"critic": config.critic.model_copy(update={"model": "current", "endpoint": None})})
    serving = await open_serving(plain, store.folder, environ, progress)
    try:
        current = _first_served(store, serving.servers != [])
        if not serving.servers and versions is not None and "v0" not in versions:
            todo = [r for r in todo if r["version"] != "v0"]  # added for the differences: only if it can be served
        if not serving.servers and any(r["version"] != current.version for r in todo):
            raise UserError(f"this run's endpoints are not managed by isheep and serve {current.version} now; "
                            f"evaluate that version, or serve another and use isheep eval --endpoint URL --model NAME")
        await serving.pool.verify(current.name)
        for row in todo:
            if row["version"] != current.version:
                current = await _serve(serving.swapper, row, current, progress)
            for bench in benches:
                if measured(row, bench):
                    continue
                progress(f"{row['version']}: {bench.name} ({bench.metric})")
                result = await bench.run(serving.pool, current.name, limit=limit)
                await _keep(store, row["version"], result, limit, bench.fingerprint())
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
    where = weights_of(row)
    progress(f"serving {row['version']} from {where}")
    try:
        return await swapper.swap(checkpoint, current)
    except SwapError as exc:
        raise UserError(f"could not serve {row['version']} to evaluate it: {exc}") from None


async def _keep(store: RunStore, version: str, result: BenchResult, limit: int, fingerprint: str) -> None:
    row = store.model(version)
    benches = json.loads(row["detail"] or "{}").get("benchmarks") or {}
    await store.amend_model(version, {"benchmarks": {**benches, result.bench: {**result.summary(), "limit": limit,
                                                                 "fingerprint": fingerprint}}})
    refresh_card(store, version)  # the card beside the weights says how they scored
