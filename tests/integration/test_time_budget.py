"""A whole run's time budget and its rounds' tails, against the test server (in this process).

The server works on four requests at a time (fewer than the pool starts with), queues the rest
and says so on /metrics as vLLM does: the run knows how much of its generation the server was
saturated. Many pairs are kept in flight for a small quota, so each round has a tail; answered
one at a time, the pairs still in flight when the quota is met cost answers the round did not need.
"""

from __future__ import annotations

import asyncio

import pytest

import isheep
from isheep.runtime.core.loading import load_config
from isheep.runtime.pipeline.budget import PHASES
from isheep.runtime.store import RunStore

pytestmark = pytest.mark.timeout(120)


def config_for(url: str, out, **overrides):
    return load_config(overrides={
        "endpoints": [{"base_url": url}], "close_on": "kept", "out": str(out), "rounds": 2, "round_size": 6,
        "max_proposed": 400, "client.backoff_s": 0.01, "client.timeout_s": 10, "metrics_interval_s": 0.05,
        "proposer.workers": 2, "responder.workers": 32, "critic.workers": 32, "proposer.min_pending": 48,
        **overrides}, environ={})


def adds_up(budget: dict) -> bool:
    return abs(sum(budget[f"{name}_s"] for name in PHASES) + budget["idle_s"] - budget["wall_s"]) < 1e-6


async def test_a_runs_budget_adds_up_and_its_rounds_tails_are_counted(server_factory, tmp_path, clean_env):
    server = server_factory(delay_s=0.05, batch=4, metrics=True)
    result = await isheep.arun(config_for(server.url, tmp_path / "run"))
    budget = result.budget.to_dict()
    assert adds_up(budget) and budget["idle_s"] >= 0
    assert budget["wall_s"] == pytest.approx(result.elapsed_s)  # the summary's "in all", teardown included
    assert budget["shutdown_s"] > 0 and budget["startup_s"] > 0 and budget["server_start_s"] == 0  # no managed one
    assert budget["idle_s"] < 0.05 * budget["wall_s"]  # what no phase names is small
    for r in result.rounds:
        assert 0 < r.tail_s < r.generation_s
        # Often none: the server answers requests in order, so the answers are out before the judgments.
        assert 0 <= r.past_quota <= r.proposed
        assert r.saturated_share is not None and 0 < r.saturated_share <= 1  # 8 in flight at the least, on a batch of 4
    assert budget["generation_s"] + budget["round_tail_s"] == pytest.approx(
        sum(r.generation_s for r in result.rounds), abs=0.05)
    assert budget["round_tail_s"] == pytest.approx(sum(r.tail_s for r in result.rounds))
    assert budget["past_quota"] == sum(r.past_quota for r in result.rounds)
    store = RunStore.open(result.folder, readonly=True)
    try:
        assert store.time_budgets() == [budget]  # the final one, written after the store closed
    finally:
        store.close_sync()


async def test_answers_still_to_come_when_the_quota_is_met_are_counted_past_it(server_factory, tmp_path, clean_env):
    server = server_factory(delay_s=0.02, bad_rate=0.0, dup_rate=0.0, empty_rate=0.0)
    # One Responder worker: when the third pair is kept, most of the 24 in flight wait for an answer.
    config = config_for(server.url, tmp_path / "run", rounds=1, round_size=3, **{
        "responder.workers": 1, "proposer.min_pending": 24, "curator.quality_threshold": 0,
        "curator.following_threshold": 0})
    result = await isheep.arun(config)
    (r,) = result.rounds
    store = RunStore.open(result.folder, readonly=True)
    try:
        answered = sum(n for (state, _), n in store.reasons(1).items()) + store.counts(1).get("kept", 0)
    finally:
        store.close_sync()
    assert r.kept >= 3 and 0 < r.tail_s < r.generation_s
    # Every answer after the third kept pair is past the quota; the first three kept pairs' are not.
    assert 0 < r.past_quota <= answered - 3
    assert result.budget.past_quota == r.past_quota


async def test_without_server_metrics_the_saturation_is_unknown_and_a_resume_adds_a_session(
        server_factory, tmp_path, clean_env):
    server = server_factory(delay_s=0.05)  # no /metrics route
    holder = {}

    async def stop_after_round_one():
        while "s" not in holder or not holder["s"].summaries:
            await asyncio.sleep(0.02)
        holder["s"].request_stop()

    stopper = asyncio.create_task(stop_after_round_one())
    first = await isheep.arun(config_for(server.url, tmp_path / "run"), on_supervisor=lambda s: holder.update(s=s))
    await stopper
    assert first.stopped and first.budget.saturated_share is None
    assert all(r.saturated_share is None for r in first.rounds)
    second = await isheep.arun(config_for(server.url, tmp_path / "run"), resume=True)
    assert second.budget_before == [first.budget.to_dict()]
    store = RunStore.open(second.folder, readonly=True)
    try:
        sessions = store.time_budgets()
    finally:
        store.close_sync()
    assert sessions == [first.budget.to_dict(), second.budget.to_dict()]
    assert all(adds_up(s) for s in sessions)
