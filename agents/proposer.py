"""The Proposer: writes new task instructions by imitating a few examples (recipe steps 1-3).

Each call samples seed tasks (plus, optionally, instructions this run already wrote, as
Self-Instruct mixes them), renders them under the meta-prompt in the recipe's layout
(``fields``: ``###`` between tasks, numbered ``Instruction:``/``Input:`` lines, as I-SHEEP's
authors; ``list``: one numbered instruction a line, as Self-Instruct), asks the current model to
continue the list (plain text completion where the endpoint serves it, chat otherwise), parses
what comes back, and screens every draft: the configured rule filters in order, then ROUGE-L
dedup against the whole history of the run. A share of the calls (``topic_share``) may instead
ask for topic-guided red-teaming questions (Dromedary). Every draft becomes an
:class:`Instruction` (it goes on to the Responder) or a rejected :class:`Verdict` with the filter
that stopped it.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

from isheep.runtime.core.config import ProposerConfig
from isheep.runtime.core.endpoint import Client, Completion, EndpointError
from isheep.runtime.core.messages import Instruction, ProposalRequest, QuestionType, SeedTask, Verdict, item_seq
from isheep.runtime.core.roles import Role, RoundContext
from isheep.runtime.core.types import DuplicateIndex, Models

NO_INPUT = "<noinput>"
#: Hints in a topic-guided prompt, and worked examples shown before them.
TOPIC_EXAMPLES = 5
TOPIC_HINTS = 5

_MARKER = re.compile(r"^\s*(\d+)\s*[.)]\s*(instruction|input|output|type)\s*:\s?(.*)$", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*(\d+)\s*[.)]\s+(\S.*)$")
_LEADING_NUMBER = re.compile(r"^\d+\s*[.)]\s+")
_LEAK = re.compile(r"\b(instruction|input|output)\s*:", re.IGNORECASE)
_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_NOINPUT = re.compile(r"no\s?input", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"<.{1,20}>|none", re.IGNORECASE)
_NO_INPUT_FORMS = {NO_INPUT, "<no input>", "noinput"}
_EMPTY_INPUTS = {"", *_NO_INPUT_FORMS, "none", "n/a", "<none>", "(none)", "-"}


@dataclass(frozen=True)
class Draft:
    """An instruction as parsed from the model's text, before screening."""

    instruction: str
    input: str = ""
    #: The input as written (``none``, ``<name>``...), for the placeholder filter.
    raw_input: str = ""
    #: False when a ``fields``-layout task came without its ``Input:`` line.
    complete: bool = True

    def __post_init__(self) -> None:
        if not self.raw_input and self.input:  # built by hand: the input is as written
            object.__setattr__(self, "raw_input", self.input)


def render_examples(examples: list[SeedTask], layout: str = "fields") -> str:
    """The examples in the prompt's layout: ``###`` blocks of ``N. Instruction:``/``N. Input:``
    lines (the input on its own line, ``<noinput>`` when empty), or ``N. instruction`` lines."""
    if layout == "list":
        return "\n".join(f"{n}. {task.instruction}" for n, task in enumerate(examples, 1))
    blocks = []
    for n, task in enumerate(examples, 1):
        instruction = " ".join(task.instruction.split()).rstrip(":")
        blocks.append(f"###\n{n}. Instruction: {instruction}\n{n}. Input:\n{task.input or NO_INPUT}")
    return "\n".join(blocks)


