"""``isheep report``: one self-contained HTML file about a run, with its plots also as PNG files.

Everything is read from the run store: what each round kept and why the rest was rejected, the
Self-Critic's score distributions, the training loss curves, each benchmark per model version
with its 95% interval (``isheep eval`` and the gate), and the swap timings. The plots are drawn
with matplotlib (no display needed) and embedded as base64 PNGs, so the file opens anywhere with
no network; the same PNGs are written beside it for papers.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from isheep.runtime.store import RunStore

#: Phases of a swap, in the order they happen (the rest are drawn after them).
PHASES = ("probe_before", "drain", "sleep_before_training", "wake_weights", "load", "reload", "wake_kv_cache",
          "reset_prefix_cache", "resume", "verify")


def _figure(width: float = 7.0, height: float = 3.4) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window
    from matplotlib import pyplot

    return pyplot.subplots(figsize=(width, height), dpi=110)


def _png(fig: Any) -> bytes:
    from matplotlib import pyplot

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    pyplot.close(fig)
    return buffer.getvalue()


def _details(store: RunStore) -> list[tuple[Any, dict[str, Any]]]:
    return [(row, json.loads(row["detail"] or "{}")) for row in store.models()]


def plot_rounds(store: RunStore) -> bytes | None:
    """Kept pairs and each rejection reason, per round (stacked bars)."""
    rounds = [r.round for r in store.rounds()]
    if not rounds:
        return None
    kept = [store.counts(k).get("kept", 0) for k in rounds]
    reasons: dict[str, list[int]] = defaultdict(lambda: [0] * len(rounds))
    for i, k in enumerate(rounds):
        for (state, reason), n in store.reasons(k).items():
            reasons[f"{state}: {reason.split(':', 1)[0]}"][i] += n
    fig, ax = _figure()
    from matplotlib import colormaps

    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 2]  # green is for kept pairs only
    ax.bar(rounds, kept, label="kept", color=colormaps["tab10"].colors[2])
    bottom = list(kept)
    for (name, counts), color in zip(sorted(reasons.items(), key=lambda kv: -sum(kv[1]))[:8], palette):
        ax.bar(rounds, counts, bottom=bottom, label=name, color=color)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set(xlabel="round", ylabel="items", title="Kept pairs and rejection reasons per round", xticks=rounds)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def plot_scores(store: RunStore) -> bytes | None:
    """The Self-Critic's scores (1-10), per aspect and round."""
    data = {aspect: store.score_counts(aspect) for aspect in ("quality", "following")}
    if not any(data.values()):
        return None
    fig, axes = _figure(8.0, 3.2)
    fig.clf()
    for i, (aspect, counts) in enumerate(data.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        rounds = sorted({k for k, _ in counts})
        width = 0.8 / max(1, len(rounds))
        for j, k in enumerate(rounds):
            ax.bar([s + j * width for s in range(1, 11)], [counts.get((k, s), 0) for s in range(1, 11)],
                   width=width, label=f"round {k}")
        ax.set(xlabel="score", ylabel="items", title=f"critic {aspect}", xticks=list(range(1, 11)))
        ax.legend(fontsize=7)
    return _png(fig)


def plot_losses(store: RunStore) -> bytes | None:
    """Each trained version's loss curve."""
    curves = [(row["version"], [p for p in detail.get("loss") or [] if isinstance(p, dict)
                                and p.get("loss") is not None]) for row, detail in _details(store)]
    curves = [(v, points) for v, points in curves if points]
    if not curves:
        return None
    fig, ax = _figure()
    for version, points in curves:
        ax.plot([p.get("step", i) for i, p in enumerate(points)], [p["loss"] for p in points], marker=".",
                label=version)
    ax.set(xlabel="step", ylabel="loss", title="Training loss")
    ax.legend(fontsize=7)
    return _png(fig)


def benchmark_table(store: RunStore) -> dict[str, list[tuple[str, dict[str, float]]]]:
    """bench -> [(version, interval)] in lineage order; the gate's results under ``gate``."""
    out: dict[str, list[tuple[str, dict[str, float]]]] = defaultdict(list)
    for row, detail in _details(store):
        for name, result in (detail.get("benchmarks") or {}).items():
            if isinstance(result, dict) and isinstance(result.get("interval"), dict):
                out[name].append((row["version"], result["interval"]))
        gate = detail.get("evaluation")
        if isinstance(gate, dict) and isinstance(gate.get("interval"), dict):
            out["gate"].append((row["version"], gate["interval"]))
    return dict(out)


def benchmark_points(store: RunStore) -> tuple[list[str], dict[str, list[tuple[int, dict[str, float]]]]]:
    """The versions measured, in lineage order, and bench -> [(x, interval)] on that shared axis:
    a version measured on one benchmark only must not shift the others' points."""
    table = benchmark_table(store)
    measured = {version for points in table.values() for version, _ in points}
    versions = [row["version"] for row, _ in _details(store) if row["version"] in measured]
    where = {v: x for x, v in enumerate(versions)}
    return versions, {name: [(where[v], ci) for v, ci in points] for name, points in table.items()}


def plot_benchmarks(store: RunStore) -> bytes | None:
    """Each benchmark's score per version, with its 95% interval as an error bar."""
    versions, table = benchmark_points(store)
    if not table:
        return None
    fig, ax = _figure()
    for i, (name, points) in enumerate(sorted(table.items())):
        xs = [x + i * 0.08 for x, _ in points]  # side by side, not on top of each other
        means = [p["mean"] for _, p in points]
        errors = [[p["mean"] - p["low"] for _, p in points], [p["high"] - p["mean"] for _, p in points]]
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=4, label=name)
    ax.set(ylim=(0, 1.05), ylabel="score", xlabel="model version",
           title="Benchmarks per model version (95% intervals)")
    ax.set_xticks(range(len(versions)), versions)
    ax.legend(fontsize=7)
    return _png(fig)


