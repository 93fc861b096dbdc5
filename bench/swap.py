"""Swap under load: reload, lora and restart side by side on one managed vLLM server.

A checkpoint is trained once (LoRA on six seed tasks, merged). For each strategy, 16 clients
keep sending requests to the served model; the swap starts as soon as the checkpoint is ready;
we time it until the new model has answered (every strategy ends with a probe to the new
model), and count the clients' requests that failed in the meantime. Each swap is then undone
so the next one starts from the base model. ``restart`` is the baseline. Targets for
``reload``: under 3 s, zero failed requests. ``reload`` lets the requests in flight finish on
the old weights first (the default, ``swap.in_flight = "finish"``); ``reload-continue`` freezes
them and continues them on the new weights. The fingerprint of the served model is taken
before the checkpoint is ready, as a run does while training.

    python bench/swap.py [--clients 16] [--only reload reload-continue lora restart]

``--fleet`` measures instead the reload swap of a fleet (:class:`FleetSwap`): one managed
replica against two, alternating in the same minutes, the clients spread over the replicas
being swapped (through the run's pool, which holds new requests at the version barrier).
Printed: each swap's seconds, failed requests, and the ratio of two replicas to one.

    python bench/swap.py --fleet [--repeats 3] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from isheep.runtime.core.config import ClientConfig, ServerConfig, TrainerConfig
from isheep.runtime.core.types import Checkpoint, ServedModel, TrainRequest
from isheep.runtime.serving.endpoints import EndpointError, EndpointPool, HttpEndpoint
from isheep.runtime.serving.models import resolve_model
from isheep.runtime.serving.server import ManagedServer
from isheep.runtime.serving.swap import FleetSwap, LoraSwap, ReloadSwap, Replica, RestartSwap, ServerApi
from isheep.runtime.training import TrlBackend

ROOT = Path(__file__).resolve().parents[1]


async def load(endpoint: HttpEndpoint, model: dict, stop: asyncio.Event, counts: dict) -> None:
    while not stop.is_set():
        try:
            await endpoint.chat({"model": model["name"], "max_tokens": 24, "temperature": 0.7,
                                 "messages": [{"role": "user", "content": "Name a colour and a fruit."}]})
            counts["ok"] += 1
        except EndpointError:
            counts["failed"] += 1
            await asyncio.sleep(0.2)


async def measure(name: str, swap, checkpoint: Checkpoint, current: ServedModel, server: ManagedServer,
                  clients: int) -> tuple[float, dict, ServedModel]:
    endpoint = HttpEndpoint(server.url, server.api_key, timeout_s=120, connect_timeout_s=5, max_in_flight=clients)
    model = {"name": current.name}
    counts = {"ok": 0, "failed": 0}
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(endpoint, model, stop, counts)) for _ in range(clients)]
    await swap.prepare(current)  # in a run this happens while the checkpoint trains
    await asyncio.sleep(5)  # the server is busy before the checkpoint arrives
    before = dict(counts)
    started = time.monotonic()
    served = await swap.swap(checkpoint, current)  # ends with a probe answered by the new model
    seconds = time.monotonic() - started
    model["name"] = served.name
    await asyncio.sleep(3)
    stop.set()
    await asyncio.gather(*workers)
    await endpoint.aclose()
    during = {"ok": counts["ok"] - before["ok"], "failed": counts["failed"] - before["failed"]}
    print(f"{name:15s} swap {seconds:7.2f} s | requests failed during the swap window: {during['failed']:4d} "
          f"| completed: {during['ok']:4d} | weights changed: {swap.evidence.get('weights_changed')}"
          f" | phases (s): {swap.evidence.get('phases_s', '-')}", flush=True)
    return seconds, during, served


async def train_once(model_dir: Path, tmp: str, say) -> Checkpoint:
    rows = [json.loads(line) for line in (ROOT / "prompts" / "seeds.jsonl").read_text().splitlines()[:6]]
    examples = [{"id": r["id"], "round": 1, "instruction": r["instruction"], "input": r["input"],
                 "response": r["output"]} for r in rows]
    say("training a checkpoint (LoRA, merged)...")
    return await TrlBackend(TrainerConfig(backend="trl", epochs=1, max_length=256)).train(
        TrainRequest(round=1, version="v1", parent="v0", init_path=model_dir, examples=examples,
                     out_dir=Path(tmp) / "round-01"))


async def fleet_swap(servers: list[ManagedServer], checkpoint: Checkpoint, current: ServedModel,
                     clients: int) -> tuple[float, int, int]:
    """One fleet reload under load: (seconds, requests failed, requests completed during the swap)."""
    pool = EndpointPool([(HttpEndpoint(s.url, s.api_key, timeout_s=120, connect_timeout_s=5, max_in_flight=clients),
                          clients) for s in servers], ClientConfig(max_retries=0))
    fleet = FleetSwap([Replica(s.url, ReloadSwap(ServerApi(s.url, s.api_key)), s) for s in servers], [pool])
    counts = {"ok": 0, "failed": 0}
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(pool, {"name": current.name}, stop, counts)) for _ in range(clients)]
    await fleet.prepare(current)
    await asyncio.sleep(5)
    before = dict(counts)
    started = time.monotonic()
    await fleet.swap(checkpoint, current)
    seconds = time.monotonic() - started
    after = dict(counts)
    stop.set()
    await asyncio.gather(*workers)
    await pool.aclose()
    return seconds, after["failed"] - before["failed"], after["ok"] - before["ok"]


async def fleet_main(args: argparse.Namespace) -> None:
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    model_dir = resolve_model("embedded", say)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = await train_once(model_dir, tmp, say)
        servers = [ManagedServer(ServerConfig(), model_dir, Path(tmp) / f"server-{i}.log", served_name="smol",
                                 dev_mode=True) for i in (1, 2)]
        await asyncio.gather(*(s.start(say) for s in servers))
        base = ServedModel(version="v0", name="smol", path=model_dir)
        new = ServedModel(version="v1", name="smol", path=checkpoint.path)
        back = Checkpoint(version="v0", parent="v0", round=0, path=model_dir)
        times: dict[int, list[float]] = {1: [], 2: []}
        try:
            for _ in range(args.repeats):
                for width in (1, 2):  # alternating, so both see the same minutes of this shared machine
                    seconds, failed, ok = await fleet_swap(servers[:width], checkpoint, base, args.clients)
                    times[width].append(seconds)
                    print(f"{width} replica{'s' if width > 1 else ' '}: swap {seconds:6.2f} s | failed {failed} | "
                          f"completed during it {ok}", flush=True)
                    await fleet_swap(servers[:width], back, new, args.clients)  # back to v0 for the next
        finally:
            await asyncio.gather(*(s.stop() for s in servers))
    one, two = (sorted(times[w])[len(times[w]) // 2] for w in (1, 2))
    print(f"median: 1 replica {one:.2f} s, 2 replicas {two:.2f} s: ratio 2/1 = {two / one:.2f}")


async def main_async(args: argparse.Namespace) -> None:
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    model_dir = resolve_model("embedded", say)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = await train_once(model_dir, tmp, say)
        base_ckpt = Checkpoint(version="v0", parent="v0", round=0, path=model_dir)
        server = ManagedServer(ServerConfig(), model_dir, Path(tmp) / "server.log", served_name="smol",
                               dev_mode=True, lora=True)
        await server.start(say)
        api = ServerApi(server.url, server.api_key)
        base = ServedModel(version="v0", name="smol", path=model_dir)
        results = {}
        try:
            strategies = {"reload": ReloadSwap(api), "reload-continue": ReloadSwap(api, "continue"),
                          "lora": LoraSwap(api, "smol"), "restart": RestartSwap(server, api)}
            for name in args.only or list(strategies):
                swap = strategies[name]
                seconds, during, served = await measure(name, swap, checkpoint, base, server, args.clients)
                results[name] = (seconds, during)
                if name == "lora":
                    await api.request("POST", f"{api.base_url}/unload_lora_adapter", json={"lora_name": served.name})
                elif name.startswith("reload"):
                    await swap.swap(base_ckpt, served)
        finally:
            await server.stop()
    baseline = results.get("restart", (None,))[0]
    for name, (seconds, during) in results.items():
        ratio = f"({baseline / seconds:5.1f}x faster than restart)" if baseline else ""
        print(f"{name:15s} {seconds:7.2f} s  {ratio}  failed requests: {during['failed']}")
    print("target: reload under 3 s with zero failed requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--only", nargs="+", choices=["reload", "reload-continue", "lora", "restart"],
                        help="measure only these strategies (default: all three; restart is the baseline)")
    parser.add_argument("--fleet", action="store_true", help="the reload swap of one replica against two")
    parser.add_argument("--repeats", type=int, default=3, help="--fleet: swaps of each width, alternating")
    args = parser.parse_args()
    asyncio.run(fleet_main(args) if args.fleet else main_async(args))


if __name__ == "__main__":
    main()