def parse_drafts(text: str, truncated: bool, *, drop_tail: bool = False, need_input: bool = False) -> list[Draft]:
    """Read tasks from the model's continuation of the numbered list.

    Understands ``N. Instruction:``/``N. Input:`` blocks (multi-line inputs included; ``Output:``
    and ``Type:`` lines skipped, ``###`` ends a task) and, failing any marker, a plain numbered
    list. ``drop_tail`` drops whatever follows the last ``###`` (I-SHEEP's authors always drop
    that chunk: cut by the token limit or a stop string); otherwise a reply cut off by the token
    limit loses its last task only. With ``need_input`` a task lacking its ``Input:`` line is
    marked incomplete (the ``structure`` filter drops it).
    """
    lines = text.splitlines()
    if drop_tail and any(line.strip() == "###" for line in lines):
        lines = lines[:max(i for i, line in enumerate(lines) if line.strip() == "###")]
        truncated = False
    drafts: list[list] = []  # [instruction, input, saw_input]
    field_index = None
    for line in lines:
        if line.strip() == "###":
            field_index = None
            continue
        match = _MARKER.match(line)
        if match:
            kind = match.group(2).lower()
            if kind == "instruction":
                drafts.append([match.group(3).strip(), "", False])
                field_index = 0
            elif kind == "input" and drafts:
                drafts[-1][1], drafts[-1][2] = match.group(3).strip(), True
                field_index = 1
            else:
                field_index = None  # an output or a hint: not ours to keep
            continue
        if field_index is not None and drafts:
            current = drafts[-1][field_index]
            drafts[-1][field_index] = f"{current}\n{line}".strip() if current else line.strip()
    if not drafts:
        drafts = [[m.group(2).strip(), "", False] for m in map(_NUMBERED.match, lines) if m]
        need_input = False
    if truncated and drafts:
        drafts.pop()
    result = []
    for instruction, value, saw_input in drafts:
        if not instruction.strip():
            continue  # a marker with nothing after it is no task (a model that wrote nothing useful)
        raw = value.strip()
        # "<noinput>" means none; "none", "n/a"... too, but the placeholder filter may refuse them.
        clean = "" if raw.lower() in _EMPTY_INPUTS else raw
        raw = "" if raw.lower() in _NO_INPUT_FORMS else raw
        # Small models number the instruction itself ("6. Instruction: 1. Write..."): drop that.
        result.append(Draft(_LEADING_NUMBER.sub("", " ".join(instruction.split())), clean, raw,
                            saw_input or not need_input))
    return result


Filter = Callable[[Draft, ProposerConfig, "re.Pattern[str] | None"], "str | None"]


def _length(draft: Draft, config: ProposerConfig, blacklist: re.Pattern[str] | None) -> str | None:
    words = len(draft.instruction.split())
    if words < config.min_words:
        return f"too_short:{words}"
    return f"too_long:{words}" if words > config.max_words else None


def _blacklisted(text: str, blacklist: re.Pattern[str] | None, reason: str) -> str | None:
    hit = blacklist.search(text) if blacklist is not None else None
    return f"{reason}:{hit.group(0).lower()}" if hit else None


#: The rule filters by name (the reason they give); a recipe lists the ones it runs, in order.
FILTERS: dict[str, Filter] = {
    "structure": lambda d, c, b: None if d.complete else "no_input_line",
    "length": _length,
    "blacklist": lambda d, c, b: _blacklisted(d.instruction, b, "blacklist"),
    "blacklist_input": lambda d, c, b: _blacklisted(d.input, b, "blacklist_input"),
    "starts_with_punctuation": lambda d, c, b: "starts_with_punctuation" if d.instruction[:1] in string.punctuation
    else None,
    "non_ascii_start": lambda d, c, b: "non_ascii_start" if not d.instruction[:1].isascii() else None,
    "write_a_program": lambda d, c, b: "write_a_program" if d.instruction.lower().startswith("write a program")
    else None,
    "input_says_noinput": lambda d, c, b: "input_says_noinput" if _NOINPUT.search(d.input)
    or "noinput" in d.instruction else None,
    "format_leak": lambda d, c, b: "format_leak" if _LEAK.search(d.instruction) or _LEAK.search(d.input) else None,
    "url": lambda d, c, b: "url" if _URL.search(d.instruction) or _URL.search(d.input) else None,
    "placeholder": lambda d, c, b: "placeholder" if _PLACEHOLDER.search(d.raw_input) or _PLACEHOLDER.search(
        d.instruction) else None,
    "input_in_instruction": lambda d, c, b: "input_in_instruction" if d.input and d.input.lower() in
    d.instruction.lower() else None,
}


