"""Benchmarks of a run's model versions: each one served in turn by the run's own servers and swap
strategy, asked a benchmark's prompts, scored, and its results kept in the lineage.

Results live in each version's lineage detail (``benchmarks.<name>``: every prompt's score, the
metrics, the interval), so they are exported with the run and read by the report and the
monitor. A version already measured on a benchmark with the same prompt limit is not asked
again. Differences between versions are paired over the prompts both answered.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping

from isheep.runtime.core.config import EndpointConfig, RunConfig
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.types import ServedModel
from isheep.runtime.evals import Benchmark, BenchResult, Interval, JudgeBenchmark, Party, paired_difference
from isheep.runtime.serving import SwapError, open_serving
from isheep.runtime.serving.endpoints import EndpointPool
from isheep.runtime.store import RunStore, checkpoint_from_row

from .modelcard import refresh_card

Progress = Callable[[str], None]
NO_BASE = ("the judge benchmark needs the base model's answers, and this run's endpoints do not serve v0: compare "
           "served models with isheep eval --endpoint URL --model NAME --bench judge --reference-model BASE")


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
                       limit: int, environ: Mapping[str, str], progress: Progress,
                       judge: EndpointConfig | None = None, judge_model: str | None = None) -> list[str]:
    """Serve each version of the run in turn and run ``benches`` on it; the versions measured, in order.

    Versions whose weights are gone are skipped with a note; with ``versions`` the base is
    measured too (the differences are to it) where it can be served. The ``judge`` benchmark
    collects every version's answers first, then has them judged against the base's: by the
    model at ``judge`` (``judge_model``, default the run's model name) when given, else by the
    base model, served again for it.

    Raises:
        UserError: an unknown version, a swap that failed, or a run on endpoints it does not
            manage asked about a version they do not serve.
    """
    known = stored_results(store)
    pairwise = next((b for b in benches if isinstance(b, JudgeBenchmark)), None)
    at = _judge_at(config, judge, judge_model, environ) if pairwise is not None else None
    referee = at.name if at is not None else ""

    def measured(row: Any, bench: Benchmark) -> bool:
        stored = known.get(row["version"], {}).get(bench.name, {})
        return (stored.get("limit") == limit and stored.get("fingerprint", "") == bench.fingerprint()
                and (not isinstance(bench, JudgeBenchmark)
                     or (stored.get("judge") == referee and stored.get("max_tokens") == bench.max_tokens)))

    def asks(row: Any, bench: Benchmark) -> bool:
        """Whether the version itself must answer (the judge only needs its stored answers)."""
        if isinstance(bench, JudgeBenchmark):
            return not measured(row, bench) and _answers(store, row["version"], bench, limit) is None
        return not measured(row, bench)

    first = store.model("v0") if config.managed else store.serving_model()
    chosen = []
    for row in _ordered(store, versions):
        if any(asks(row, b) for b in benches) and (where := _gone(row, first and first["version"])) is not False:
            # Skipped up front: stopping there after measuring the others would waste them.
            progress(f"skipping {row['version']}: its weights are gone ({where}; trainer.keep_checkpoints "
                     f"deleted them)")
            continue
        chosen.append(row)
    if pairwise is not None and chosen and chosen[0]["version"] != "v0":
        raise UserError("the judge benchmark compares each version with the base, v0, which is not in this run")
    todo = [r for r in chosen if any(asks(r, b) for b in benches)]
    judging = [r for r in chosen if pairwise is not None and not measured(r, pairwise)]
    if not todo and not judging:
        return [r["version"] for r in chosen]
    # Benchmarks need no critic: no second server for a base-model critic.
    plain = config.model_copy(update={"critic": config.critic.model_copy(update={"model": "current", "endpoint": None})})
    serving = await open_serving(plain, store.folder, environ, progress)
    try:
        current = _first_served(store, serving.servers != [])
        if not serving.servers and versions is not None and "v0" not in versions and any(
                r["version"] == "v0" for r in todo):
            # Added for the differences, but these endpoints do not serve it: left out of the table.
            todo = [r for r in todo if r["version"] != "v0"]
            chosen = [r for r in chosen if r["version"] != "v0"]
        if not serving.servers and any(r["version"] != current.version for r in todo):
            raise UserError(f"this run's endpoints are not managed by isheep and serve {current.version} now; "
                            f"evaluate that version, or serve another and use isheep eval --endpoint URL --model NAME")
        await serving.pool.verify(current.name)
        for row in todo:
            if row["version"] != current.version:
                current = await _serve(serving.swapper, row, current, progress)
            for bench in benches:
                if not asks(row, bench):
                    continue
                progress(f"{row['version']}: {bench.name} ({bench.metric})")
                if isinstance(bench, JudgeBenchmark):  # answers now, judged once every version has answered
                    texts = await bench.answers(serving.pool, current.name, limit=limit)
                    await _keep_answers(store, row["version"], bench, limit, texts)
                    continue
                result = await bench.run(serving.pool, current.name, limit=limit)
                await _keep(store, row["version"], result, limit, {"fingerprint": bench.fingerprint()})
        if pairwise is not None and judging:
            assert at is not None
            await _judge_versions(store, serving, pairwise, judging, current, limit, referee, at, progress)
    finally:
        await serving.aclose()
    return [r["version"] for r in chosen]


@dataclass(frozen=True)
class _JudgeAt:
    """Where the judge benchmark's judge is asked: ``endpoint`` (``model``), else the run's base model."""

    config: RunConfig
    endpoint: EndpointConfig | None
    model: str | None
    environ: Mapping[str, str]

    @property
    def name(self) -> str:
        """The judge as results record it: ``v0``, or the endpoint and model."""
        if self.endpoint is None:
            return "v0"
        return f"{self.endpoint.base_url} {self.model or self.config.model or ''}".strip()


def _judge_at(config: RunConfig, judge: EndpointConfig | None, model: str | None,
              environ: Mapping[str, str]) -> "_JudgeAt":
    """Who judges: ``judge`` when given; else the base model, served again by a managed run, or at
    ``critic.endpoint`` (the run's own endpoints serve one model at a time: serving v0 there to
    judge would leave the user's server on v0)."""
    if judge is None and not config.managed:
        judge, model = config.critic.endpoint, config.model
        if judge is None:
            raise UserError("on endpoints isheep does not manage, the judge benchmark needs a judge: "
                            "--judge-endpoint URL (a server of the base model, or any judge), or critic.endpoint")
    return _JudgeAt(config, judge, model, environ)


async def _judge_versions(store: RunStore, serving: Any, bench: JudgeBenchmark, rows: list[Any],
                          current: ServedModel, limit: int, referee: str, at: _JudgeAt, progress: Progress) -> None:
    """Judge each of ``rows``' stored answers against the base's, and keep the results."""
    base = await _judged_base(store, bench, rows, limit, referee)
    if not any(r["version"] != "v0" for r in rows):
        return
    async with _referee(serving, current, _first_served(store, True), at, progress) as party:
        for row in rows:
            answers = _answers(store, row["version"], bench, limit)
            if row["version"] == "v0" or answers is None:
                continue  # the base is even with itself; no answers: it could not be served
            progress(f"{row['version']}: judged against v0 by {referee}")
            result = await bench.compare(party, answers, base, model=row["served_name"], limit=limit)
            await _keep(store, row["version"], result, limit,
                        {"fingerprint": bench.fingerprint(), "judge": referee, "max_tokens": bench.max_tokens})


async def _judged_base(store: RunStore, bench: JudgeBenchmark, rows: list[Any], limit: int,
                       referee: str) -> dict[str, str]:
    """The base's stored answers (what every version is judged against); its own result, even with
    itself by definition, kept when it is among ``rows``."""
    base = _answers(store, "v0", bench, limit)
    if base is None:
        raise UserError(NO_BASE)
    if any(r["version"] == "v0" for r in rows):
        even = BenchResult(bench.name, "v0", {k: 0.5 for k in base}, {"win_rate": 0.5})
        await _keep(store, "v0", even, limit,
                    {"fingerprint": bench.fingerprint(), "judge": referee, "max_tokens": bench.max_tokens})
    return base


@contextlib.asynccontextmanager
async def _referee(serving: Any, current: ServedModel, base: ServedModel, at: _JudgeAt,
                   progress: Progress) -> AsyncIterator[Party]:
    """The judge to ask: the model at ``judge`` when given, else the ``base`` model, served again for it."""
    if at.endpoint is not None:
        pool = EndpointPool.from_config([at.endpoint], at.config.client, at.environ)
        try:
            yield Party(pool, await pool.verify(at.model or at.config.model or ""))
        finally:
            await pool.aclose()
        return
    if current.version != "v0":
        progress("serving v0 again: the base model judges")
        try:
            current = await serving.swapper.restore(base, current)
        except SwapError as exc:
            raise UserError(f"could not serve the base model again to judge: {exc}") from None
    yield Party(serving.pool, current.name)


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


async def _keep(store: RunStore, version: str, result: BenchResult, limit: int, extra: dict[str, Any]) -> None:
    row = store.model(version)
    benches = json.loads(row["detail"] or "{}").get("benchmarks") or {}
    await store.amend_model(version, {"benchmarks": {**benches, result.bench: {**result.summary(), "limit": limit,
                                                                               **extra}}})
    refresh_card(store, version)  # the card beside the weights says how they scored


def _answers(store: RunStore, version: str, bench: JudgeBenchmark, limit: int) -> dict[str, str] | None:
    """A version's stored answers to the judge benchmark's prompts (the same prompts and limit), or None."""
    row = store.model(version)
    kept = (json.loads(row["detail"] or "{}").get("answers") or {}).get(bench.name) if row is not None else None
    if not kept or kept.get("limit") != limit or kept.get("fingerprint") != bench.fingerprint() \
            or kept.get("max_tokens") != bench.max_tokens:
        return None
    return kept["texts"]


async def _keep_answers(store: RunStore, version: str, bench: JudgeBenchmark, limit: int,
                        texts: dict[str, str]) -> None:
    row = store.model(version)
    answers = json.loads(row["detail"] or "{}").get("answers") or {}
    await store.amend_model(version, {"answers": {**answers, bench.name: {
        "limit": limit, "fingerprint": bench.fingerprint(), "max_tokens": bench.max_tokens, "texts": texts}}})
