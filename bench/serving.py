"""Pipeline efficiency on a real server: the runtime's generated tokens/s against a bare client
keeping the same number of requests in flight with the same request mix.

One managed vLLM server (the embedded SmolLM2-135M on CPU by default) serves both. A runtime
phase runs the real loop for ``--seconds`` with the endpoint capped at ``--in-flight`` requests
and records every request it sends; a bare phase replays those requests, ``--in-flight`` at a
time, for as long. Phases alternate. Tokens come from the server's own counter
(``vllm:generation_tokens_total``), so both are measured the same way. Target: runtime/bare at
least 0.95.

    python bench/serving.py [--seconds 90] [--in-flight 16] [--pairs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

import isheep
from isheep.runtime.config import ServerConfig, load_config
from isheep.runtime.endpoints import HttpEndpoint
from isheep.runtime.models import resolve_model
from isheep.runtime.server import ManagedServer

ROOT = Path(__file__).resolve().parents[1]
_COUNTER = re.compile(r"^vllm:generation_tokens_total(?:\{[^}]*\})?\s+([0-9.eE+]+)", re.MULTILINE)


async def generated_tokens(root: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{root}/metrics") as resp:
        text = await resp.text()
    return sum(float(v) for v in _COUNTER.findall(text))


class Recorder(HttpEndpoint):
    """The http endpoint kind, remembering every request body it sends."""

    bodies: list[tuple[str, dict[str, Any]]] = []

    async def chat(self, body):
        Recorder.bodies.append(("chat", body))
        return await super().chat(body)

    async def complete(self, body):
        Recorder.bodies.append(("complete", body))
        return await super().complete(body)


async def runtime_phase(server: ManagedServer, seconds: float, in_flight: int, folder: Path) -> float:
    import isheep.runtime.endpoints.pool as pool_module

    config = load_config(str(ROOT / "examples" / "configs" / "embedded.toml"), {
        "endpoints": [{"base_url": server.url, "max_in_flight": in_flight}], "out": str(folder), "rounds": 1,
        "round_size": 100_000, "max_proposed": 100_000, "proposer.workers": 6,
        "responder.workers": in_flight, "critic.workers": in_flight}, environ={"OPENAI_API_KEY": server.api_key})
    original = pool_module.endpoint_kind
    pool_module.endpoint_kind = lambda name: Recorder  # record what the runtime sends
    holder: dict = {}
    root = server.url.rsplit("/v1", 1)[0]
    window: dict[str, float] = {}

    async def measure_and_stop() -> None:
        await asyncio.sleep(min(20.0, seconds / 4))  # warm-up: the pipeline fills
        window["t0"], window["n0"] = time.monotonic(), await generated_tokens(root)
        await asyncio.sleep(seconds)
        window["t1"], window["n1"] = time.monotonic(), await generated_tokens(root)
        holder["s"].request_stop()

    task = asyncio.create_task(measure_and_stop())
    try:
        await isheep.arun(config, on_supervisor=lambda s: holder.__setitem__("s", s))
    finally:
        pool_module.endpoint_kind = original
    await task
    return (window["n1"] - window["n0"]) / (window["t1"] - window["t0"])


async def bare_phase(server: ManagedServer, seconds: float, in_flight: int, bodies: list) -> float:
    endpoint = HttpEndpoint(server.url, server.api_key, timeout_s=600, connect_timeout_s=10,
                            max_in_flight=in_flight)
    root = server.url.rsplit("/v1", 1)[0]
    queue: asyncio.Queue = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            kind, body = queue.get_nowait() if not queue.empty() else bodies[int(time.monotonic() * 1000) % len(bodies)]
            try:
                await (endpoint.chat(body) if kind == "chat" else endpoint.complete(body))
            except Exception:  # noqa: BLE001 - a failed request just generates nothing
                pass

    workers = [asyncio.create_task(worker()) for _ in range(in_flight)]
    await asyncio.sleep(min(20.0, seconds / 4))
    t0, n0 = time.monotonic(), await generated_tokens(root)
    await asyncio.sleep(seconds)
    t1, n1 = time.monotonic(), await generated_tokens(root)
    stop.set()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    await endpoint.aclose()
    return (n1 - n0) / (t1 - t0)


async def main_async(args: argparse.Namespace) -> None:
    model_dir = resolve_model(args.model, progress=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory() as tmp:
        server = ManagedServer(ServerConfig(model=args.model), model_dir, Path(tmp) / "server.log",
                               served_name=model_dir.name)
        await server.start(lambda m: print(m, file=sys.stderr))
        try:
            ratios = []
            for pair in range(args.pairs):
                Recorder.bodies = []
                runtime_rate = await runtime_phase(server, args.seconds, args.in_flight, Path(tmp) / f"run{pair}")
                bodies = list(Recorder.bodies)
                bare_rate = await bare_phase(server, args.seconds, args.in_flight, bodies)
                ratios.append(runtime_rate / bare_rate)
                print(f"pair {pair + 1}: runtime {runtime_rate:.1f} tok/s | bare client {bare_rate:.1f} tok/s "
                      f"({args.in_flight} in flight, {len(bodies)} recorded requests replayed) | "
                      f"ratio {runtime_rate / bare_rate:.3f}", flush=True)
            print(f"runtime/bare generated tokens/s: {sum(ratios) / len(ratios):.3f} (target >= 0.95)")
        finally:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--model", default="embedded")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