def plot_swaps(store: RunStore) -> bytes | None:
    """Each swap's seconds, phase by phase."""
    swaps = [(row["version"], (detail.get("swap") or {}).get("phases_s") or {}) for row, detail in _details(store)]
    swaps = [(v, phases) for v, phases in swaps if phases]
    if not swaps:
        return None
    names = [p for p in PHASES if any(p in phases for _, phases in swaps)]
    names += sorted({p for _, phases in swaps for p in phases} - set(names))
    fig, ax = _figure()
    left = [0.0] * len(swaps)
    for phase in names:
        seconds = [float(phases.get(phase, 0.0)) for _, phases in swaps]
        ax.barh([v for v, _ in swaps], seconds, left=left, label=phase)
        left = [a + b for a, b in zip(left, seconds)]
    ax.set(xlabel="seconds", title="Swap timings by phase")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


#: (file name, caption, plot) in the report's order.
PLOTS: list[tuple[str, str, Callable[[RunStore], bytes | None]]] = [
    ("rounds.png", "What each round kept, and why the rest was rejected", plot_rounds),
    ("critic-scores.png", "The Self-Critic's scores", plot_scores),
    ("training-loss.png", "Training loss of each version", plot_losses),
    ("benchmarks.png", "Benchmarks per model version", plot_benchmarks),
    ("swaps.png", "Swap timings", plot_swaps),
]


def _versions_table(store: RunStore) -> str:
    rows = []
    for row, detail in _details(store):
        gate = detail.get("gate") or {}
        scores = "; ".join(f"{name} {r['interval']['mean']:.3f} [{r['interval']['low']:.3f}, {r['interval']['high']:.3f}]"
                           for name, r in sorted((detail.get("benchmarks") or {}).items())
                           if isinstance(r, dict) and isinstance(r.get("interval"), dict))
        cells = [row["version"], row["parent"] or "-", str(row["round"]), row["state"],
                 str(detail.get("examples", "-")), gate.get("decision", "-"), scores or "-"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("version", "parent", "round", "state", "pairs", "gate", "benchmarks"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report(store: RunStore, out: Path) -> tuple[Path, list[Path]]:
    """Write the HTML report to ``out`` and the plots as PNGs in ``<out stem>-plots/``."""
    meta = store.meta()
    plots_dir = out.with_name(out.stem + "-plots")
    plots_dir.mkdir(parents=True, exist_ok=True)
    figures, written = [], []
    for name, caption, plot in PLOTS:
        image = plot(store)
        if image is None:
            figures.append(f"<h2>{html.escape(caption)}</h2><p class='none'>nothing recorded yet</p>")
            continue
        (plots_dir / name).write_bytes(image)
        written.append(plots_dir / name)
        data = base64.b64encode(image).decode()
        figures.append(f"<h2>{html.escape(caption)}</h2><figure><img alt='{html.escape(caption)}' "
                       f"src='data:image/png;base64,{data}'><figcaption>{name}</figcaption></figure>")
    title = html.escape(f"isheep run {meta.get('run_name', store.folder.name)}")
    rounds = store.rounds()
    summary = (f"model {html.escape(str(meta.get('model', '?')))}, recipe "
               f"{html.escape(str((meta.get('config') or {}).get('recipe', 'isheep')))}, {len(rounds)} rounds, "
               f"report written {time.strftime('%Y-%m-%d %H:%M')}")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:90%}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
img{{max-width:100%}}figcaption{{color:#777;font-size:80%}}.none{{color:#999}}</style></head>
<body><h1>{title}</h1><p>{summary}</p><h2>Model versions</h2>{_versions_table(store)}
{''.join(figures)}</body></html>
"""
    out.write_text(page, encoding="utf-8")
    return out, written
