"""How progress reads to a person, the same in the headless display and in the monitor."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

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


#: A run's time budget as it reads: its phases in order, then what no phase names
#: (``pipeline/budget.py`` keeps the numbers; the monitor and the summary read them as plain data).
_BUDGET = (("startup", "start-up"), ("server_start", "server start"), ("generation", "generation"),
           ("round_tail", "round tail"), ("evaluation", "evaluation"), ("training", "training"), ("swap", "swap"),
           ("shutdown", "shutdown"), ("idle", "idle"))


def add_budgets(sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several sessions' time budgets as one (a resumed run's): seconds and counts added up."""
    total: dict[str, Any] = {}
    for budget in sessions:
        for key, value in budget.items():
            if (key.endswith("_s") or key == "past_quota") and isinstance(value, (int, float)):
                total[key] = total.get(key, 0) + value
    observed = total.get("observed_s", 0)
    total["saturated_share"] = total.get("saturated_s", 0) / observed if observed > 0 else None
    total["sessions"] = len(sessions)
    return total


def _seconds(value: float) -> str:
    value = max(0.0, value)  # idle is a difference: a rounding error must not read as "-0.0 s"
    return f"{value:.1f} s" if value < 10 else f"{value:,.0f} s"


def describe_budget(budget: Mapping[str, Any], title: str = "time budget") -> str:
    """One line: where the wall time went, phase by phase.

    ``time budget (412 s): server start 31 s · generation 250 s (saturated 62%) · round tail
    18 s (7 answers generated past the quota) · training 80 s · swap 21 s · idle 12 s``. Phases
    under 0.05 s are left out (generation and idle never are); the saturation reads "unknown"
    where the server exposed no metrics, never 0%.
    """
    parts = []
    for key, label in _BUDGET:
        seconds = budget.get(f"{key}_s") or 0.0
        past = (budget.get("past_quota") or 0) if key == "round_tail" else 0
        if seconds < 0.05 and key not in ("generation", "idle") and not past:
            continue
        text = f"{label} {_seconds(seconds)}"
        if key == "generation":
            share = budget.get("saturated_share")
            text += " (saturation unknown)" if share is None else f" (saturated {share:.0%})"
        if past:
            text += f" ({past} answer{'s' if past != 1 else ''} generated past the quota)"
        parts.append(text)
    return f"{title} ({_seconds(budget.get('wall_s') or 0.0)}): " + " · ".join(parts)
