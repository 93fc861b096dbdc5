"""A fleet of replicas swapped as one transaction, and the colocated sleep/wake protocol.

Two test servers play vLLM's dev-mode routes (tests/support/admin_routes.py): reloading a folder
changes the logprobs of a greedy probe, ``reload_fails`` makes a reload answer HTTP 500, and
each server counts its answers by the weight version that gave them. The same protocol runs
against the real vLLM server in tests/vllm/test_fleet.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from isheep.runtime.core.config import ClientConfig, ServerConfig
from isheep.runtime.core.errors import EndpointUnavailable
from isheep.runtime.core.types import Checkpoint, ServedModel
from isheep.runtime.serving.endpoints import EndpointPool, HttpEndpoint
from isheep.runtime.serving.endpoints.managed import ManagedEndpoint
from isheep.runtime.serving.server import ManagedServer
from isheep.runtime.serving.swap import CommandSwap, FleetSwap, ReloadSwap, Replica, ServerApi, SwapError

pytestmark = pytest.mark.timeout(60)

MODEL = "test-model"
BASE = ServedModel(version="v0", name=MODEL, path=Path("/ckpt/base"))
V1 = Checkpoint(version="v1", parent="v0", round=1, path=Path("/ckpt/round-01/merged"))


def build(servers, *, sleep: bool = False) -> tuple[FleetSwap, EndpointPool, list[tuple[str, str]]]:
    pool = EndpointPool([(HttpEndpoint(s.url, None, timeout_s=10, connect_timeout_s=2, max_in_flight=8), 8)
                         for s in servers], ClientConfig(backoff_s=0.01))
    events: list[tuple[str, str]] = []
    replicas = [Replica(s.url, ReloadSwap(ServerApi(s.url, None), sleep=sleep)) for s in servers]
    return FleetSwap(replicas, [pool], on_event=lambda level, message: events.append((level, message))), pool, events


def weights(server) -> tuple[str, str]:
    stats = server.stats()
    return stats["weights"], max(stats["answered_on"], key=lambda v: stats["answered_on"][v], default="")


async def version_of(server) -> str:
    return (await ServerApi(server.url, None).request("GET", server.url.rsplit("/v1", 1)[0] + "/weight_info"))[
        "weight_version"]


async def test_every_replica_serves_the_new_version_and_gives_the_same_probe(server_factory):
    servers = [server_factory(), server_factory()]
    fleet, pool, events = build(servers)
    await fleet.prepare(BASE)
    served = await fleet.swap(V1, BASE)
    assert served.version == "v1" and served.path == V1.path
    assert [await version_of(s) for s in servers] == ["v1", "v1"]
    assert [s.stats()["weights"] for s in servers] == [str(V1.path)] * 2
    evidence = fleet.evidence
    assert set(evidence["replicas"]) == {s.url for s in servers}
    assert evidence["replicas_agree"] and evidence["weights_changed"] and evidence["weight_version"] == "v1"
    assert all(e["probe_logprobs_after"] != e["probe_logprobs_before"] for e in evidence["replicas"].values())
    assert not events and pool.urls == [s.url for s in servers]
    await pool.aclose()


async def test_no_request_is_answered_by_a_half_swapped_fleet(server_factory):
    """The version barrier: a request sent while the swap runs waits, and the new version answers it."""
    servers = [server_factory(), server_factory()]
    fleet, pool, _ = build(servers)
    await fleet.prepare(BASE)
    swap = asyncio.create_task(fleet.swap(V1, BASE))
    while not pool.held:
        await asyncio.sleep(0)
    request = asyncio.create_task(pool.chat({"model": MODEL, "messages": [{"role": "user", "content": "Hi."}]}))
    order: list[str] = []
    swap.add_done_callback(lambda _: order.append("swap"))
    request.add_done_callback(lambda _: order.append("request"))
    await asyncio.gather(swap, request)
    assert order == ["swap", "request"]  # held at the barrier until every replica serves v1
    answered = [s.stats() for s in servers]
    # Each replica answered its probe before (v0) and after (v1); the held request came on top, from v1.
    assert sum(a["answered_on"].get("v0", 0) for a in answered) == 2
    assert sum(a["answered_on"].get("v1", 0) for a in answered) == 3
    assert all(a["answered_while_unready"] == 0 for a in answered)
    await pool.aclose()


async def test_a_failure_on_one_replica_puts_every_replica_back(server_factory):
    servers = [server_factory(), server_factory(reload_fails="round-01")]
    fleet, pool, events = build(servers)
    with pytest.raises(SwapError, match=r"failed on 1 of 2 replicas .*every replica still in the pool serves v0"):
        await fleet.swap(V1, BASE)
    assert [await version_of(s) for s in servers] == ["v0", "v0"]
    assert [s.stats()["weights"] for s in servers] == [str(BASE.path)] * 2
    assert fleet.evidence["replicas"][servers[0].url] == {"restored": True}
    assert "cannot load weights" in fleet.evidence["replicas"][servers[1].url]["error"]
    assert not events and len(pool.urls) == 2  # both came back: nobody is dropped
    await pool.aclose()


async def test_a_replica_that_cannot_be_restored_leaves_the_pool_and_the_rest_go_on(server_factory):
    servers = [server_factory(), server_factory(reload_fails="/ckpt/")]  # loads neither the new nor the old
    fleet, pool, events = build(servers)
    with pytest.raises(SwapError, match="failed on 1 of 2"):
        await fleet.swap(V1, BASE)
    assert pool.urls == [servers[0].url] and [r.url for r in fleet.live] == [servers[0].url]
    assert events and events[0][0] == "error" and f"replica {servers[1].url} taken out of the pool" in events[0][1]
    assert "the run goes on with 1 replica" in events[0][1]
    assert await version_of(servers[0]) == "v0"
    reply = await pool.chat({"model": MODEL, "messages": [{"role": "user", "content": "Hi."}]})
    assert reply.text
    servers[1].control(reload_fails="")  # the next swap only involves the replica left
    assert (await fleet.swap(V1, BASE)).version == "v1"
    assert list(fleet.evidence["replicas"]) == [servers[0].url]
    await pool.aclose()


async def test_when_no_replica_can_be_trusted_the_swap_fails_with_the_last_one_kept(server_factory):
    servers = [server_factory(reload_fails="/ckpt/"), server_factory(reload_fails="/ckpt/")]
    fleet, pool, events = build(servers)
    with pytest.raises(SwapError, match="the last replica"):
        await fleet.swap(V1, BASE)
    assert len(pool.urls) == 1 and len(events) == 1
    await pool.aclose()


async def test_colocated_replicas_sleep_for_training_and_wake_in_vllms_order(server_factory):
    servers = [server_factory(), server_factory()]
    fleet, pool, _ = build(servers, sleep=True)
    logged: list[str] = []
    for replica in fleet.replicas:
        replica.strategy.api.on_call = logged.append  # type: ignore[attr-defined]
    await fleet.prepare(BASE)
    await fleet.release()
    for s in servers:
        assert s.stats()["admin_calls"] == ["POST /pause?mode=wait", "POST /sleep?level=1"]
    await fleet.swap(V1, BASE)
    for s in servers:
        assert s.stats()["admin_calls"][2:] == [
            "POST /wake_up?tags=weights", "POST /collective_rpc", "POST /wake_up?tags=kv_cache",
            "POST /reset_prefix_cache?reset_running_requests=false", "POST /resume", "POST /update_weight_version"]
    phases = fleet.evidence["phases_s"]
    assert {"drain_before_training", "sleep_before_training", "wake_weights", "reload", "wake_kv_cache",
            "reset_prefix_cache", "resume", "verify"} <= set(phases)
    assert any("/sleep?level=1 ok" in line for line in logged) and all(" ok (" in line for line in logged)
    await pool.aclose()


async def test_fingerprints_bypass_the_prefix_cache_where_the_server_has_one(server_factory):
    # A probe's logprobs must come from the weights: a fresh cache salt each time on vLLM (cached
    # blocks change the arithmetic on some CPUs), and plain probes where the field is refused.
    vllm_like, openai_like = server_factory(), server_factory(openai_fields_only=True)
    for server, salted in ((vllm_like, 2), (openai_like, 0)):
        api = ServerApi(server.url, None)
        first, second = await api.fingerprint(MODEL), await api.fingerprint(MODEL)
        assert first is not None and first == second
        stats = server.stats()
        assert stats.get("cache_salted", 0) == salted
        assert stats["routes"]["POST /v1/chat/completions"] == (2 if salted else 3)  # one refusal, then plain


async def test_a_colocated_server_wakes_on_its_old_weights_when_training_gives_nothing(server_factory):
    server = server_factory()
    swap = ReloadSwap(ServerApi(server.url, None), sleep=True)
    await swap.release()
    await swap.reclaim()
    assert server.stats()["admin_calls"] == ["POST /pause?mode=wait", "POST /sleep?level=1", "POST /wake_up",
                                             "POST /resume"]
    assert await version_of(server) == "v0"


class GaveUp(HttpEndpoint):
    """A managed replica whose watchdog gave up (restarting a real vLLM three times takes minutes):
    its requests fail with EndpointUnavailable, as ManagedEndpoint's do then."""

    async def chat(self, body):
        raise EndpointUnavailable(f"the managed vLLM server keeps dying; see {self.base_url}/server.log")


