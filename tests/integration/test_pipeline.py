"""The whole data side of a round against a real HTTP server (the test server, as a subprocess)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

import isheep
from isheep.runtime.core.loading import load_config
from isheep.runtime.store import RunStore


def make_config(tmp_path: Path, urls, **overrides):
    # The default recipe (I-SHEEP as its authors ran it), closing rounds on kept pairs: what these
    # tests count. The recipes' own choices are tested in test_recipes.py.
    base = {
        "endpoints": [{"base_url": u} for u in ([urls] if isinstance(urls, str) else urls)], "close_on": "kept",
        "out": str(tmp_path / "run"), "rounds": 2, "round_size": 30, "max_proposed": 400,
        "client.backoff_s": 0.01, "client.backoff_max_s": 0.05, "client.timeout_s": 5,
        "proposer.workers": 2, "responder.workers": 8, "critic.workers": 8, "metrics_interval_s": 0.2,
    }
    base.update(overrides)
    return load_config(overrides=base, environ={})


def check_accounting(folder: Path) -> dict:
    """proposed = kept + rejected + failed in every round, nothing left unfinished, sound store."""
    store = RunStore.open(folder, readonly=True)
    try:
        assert store.integrity() == []
        for r in store.rounds():
            counts = store.counts(r.round)
            assert set(counts) <= {"kept", "rejected", "failed"}, counts
            reasons = store.reasons(r.round)
            assert sum(n for (state, _), n in reasons.items() if state == "rejected") == counts.get("rejected", 0)
            assert sum(n for (state, _), n in reasons.items() if state == "failed") == counts.get("failed", 0)
        rows = list(store.items())
        assert len({row["id"] for row in rows}) == len(rows)
        for row in rows:
            if row["state"] == "kept":
                assert row["quality"] > 8 and row["following"] > 8 and row["response"]
                assert row["proposer_version"] == row["responder_version"] == row["critic_version"] == "v0"
            else:
                assert row["reason"], dict(row)
        return {"counts": store.counts(), "rounds": store.rounds(), "reasons": store.reasons()}
    finally:
        store.close_sync()


async def test_two_rounds_account_for_every_item(server, tmp_path, clean_env):
    config = make_config(tmp_path, server.url)
    result = await isheep.arun(config)
    info = check_accounting(result.folder)
    stats = server.stats()
    # As the authors' code: every role asks the base model with plain text (no chat template).
    assert stats["routes"]["POST /v1/completions"] > 0 and "POST /v1/chat/completions" not in stats["routes"]
    assert stats.get("machine_example_prompts", 0) == 0  # no mixing unless asked for
    assert [r.state for r in info["rounds"]] == ["done", "done"]
    assert len(result.rounds) == 2
    for summary in result.rounds:
        assert summary.kept >= 30  # the quota closed the round...
        assert summary.proposed < 400  # ...long before the cap
        assert summary.proposed == summary.kept + sum(summary.rejected.values()) + sum(summary.failed.values())
    kinds = {reason.split(":")[0] for (_, reason) in info["reasons"]}
    assert {"low_quality", "blacklist"} <= kinds  # the test server's bad tasks were caught
    assert result.model == "test-model"  # the only model served was picked


async def test_a_model_that_never_passes_ends_the_round_at_the_cap(server_factory, tmp_path, clean_env):
    server = server_factory(keep_rate=0.0)
    result = await isheep.arun(make_config(tmp_path, server.url, rounds=1, max_proposed=120))
    assert result.rounds[0].proposed == 120 and result.rounds[0].kept == 0
    info = check_accounting(result.folder)
    assert info["rounds"][0].detail.startswith("proposal cap reached")


async def test_failed_requests_fail_items_with_their_reason(server, proxy_factory, tmp_path, clean_env):
    proxy = proxy_factory(server.url, fail_rate=0.3, modes=["500", "503"])
    config = make_config(tmp_path, proxy.url, rounds=1, **{"client.max_retries": 0})
    result = await isheep.arun(config)
    info = check_accounting(result.folder)
    failed = {reason for (state, reason) in info["reasons"] if state == "failed"}
    assert failed and failed <= {"http_500", "http_503"}
    assert result.rounds[0].kept >= 30


async def test_retries_are_bounded_and_recorded(server, proxy_factory, tmp_path, clean_env):
    proxy = proxy_factory(server.url, fail_rate=0.2, modes=["500", "429", "nonjson", "wrong_model"])
    config = make_config(tmp_path, proxy.url, rounds=1, **{"client.max_retries": 3})
    result = await isheep.arun(config)
    check_accounting(result.folder)
    with sqlite3.connect(result.folder / "isheep.db") as db:
        retries = db.execute("SELECT COUNT(*) FROM events WHERE kind='retry'").fetchone()[0]
        reasons = {json.loads(d)["reason"] for (d,) in db.execute("SELECT data FROM events WHERE kind='retry'")}
    assert retries > 0
    assert reasons <= {"http_500", "http_429", "bad_json", "wrong_model"}


@pytest.mark.parametrize("refusal", [
    {"structured": False},  # HTTP 400 naming response_format (vLLM without guided decoding, hosted APIs)
    {"structured": False, "schema_status": 500, "schema_refusal": "json_schema: grammar not supported"},  # llama.cpp
    {"ignore_schema": True},  # accepted, then answered in plain text
], ids=["http_400", "http_500", "ignored"])
@pytest.mark.parametrize("layout", ["quoted", "conversation"])
async def test_critic_falls_back_to_text_when_structured_output_is_refused(server_factory, tmp_path, clean_env,
                                                                          refusal, layout):
    server = server_factory(**refusal)
    result = await isheep.arun(make_config(tmp_path, server.url, rounds=1,
                                           **{"critic.style": "judge", "critic.layout": layout}))
    # Finding out costs no item: none failed, none refused for an unreadable score.
    assert result.totals.get("failed", 0) == 0
    assert not any(reason.startswith("critic_unparseable") for _, reason in result.reasons)
    check_accounting(result.folder)
    assert result.rounds[0].kept >= 30
    with sqlite3.connect(result.folder / "isheep.db") as db:
        raws = [r for (r,) in db.execute("SELECT quality_raw FROM items WHERE state='kept' LIMIT 5")]
        assert all("||" in r for r in raws)
        assert db.execute("SELECT COUNT(*) FROM events WHERE kind='critic'").fetchone()[0] == 1


@pytest.mark.parametrize("api", ["completions", "chat"])
async def test_the_proposer_asks_through_the_api_it_is_told(server, tmp_path, clean_env, api):
    result = await isheep.arun(make_config(tmp_path, server.url, rounds=1, **{"proposer.api": api}))
    check_accounting(result.folder)
    assert result.rounds[0].kept >= 30
    stats = server.stats()
    # Every proposal went through that route (completions: the model continues the list), none the other.
    other = "chat" if api == "completions" else "completions"
    assert stats[f"proposer_via_{api}"] == stats["proposer"] > 0 and f"proposer_via_{other}" not in stats


async def test_machine_examples_are_mixed_in(server, tmp_path, clean_env):
    result = await isheep.arun(make_config(tmp_path, server.url, rounds=1, **{"proposer.num_machine_examples": 2}))
    check_accounting(result.folder)
    # Once the run has instructions of its own, proposal prompts show them to the model.
    assert server.stats().get("machine_example_prompts", 0) > 0


async def test_pool_spreads_requests_and_survives_losing_an_endpoint(server_factory, tmp_path, clean_env):
    first, second = server_factory(delay_s=0.02), server_factory(delay_s=0.02)
    config = make_config(tmp_path, [first.url, second.url], rounds=2, round_size=60, max_proposed=800,
                         **{"client.max_retries": 4})

    async def kill_one_later():
        # Once the second endpoint carries part of the load, it dies mid-run.
        while (await asyncio.to_thread(second.stats)).get("responder", 0) < 50:
            await asyncio.sleep(0.05)
        second.stop()

    killer = asyncio.create_task(kill_one_later())
    result = await isheep.arun(config)
    await killer
    check_accounting(result.folder)
    assert first.stats()["requests"] > 0
    assert sum(r.kept for r in result.rounds) >= 120
    with sqlite3.connect(result.folder / "isheep.db") as db:
        lost = db.execute("SELECT COUNT(*) FROM events WHERE kind='retry' AND message LIKE ?",
                          (f"%{second.port}%connection%",)).fetchone()[0]
    assert lost > 0  # the dead endpoint was noticed, and its requests went to the other one


async def test_graceful_stop_then_resume_finishes_without_duplicates(server_factory, tmp_path, clean_env):
    server = server_factory(delay_s=0.01)
    config = make_config(tmp_path, server.url, rounds=2, round_size=40)
    holder = {}

    async def stop_soon():
        while "s" not in holder or holder["s"].stats.account is None or holder["s"].stats.account.kept < 10:
            await asyncio.sleep(0.02)
        holder["s"].request_stop()

    stopper = asyncio.create_task(stop_soon())
    first = await isheep.arun(config, on_supervisor=lambda s: holder.__setitem__("s", s))
    await stopper
    assert first.stopped
    with sqlite3.connect(first.folder / "isheep.db") as db:
        before = {row[0]: row[1:] for row in db.execute(
            "SELECT id, state, updated_at FROM items WHERE state IN ('kept','rejected','failed')")}
    assert before
    config = make_config(tmp_path, server.url, rounds=2, round_size=40)
    second = await isheep.arun(config, resume=True)
    assert not second.stopped
    check_accounting(second.folder)
    with sqlite3.connect(first.folder / "isheep.db") as db:
        after = {row[0]: row[1:] for row in db.execute("SELECT id, state, updated_at FROM items")}
    for item_id, value in before.items():
        assert after[item_id] == value  # finished work was not redone


async def test_export_writes_jsonl_and_a_datasets_folder(server, tmp_path, clean_env):
    result = await isheep.arun(make_config(tmp_path, server.url, rounds=2, round_size=10))
    info = isheep.export_run(result.folder)
    lines = (result.folder / "exports" / "round-01.jsonl").read_text().splitlines()
    assert len(lines) == info["rounds"][1] == result.rounds[0].kept
    row = json.loads(lines[0])
    assert row["messages"][1]["content"] == row["response"] and row["state"] == "kept"
    from datasets import load_from_disk

    data = load_from_disk(info["dataset"])
    assert set(data.keys()) == {"round_1", "round_2"} and len(data["round_1"]) == len(lines)
    everything = isheep.export_run(result.folder, tmp_path / "all", include_all=True)
    assert everything["rounds"][1] == result.rounds[0].proposed


async def test_the_openai_sdk_kind_runs_the_same_loop(server, tmp_path, clean_env):
    config = make_config(tmp_path, server.url, rounds=1)
    config.endpoints[0].kind = "openai"
    result = await isheep.arun(config)
    check_accounting(result.folder)
    assert result.rounds[0].kept >= 30


async def test_sdk_kind_maps_errors_like_the_http_kind(server, proxy_factory, tmp_path, clean_env):
    proxy = proxy_factory(server.url, fail_rate=0.3, modes=["500", "nonjson"])
    config = make_config(tmp_path, proxy.url, rounds=1, **{"client.max_retries": 0})
    config.endpoints[0].kind = "openai"
    result = await isheep.arun(config)
    info = check_accounting(result.folder)
    failed = {reason for (state, reason) in info["reasons"] if state == "failed"}
    assert failed and failed <= {"http_500", "bad_json", "bad_reply"}


async def test_rate_limit_spaces_requests(server, tmp_path, clean_env):
    from isheep.runtime.core.config import ClientConfig
    from isheep.runtime.serving.endpoints import EndpointPool, HttpEndpoint

    pool = EndpointPool([(HttpEndpoint(server.url, None, timeout_s=5, connect_timeout_s=5, max_in_flight=64), 64)],
                        ClientConfig(rate_limit=20))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(pool.chat({"model": "test-model", "messages": [{"role": "user", "content": "hi"}]})
                           for _ in range(50)))
    # 50 requests at 20 per second need at least two full periods after the first burst.
    assert loop.time() - started >= 2.0
    await pool.aclose()
