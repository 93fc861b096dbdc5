"""Golden prompts: every recipe's rendered prompts for fixed inputs and a fixed seed, compared exactly.

The files under ``tests/golden/<recipe>/`` are what the model really sees: the proposer's
meta-prompt with its examples (and Dromedary's topic-guided one), the responder's prompt in each
round's style (the base model in round 1, a fine-tuned one after), both critic prompts. A
change to a template, a recipe or the rendering shows up here as a diff to review. After a
deliberate change: ``ISHEEP_UPDATE_GOLDEN=1 pytest tests/unit/test_recipe_prompts.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from isheep.agents import Critic, Proposer, Responder
from isheep.agents.critic import FORMAT_JSON
from isheep.runtime.core.endpoint import Completion
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.messages import Instruction, ProposalRequest, Response, SeedTask
from isheep.runtime.core.recipes import recipe_names
from isheep.runtime.core.roles import RoundContext
from isheep.runtime.core.types import Models, ServedModel
from isheep.runtime.data import RougeIndex
from isheep.runtime.pipeline.wiring import load_inputs

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
INSTRUCTION = Instruction(id="r01-000001", round=1, model_version="v0",
                          instruction="Summarize the text below in one sentence.",
                          input="The council met on Monday and voted to build a new library by the river.")
RESPONSE = Response(id=INSTRUCTION.id, round=1, model_version="v0", instruction=INSTRUCTION,
                    text="The council voted on Monday to build a new riverside library.")
#: Two earlier instructions of the run, for the recipes that mix them into the examples.
HISTORY = [SeedTask(instruction="List three ways to reuse glass jars."),
           SeedTask(instruction="Explain why the sky looks blue at noon.")]


def rendered(recipe: str) -> dict[str, str]:
    config = load_config(overrides={"recipe": recipe, "endpoints": [{"base_url": "http://127.0.0.1:9/v1"}]},
                         environ={})
    inputs = load_inputs(config)
    base, trained = ServedModel("v0", "model"), ServedModel("v1", "model")
    first = config.for_round(1)
    proposer = Proposer(first.proposer, None, Models(base, base), inputs.seeds, RougeIndex(0.7), inputs.propose_template,
                        seed=0, history=HISTORY, topics=inputs.topics)
    request = ProposalRequest(round=1, call=1)
    out = {"propose": proposer.prompt(proposer.examples(request))}
    if inputs.topics:
        out["propose_topics"] = proposer.topic_prompt(request)
    for k, model in ((1, base), (2, trained)):
        responder = Responder(config.for_round(k).responder, None, Models(model, base), inputs.responder_prompts)
        prompt, plain = responder.prompt(INSTRUCTION)
        out[f"respond_round{k}"] = f"[{'plain text' if plain else 'user turn'}]\n{prompt}"
    for key, aspects in sorted(inputs.critic_templates.items()):
        critic = Critic(config.critic.model_copy(update={"style": "authors" if key == "authors" else "judge"}), None,
                        Models(base, base), inputs.critic_templates)
        for aspect in aspects:  # the authors' prompts are plain text where the endpoint serves completions
            out[f"critic_{key}_{aspect}"] = critic.prompt(aspect, RESPONSE) if key == "authors" else "".join(
                f"[{turn['role']}]\n{turn['content']}\n" for turn in critic.messages(aspect, RESPONSE))
    return out


@pytest.mark.parametrize("recipe", recipe_names())
def test_rendered_prompts_are_the_golden_ones(recipe):
    folder = GOLDEN / recipe
    prompts = rendered(recipe)
    if os.environ.get("ISHEEP_UPDATE_GOLDEN"):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.txt"):
            stale.unlink()
        for name, text in prompts.items():
            (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    golden = {path.stem: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.txt"))}
    assert set(prompts) == set(golden)
    for name, text in prompts.items():
        assert text == golden[name], f"{recipe}/{name}.txt differs (ISHEEP_UPDATE_GOLDEN=1 to accept a change)"


def test_the_golden_prompts_show_what_each_recipe_is():
    isheep, dromedary, self_instruct = (rendered(name) for name in ("isheep", "dromedary", "self-instruct"))
    # I-SHEEP: ### between 5 seed examples, continued at task 6; the base model asked in plain text.
    assert isheep["propose"].count("###") == 6 and isheep["propose"].endswith("###\n6. Instruction:\n")
    assert isheep["respond_round1"] == f"[plain text]\n{INSTRUCTION.instruction}{INSTRUCTION.input}\n"
    assert isheep["respond_round2"].startswith("[user turn]\n")
    assert "<score>||<explanation>" in isheep["critic_authors_quality"]
    # Dromedary: topic-guided questions, and principles and worked examples before the query in round 1.
    assert "Type:" in dromedary["propose_topics"] and "harmlessness" in dromedary["respond_round1"]
    assert dromedary["respond_round1"].rstrip().endswith("Assistant (internal thoughts):")
    assert "harmlessness" not in dromedary["respond_round2"]  # I-SHEEP on top of it after round 1
    # Self-Instruct: 8 examples, 2 of them the run's own, one instruction a line, continued at 9.
    assert self_instruct["propose"].rstrip().endswith("9.")
    assert sum(task.instruction in self_instruct["propose"] for task in HISTORY) == 2


@pytest.mark.parametrize("style,layout", [("authors", "conversation"), ("judge", "quoted"), ("judge", "conversation")])
def test_a_pairs_two_critic_prompts_open_with_the_same_pair(style, layout):
    # The Critic asks quality, then following: the second prompt's prefill is the first one's up to
    # where they differ, already in the server's prefix cache. That holds only while both open with
    # the whole pair (instruction, input, answer) and put the aspect after it.
    config = load_config(overrides={"endpoints": [{"base_url": "http://127.0.0.1:9/v1"}], "critic.style": style,
                                    "critic.layout": layout}, environ={})
    base = ServedModel("v0", "model")
    critic = Critic(config.critic, None, Models(base, base), load_inputs(config).critic_templates)
    quality, following = (json.dumps(critic.messages(aspect, RESPONSE)) for aspect in ("quality", "following"))
    shared = os.path.commonprefix([quality, following])
    assert RESPONSE.text in shared and INSTRUCTION.input in shared and quality != following
    if layout == "conversation" and style == "judge":
        # The question's common opening (the judge's role, the reply format) comes before the aspect:
        # a second assessment computes only its aspect's lines.
        assert json.dumps(FORMAT_JSON)[1:-1] in shared and "QUALITY" not in shared


@pytest.mark.parametrize("system_prompt", [None, "You answer briefly."])
async def test_the_conversation_layout_replays_the_responders_own_turns(system_prompt):
    # A server's prefix cache serves the judge's prefill of the pair only if its turns are, token for
    # token, the ones the Responder sent, followed by the answer it got back.
    config = load_config(overrides={"endpoints": [{"base_url": "http://127.0.0.1:9/v1"}],
                                    "responder.system_prompt": system_prompt, "responder.api": "chat",
                                    "critic.style": "judge", "critic.layout": "conversation"}, environ={})
    sent: list[dict] = []

    class Recording:
        async def chat(self, body):
            sent.append(body)
            return Completion(text='{"score": 7, "explanation": "fine"}' if len(sent) > 1 else RESPONSE.text,
                              finish_reason="stop", prompt_tokens=1, completion_tokens=1, model="model")

    base, trained = ServedModel("v0", "model"), ServedModel("v1", "model")
    inputs = load_inputs(config)
    responder = Responder(config.responder, Recording(), Models(trained, base), inputs.responder_prompts)
    critic = Critic(config.critic, Recording(), Models(trained, base), inputs.critic_templates)
    context = RoundContext(round=2, config=config, allocate=lambda n: [], note=lambda *a: None)
    await responder.on_round_start(context)
    await critic.on_round_start(context)
    response = await responder.handle(INSTRUCTION)
    assessment = await critic.handle(response)
    assert assessment.quality.value == 7 and assessment.following.value == 7
    asked, judged = sent[0]["messages"], [body["messages"] for body in sent[1:]]
    for turns in judged:
        assert turns[:len(asked)] == asked
        assert turns[len(asked)] == {"role": "assistant", "content": RESPONSE.text}
        assert turns[-1]["role"] == "user" and "Rate the response from 1" in turns[-1]["content"]
    assert judged[0][-1] != judged[1][-1]
