"""The model card (``README.md``, Hugging Face's convention) written beside each trained model's weights.

Written when the checkpoint is recorded, and written again when the gate or ``isheep eval``
adds results, so the folder a user uploads says where the weights came from: the run and its
recipe, the lineage (parent, round), the training data counts and hyperparameters, the loss,
the swap and gate outcome, and each benchmark score with its interval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

CARD = "README.md"


def _level(ci: Any) -> str:
    """An interval's confidence as a share ("95%", "97.5%": the gate's are corrected for its tests)."""
    return f"{float(ci.get('level', 0.95)) * 100:.4g}%"


def _interval(result: Any) -> str:
    try:
        ci = result["interval"]
        return (f"{ci['mean']:.3f} ({_level(ci)} interval {ci['low']:.3f} to {ci['high']:.3f}, "
                f"{ci['n']} prompts)")
    except (KeyError, TypeError):
        return "unknown"


def render(row: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """The card of one lineage row (a model version) of a run with ``meta``."""
    detail = json.loads(row["detail"] or "{}")
    config = meta.get("config") or {}
    base = meta.get("model") or "unknown"
    losses = [p.get("loss") for p in detail.get("loss") or [] if isinstance(p, dict) and p.get("loss") is not None]
    hyper = detail.get("hyperparameters") or {}
    library = "peft" if detail.get("kind") == "adapter" else "transformers"
    tags = dict.fromkeys(["isheep", "self-alignment", str(config.get("recipe", "isheep"))])
    lines = ["---", f"base_model: {json.dumps(str(base))}", f"library_name: {library}",
             "tags:", *(f"- {tag}" for tag in tags), "---", "",
             f"# {meta.get('run_name', 'isheep run')} {row['version']}", "",
             f"Trained by isheep's I-SHEEP loop (recipe `{config.get('recipe', 'isheep')}`) on data the model "
             "wrote and judged itself, with no human data.", "",
             "## Lineage", "",
             f"- version: {row['version']} (round {row['round']}), parent: {row['parent'] or '-'}",
             f"- base model: {base}",
             f"- state in the run: {row['state']}"]
    if detail.get("examples") is not None:
        n = detail["examples"]
        lines.append(f"- trained on {n} self-generated pair{'s' if n != 1 else ''} of round {row['round']}")
    if hyper:
        shown = ", ".join(f"{k} {hyper[k]}" for k in ("method", "epochs", "learning_rate", "batch_size",
                                                     "lora_r", "max_length") if k in hyper)
        lines.append(f"- hyperparameters: {shown}" if shown else "- hyperparameters: see the run's lineage")
    if losses:
        lines.append(f"- training loss: {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} logged steps")
    swap = detail.get("swap") or {}
    if swap.get("error"):
        lines.append(f"- swap: failed ({swap['error']})")
    elif swap:
        lines.append(f"- served by a {swap.get('strategy', '?')} swap; weights changed: {swap.get('weights_changed')}")
    gate = detail.get("gate")
    results = detail.get("benchmarks") or {}
    if gate or detail.get("evaluation") or results:
        lines += ["", "## Evaluation", ""]
    if detail.get("evaluation"):
        lines.append(f"- evaluation gate ({detail['evaluation'].get('bench', '?')}): {_interval(detail['evaluation'])}")
    if gate:
        diff = gate.get("difference") or {}
        signs = gate.get("sign_test") or {}
        lines.append(f"- gate decision: {gate.get('decision')} against the best so far, {gate.get('best')} "
                     f"(difference {diff.get('mean', 0):+.3f}, {_level(diff)} interval {diff.get('low', 0):+.3f} to "
                     f"{diff.get('high', 0):+.3f}; {signs.get('wins', '?')} prompts better, "
                     f"{signs.get('losses', '?')} worse, sign test p {signs.get('p_worse', 1):.3g})")
        judged = gate.get("judged") or {}
        if judged.get("win_rate"):
            rate = judged["win_rate"]
            jsigns = judged.get("sign_test") or {}
            lines.append(f"- judged by {judged.get('judge', '?')} against {gate.get('best')}: win rate "
                         f"{rate.get('mean', 0):.3f} ({_level(rate)} interval {rate.get('low', 0):.3f} to "
                         f"{rate.get('high', 0):.3f}; sign test p {jsigns.get('p_worse', 1):.3g})")
    for name, result in sorted(results.items()):
        lines.append(f"- {name}: {_interval(result)}")
    return "\n".join(lines) + "\n"


def write_card(folder: Path | None, row: Mapping[str, Any], meta: Mapping[str, Any]) -> Path | None:
    """Write the card into the model's folder when it is there (a pruned or external one is skipped)."""
    if folder is None or not Path(folder).is_dir():
        return None
    path = Path(folder) / CARD
    path.write_text(render(row, meta), encoding="utf-8")
    return path


def refresh_card(store: Any, version: str) -> Path | None:
    """Rewrite a version's card from its lineage row as it is now (results come in after training).
    The base model's folder is the user's, never written."""
    row = store.model(version)
    if row is None or version == "v0" or not row["path"]:
        return None
    return write_card(Path(row["path"]), row, store.meta())
