"""The Self-Critic: the model grades each pair twice, for quality and for instruction following
(recipe step 6), each on a 1-10 scale with a short explanation.

Where the endpoint supports it, the reply is constrained with a JSON schema
(``response_format``), which makes a small model's scores parseable. In ``auto`` mode the
first refusal of ``response_format`` (HTTP 400) switches the critic to the recipe's text form,
``<score>||<explanation>``, for the rest of the run. A reply that cannot be read as a score
from 1 to 10 is not an error: its score is None, and the Curator rejects the pair for it.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import ClassVar, Literal

from isheep.runtime.core.config import CriticConfig
from isheep.runtime.core.endpoint import Client, EndpointError
from isheep.runtime.core.errors import GarbageOutput
from isheep.runtime.core.messages import Assessment, Response, Score, Verdict
from isheep.runtime.core.roles import Aspect, CriticRole, RoundContext
from isheep.runtime.core.types import Models, ServedModel

SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": list(range(1, 11))},
        "explanation": {"type": "string"},
    },
    "required": ["score", "explanation"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "assessment", "schema": SCHEMA, "strict": True}}

FORMAT_TEXT = ("Reply with the score, two vertical bars, then a one-sentence explanation, and nothing else. "
               "Example: 7||The answer is correct but repeats itself.")
# No example score: small models copy it.
FORMAT_JSON = ('Reply with a JSON object with the keys "score" (an integer from 1 to 10) and "explanation" '
               '(one sentence).')

_JSON_PREFIX = re.compile(r'^\{\s*"score"\s*:\s*"?(\d{1,3})"?\s*,')  # a reply cut off in the explanation
_TEXT_SCORE = re.compile(r"^\W*(\d{1,3})(?:\s*/\s*10)?\W*?\s*\|\|\s*(.*)$", re.DOTALL)
_NUMBER = re.compile(r"^\s*(\d{1,3})\s*(?:/\s*10)?\s*$")


def _valid(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _NUMBER.match(value):
        number = int(_NUMBER.match(value).group(1))  # type: ignore[union-attr]
    else:
        return None
    return number if 1 <= number <= 10 else None


def parse_score(raw: str) -> Score:
    """Read ``{"score": 9, "explanation": ...}`` or ``9||...`` (also ``9/10||...``); else value None."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            explanation = data.get("explanation", "")
            return Score(value=_valid(data.get("score")), raw=raw,
                         explanation=explanation if isinstance(explanation, str) else str(explanation))
        prefix = _JSON_PREFIX.match(text)
        if prefix:  # the token limit cut the explanation; the score came first and is whole
            return Score(value=_valid(int(prefix.group(1))), raw=raw, explanation="(cut off)")
    match = _TEXT_SCORE.match(text)
    if match:
        return Score(value=_valid(int(match.group(1))), explanation=match.group(2).strip(), raw=raw)
    return Score(value=None, raw=raw)


class Critic(CriticRole):
    """Scores each pair twice (quality, instruction following) with the configured model.

    Args:
        config: The ``[critic]`` section.
        pool: Where requests go (a base-model critic may have a server of its own).
        models: The served models; ``config.model`` says which one judges.
        templates: The two judge prompts, by aspect.
    """

    name: ClassVar[str] = "critic"

    def __init__(self, config: CriticConfig, pool: Client, models: Models, templates: dict[Aspect, str]) -> None:
        self.config = config
        self.pool = pool
        self.models = models
        self.templates = templates
        #: "json" or "text"; in auto mode it starts as json and may fall back once.
        self.mode: Literal["json", "text"] = "text" if config.structured == "text" else "json"
        self.fell_back = False
        self._unparseable_streak = 0
        self._context: RoundContext | None = None

    async def on_round_start(self, context: RoundContext) -> None:
        self._context = context

    @property
    def model(self) -> ServedModel:
        return self.models.base if self.config.model == "base" else self.models.policy

    def prompt(self, aspect: Aspect, response: Response) -> str:
        inst = response.instruction
        return self.templates[aspect].format(
            instruction=inst.instruction,
            input_block=f"\n[Input]\n{inst.input}\n" if inst.input else "",
            response=response.text,
            format=FORMAT_JSON if self.mode == "json" else FORMAT_TEXT,
        )

    async def score(self, aspect: Aspect, response: Response, model: ServedModel | None = None) -> Score:
        """One assessment of one pair (the evaluation gate uses this too)."""
        return await self._ask(aspect, response, model or self.model)

    async def _ask(self, aspect: Aspect, response: Response, model: ServedModel) -> Score:
        while True:
            mode = self.mode
            body = {"model": model.name, "temperature": self.config.temperature,
                    "max_tokens": self.config.max_tokens,
                    "messages": [{"role": "user", "content": self.prompt(aspect, response)}]}
            if mode == "json":
                body["response_format"] = RESPONSE_FORMAT
            try:
                completion = await self.pool.chat(body)
            except EndpointError as err:
                if mode == "json" and err.status == 400 and self.config.structured == "auto":
                    self._fall_back()
                    continue
                raise
            return parse_score(completion.text)

    def _fall_back(self) -> None:
        """The endpoint refused ``response_format``: parse text replies from now on (said once)."""
        self.mode = "text"
        if not self.fell_back and self._context is not None:
            self._context.note("critic", "endpoint refused response_format; the critic parsed text replies", "info")
        self.fell_back = True

    async def handle(self, message: Response) -> Assessment | Verdict:
        model = self.model
        try:
            quality, following = await asyncio.gather(
                self._ask("quality", message, model), self._ask("following", message, model))
        except EndpointError as err:
            return Verdict(id=message.id, round=message.round, model_version=model.version, status="failed",
                           stage="critic", reason=err.reason)
        if quality.value is None and following.value is None:
            self._unparseable_streak += 1
            if self._unparseable_streak >= self.config.max_unparseable_streak:
                raise GarbageOutput(
                    f"the critic's last {self._unparseable_streak} replies could not be read as scores "
                    f"(last: {quality.raw[:80]!r}); check the model, or set critic.structured")
        else:
            self._unparseable_streak = 0
        return Assessment(id=message.id, round=message.round, model_version=model.version, response=message,
                          quality=quality, following=following)