async def test_a_replica_whose_server_gave_up_leaves_the_pool_and_the_request_goes_elsewhere(server_factory):
    healthy, dying = server_factory(), server_factory()
    pool = EndpointPool([(GaveUp(dying.url, None, timeout_s=5, connect_timeout_s=2, max_in_flight=4), 4),
                         (HttpEndpoint(healthy.url, None, timeout_s=5, connect_timeout_s=2, max_in_flight=4), 4)],
                        ClientConfig(backoff_s=0.01))
    dropped: list[tuple[str, str]] = []
    pool.on_drop = lambda url, why: dropped.append((url, why))
    replies = [await pool.chat({"model": MODEL, "messages": [{"role": "user", "content": f"Q{i}"}]}) for i in range(4)]
    assert all(r.text for r in replies) and pool.urls == [healthy.url]
    assert dropped == [(dying.url, f"the managed vLLM server keeps dying; see {dying.url}/server.log")]
    alone = EndpointPool([(GaveUp(dying.url, None, timeout_s=5, connect_timeout_s=2, max_in_flight=4), 4)],
                         ClientConfig())
    with pytest.raises(EndpointUnavailable):  # the last one: the run stops, its data safe
        await alone.chat({"model": MODEL, "messages": [{"role": "user", "content": "Q"}]})
    await pool.aclose()


