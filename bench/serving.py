"""Pipeline efficiency on a real server: the runtime's generated tokens/s against a bare client
keeping the same number of requests in flight with the same request mix.

One managed vLLM server (the embedded SmolLM2-135M on CPU by default) serves both. A runtime
phase runs the real loop for ``--seconds`` with the endpoint capped at ``--in-flight`` requests
and records every request it sends; a bare phase replays the requests the runtime sent during
its measured window, in order and ``--in-flight`` at a time, for as long. Phases alternate.
Tokens come from the server's own counter (``vllm:generation_tokens_total``), so both are
measured the same way; the mean number of requests in flight is printed for both. Replayed
requests carry a vLLM ``cache_salt`` per pass, so they cannot reuse the prefix cache that the
runtime's identical requests filled (which would skip their prefill). Target:
runtime/bare at least 0.95.

    python bench/serving.py [--seconds 90] [--in-flight 16] [--pairs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import aiohttp

import isheep
from isheep.runtime.core.config import ServerConfig
from isheep.runtime.core.loading import load_config
from isheep.runtime.serving.endpoints import HttpEndpoint
from isheep.runtime.serving.models import resolve_model
from isheep.runtime.serving.server import ManagedServer

ROOT = Path(__file__).resolve().parents[1]
_COUNTER = re.compile(r"^vllm:generation_tokens_total(?:\{[^}]*\})?\s+([0-9.eE+]+)", re.MULTILINE)


async def generated_tokens(root: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{root}/metrics") as resp:
        text = await resp.text()
    return sum(float(v) for v in _COUNTER.findall(text))


class Recorder(HttpEndpoint):
    """The http endpoint kind, remembering every request it sends (when, and the body) and
    counting the requests it has in flight."""

    bodies: list[tuple[float, str, dict[str, Any]]] = []
    in_flight = 0

    async def _send(self, kind: str, body: dict[str, Any]):
        Recorder.bodies.append((time.monotonic(), kind, body))
        Recorder.in_flight += 1
        try:
            return await (super().chat(body) if kind == "chat" else super().complete(body))
        finally:
            Recorder.in_flight -= 1

    async def chat(self, body):
        return await self._send("chat", body)

    async def complete(self, body):
        return await self._send("complete", body)


async def window(root: str, seconds: float, warm_up: float, in_flight: Callable[[], int]) -> dict[str, float]:
    """Generated tokens/s over ``seconds`` after ``warm_up``, and the mean requests in flight."""
    await asyncio.sleep(warm_up)
    t0, n0 = time.monotonic(), await generated_tokens(root)
    samples = []
    while time.monotonic() - t0 < seconds:
        samples.append(in_flight())
        await asyncio.sleep(0.25)
    t1, n1 = time.monotonic(), await generated_tokens(root)
    return {"rate": (n1 - n0) / (t1 - t0), "t0": t0, "t1": t1, "in_flight": sum(samples) / len(samples)}


async def runtime_phase(server: ManagedServer, seconds: float, in_flight: int, folder: Path) -> dict[str, float]:
    import isheep.runtime.serving.endpoints.pool as pool_module

    config = load_config(str(ROOT / "examples" / "configs" / "embedded.toml"), {
        "endpoints": [{"base_url": server.url, "max_in_flight": in_flight}], "out": str(folder), "rounds": 1,
        "round_size": 100_000, "max_proposed": 100_000, "proposer.workers": in_flight,
        "responder.workers": in_flight, "critic.workers": in_flight}, environ={"OPENAI_API_KEY": server.api_key})
    original = pool_module.endpoint_kind
    pool_module.endpoint_kind = lambda name: Recorder  # record what the runtime sends
    holder: dict = {}
    root = server.url.rsplit("/v1", 1)[0]
    result: dict[str, float] = {}

    async def measure_and_stop() -> None:
        # Warm-up: the pipeline fills.
        result.update(await window(root, seconds, min(20.0, seconds / 4), lambda: Recorder.in_flight))
        holder["s"].request_stop()

    task = asyncio.create_task(measure_and_stop())
    try:
        await isheep.arun(config, on_supervisor=lambda s: holder.__setitem__("s", s))
    finally:
        pool_module.endpoint_kind = original
    await task
    return result


async def bare_phase(server: ManagedServer, seconds: float, in_flight: int, bodies: list) -> dict[str, float]:
    """``in_flight`` workers sending the recorded requests in their order, over and over."""
    endpoint = HttpEndpoint(server.url, server.api_key, timeout_s=600, connect_timeout_s=10,
                            max_in_flight=in_flight)
    root = server.url.rsplit("/v1", 1)[0]
    # Replayed prompts would hit the prefix cache the runtime just filled and skip their prefill:
    # each pass through the list gets its own cache salt, so requests share cached blocks within a
    # pass exactly as the runtime's did, and never with the runtime's or an earlier pass's.
    order = ((kind, {**body, "cache_salt": f"bare-{round_}"})
             for round_ in itertools.count(1) for kind, body in bodies)
    busy = [0]

    async def worker() -> None:
        while True:
            kind, body = next(order)
            busy[0] += 1
            try:
                await (endpoint.chat(body) if kind == "chat" else endpoint.complete(body))
            except Exception:  # noqa: BLE001 - a failed request just generates nothing
                pass
            finally:
                busy[0] -= 1

    workers = [asyncio.create_task(worker()) for _ in range(in_flight)]
    try:
        return await window(root, seconds, min(20.0, seconds / 4), lambda: busy[0])
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await endpoint.aclose()


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
                runtime = await runtime_phase(server, args.seconds, args.in_flight, Path(tmp) / f"run{pair}")
                # The same mix: what the runtime sent during its measured window.
                bodies = [(kind, body) for at, kind, body in Recorder.bodies if runtime["t0"] <= at <= runtime["t1"]]
                bare = await bare_phase(server, args.seconds, args.in_flight, bodies)
                ratios.append(runtime["rate"] / bare["rate"])
                print(f"pair {pair + 1}: runtime {runtime['rate']:.1f} tok/s ({runtime['in_flight']:.1f} in flight "
                      f"on average) | bare client {bare['rate']:.1f} tok/s ({bare['in_flight']:.1f} in flight, "
                      f"replaying the {len(bodies)} requests of the runtime's window) | "
                      f"ratio {ratios[-1]:.3f}", flush=True)
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