def screen(draft: Draft, config: ProposerConfig, blacklist: re.Pattern[str] | None) -> str | None:
    """The configured rule filters in order; the reason a draft is dropped, or None to keep it."""
    if not draft.instruction:
        return "too_short:0"
    for name in config.filters:
        reason = FILTERS[name](draft, config, blacklist)
        if reason is not None:
            return reason
    return None


def blacklist_pattern(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


class Proposer(Role[ProposalRequest, list]):
    """Turns a :class:`ProposalRequest` into screened instructions and rejections.

    Args:
        config: The ``[proposer]`` section (each round's replaces it at the round's start).
        pool: Where requests go.
        models: The served models (the policy writes the tasks).
        seeds: The seed tasks the examples are drawn from.
        index: The dedup pool (seeds and every earlier screened instruction of the run).
        template: The meta-prompt, with ``{count}``, ``{examples}`` and ``{next}``.
        seed: Seeds the example draws, so a call's examples are reproducible.
        history: Earlier screened instructions of this run, for Self-Instruct-style mixing.
        topics: Question types for topic-guided proposals, and their prompt (``topic_share`` > 0).
    """

    name: ClassVar[str] = "proposer"

    def __init__(self, config: ProposerConfig, pool: Client, models: Models, seeds: list[SeedTask],
                 index: DuplicateIndex, template: str, *, seed: int = 0, history: Sequence[SeedTask] = (),
                 topics: tuple[list[QuestionType], str] | None = None) -> None:
        self.pool = pool
        self.models = models
        self.seeds = seeds
        self.index = index
        self.template = template
        self.seed = seed
        self.topics, self.topics_template = topics or ([], "")
        self.context: RoundContext | None = None
        #: Instructions of this run, for Self-Instruct-style mixing.
        self.machine: list[SeedTask] = list(history)
        self._completions = True  # until the endpoints say they only do chat
        self.configure(config)

    def configure(self, config: ProposerConfig) -> None:
        self.config = config
        self._blacklist = blacklist_pattern(config.blacklist)

    async def on_round_start(self, context: RoundContext) -> None:
        self.context = context
        self.configure(context.config.proposer)

    async def on_round_end(self) -> None:
        self.context = None  # a stray call after the round must not take ids from it

    # -- prompts -----------------------------------------------------------------------------
    def examples(self, request: ProposalRequest) -> list[SeedTask]:
        """The in-context examples of one call, reproducible from (seed, round, call).

        ``num_examples + num_machine_examples`` in all: up to ``num_machine_examples`` of the
        run's own instructions, seeds for the rest (Self-Instruct: 8, 2 machine-written once
        there are 2).
        """
        rng = self._rng(request)
        extra = min(self.config.num_machine_examples, len(self.machine))
        chosen = rng.sample(self.seeds, self.config.num_examples + self.config.num_machine_examples - extra)
        if extra:
            chosen += rng.sample(self.machine, extra)
            rng.shuffle(chosen)
        return chosen

    def prompt(self, examples: list[SeedTask]) -> str:
        return self.template.format(count=self.config.tasks_per_call, next=len(examples) + 1,
                                    examples=render_examples(examples, self.config.layout))

    def topic_prompt(self, request: ProposalRequest) -> str:
        """A topic-guided prompt: worked questions of some types, then hints (type, topic) to follow."""
        rng = self._rng(request)
        shown = rng.sample(self.topics, min(TOPIC_EXAMPLES, len(self.topics)))
        examples = "\n".join(f"###\n{n}. Type: {q.type}; topic: {rng.choice(q.topics)}\n{n}. Instruction: {q.question}"
                             for n, q in enumerate(shown, 1))
        first = len(shown) + 1
        hints = [(n, rng.choice(self.topics)) for n in range(first, first + TOPIC_HINTS)]
        picked = [(n, q.type, rng.choice(q.topics)) for n, q in hints]
        return self.topics_template.format(
            examples=examples, hints="\n".join(f"{n}. Type: {t}; topic: {x}" for n, t, x in picked),
            next=first, type=picked[0][1], topic=picked[0][2])

    def _rng(self, request: ProposalRequest) -> random.Random:
        return random.Random(f"{self.seed}/{request.round}/{request.call}")

    def _topic_call(self, request: ProposalRequest) -> bool:
        share = self.config.topic_share
        return bool(share and self.topics) and random.Random(f"topic/{self.seed}/{request.round}/{request.call}"
                                                             ).random() < share

    # -- a call ------------------------------------------------------------------------------
    async def handle(self, request: ProposalRequest) -> list[Instruction | Verdict]:
        if self.context is not None and self.context.replay:
            return self.replayed(request)
        topical = self._topic_call(request)
        prompt = self.topic_prompt(request) if topical else self.prompt(self.examples(request))
        model = self.models.policy
        completion, plain = await self._ask(prompt, model.name)
        truncated = completion.finish_reason == "length"
        if truncated and self.config.drop_truncated_reply:
            return []
        # The prompt ends inside the next task ("6. Instruction:", "9."): put that back for the parser.
        text = prompt.rstrip().rsplit("\n", 1)[-1] + completion.text if plain else completion.text
        drafts = parse_drafts(text, truncated, drop_tail=plain and self.config.layout == "fields",
                              need_input=self.config.layout == "fields" and not topical)
        return self.admit(drafts, request.round, model.version)

    async def _ask(self, prompt: str, model: str) -> tuple[Completion, bool]:
        """The model's continuation (plain text where served, else chat), and whether it was plain."""
        c = self.config
        body = {"model": model, "temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens}
        if c.presence_penalty:
            body["presence_penalty"] = c.presence_penalty
        if c.stop:
            body["stop"] = list(c.stop)
        if c.api == "completions" or c.api == "auto" and self._completions:
            try:
                return await self.pool.complete({**body, "prompt": prompt}), True
            except EndpointError as err:
                if c.api == "completions" or err.reason != "completions_refused":
                    raise
                self._completions = False  # chat from now on
        return await self.pool.chat({**body, "messages": [{"role": "user", "content": prompt}]}), False

    def replayed(self, request: ProposalRequest) -> list[Instruction | Verdict]:
        """The next instructions of the round being replayed, as they were (already screened once).

        The n-th item of a replayed round is its n-th instruction, resumed or not.
        """
        assert self.context is not None and self.context.round == request.round, "no round context"
        replay = self.context.replay
        return [Instruction(id=item, round=request.round, model_version=self.models.policy.version,
                            instruction=replay[item_seq(item) - 1].instruction, input=replay[item_seq(item) - 1].input)
                for item in self.context.allocate(self.config.tasks_per_call)]

    def admit(self, drafts: list[Draft], round: int, version: str) -> list[Instruction | Verdict]:
        """Screen drafts and take them into the round (synchronous, so dedup decisions are atomic).

        Drafts beyond what the round still admits (its proposal cap) are dropped unrecorded.
        """
        assert self.context is not None and self.context.round == round, "no round context"
        out: list[Instruction | Verdict] = []
        for draft, item_id in zip(drafts, self.context.allocate(len(drafts))):
            reason = screen(draft, self.config, self._blacklist)
            if reason is None:
                duplicate, score, _ = self.index.check_and_add(draft.instruction)
                if duplicate:
                    reason = f"rouge_l:{score:.2f}"
            if reason is not None:
                out.append(Verdict(id=item_id, round=round, model_version=version, status="rejected",
                                   stage="proposer", reason=reason, instruction=draft.instruction,
                                   input=draft.input))
                continue
            if self.config.num_machine_examples:
                self.machine.append(SeedTask(instruction=draft.instruction, input=draft.input))
            out.append(Instruction(id=item_id, round=round, model_version=version,
                                   instruction=draft.instruction, input=draft.input))
        return out
