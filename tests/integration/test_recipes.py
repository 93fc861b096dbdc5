"""Each recipe run against the test server: what makes it that method is what the server saw.

The exact prompts are golden files (tests/unit/test_recipe_prompts.py); here the recipes run
through the whole loop, and each test checks the requests and the store: plain-text requests
throughout for I-SHEEP, principles in every answer request and none in the training data for
Dromedary, the run's own instructions among the examples and no critic for Self-Instruct.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import isheep
from isheep.runtime.core.loading import load_config
from isheep.runtime.training import training_rows

PRINCIPLE = "harmlessness"  # a word of the first principle, in every principle-driven prompt


async def run_recipe(recipe: str, url: str, folder: Path, **overrides):
    config = load_config(overrides={"recipe": recipe, "endpoints": [{"base_url": url}], "out": str(folder),
                                    "round_size": 40, "max_proposed": 2000, "client.backoff_s": 0.01,
                                    **overrides}, environ={})
    return await isheep.arun(config)


def rows(folder: Path, sql: str, args=()):
    with sqlite3.connect(folder / "isheep.db") as db:
        return db.execute(sql, args).fetchall()


async def test_isheep_asks_in_plain_text_and_closes_on_instructions(server, tmp_path, clean_env):
    result = await isheep.arun(load_config(overrides={
        "endpoints": [{"base_url": server.url}], "out": str(tmp_path / "run"), "rounds": 1, "round_size": 40,
        "max_proposed": 2000}, environ={}))
    stats = server.stats()
    assert result.rounds[0].state == "done" and sum(result.totals.values()) == result.rounds[0].proposed
    # As the authors' code: the base model continues every prompt as plain text, no chat template.
    assert set(stats["routes"]) <= {"POST /v1/completions", "GET /v1/models", "GET /_stats"}
    # Quality first; following only for the pairs whose quality could be read (as theirs).
    asked = rows(result.folder, "SELECT COUNT(quality_raw), SUM(following_raw != '') FROM items")[0]
    assert stats["critic"] == asked[0] + asked[1] and asked[1] == rows(
        result.folder, "SELECT COUNT(quality) FROM items")[0][0]
    # The round closed once 40 instructions passed the filters; every one was then answered and judged.
    screened = rows(result.folder, "SELECT COUNT(*) FROM items WHERE NOT (stage='proposer' AND state='rejected')")
    assert screened[0][0] >= 40 and result.rounds[0].kept < 40
    assert rows(result.folder, "SELECT detail FROM rounds")[0][0].endswith(f"({result.rounds[0].kept} kept)")


async def test_dromedary_answers_by_principles_and_trains_without_them(server, tmp_path, clean_env):
    result = await run_recipe("dromedary", server.url, tmp_path / "run", rounds=2)
    stats = server.stats()
    first = [r for r in result.rounds if r.round == 1][0]
    assert [r.state for r in result.rounds] == ["done", "done"] and stats["topic_prompts"] > 0
    # Round 1 is Dromedary: every answer request carried the principles; no critic judged it.
    round1 = rows(result.folder, "SELECT COUNT(*), COUNT(critic_version) FROM items WHERE round=1 AND "
                                 "response IS NOT NULL")[0]
    assert round1[0] >= 30 and round1[1] == 0 and first.kept == first.proposed - sum(first.rejected.values())
    assert stats["principle_prompts"] >= round1[0]
    # Round 2 is I-SHEEP on top of it: plain answers, judged.
    assert rows(result.folder, "SELECT COUNT(critic_version) FROM items WHERE round=2")[0][0] > 0
    # Principle engraving: the kept answers, and the training rows made of them, hold no principle
    # and no internal thoughts; the answer after the thoughts is what was kept.
    kept = rows(result.folder, "SELECT id, round, instruction, input, response FROM items WHERE round=1 AND state='kept'")
    data = repr(training_rows([dict(zip(("id", "round", "instruction", "input", "response"), r)) for r in kept]))
    assert kept and PRINCIPLE not in data and "internal thoughts" not in data and "Assistant:" not in data
    assert all(r[4].startswith("Here is a careful answer") for r in kept)


async def test_self_instruct_mixes_its_own_instructions_and_has_no_critic(server, tmp_path, clean_env):
    result = await run_recipe("self-instruct", server.url, tmp_path / "run", round_size=200)  # calls after the first
    stats = server.stats()
    assert stats.get("critic", 0) == 0 and stats["machine_example_prompts"] > 0
    judged = rows(result.folder, "SELECT COUNT(*) FROM items WHERE quality IS NOT NULL OR critic_version IS NOT NULL")
    assert judged[0][0] == 0 and result.rounds[0].kept > 0  # the filters alone decided
    assert {reason.split(":")[0] for _, reason in result.reasons} <= {
        "too_short", "too_long", "blacklist", "write_a_program", "starts_with_punctuation", "non_ascii_start",
        "rouge_l", "empty_response"}


async def test_a_chat_only_endpoint_gets_chat_requests_and_loses_no_item(server_factory, tmp_path, clean_env):
    # 'completions where the endpoint serves them, chat otherwise': a hosted chat-only API (404).
    server = server_factory(completions=False)
    result = await run_recipe("isheep", server.url, tmp_path / "run", rounds=1)
    stats = server.stats()
    assert stats["routes"]["POST /v1/completions"] <= 3  # each role found out once
    assert stats["routes"]["POST /v1/chat/completions"] > 0 and result.totals.get("failed", 0) == 0


async def test_dromedary_verbose_cloning_asks_round_one_again_for_detailed_answers(server, tmp_path, clean_env):
    result = await run_recipe("dromedary-verbose", server.url, tmp_path / "run")
    stats = server.stats()
    assert [r.state for r in result.rounds] == ["done", "done"]
    first = rows(result.folder, "SELECT instruction, input FROM items WHERE round=1 AND NOT (stage='proposer' AND "
                                "state='rejected') ORDER BY seq")
    second = rows(result.folder, "SELECT instruction, input FROM items WHERE round=2 ORDER BY seq")
    assert second == first  # every instruction of round 1, again, in order
    assert stats["detailed_prompts"] >= len(second) > 0
    assert rows(result.folder, "SELECT COUNT(critic_version) FROM items WHERE round=2")[0][0] == 0


async def test_a_named_judge_endpoint_gets_every_assessment(server_factory, tmp_path, clean_env):
    """``critic.endpoint``: the base model's judge on a server of its own, the policy's server never asked to judge."""
    policy, judge = server_factory(), server_factory()
    result = await run_recipe("isheep", policy.url, tmp_path / "run", rounds=1, round_size=20,
                              **{"critic.endpoint": {"base_url": judge.url}})
    asked = rows(result.folder, "SELECT COUNT(quality_raw) + SUM(following_raw != '') FROM items")[0][0]
    assert result.rounds[0].state == "done" and asked > 0
    on_policy, on_judge = policy.stats(), judge.stats()
    assert on_policy.get("critic", 0) == 0 and on_judge.get("critic") == asked
    assert on_judge.get("proposer", 0) == on_judge.get("responder", 0) == 0
