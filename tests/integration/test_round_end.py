"""The end of a round: waiting Proposers are woken only once a verdict is in the round's account.

A Proposer waits while the items in flight are expected to meet the quota. It used to be woken
before the verdict that woke it was counted: it saw the old counts, went back to waiting, and
with nothing left in flight nobody woke it again, so the round never closed (found with two
proposer workers and ``min_pending = 0``, the default, on the real server). Here the order that
stalled is forced: of the first call's two instructions, the second is rejected by the Responder
only after the first was kept and counted.

A Proposer whose last call reaches the proposal cap with drafts its filters all screen out
leaves with no verdict for the pipeline to pass on: the other one, waiting on that call, must
still be woken to see the round is over.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

import isheep
from isheep.agents import Responder, Role, Trainer
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.messages import Instruction, Verdict

pytestmark = pytest.mark.timeout(30)  # a stall shows as this timeout


class Order:
    """Which instruction came second, and when the first pair was kept."""

    def __init__(self) -> None:
        self.seen = 0
        self.first_kept = asyncio.Event()


class SecondWaits(Role[Instruction, Any]):
    """The built-in Responder, except that the round's second instruction is refused after the first is kept."""

    name: ClassVar[str] = "responder"

    def __init__(self, inner: Responder, order: Order) -> None:
        self.inner, self.order = inner, order

    async def handle(self, message: Instruction) -> Any:
        self.order.seen += 1
        if self.order.seen != 2:
            return await self.inner.handle(message)
        await self.order.first_kept.wait()
        return Verdict(id=message.id, round=message.round, model_version=message.model_version, status="rejected",
                       stage="responder", reason="truncated", instruction=message.instruction, input=message.input)


class Noting(Trainer):
    """The built-in Trainer, noting when the first kept pair reached it (its verdict is counted by then)."""

    def __init__(self, *args: Any, order: Order) -> None:
        super().__init__(*args)
        self.order = order

    async def handle(self, message: Any) -> Any:
        out = await super().handle(message)
        self.order.first_kept.set()
        return out


async def test_a_round_closes_when_the_last_verdict_in_flight_falls_short(server_factory, tmp_path, clean_env):
    server = server_factory(tasks_per_call=2, bad_rate=0.0, dup_rate=0.0, empty_rate=0.0)
    config = load_config(overrides={
        "endpoints": [{"base_url": server.url}], "model": "test-model", "out": str(tmp_path / "run"), "rounds": 1,
        "round_size": 2, "close_on": "kept", "max_proposed": 40, "proposer.workers": 2, "proposer.tasks_per_call": 2,
        "proposer.min_pending": 0, "curator.quality_threshold": 0, "curator.following_threshold": 0}, environ={})
    order = Order()
    result = await isheep.arun(config, roles={
        "responder": lambda *args: SecondWaits(Responder(*args), order),
        "trainer": lambda *args: Noting(*args, order=order)})
    assert not result.stopped and result.totals.get("kept", 0) >= 2, (result.totals, result.reasons, result.rounds)
    assert order.seen > 2  # proposing went on after the stale wake-up


async def test_a_round_closes_when_its_last_proposals_are_all_screened_out_at_the_cap(server_factory, tmp_path,
                                                                                      clean_env):
    server = server_factory(tasks_per_call=2, bad_rate=1.0, dup_rate=0.0, delay_s=0.2)
    config = load_config(overrides={
        "endpoints": [{"base_url": server.url}], "model": "test-model", "out": str(tmp_path / "run"), "rounds": 1,
        "round_size": 2, "close_on": "kept", "max_proposed": 2, "proposer.workers": 2, "proposer.tasks_per_call": 2,
        "proposer.min_pending": 0}, environ={})
    result = await isheep.arun(config)
    assert not result.stopped and result.totals.get("kept", 0) == 0, (result.totals, result.reasons)
    assert sum(result.reasons.values()) == 2  # both drafts screened out by the Proposer's filters
