"""Replace a role: a Curator that also refuses answers longer than 200 words.

A role is a small class with one ``async def handle(message)``, implementing
``isheep.agents.Role``; it need not subclass the built-in one (here it reuses the recipe's
rule, ``decide``, and adds its own). Pass a factory to ``isheep.run(..., roles=...)``: it is
called with the built-in role's arguments (the curator's: its config section). Everything
else (queues, store, resume, accounting) stays as it is, and the new reason shows up in the
summary.

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python examples/custom_role.py
"""

from typing import ClassVar

import isheep
from isheep.agents import Role
from isheep.agents.curator import decide
from isheep.runtime.core.config import CuratorConfig
from isheep.runtime.core.messages import Assessment, Verdict


class ConciseCurator(Role[Assessment, Verdict]):
    """Keeps what the recipe keeps, unless the answer runs over ``max_words``."""

    name: ClassVar[str] = "curator"
    max_words = 200

    def __init__(self, config: CuratorConfig) -> None:
        self.config = config

    async def handle(self, message: Assessment) -> Verdict:
        keep, reason = decide(message, self.config)
        words = len(message.response.text.split())
        if keep and words > self.max_words:
            keep, reason = False, f"too_long_answer:{words}"
        instruction = message.response.instruction
        return Verdict(id=message.id, round=message.round, model_version=message.model_version,
                       status="kept" if keep else "rejected", stage="curator", reason=reason,
                       instruction=instruction.instruction, input=instruction.input)


if __name__ == "__main__":
    config = isheep.load_config(overrides={"out": "runs/concise", "rounds": 1, "round_size": 20, "max_proposed": 400})
    result = isheep.run(config, roles={"curator": ConciseCurator})
    print(result.totals, result.reasons)
