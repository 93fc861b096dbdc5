"""The Responder: the current model answers each instruction (recipe steps 4-5).

The instruction (and its input, below it) is sent as one user turn through the endpoint's chat
API, so the model's own chat template applies. The answer then meets the recipe's response
filters; an answer that fails one is rejected with that filter's name, and a request that fails
after its retries fails the item with the error's name.
"""

from __future__ import annotations

import re
from typing import ClassVar

from isheep.runtime.core.config import ResponderConfig
from isheep.runtime.core.endpoint import Client, EndpointError
from isheep.runtime.core.messages import Instruction, Response, Verdict, user_turn
from isheep.runtime.core.roles import Role
from isheep.runtime.core.types import Models

_ROLE_LEAK = re.compile(r"(^|\n)\s*(assistant|user|system|human)\s*:|<\|im_(start|end)\|>", re.IGNORECASE)
_NOINPUT = re.compile(r"no\s?input", re.IGNORECASE)


def response_reason(text: str, finish_reason: str | None, drop_truncated: bool) -> str | None:
    """The recipe's response filters; the reason an answer is dropped, or None."""
    if not text.strip():
        return "empty_response"
    if drop_truncated and finish_reason == "length":
        return "truncated"
    if _ROLE_LEAK.search(text):
        return "role_leak"
    if "answer choices:" in text.lower():
        return "answer_choices"
    if _NOINPUT.search(text):
        return "noinput_in_response"
    return None


class Responder(Role[Instruction, "Response | Verdict"]):
    """Answers an instruction with the current model and applies the response filters."""

    name: ClassVar[str] = "responder"

    def __init__(self, config: ResponderConfig, pool: Client, models: Models) -> None:
        self.config = config
        self.pool = pool
        self.models = models

    async def handle(self, message: Instruction) -> Response | Verdict:
        model = self.models.policy
        turns = [{"role": "user", "content": user_turn(message.instruction, message.input)}]
        if self.config.system_prompt is not None:
            turns.insert(0, {"role": "system", "content": self.config.system_prompt})
        try:
            completion = await self.pool.chat({
                "model": model.name, "messages": turns, "temperature": self.config.temperature,
                "top_p": self.config.top_p, "max_tokens": self.config.max_tokens,
            })
        except EndpointError as err:
            return Verdict(id=message.id, round=message.round, model_version=model.version, status="failed",
                           stage="responder", reason=err.reason)
        response = Response(id=message.id, round=message.round, model_version=model.version,
                            instruction=message, text=completion.text.strip(),
                            finish_reason=completion.finish_reason, prompt_tokens=completion.prompt_tokens,
                            completion_tokens=completion.completion_tokens)
        reason = response_reason(completion.text, completion.finish_reason, self.config.drop_truncated)
        if reason is not None:
            return Verdict(id=message.id, round=message.round, model_version=model.version, status="rejected",
                           stage="responder", reason=reason, response=response)
        return response
