"""The end-of-run summary: per-round counts, acceptance and speed, the reasons, the time budget,
where things are."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from isheep.runtime.core.messages import FINAL_STATES, reason_kind
from isheep.runtime.core.progress import add_budgets, describe_budget
from isheep.runtime.pipeline import RunResult


def summary_table(result: RunResult) -> Group:
    """The end-of-run summary: per round counts, acceptance, speed and where things are."""
    table = Table(title="isheep run summary", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    trained = any(r.training_s or r.swap_s for r in result.rounds)
    # "tail" is the part of "gen" after proposing ended; the answers generated past the quota are
    # in the budget line (a column of its own would push the table past 80 columns).
    columns = ["round", "model", "prop.", "kept", "rej.", "fail", "acc.", "gen", "tail", "tok/s"]
    columns += ["train", "swap"] if trained else []
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for r in result.rounds:
        rate = r.completion_tokens / r.generation_s if r.generation_s else 0.0
        tail = f"{r.tail_s:.1f}s" if r.tail_s < 10 else f"{r.tail_s:.0f}s"  # tails are often short
        row = [str(r.round) + ("*" if r.state == "rejected" else ""), r.model_version, str(r.proposed), str(r.kept),
               str(sum(r.rejected.values())),
               str(sum(r.failed.values())), f"{r.acceptance:.0%}", f"{r.generation_s:.0f}s", tail, f"{rate:.0f}"]
        if trained:
            row += [f"{r.training_s:.0f}s" if r.training_s else "-", f"{r.swap_s:.1f}s" if r.swap_s else "-"]
        table.add_row(*row)
    reasons = Table(title="not kept, by reason", title_justify="left", box=box.SIMPLE_HEAD,
                    pad_edge=False)
    reasons.add_column("state")
    reasons.add_column("reason")
    reasons.add_column("items", justify="right")
    grouped: dict[tuple[str, str], int] = {}
    for (state, reason), n in result.reasons.items():
        key = (state, reason_kind(reason))
        grouped[key] = grouped.get(key, 0) + n
    for (state, reason), n in sorted(grouped.items(), key=lambda kv: -kv[1])[:12]:
        reasons.add_row(state, reason, str(n))
    totals = result.totals
    proposed = sum(totals.values())
    lines: list = [table]
    if any(r.state == "rejected" for r in result.rounds):
        lines.append(Text("* the round's model was rejected by the evaluation gate; the previous one kept serving"))
    if grouped:
        lines.append(reasons)
    lines.append(Text(
        f"{proposed} proposed = {totals.get('kept', 0)} kept + {totals.get('rejected', 0)} rejected + "
        f"{totals.get('failed', 0)} failed"
        + (f" + {proposed - sum(totals.get(s, 0) for s in FINAL_STATES)} unfinished"
           if result.stopped else "")))
    lines.append(Text(f"model {result.model} · {result.completion_tokens:,} tokens generated · "
                      f"{result.elapsed_s:.0f}s in all" + (" · STOPPED (resume with --resume)" if result.stopped else "")))
    lines += [Text(line) for line in budget_lines(result)]
    lines.append(Text(f"run folder: {result.folder}  (data: {result.folder / 'isheep.db'})"))
    lines.append(Text(f"export: isheep export {result.folder}"))
    for key, value in result.extra.items():
        lines.append(Text(f"{key}: {value}"))
    return Group(*lines)


def budget_lines(result: RunResult) -> list[str]:
    """Where this session's wall time went; for a resumed run, also over all its sessions."""
    if result.budget is None:
        return []
    budget = result.budget.to_dict()
    lines = [describe_budget(budget)]
    if result.budget_before:
        sessions = [*result.budget_before, budget]
        lines.append(describe_budget(add_budgets(sessions), title=f"over the run's {len(sessions)} sessions"))
    return lines
