"""How progress reads to a person, the same in the headless display and in the monitor."""

from __future__ import annotations

from typing import Any, Mapping

_PHASES = {
    "starting": "starting the training job",
    "loading": "loading the model",
    "saving": "saving the model",
    "merging": "merging the LoRA adapter into the model",
}


def describe_training(progress: Mapping[str, Any]) -> str:
    """What the training job is doing, from its latest progress (``phase``, ``step``, ``loss``...).

    ``loading the model``, ``tokenizing 12 pairs``, ``step 3/12, loss 1.234``, ``saving the
    model``: never a bare ``step 0/?`` while the job is still loading.
    """
    phase = progress.get("phase") or "starting"
    if phase == "tokenizing":
        examples = progress.get("examples")
        return f"tokenizing {examples} pairs" if examples else "tokenizing the pairs"
    if phase == "training":
        total = progress.get("max_steps")
        text = f"step {progress.get('step') or 0}/{total if total else '?'}"
        loss = progress.get("loss")
        return text + (f", loss {loss:.3f}" if isinstance(loss, (int, float)) else "")
    return _PHASES.get(phase, str(phase))
