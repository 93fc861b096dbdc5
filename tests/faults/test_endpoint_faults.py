"""Faults between the runtime and the endpoint, and hostile model output: the run completes,
every item is accounted for by reason, retries are bounded and visible, nothing is done twice."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

import isheep
from isheep.runtime.core.loading import load_config

ALL_FAULTS = ["500", "503", "429", "reset", "timeout", "slow", "truncated", "nonjson", "wrong_model"]


def accounting(folder) -> dict:
    with sqlite3.connect(folder / "isheep.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        states = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        assert set(states) <= {"kept", "rejected", "failed"}, states  # every item in exactly one final state
        by_reason = dict(db.execute("SELECT state || ':' || COALESCE(reason, ''), COUNT(*) FROM items"
                                    " WHERE state != 'kept' GROUP BY 1").fetchall())
        assert all(not key.endswith(":") for key in by_reason), by_reason  # each refusal has its reason
        assert db.execute("SELECT COUNT(*) FROM events WHERE kind='integrity'").fetchone()[0] == 0
        retries = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind='retry'")]
    return {"states": states, "reasons": by_reason, "retries": retries}


async def test_twenty_percent_of_requests_failing_in_every_way(server, proxy_factory, tmp_path, clean_env):
    proxy = proxy_factory(server.url, fail_rate=0.2, modes=ALL_FAULTS, hang_s=8, slow_s=0.5)
    config = load_config(overrides={
        "endpoints": [{"base_url": proxy.url}], "out": str(tmp_path / "run"), "rounds": 2, "round_size": 60,
        "close_on": "kept",
        "max_proposed": 2000, "client.timeout_s": 3, "client.max_retries": 4, "client.backoff_s": 0.01,
        "client.backoff_max_s": 0.05, "responder.workers": 16, "critic.workers": 16}, environ={})
    result = await isheep.arun(config)
    assert not result.stopped and all(r.kept >= 60 for r in result.rounds)
    info = accounting(result.folder)
    counts = proxy.counts()
    assert all(counts.get(mode, 0) > 0 for mode in ALL_FAULTS), counts
    # Retries are visible, bounded, and name what went wrong.
    assert info["retries"] and {r["reason"] for r in info["retries"]} <= {
        "http_500", "http_503", "http_429", "connection", "timeout", "truncated_body", "bad_json", "wrong_model"}
    assert len(info["retries"]) <= counts["requests"]
    proposed = sum(info["states"].values())
    assert proposed == sum(r.proposed for r in result.rounds)


async def test_hostile_model_output_is_handled_by_the_recipe(server_factory, tmp_path, clean_env):
    server = server_factory(hostile_rate=0.3)
    config = load_config(overrides={
        "endpoints": [{"base_url": server.url}], "out": str(tmp_path / "run"), "rounds": 1, "round_size": 40,
        "max_proposed": 2000, "close_on": "kept", "critic.style": "judge", "critic.structured": "text",
        # The runtime's own answer filters, which these hostile answers are meant to meet.
        "responder.filters": ["empty_response", "role_leak", "answer_choices", "noinput_in_response"],
        "responder.drop_truncated": True}, environ={})
    result = await isheep.arun(config)
    info = accounting(result.folder)
    reasons = {key.split(":")[1] for key in info["reasons"]}
    assert {"empty_response", "truncated", "role_leak", "critic_unparseable"} <= reasons, reasons
    stats = server.stats()
    assert stats.get("hostile_slash", 0) > 0 and stats.get("hostile_extra", 0) > 0
    with sqlite3.connect(result.folder / "isheep.db") as db:
        slash = db.execute("SELECT COUNT(*) FROM items WHERE quality_raw LIKE '9/10||%' AND quality = 9").fetchone()[0]
        extra = db.execute("SELECT COUNT(*) FROM items WHERE quality_raw LIKE '%confidence%' AND quality = 9"
                           ).fetchone()[0]
        eleven = db.execute("SELECT COUNT(*) FROM items WHERE quality_raw LIKE '11||%' AND quality IS NOT NULL"
                            ).fetchone()[0]
    assert slash > 0 and extra > 0  # "9/10" and JSON with extra fields read as 9
    assert eleven == 0  # "11" is not a score from 1 to 10


async def test_a_refused_api_key_stops_the_run_at_once(server_factory, tmp_path, clean_env):
    # The key is accepted at the start, then refused mid-run (rotated, revoked): every further
    # request would be refused alike, so the run stops at the first refusal with one line naming
    # the endpoint; it does not fail items or burn proposal calls and retries first.
    server = server_factory(api_key="first-key", delay_s=0.01)
    config = load_config(overrides={
        "endpoints": [{"base_url": server.url, "api_key_env": "TEST_KEY"}], "out": str(tmp_path / "run"),
        "rounds": 1, "round_size": 2000, "max_proposed": 20000, "client.backoff_s": 0.01,
        "metrics_interval_s": 0.2}, environ={"TEST_KEY": "first-key"})
    holder: dict = {}

    async def rotate_the_key() -> None:
        while "s" not in holder or holder["s"].stats.account is None or holder["s"].stats.account.finished < 20:
            await asyncio.sleep(0.02)
        server.control(api_key="second-key")

    rotate = asyncio.create_task(rotate_the_key())
    with pytest.raises(isheep.UserError) as caught:
        await isheep.arun(config, environ={"TEST_KEY": "first-key"}, on_supervisor=lambda s: holder.__setitem__("s", s))
    await rotate
    message = str(caught.value)
    assert message == (f"{server.url} refused the API key (HTTP 401); set OPENAI_API_KEY or the endpoint's "
                       "api_key_env")
    with sqlite3.connect(tmp_path / "run" / "isheep.db") as db:
        refused = db.execute("SELECT COUNT(*) FROM items WHERE reason LIKE 'http_401%'").fetchone()[0]
        retried = db.execute("SELECT COUNT(*) FROM events WHERE kind IN ('retry', 'proposer_failed')").fetchone()[0]
    assert refused == 0 and retried == 0  # nothing was failed or retried for a refused key
    store = isheep.RunStore.open(tmp_path / "run", readonly=True)
    assert store.integrity() == []  # the items in flight are resumable, not lost
    store.close_sync()
