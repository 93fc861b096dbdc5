"""The Curator: keeps a pair only when both self-assessed scores are above their thresholds
(recipe step 7: quality > 8 and following > 8, so 9s and 10s). Every other pair is rejected
with the score that failed it, and stays in the store for audit. In a round without a critic
every pair that reaches it is kept.
"""

from __future__ import annotations

from typing import ClassVar

from isheep.runtime.core.config import CuratorConfig
from isheep.runtime.core.messages import Assessment, Verdict
from isheep.runtime.core.roles import Role


def decide(assessment: Assessment, config: CuratorConfig) -> tuple[bool, str | None]:
    """(keep, reason): the first failing check names the reason; an unjudged pair is kept."""
    if not assessment.judged:  # no critic this round: the rule filters alone decided (Self-Instruct, Dromedary)
        return True, None
    quality, following = assessment.quality.value, assessment.following.value
    if quality is None:
        return False, "critic_unparseable:quality"
    if following is None:
        return False, "critic_unparseable:following"
    if quality <= config.quality_threshold:
        return False, f"low_quality:{quality}"
    if following <= config.following_threshold:
        return False, f"low_following:{following}"
    return True, None


class Curator(Role[Assessment, Verdict]):
    """Keeps a pair when both scores are above their thresholds; rejects it with the failing score."""

    name: ClassVar[str] = "curator"

    def __init__(self, config: CuratorConfig) -> None:
        self.config = config

    async def handle(self, message: Assessment) -> Verdict:
        keep, reason = decide(message, self.config)
        response = message.response
        return Verdict(id=message.id, round=message.round, model_version=message.model_version,
                       status="kept" if keep else "rejected", stage="curator", reason=reason,
                       instruction=response.instruction.instruction, input=response.instruction.input)
