"""The Responder: the current model answers each instruction (recipe steps 4-5).

How it asks depends on the round's model and the recipe. A fine-tuned model gets the
instruction (its input below it) as one user turn, so its chat template applies; I-SHEEP's
authors asked the base model in round 1 with the plain prompt ``{instruction}{input}`` and a
newline instead (``base_api = "completions"``). In the ``principles`` style (Dromedary) the
prompt carries the principles and worked examples first; the model writes its internal
thoughts, then the answer, and only the final answer is kept (and trained on: the principles
never reach the training data). The ``verbose`` style asks for detailed answers. The answer
then meets the configured response filters; one that fails is rejected with that filter's
name, and a request that fails after its retries fails the item with the error's name.
"""

from __future__ import annotations

import re
from typing import ClassVar

from isheep.runtime.core.config import ResponderConfig
from isheep.runtime.core.endpoint import Client, Completion, EndpointError
from isheep.runtime.core.messages import Instruction, Response, Verdict, user_turn
from isheep.runtime.core.roles import Role, RoundContext
from isheep.runtime.core.types import Models

#: Response filters by name (the reason they give); a recipe lists the ones it runs, in order.
#: ``role_lines`` to ``cjk`` are I-SHEEP's authors' rules as they wrote them (``do you`` followed by
#: anything, a question mark within 100 characters after a blank line, a letter and a dot...).
FILTERS: dict[str, re.Pattern[str]] = {
    "role_leak": re.compile(r"(^|\n)\s*(assistant|user|system|human)\s*:|<\|im_(start|end)\|>", re.IGNORECASE),
    "role_lines": re.compile(r"\n(assistant|system|human|question|output|user)[:\n]", re.IGNORECASE),
    "answer_choices": re.compile(r"answer\s*choices:", re.IGNORECASE),
    "noinput_in_response": re.compile(r"no\s?input", re.IGNORECASE),
    "can_you": re.compile(r"\n\n?can you", re.IGNORECASE),
    "do_you": re.compile(r"do you .", re.IGNORECASE),
    "question_after_break": re.compile(r"\n\n.{1,100}\?"),
    "choice_letters": re.compile(r"\b[A-Ea-e]\.|\([A-Ea-e]\)"),
    "cjk": re.compile(r"[\u4e00-\u9fff]"),
    "apology_start": re.compile(r"^\s*(i'?m sorry|i am sorry|sorry|i apologi[sz]e|my apologies)\b", re.IGNORECASE),
}
_ANSWER_PREFIX = re.compile(r"^(答案[:：]\s?)+")  # "Answer:" in Chinese, which the authors strip first
_FINAL_ANSWER = re.compile(r"\n\s*Assistant\s*:", re.IGNORECASE)
_NEXT_TURN = re.compile(r"\n\s*User\s*:", re.IGNORECASE)


def response_reason(text: str, finish_reason: str | None, config: ResponderConfig) -> str | None:
    """The configured response filters; the reason an answer is dropped, or None."""
    if config.drop_truncated and finish_reason == "length" and text.strip():
        return "truncated"
    for name in config.filters:
        if name == "empty_response":
            if not text.strip():
                return "empty_response"
        elif FILTERS[name].search(text):
            return name
    return None


def final_answer(text: str) -> str | None:
    """The answer after the internal thoughts (``...\\nAssistant: answer``), up to a next user turn."""
    marker = _FINAL_ANSWER.search(text)
    if marker is None:
        return None
    answer = text[marker.end():]
    turn = _NEXT_TURN.search(answer)
    return (answer[:turn.start()] if turn else answer).strip()


class Responder(Role[Instruction, "Response | Verdict"]):
    """Answers an instruction with the current model and applies the response filters.

    Args:
        config: The ``[responder]`` section (each round's replaces it at the round's start).
        pool: Where requests go.
        models: The served models (the policy answers).
        prompts: The style prompts by name (``plain``, ``principles``, ``verbose``), the principles
            and worked examples already filled into the ``principles`` one.
    """

    name: ClassVar[str] = "responder"

    def __init__(self, config: ResponderConfig, pool: Client, models: Models,
                 prompts: dict[str, str] | None = None) -> None:
        self.config = config
        self.pool = pool
        self.models = models
        self.prompts = prompts or {}
        self._completions = True  # until the endpoints say they only do chat

    async def on_round_start(self, context: RoundContext) -> None:
        self.config = context.config.responder

    def prompt(self, message: Instruction) -> tuple[str, bool]:
        """(the prompt, whether it is plain text) for one instruction, by style and model."""
        c, query = self.config, user_turn(message.instruction, message.input)
        if c.style == "principles":  # principles and examples were filled in once, the query stays a slot
            return self.prompts["principles"].replace("{query}", query), True
        if c.style == "verbose":
            return self.prompts["verbose"].format(query=query), True
        api = c.base_api if self.models.policy.version == self.models.base.version else c.api
        if api == "chat" or api == "auto" and not self._completions:
            return query, False
        return self.prompts["plain"].format(instruction=message.instruction, input=message.input), True

    async def handle(self, message: Instruction) -> Response | Verdict:
        model = self.models.policy
        prompt, plain = self.prompt(message)
        try:
            completion = await self._ask(prompt, plain, model.name)
        except EndpointError as err:
            return Verdict(id=message.id, round=message.round, model_version=model.version, status="failed",
                           stage="responder", reason=err.reason)
        text = _ANSWER_PREFIX.sub("", completion.text.strip())
        reason = None
        if self.config.style == "principles":
            answer = final_answer(completion.text)
            text, reason = (answer, None) if answer is not None else (text, "no_final_answer")
        response = Response(id=message.id, round=message.round, model_version=model.version,
                            instruction=message, text=text, finish_reason=completion.finish_reason,
                            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
        reason = reason or response_reason(text, completion.finish_reason, self.config)
        if reason is not None:
            return Verdict(id=message.id, round=message.round, model_version=model.version, status="rejected",
                           stage="responder", reason=reason, response=response)
        return response

    async def _ask(self, prompt: str, plain: bool, model: str) -> Completion:
        c = self.config
        body: dict = {"model": model, "temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens}
        if c.stop:
            body["stop"] = list(c.stop)
        if plain and self._completions:
            try:
                return await self.pool.complete({**body, "prompt": prompt})
            except EndpointError as err:
                if err.reason != "completions_refused":
                    raise
                self._completions = False  # chat from now on, with the same text as the user turn
        turns = [{"role": "user", "content": prompt}]
        if c.system_prompt is not None and not plain:
            turns.insert(0, {"role": "system", "content": c.system_prompt})
        return await self.pool.chat({**body, "messages": turns})
