"""The wiring of a run: the five roles built from the config, and what they talk to.

This is the one module of the runtime that imports :mod:`isheep.agents`. A caller may replace
any role: ``roles={"curator": factory}`` calls ``factory`` with the built-in role's arguments
(listed in :data:`ROLE_ARGUMENTS`) and uses what it returns, which must be a
:class:`~isheep.runtime.core.roles.Role` (a :class:`~isheep.runtime.core.roles.CriticRole` or
:class:`~isheep.runtime.core.roles.TrainerRole` for those two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from isheep.agents import Critic, Curator, Proposer, Responder, Trainer
from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import SeedTask
from isheep.runtime.core.roles import CriticRole, Role, Roles, TrainerRole
from isheep.runtime.core.types import Models, TrainBackend
from isheep.runtime.data import RougeIndex
from isheep.runtime.serving import Serving

#: What each role's factory is called with (the built-in classes' constructors).
ROLE_ARGUMENTS = {
    "proposer": "(config.proposer, pool, models, seeds, index, template, seed=config.seed, history=...)",
    "responder": "(config.responder, pool, models)",
    "critic": "(config.critic, critic_pool, models, templates)",
    "curator": "(config.curator)",
    "trainer": "(config.trainer, backend)",
}


@dataclass
class Inputs:
    """What a run reads before it starts: seed tasks, prompt templates, its earlier instructions."""

    seeds: list[SeedTask]
    propose_template: str
    critic_templates: dict[str, str]
    #: Every instruction of this run that passed screening so far (a resumed run's history).
    history: list[SeedTask] = field(default_factory=list)


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
                                  seed=config.seed, history=inputs.history),
        responder=make["responder"](config.responder, pool, models),
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
