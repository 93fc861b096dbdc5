"""The Proposer: writes new task instructions by imitating a few examples (recipe steps 1-3).

Each call samples ``num_examples`` seed tasks (plus, optionally, instructions this run already
wrote, as Self-Instruct mixes them), renders them as a numbered ``Instruction:``/``Input:`` list
under the meta-prompt, asks the current model to continue the list, parses what comes back,
and screens every draft: the recipe's rule filters first, then ROUGE-L dedup against the
whole history of the run. Every draft becomes an :class:`Instruction` (it goes on to the
Responder) or a rejected :class:`Verdict` with the filter that stopped it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar, Sequence

from isheep.runtime.core.config import ProposerConfig
from isheep.runtime.core.endpoint import Client
from isheep.runtime.core.messages import Instruction, ProposalRequest, SeedTask, Verdict
from isheep.runtime.core.roles import Role, RoundContext
from isheep.runtime.core.types import DuplicateIndex, Models

NO_INPUT = "<noinput>"

_MARKER = re.compile(r"^\s*(\d+)\s*[.)]\s*(instruction|input|output)\s*:\s?(.*)$", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*(\d+)\s*[.)]\s+(\S.*)$")
_LEADING_NUMBER = re.compile(r"^\d+\s*[.)]\s+")
_LEAK = re.compile(r"\b(instruction|input|output)\s*:", re.IGNORECASE)
_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_NOINPUT = re.compile(r"no\s?input", re.IGNORECASE)
_EMPTY_INPUTS = {"", NO_INPUT, "<no input>", "noinput", "none", "n/a", "<none>", "(none)", "-"}


@dataclass(frozen=True)
class Draft:
    """An instruction as parsed from the model's text, before screening."""

    instruction: str
    input: str = ""


def render_examples(examples: list[SeedTask]) -> str:
    """``1. Instruction: ...`` / ``1. Input: ...`` lines, ``<noinput>`` for an empty input."""
    lines = []
    for number, task in enumerate(examples, 1):
        lines.append(f"{number}. Instruction: {task.instruction}")
        value = task.input if task.input else NO_INPUT
        lines.append(f"{number}. Input:\n{value}" if "\n" in value else f"{number}. Input: {value}")
    return "\n".join(lines)


def parse_drafts(text: str, truncated: bool) -> list[Draft]:
    """Read tasks from the model's continuation of the numbered list.

    Understands ``N. Instruction:``/``N. Input:``/``N. Output:`` blocks (multi-line inputs
    included) and, failing any such marker, a plain numbered list of instructions. A draft cut
    off by the token limit is dropped, as Alpaca's generator does.
    """
    drafts: list[list[str]] = []  # [instruction, input]
    field_index = None
    saw_marker = False
    for line in text.splitlines():
        match = _MARKER.match(line)
        if match:
            saw_marker = True
            kind = match.group(2).lower()
            if kind == "instruction":
                drafts.append([match.group(3).strip(), ""])
                field_index = 0
            elif kind == "input" and drafts:
                drafts[-1][1] = match.group(3).strip()
                field_index = 1
            else:
                field_index = None  # an output: not ours to keep
            continue
        if field_index is not None and drafts:
            current = drafts[-1][field_index]
            drafts[-1][field_index] = f"{current}\n{line}".strip() if current else line.strip()
    if not saw_marker:
        drafts = [[m.group(2).strip(), ""] for m in map(_NUMBERED.match, text.splitlines()) if m]
    if truncated and drafts:
        drafts.pop()
    result = []
    for instruction, value in drafts:
        value = value.strip()
        if value.lower() in _EMPTY_INPUTS:
            value = ""
        # Small models number the instruction itself ("6. Instruction: 1. Write..."): drop that.
        result.append(Draft(_LEADING_NUMBER.sub("", " ".join(instruction.split())), value))
    return result


