"""Generation efficiency on a real server: the runtime's generated tokens/s against a bare client
replaying its own requests, and against a plain client holding 16 short chats in flight.

One managed vLLM server (the embedded SmolLM2-135M on CPU by default) serves every phase. For
each profile (the README's embedded profile, and the default config), none tuned by hand (no
``workers`` or ``max_in_flight`` set: the adaptive limit decides what is in flight):

- runtime: the real loop for ``--seconds`` (after a warm-up), recording every request it sends;
- bare: the requests the runtime sent during its measured window, replayed in order with as many
  in flight as the runtime had on average (so only the runtime's own overhead differs);
- plain: 16 short chats (a seed instruction, 256 tokens at most) kept in flight;
- plain, sampled as the profile's Responder (its temperature and top_p): the same 16 chats, to show
  what the profile's sampling costs the server (top_p < 1 costs vLLM-CPU a sort of the vocabulary
  every step without the managed server's filter, ``server.fast_top_p``: ``bench/sampling.py``).

Phases alternate within a pair. Tokens come from the server's own counter
(``vllm:generation_tokens_total``), so all are measured alike; the mean number of requests in
flight is printed for each. Replayed requests carry a vLLM ``cache_salt`` per pass, so they cannot
reuse the prefix cache the runtime's identical requests filled. Targets: runtime/bare >= 0.95,
runtime/plain >= 0.90.

    python bench/serving.py [--seconds 60] [--pairs 1] [--profiles embedded,default]

Each pair also prints the prompt tokens the server computed per generated token (those its prefix
cache did not serve) and the share of prompt tokens the cache served, per phase: what separates a
runtime's requests from short chats. ``embedded-quoted`` and ``default-conversation`` are the two
profiles with the other layout of the judge's prompts (``critic.layout``), to compare in the same
minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import isheep
from isheep.runtime.core.config import ServerConfig
from isheep.runtime.core.loading import load_config
from isheep.runtime.serving import ServerMetrics
from isheep.runtime.serving.endpoints import HttpEndpoint
from isheep.runtime.serving.models import resolve_model
from isheep.runtime.serving.server import ManagedServer

ROOT = Path(__file__).resolve().parents[1]
#: The server's counters a window reads: tokens generated, prompt tokens, and prefix-cache lookups
#: and hits (in tokens), so the prefill each phase really cost the server shows beside its rate.
COUNTERS = ("generation_tokens", "prompt_tokens", "prefix_cache_queries", "prefix_cache_hits")


async def counters(metrics: ServerMetrics) -> dict[str, float]:
    values = await metrics.read()
    return {name: values.get(name, 0.0) for name in COUNTERS}


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


async def window(server: ManagedServer, seconds: float, warm_up: float, in_flight: Callable[[], int]) -> dict[str, float]:
    """Generated tokens/s over ``seconds`` after ``warm_up``, and the mean requests in flight."""
    metrics = ServerMetrics([server.url], [server.api_key])
    await asyncio.sleep(warm_up)
    t0, c0 = time.monotonic(), await counters(metrics)
    samples = []
    while time.monotonic() - t0 < seconds:
        samples.append(in_flight())
        await asyncio.sleep(0.25)
    t1, c1 = time.monotonic(), await counters(metrics)
    d = {name: c1[name] - c0[name] for name in COUNTERS}
    generated = max(d["generation_tokens"], 1.0)
    return {"rate": d["generation_tokens"] / (t1 - t0), "t0": t0, "t1": t1, "in_flight": sum(samples) / len(samples),
            # prompt tokens the server computed (not served from its prefix cache) per generated token
            "prefill": (d["prompt_tokens"] - d["prefix_cache_hits"]) / generated,
            "cached": d["prefix_cache_hits"] / d["prefix_cache_queries"] if d["prefix_cache_queries"] else 0.0}


#: Seconds each phase runs before its window opens (the runtime's pipeline fills; set by --warm-up).
WARM_UP = [45.0]
EMBEDDED = str(ROOT / "examples" / "configs" / "embedded.toml")
#: Profiles by name: a config file (None: the defaults) and keys set over it. ``embedded-quoted`` and
#: ``default-conversation`` swap the judge's layout (``critic.layout``), to compare in the same minutes.
PROFILES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "embedded": (EMBEDDED, {}), "default": (None, {}),
    "embedded-quoted": (EMBEDDED, {"critic.layout": "quoted"}),
    "default-conversation": (None, {"critic.layout": "conversation"})}


async def runtime_phase(server: ManagedServer, seconds: float, profile: str, folder: Path) -> dict[str, float]:
    import isheep.runtime.serving.endpoints.pool as pool_module

    # Only what a measurement needs: this server, a round too large to end, no training.
    path, keys = PROFILES[profile]
    config = load_config(path, {
        **keys, "endpoints": [{"base_url": server.url}], "out": str(folder), "rounds": 1, "close_on": "kept",
        "round_size": 100_000, "max_proposed": 100_000, "trainer.backend": "none"},
        environ={"OPENAI_API_KEY": server.api_key})
    original = pool_module.endpoint_kind
    pool_module.endpoint_kind = lambda name: Recorder  # record what the runtime sends
    holder: dict = {}
    result: dict[str, float] = {}

    async def measure_and_stop() -> None:
        # Warm-up: the pipeline fills.
        result.update(await window(server, seconds, WARM_UP[0], lambda: Recorder.in_flight))
        holder["s"].request_stop()

    task = asyncio.create_task(measure_and_stop())
    try:
        await isheep.arun(config, on_supervisor=lambda s: holder.__setitem__("s", s))
    finally:
        pool_module.endpoint_kind = original
    await task
    return result


async def bare_phase(server: ManagedServer, seconds: float, in_flight: int, bodies: list,
                     warm_up: float | None = None) -> dict[str, float]:
    """``in_flight`` workers sending the recorded requests in their order, over and over (the window
    opens after ``warm_up`` seconds, the runtime's by default)."""
    endpoint = HttpEndpoint(server.url, server.api_key, timeout_s=600, connect_timeout_s=10,
                            max_in_flight=in_flight)
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
        return await window(server, seconds, WARM_UP[0] if warm_up is None else warm_up, lambda: busy[0])
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await endpoint.aclose()


async def plain_phase(server: ManagedServer, seconds: float, in_flight: int = 16,
                      sampling: dict[str, float] | None = None) -> dict[str, float]:
    """``in_flight`` short chats at all times: a seed instruction each, at most 256 tokens back
    (``sampling``: temperature and top_p; the server's defaults, but temperature 0.7, without)."""
    seeds = [json.loads(line)["instruction"] for line in (ROOT / "prompts" / "seeds.jsonl").read_text().splitlines()]
    bodies = [("chat", {"model": server.served_name, "max_tokens": 256, **(sampling or {"temperature": 0.7}),
                        "messages": [{"role": "user", "content": text}]}) for text in seeds]
    # All 16 are in flight from the first second: a short warm-up is enough.
    return await bare_phase(server, seconds, in_flight, bodies, warm_up=min(15.0, WARM_UP[0]))


async def main_async(args: argparse.Namespace) -> None:
    model_dir = resolve_model(args.model, progress=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory() as tmp:
        server = ManagedServer(ServerConfig(model=args.model), model_dir, Path(tmp) / "server.log",
                               served_name=model_dir.name)
        await server.start(lambda m: print(m, file=sys.stderr))
        try:
            ratios: dict[str, list[tuple[float, float]]] = {p: [] for p in args.profiles}
            for pair, profile in itertools.product(range(args.pairs), args.profiles):
                Recorder.bodies = []
                runtime = await runtime_phase(server, args.seconds, profile, Path(tmp) / f"{profile}{pair}")
                # The same mix: what the runtime sent during its measured window, as many at once.
                bodies = [(kind, body) for at, kind, body in Recorder.bodies if runtime["t0"] <= at <= runtime["t1"]]
                if not bodies:  # nothing to replay (the bare phase would spin on an empty list)
                    sys.exit(f"{profile}: the runtime sent no request in its window; a longer --warm-up?")
                bare = await bare_phase(server, args.seconds, max(1, round(runtime["in_flight"])), bodies)
                plain = await plain_phase(server, args.seconds)
                responder = load_config(PROFILES[profile][0]).responder
                sampled = await plain_phase(server, args.seconds, sampling={
                    "temperature": responder.temperature, "top_p": responder.top_p})
                ratios[profile].append((runtime["rate"] / bare["rate"], runtime["rate"] / plain["rate"],
                                        runtime["rate"] / sampled["rate"]))
                print(f"{profile} pair {pair + 1}: computed prompt tokens per generated token (share of prompt "
                      f"tokens from the prefix cache): runtime {runtime['prefill']:.2f} ({runtime['cached']:.0%}), "
                      f"bare {bare['prefill']:.2f} ({bare['cached']:.0%}), plain {plain['prefill']:.2f} "
                      f"({plain['cached']:.0%})", flush=True)
                print(f"{profile} pair {pair + 1}: runtime {runtime['rate']:.1f} tok/s ({runtime['in_flight']:.1f} in "
                      f"flight on average) | bare {bare['rate']:.1f} tok/s ({bare['in_flight']:.1f} in flight, "
                      f"replaying the {len(bodies)} requests of the runtime's window) | plain 16 chats "
                      f"{plain['rate']:.1f} tok/s ({plain['in_flight']:.1f} in flight) | the same sampled as the "
                      f"Responder (T {responder.temperature}, top_p {responder.top_p}) {sampled['rate']:.1f} tok/s | "
                      f"runtime/bare {ratios[profile][-1][0]:.3f} | runtime/plain {ratios[profile][-1][1]:.3f} | "
                      f"runtime/plain-sampled {ratios[profile][-1][2]:.3f}", flush=True)
            for profile, rows in ratios.items():
                print(f"{profile}: runtime/bare {sum(r[0] for r in rows) / len(rows):.3f} (target >= 0.95), "
                      f"runtime/plain {sum(r[1] for r in rows) / len(rows):.3f} (target >= 0.90), "
                      f"runtime/plain-sampled-alike {sum(r[2] for r in rows) / len(rows):.3f}")
        finally:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--warm-up", type=float, default=45.0,
                        help="seconds before each window opens (a proposal call on CPU takes tens of seconds)")
    parser.add_argument("--profiles", type=lambda v: v.split(","), default=["embedded", "default"])
    parser.add_argument("--model", default="embedded")
    args = parser.parse_args()
    WARM_UP[0] = args.warm_up
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