class SlowToGiveUp(GaveUp):
    """Several requests are in flight on it when the first one finds it gone."""

    closed = False

    async def chat(self, body):
        await asyncio.sleep(0.05)
        return await super().chat(body)

    async def aclose(self):
        SlowToGiveUp.closed = True
        await super().aclose()


async def test_requests_in_flight_on_a_replica_that_gave_up_all_go_elsewhere(server_factory):
    healthy, dying = server_factory(), server_factory()
    pool = EndpointPool([(SlowToGiveUp(dying.url, None, timeout_s=5, connect_timeout_s=2, max_in_flight=8), 8),
                         (HttpEndpoint(healthy.url, None, timeout_s=5, connect_timeout_s=2, max_in_flight=8), 8)],
                        ClientConfig(backoff_s=0.01))
    dropped: list[str] = []
    pool.on_drop = lambda url, why: dropped.append(url)
    replies = await asyncio.gather(*(pool.chat({"model": MODEL, "messages": [{"role": "user", "content": f"Q{i}"}]})
                                     for i in range(12)))
    assert all(r.text for r in replies) and pool.urls == [healthy.url]
    assert dropped == [dying.url]  # once, however many requests found it gone
    await pool.aclose()
    assert SlowToGiveUp.closed  # a dropped replica's connections are closed with the pool


async def test_a_sleeping_server_whose_probe_was_never_taken_wakes_for_it_before_the_reload(server_factory):
    """The probe before training failed (say, a timeout): the swap must not probe a sleeping server."""
    server = server_factory()
    swap = ReloadSwap(ServerApi(server.url, None), sleep=True)
    await swap.release()
    served = await swap.swap(V1, BASE)
    assert served.version == "v1" and swap.evidence["weights_changed"]
    assert server.stats()["admin_calls"] == [
        "POST /pause?mode=wait", "POST /sleep?level=1", "POST /wake_up", "POST /resume",  # woken on v0, probed
        "POST /pause?mode=wait", "POST /collective_rpc", "POST /reset_prefix_cache?reset_running_requests=false",
        "POST /resume", "POST /update_weight_version"]
    assert server.stats()["answered_while_unready"] == 0


