"""The Self-Critic: the model grades each pair twice, for quality and for instruction following
(recipe step 6), each on a 1-10 scale with a short explanation.

Two styles. ``authors``: I-SHEEP's two plain prompts (their criteria, anchors and the
``<score>||<explanation>`` reply format, in our own words), sent as plain text where the
endpoint serves completions; quality is asked first, and following only when quality could be
read, as theirs. ``judge``: chat prompts that ask for a JSON object, constrained with a JSON
schema (``response_format``) where the endpoint honours one; in ``auto`` mode an endpoint that
refuses the schema (or ignores it) gets text prompts from then on, and the pair that found out
is asked again, so no item is lost. The judge's ``layout``: ``conversation`` replays the
pair as the chat it was (the instruction as the user's turn, the answer as the assistant's, after
the Responder's system prompt if it had one) and asks in a new user turn, so a server that wrote
the answer serves the pair's prefill from its prefix cache; ``quoted`` quotes the pair inside one
user turn. Either way the reply is read by :func:`parse_score`. A
reply that cannot be read as a score from 1 to 10 is not an error: its score is None, and the
Curator rejects the pair for it. With ``enabled = false`` (Self-Instruct, Dromedary's round) no
one judges: pairs go on unjudged and the Curator keeps them.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar, Literal

from isheep.runtime.core.config import CriticConfig
from isheep.runtime.core.endpoint import Client, Completion, EndpointError
from isheep.runtime.core.errors import GarbageOutput
from isheep.runtime.core.messages import Assessment, Response, Score, Verdict, user_turn
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

#: The template kind of each prompt set (``{}``: the aspect), by :func:`template_key`.
KINDS = {"authors": "critic_{}", "judge": "judge_{}", "judge_turn": "judge_{}_turn"}


def template_key(config: CriticConfig) -> str:
    """Which prompt set a critic of ``config`` asks with (a key of :data:`KINDS`)."""
    if config.style == "authors":
        return "authors"
    return "judge" if config.layout == "quoted" else "judge_turn"


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
_JSON_PREFIX = re.compile(r'^\{\s*"score"\s*:\s*"?(\d{1,3}(?:\.\d+)?)"?\s*,')  # cut off in the explanation
_LEAD = re.compile(r"^\s*\W*")
_LABEL = re.compile(r"(?:(?:the|my|final|overall)\s+)*(?:score|rating|grade|quality|(?:instruction\s+)?following)"
                    r"(?:\s+score)?(?:\s*\([^)]*\))?(?:\s+is)?\s*[:=\-]?\s*", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SCALE = re.compile(r"\s*(?:/|out\s+of)\s*(\d+)", re.IGNORECASE)


def _scaled(number: float) -> int | None:
    """A score on the 1-10 scale as written (safely stricter than rounding first), rounded half to even."""
    return round(number) if 1 <= number <= 10 else None


def _from_json(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _scaled(float(value))
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        return _scaled(float(value))
    return None


def _strip_lead(text: str) -> tuple[str, bool]:
    """Leading space and punctuation off (as the authors' parser); True if they ended in a minus sign."""
    lead = _LEAD.match(text).group()  # type: ignore[union-attr]
    rest = text[len(lead):]
    return rest, lead.endswith("-") and rest[:1].isdigit()


def _from_text(text: str) -> tuple[int | None, str]:
    """I-SHEEP's authors' reading (a leading number after any punctuation), plus a leading label."""
    rest, negative = _strip_lead(text)
    label = _LABEL.match(rest)
    if label and label.end():
        rest, negative = _strip_lead(rest[label.end():])
    number = _NUMBER.match(rest)
    if negative or number is None:
        return None, ""
    after = rest[number.end():]
    scale = _SCALE.match(after)
    if scale is not None:
        if scale.group(1) != "10":
            return None, ""  # a score on another scale is not one on this one
        after = after[scale.end():]
    explanation = text.split("||", 1)[1] if "||" in text else _LEAD.sub("", after)
    return _scaled(float(number.group())), explanation.strip()


def parse_score(raw: str) -> Score:
    """Read a critic's reply: ``9||...``, ``9. ...``, ``**9**``, ``Score: 9/10``, a JSON object... else None."""
    text = _FENCE.sub("", raw.strip()).strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            explanation = data.get("explanation", "")
            return Score(value=_from_json(data.get("score")), raw=raw,
                         explanation=explanation if isinstance(explanation, str) else str(explanation))
        prefix = _JSON_PREFIX.match(text)
        if prefix:  # the token limit cut the explanation; the score came first and is whole
            return Score(value=_scaled(float(prefix.group(1))), raw=raw, explanation="(cut off)")
        return Score(value=None, raw=raw)
    value, explanation = _from_text(text)
    return Score(value=value, explanation=explanation if value is not None else "", raw=raw)


class Critic(CriticRole):
    """Scores each pair twice (quality, instruction following) with the configured model.

    Args:
        config: The ``[critic]`` section (each round's replaces it at the round's start).
        pool: Where requests go (a base-model critic may have a server of its own).
        models: The served models; ``config.model`` says which one judges.
        templates: The prompts by style (``authors``, ``judge``), then by aspect.
    """

    name: ClassVar[str] = "critic"

    def __init__(self, config: CriticConfig, pool: Client, models: Models,
                 templates: dict[str, dict[Aspect, str]]) -> None:
        self.config = config
        self.pool = pool
        self.models = models
        self.templates = templates
        #: judge style: "json" or "text"; in auto mode it starts as json and may fall back once.
        self.mode: Literal["json", "text"] = "text" if config.structured == "text" else "json"
        self.fell_back = False
        self._completions = True  # until the endpoints say they only do chat
        self._unparseable_streak = 0
        self._context: RoundContext | None = None
        #: The Responder's system prompt (the conversation layout replays it; None: the model's default).
        self._system: str | None = None

    async def on_round_start(self, context: RoundContext) -> None:
        self._context = context
        self.config = context.config.critic
        self._system = context.config.responder.system_prompt

    @property
    def model(self) -> ServedModel:
        return self.models.base if self.config.model == "base" else self.models.policy

    def prompt(self, aspect: Aspect, response: Response) -> str:
        """The text of the request's last (or only) user turn: the whole quoted pair, or the question."""
        inst, key = response.instruction, template_key(self.config)
        if key == "authors":
            task = f"{inst.instruction} {inst.input}" if inst.input else inst.instruction
            return self.templates["authors"][aspect].format(task=task, response=response.text)
        reply = FORMAT_JSON if self.mode == "json" else FORMAT_TEXT
        if key == "judge_turn":
            return self.templates[key][aspect].format(format=reply)
        return self.templates[key][aspect].format(
            instruction=inst.instruction, input_block=f"\n[Input]\n{inst.input}\n" if inst.input else "",
            response=response.text, format=reply)

    def messages(self, aspect: Aspect, response: Response) -> list[dict[str, str]]:
        """The chat turns of one assessment: the pair's own turns first in the conversation layout,
        exactly as the Responder sent them (so the server's prefix cache matches), then the question."""
        question = [{"role": "user", "content": self.prompt(aspect, response)}]
        if template_key(self.config) != "judge_turn":
            return question
        inst = response.instruction
        turns = [{"role": "system", "content": self._system}] if self._system is not None else []
        return turns + [{"role": "user", "content": user_turn(inst.instruction, inst.input)},
                        {"role": "assistant", "content": response.text}] + question

    async def score(self, aspect: Aspect, response: Response, model: ServedModel | None = None) -> Score:
        """One assessment of one answer (the evaluation gate uses this too)."""
        return parse_score((await self._ask(aspect, response, model or self.model)).text)

    async def _ask(self, aspect: Aspect, response: Response, model: ServedModel) -> Completion:
        c = self.config
        body: dict = {"model": model.name, "temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens}
        if c.stop:
            body["stop"] = list(c.stop)
        if c.style == "authors":
            if c.api == "completions" or c.api == "auto" and self._completions:
                try:
                    return await self.pool.complete({**body, "prompt": self.prompt(aspect, response)})
                except EndpointError as err:
                    if c.api == "completions" or err.reason != "completions_refused":
                        raise
                    self._completions = False  # chat from now on
            return await self.pool.chat({**body, "messages": self.messages(aspect, response)})
        while True:
            mode = self.mode
            ask = {**body, "messages": self.messages(aspect, response)}
            try:
                return await self.pool.chat({**ask, "response_format": RESPONSE_FORMAT} if mode == "json" else ask)
            except EndpointError as err:
                if mode != "json" or err.reason != "schema_refused" or c.structured != "auto":
                    raise
                # Asked again in text for this pair; the whole critic turns to text once no endpoint honours it.
                if not self.pool.supports("response_format"):
                    self._fall_back()
                else:
                    return await self.pool.chat({**body, "messages": self._text_messages(aspect, response)})

    def _text_messages(self, aspect: Aspect, response: Response) -> list[dict[str, str]]:
        mode, self.mode = self.mode, "text"
        try:
            return self.messages(aspect, response)
        finally:
            self.mode = mode

    def _fall_back(self) -> None:
        """No endpoint honours ``response_format``: text prompts from now on (said once)."""
        self.mode = "text"
        if not self.fell_back and self._context is not None:
            self._context.note("critic", "endpoint refused response_format; the critic parsed text replies", "info")
        self.fell_back = True

    async def handle(self, message: Response) -> Assessment | Verdict:
        model = self.model
        if not self.config.enabled:
            return Assessment(id=message.id, round=message.round, model_version=model.version, response=message,
                              quality=Score(), following=Score(), judged=False)
        try:
            # One after the other: both prompts open with the same pair, so the second one's prefill
            # is mostly the first one's, already in the server's prefix cache (sent together, both
            # would compute it). The authors ask following only of pairs whose quality could be read.
            quality = await self.score("quality", message, model)
            following = (await self.score("following", message, model)
                         if quality.value is not None or self.config.style != "authors" else Score())
        except EndpointError as err:
            return Verdict(id=message.id, round=message.round, model_version=model.version, status="failed",
                           stage="critic", reason=err.reason)
        self._count_unparseable(quality, following)
        return Assessment(id=message.id, round=message.round, model_version=model.version, response=message,
                          quality=quality, following=following)

    def _count_unparseable(self, quality: Score, following: Score) -> None:
        if quality.value is not None or following.value is not None:
            self._unparseable_streak = 0
            return
        self._unparseable_streak += 1
        if self._unparseable_streak >= self.config.max_unparseable_streak:
            raise GarbageOutput(
                f"the critic's last {self._unparseable_streak} replies could not be read as scores "
                f"(last: {quality.raw[:80]!r}); check the model, or set critic.style / critic.structured")
