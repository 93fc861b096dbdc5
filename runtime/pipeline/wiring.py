"""The wiring of a run: what the roles are built with, and the five roles built from the config.

This is the one module of the runtime that imports :mod:`isheep.agents`. :func:`load_inputs`
reads everything the roles need from the recipe and the user's files (templates of every style a
round uses, seed tasks, topics, principles) before a run writes anything, so bad input stops it
with one line and nothing behind. A caller may replace any role: ``roles={"curator": factory}``
calls ``factory`` with the built-in role's arguments (listed in :data:`ROLE_ARGUMENTS`) and uses
what it returns, which must be a :class:`~isheep.runtime.core.roles.Role` (a
:class:`~isheep.runtime.core.roles.CriticRole` or :class:`~isheep.runtime.core.roles.TrainerRole`
for those two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from isheep.agents import Critic, Curator, Proposer, Responder, Trainer
from isheep.agents.critic import KINDS, template_key
from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import QuestionType, SeedTask
from isheep.runtime.core.recipes import load_recipe
from isheep.runtime.core.roles import CriticRole, Role, Roles, TrainerRole
from isheep.runtime.core.types import Models, TrainBackend
from isheep.runtime.data import RougeIndex, load_seeds, load_template, load_topics, read_text
from isheep.runtime.serving import Serving

#: What each role's factory is called with (the built-in classes' constructors).
ROLE_ARGUMENTS = {
    "proposer": "(config.proposer, pool, models, seeds, index, template, seed=..., history=..., topics=...)",
    "responder": "(config.responder, pool, models, prompts)",
    "critic": "(config.critic, critic_pool, models, templates)",
    "curator": "(config.curator)",
    "trainer": "(config.trainer, backend)",
}


@dataclass
class Inputs:
    """What a run reads before it starts: seeds, the prompts of every style its rounds use, topics."""

    seeds: list[SeedTask]
    propose_template: str
    #: The Responder's prompts by style: ``plain`` (and ``principles``, ``verbose`` where used).
    responder_prompts: dict[str, str]
    #: The Critic's prompts by :func:`~isheep.agents.critic.template_key` (``authors``, ``judge``,
    #: ``judge_turn``), then by aspect.
    critic_templates: dict[str, dict[str, str]]
    topics: tuple[list[QuestionType], str] | None = None
    #: Every instruction of this run that passed screening so far (a resumed run's history).
    history: list[SeedTask] = field(default_factory=list)
    #: Whether any round mixes the run's own instructions into the examples (Self-Instruct).
    mixes_history: bool = False


def load_inputs(config: RunConfig) -> Inputs:
    """Read and check every file the roles of this run will use, in every round.

    Raises:
        UserError: a missing or malformed seed file, template, topics, principles or examples file.
    """
    recipe = load_recipe(config.recipe)
    rounds = [config.for_round(k) for k in range(1, config.rounds + 1)] or [config]
    p, c = config.proposer, config.critic
    prompts = {"plain": load_template("respond_plain", None, recipe)}
    for style in sorted({rc.responder.style for rc in rounds} - {"direct"}):
        r = next(rc.responder for rc in rounds if rc.responder.style == style)
        template = load_template(f"respond_{style}", r.template, recipe)
        if style == "principles":  # filled in once; the query stays a slot for each instruction
            principles = read_text(r.principles or recipe.prompt("principles.txt"), "principles").strip()
            exemplars = read_text(r.exemplars or recipe.prompt("exemplars.txt"), "worked examples").strip()
            template = template.format(principles=principles, exemplars=exemplars, query="{query}")
        prompts[style] = template
    critic = {}
    for key in {template_key(c)} | {template_key(rc.critic) for rc in rounds if rc.critic.enabled}:
        critic[key] = {aspect: load_template(KINDS[key].format(aspect), path, recipe) for aspect, path in
                       (("quality", c.quality_template), ("following", c.following_template))}
    topics = None
    if any(rc.proposer.topic_share for rc in rounds):
        topics = (load_topics(p.topics or recipe.prompt("topics.jsonl")),
                  load_template("propose_topics", p.topics_template, recipe))
    return Inputs(seeds=load_seeds(p.seeds, minimum=max(rc.proposer.num_examples + rc.proposer.num_machine_examples
                                                        for rc in rounds)),
                  propose_template=load_template("propose", p.template, recipe), responder_prompts=prompts,
                  critic_templates=critic, topics=topics,
                  mixes_history=any(rc.proposer.num_machine_examples for rc in rounds))


def build_roles(config: RunConfig, serving: Serving, models: Models, inputs: Inputs, backend: TrainBackend | None,
                replace: Mapping[str, Callable[..., Any]] | None = None) -> Roles:
    """The five roles of a run, each the built-in one unless ``replace`` names a factory for it.

    Raises:
        UserError: an unknown role name in ``replace``, or a factory that does not make a role.
    """
    make: dict[str, Callable[..., Any]] = {"proposer": Proposer, "responder": Responder, "critic": Critic,
                                           "curator": Curator, "trainer": Trainer}
    unknown = set(replace or {}) - set(make)
    if unknown:
        raise UserError(f"unknown role(s) to replace: {', '.join(sorted(unknown))} (roles: {', '.join(make)})")
    make.update(replace or {})
    index = RougeIndex(config.proposer.rouge_threshold, [s.instruction for s in inputs.seeds])
    for task in inputs.history:
        index.add(task.instruction)
    pool = serving.pool
    roles = Roles(
        proposer=make["proposer"](config.proposer, pool, models, inputs.seeds, index, inputs.propose_template,
                                  seed=config.seed, history=inputs.history if inputs.mixes_history else (),
                                  topics=inputs.topics),
        responder=make["responder"](config.responder, pool, models, inputs.responder_prompts),
        critic=make["critic"](config.critic, serving.critic_pool, models, inputs.critic_templates),
        curator=make["curator"](config.curator),
        trainer=make["trainer"](config.trainer, backend),
    )
    for name, role, kind in (("proposer", roles.proposer, Role), ("responder", roles.responder, Role),
                             ("critic", roles.critic, CriticRole), ("curator", roles.curator, Role),
                             ("trainer", roles.trainer, TrainerRole)):
        if not isinstance(role, kind):
            raise UserError(f"the {name} factory made a {type(role).__name__}, not a {kind.__name__}")
    return roles