class Restarting:
    """What a reload swap reads of a managed server (ManagedServer's ``ready``, ``gave_up``): one
    whose watchdog gave up after three restarts (minutes on a real vLLM)."""

    def __init__(self, url: str) -> None:
        self.url, self.log_path, self.gave_up, self.ready = url, Path("/tmp/server.log"), True, asyncio.Event()


async def test_a_replica_whose_server_keeps_dying_is_taken_out_and_the_rest_put_back(server_factory):
    servers = [server_factory(), server_factory()]
    fleet, pool, events = build(servers)
    fleet.replicas[1].strategy.server = Restarting(servers[1].url)  # type: ignore[attr-defined]
    await fleet.prepare(BASE)
    with pytest.raises(SwapError, match="failed on 1 of 2"):
        await fleet.swap(V1, BASE)
    assert pool.urls == [servers[0].url] and await version_of(servers[0]) == "v0"
    assert fleet.evidence["replicas"][servers[1].url]["restored"] is False
    assert "keeps dying" in events[0][1] and "taken out of the pool" in events[0][1]
    await pool.aclose()


async def test_a_failed_command_swap_with_no_rollback_command_says_nothing_was_restored(server_factory):
    server = server_factory()
    swap = CommandSwap(ServerApi(server.url, None), "exit 3", rollback_command=None, expect_model=None, timeout_s=5)
    with pytest.raises(SwapError, match="exited with status 3.*no swap.rollback_command") as failed:
        await swap.swap(V1, BASE)
    assert failed.value.restored is False  # a fleet takes such a replica out rather than trust it


class ManagedTestServer(ManagedServer):
    """The managed server's whole lifecycle (guard, watchdog, restarts, key) around the test server
    instead of vLLM, whose restart takes a minute here."""

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).parents[1] / "support" / "openai_server.py"), "--port",
                str(self.port), "--config", json.dumps({"api_key": self.api_key, "model": MODEL})]


async def admin_calls(server: ManagedServer) -> list[str]:
    return (await ServerApi(server.url, server.api_key).request("GET", server.url.rsplit("/v1", 1)[0] + "/_stats"))[
        "admin_calls"]


async def test_a_server_restarted_while_asleep_for_training_goes_back_to_sleep(tmp_path):
    server = ManagedTestServer(ServerConfig(device="cpu", startup_timeout_s=60), Path("/m"), tmp_path / "server.log",
                               served_name=MODEL, dev_mode=True)
    await server.start()
    try:
        swap = ReloadSwap(ServerApi(server.url, server.api_key), sleep=True, server=server)
        await swap.prepare(BASE)
        await swap.release()
        os.kill(server.server_pid, signal.SIGKILL)  # dies while the trainer has its GPUs
        while server.restarts < 1 or not server.ready.is_set():
            await asyncio.sleep(0.1)
        assert await admin_calls(server) == ["POST /pause?mode=wait", "POST /sleep?level=1"]  # the new process
        assert (await swap.swap(V1, BASE)).version == "v1" and swap.evidence["weights_changed"]
        assert (await admin_calls(server))[2:4] == ["POST /wake_up?tags=weights", "POST /collective_rpc"]
        assert not server.asleep
    finally:
        await server.stop()


async def test_requests_waiting_for_a_stopped_server_fail_instead_of_waiting_forever(tmp_path):
    server = ManagedTestServer(ServerConfig(device="cpu", startup_timeout_s=60), Path("/m"), tmp_path / "server.log",
                               served_name=MODEL)
    await server.start()
    endpoint = ManagedEndpoint(server, timeout_s=5, connect_timeout_s=2, max_in_flight=4)
    assert (await endpoint.chat({"model": MODEL, "messages": [{"role": "user", "content": "Hi."}]})).text
    await server.stop()  # a replica taken out of the fleet
    with pytest.raises(EndpointUnavailable, match="was stopped"):
        await asyncio.wait_for(endpoint.chat({"model": MODEL, "messages": [{"role": "user", "content": "Hi."}]}), 10)
    await endpoint.aclose()
