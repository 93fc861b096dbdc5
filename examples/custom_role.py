"""Replace a role: a Curator that also refuses answers longer than 200 words.

A role is a small class with one ``async def handle(message)``; subclass the built-in one
and pass a factory to ``isheep.run(..., roles=...)``. Everything else (queues, store,
resume, accounting) stays as it is, and the new reason shows up in the summary.

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python examples/custom_role.py
"""

import isheep
from isheep.agents import Curator
from isheep.runtime.messages import Assessment, Verdict


class ConciseCurator(Curator):
    max_words = 200

    async def handle(self, message: Assessment) -> Verdict:
        verdict = await super().handle(message)
        words = len(message.response.text.split())
        if verdict.status == "kept" and words > self.max_words:
            return verdict.model_copy(update={"status": "rejected", "reason": f"too_long_answer:{words}"})
        return verdict


config = isheep.load_config(overrides={"out": "runs/concise", "rounds": 1, "round_size": 20, "max_proposed": 400})
result = isheep.run(config, roles={"curator": ConciseCurator})
print(result.totals, result.reasons)