def screen(draft: Draft, config: ProposerConfig, blacklist: re.Pattern[str] | None) -> str | None:
    """The recipe's rule filters; returns the reason a draft is dropped, or None to keep it."""
    text, value = draft.instruction, draft.input
    words = len(text.split())
    if words < config.min_words:
        return f"too_short:{words}"
    if words > config.max_words:
        return f"too_long:{words}"
    if blacklist is not None:
        hit = blacklist.search(text)
        if hit:
            return f"blacklist:{hit.group(0).lower()}"
    if not text[0].isascii():
        return "non_ascii_start"
    if not text[0].isalnum():
        return "starts_with_punctuation"
    if _LEAK.search(text) or _LEAK.search(value):
        return "format_leak"
    if _URL.search(text) or _URL.search(value):
        return "url"
    if _NOINPUT.search(value):
        return "input_says_noinput"
    if value and value.lower() in text.lower():
        return "input_in_instruction"
    return None


def blacklist_pattern(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


class Proposer(Role[ProposalRequest, list]):
    """Turns a :class:`ProposalRequest` into screened instructions and rejections.

    Args:
        config: The ``[proposer]`` section.
        pool: Where requests go.
        models: The served models (the policy writes the tasks).
        seeds: The seed tasks the examples are drawn from.
        index: The dedup pool (seeds and every earlier screened instruction of the run).
        template: The meta-prompt, with ``{count}``, ``{examples}`` and ``{next}``.
        seed: Seeds the example draws, so a call's examples are reproducible.
        history: Earlier screened instructions of this run, for Self-Instruct-style mixing.
    """

    name: ClassVar[str] = "proposer"

    def __init__(self, config: ProposerConfig, pool: Client, models: Models, seeds: list[SeedTask],
                 index: DuplicateIndex, template: str, *, seed: int = 0, history: Sequence[SeedTask] = ()) -> None:
        self.config = config
        self.pool = pool
        self.models = models
        self.seeds = seeds
        self.index = index
        self.template = template
        self.seed = seed
        self.context: RoundContext | None = None
        #: Instructions of this run, for Self-Instruct-style mixing (kept only when used).
        self.machine: list[SeedTask] = list(history) if config.num_machine_examples else []
        self._blacklist = blacklist_pattern(config.blacklist)

    async def on_round_start(self, context: RoundContext) -> None:
        self.context = context

    async def on_round_end(self) -> None:
        self.context = None  # a stray call after the round must not take ids from it

    def examples(self, request: ProposalRequest) -> list[SeedTask]:
        """The in-context examples of one call, reproducible from (seed, round, call)."""
        rng = random.Random(f"{self.seed}/{request.round}/{request.call}")
        chosen = rng.sample(self.seeds, self.config.num_examples)
        extra = min(self.config.num_machine_examples, len(self.machine))
        if extra:
            chosen += rng.sample(self.machine, extra)
            rng.shuffle(chosen)
        return chosen

    def prompt(self, examples: list[SeedTask]) -> str:
        return self.template.format(count=self.config.tasks_per_call, examples=render_examples(examples),
                                    next=len(examples) + 1)

    async def handle(self, request: ProposalRequest) -> list[Instruction | Verdict]:
        examples = self.examples(request)
        prompt = self.prompt(examples)
        model = self.models.policy
        body = {"model": model.name, "temperature": self.config.temperature, "top_p": self.config.top_p,
                "max_tokens": self.config.max_tokens}
        if self.config.api == "completions":
            completion = await self.pool.complete({**body, "prompt": prompt})
            # The prompt ends inside task N+1: put its marker back so the parser sees it.
            text = f"{len(examples) + 1}. Instruction:{completion.text}"
        else:
            completion = await self.pool.chat({**body, "messages": [{"role": "user", "content": prompt}]})
            text = completion.text
        drafts = parse_drafts(text, truncated=completion.finish_reason == "length")
        return self.admit(drafts, request.round, model.version)

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
