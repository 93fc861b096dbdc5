"""The headless display: a live rich table while the run goes, a summary table at the end.

On a terminal it redraws a few times a second; when output is not a terminal (CI, a log
file) it prints one status line every ``interval`` seconds instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .app import RunResult
from .stats import ROLE_NAMES
from .supervisor import Supervisor


class _Rates:
    """Per-second rates over a sliding window of samples."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, tuple[float, ...]]] = deque()

    def update(self, values: tuple[float, ...]) -> tuple[float, ...]:
        now = time.monotonic()
        self.samples.append((now, values))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        t0, first = self.samples[0]
        span = now - t0
        if span <= 0:
            return tuple(0.0 for _ in values)
        return tuple((b - a) / span for a, b in zip(first, values))


class RichProgress:
    """Shows per-role progress, throughput and acceptance of a running supervisor."""

    def __init__(self, console: Console | None = None, *, interval: float = 10.0) -> None:
        self.console = console or Console(stderr=True)
        self.interval = interval
        self._supervisor: Supervisor | None = None
        self._live: Live | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._rates = _Rates()

    def start(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4, get_renderable=self._render,
                              transient=False)
            self._live.start()
        else:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.console.print(self.status_line(), highlight=False)

    def _measure(self) -> tuple[float, float, float]:
        assert self._supervisor is not None
        sup = self._supervisor
        sup.refresh()
        stats = sup.stats
        finished = stats.ledger.finished if stats.ledger else 0
        gen, prompt, items = self._rates.update((stats.completion_tokens, stats.prompt_tokens, finished))
        return gen, prompt, items

    def status_line(self) -> str:
        gen, _, items = self._measure()
        stats = self._supervisor.stats  # type: ignore[union-attr]
        ledger = stats.ledger
        if ledger is None:
            return f"[{stats.state}]"
        if stats.state == "training" and stats.training:
            t = stats.training
            return (f"round {ledger.round}/{stats.rounds_total} training: step {t.get('step') or 0}/"
                    f"{t.get('max_steps') or '?'}"
                    + (f", loss {t['loss']:.3f}" if isinstance(t.get('loss'), (int, float)) else ""))
        return (f"round {ledger.round}/{stats.rounds_total} {stats.state}: proposed {ledger.proposed}/{ledger.cap}, "
                f"kept {ledger.kept}/{ledger.quota}, rejected {sum(ledger.rejected.values())}, "
                f"failed {sum(ledger.failed.values())}, {gen:.0f} tok/s, {items:.1f} items/s, "
                f"retries {stats.retries}")

    def _render(self) -> Group:
        gen, prompt, items = self._measure()
        stats = self._supervisor.stats  # type: ignore[union-attr]
        ledger = stats.ledger
        table = Table(title=f"isheep · {stats.run_name} · round {stats.round}/{stats.rounds_total} · "
                            f"model {stats.model_version} · {stats.state}", title_justify="left", expand=False)
        for column in ("role", "workers", "queue", "done", "failed", "latency"):
            table.add_column(column, justify="left" if column == "role" else "right")
        for name in ROLE_NAMES:
            role = stats.roles[name]
            table.add_row(name, f"{role.busy}/{role.workers}", str(stats.queue_depth.get(name, "")),
                          str(role.done), str(role.failed), f"{role.mean_latency:.2f}s")
        lines = [table]
        if ledger is not None:
            finished = ledger.finished
            rejected = ", ".join(f"{k} {v}" for k, v in ledger.rejected.most_common(4)) or "none"
            lines.append(Text(
                f"kept {ledger.kept}/{ledger.quota}   proposed {ledger.proposed}/{ledger.cap}   "
                f"acceptance {ledger.acceptance:.1%} of {finished}   rejected: {rejected}"))
            if ledger.failed:
                lines.append(Text("failed: " + ", ".join(f"{k} {v}" for k, v in ledger.failed.most_common(4))))
        training = stats.training
        if stats.state == "training" and training:
            loss = training.get("loss")
            lines.append(Text(f"training round {training.get('round')}: {training.get('examples')} pairs, step "
                              f"{training.get('step') or 0}/{training.get('max_steps') or '?'}"
                              + (f", loss {loss:.3f}" if isinstance(loss, float) else "")))
        if stats.last_error:
            lines.append(Text(f"last problem: {stats.last_error[:150]}"))
        lines.append(Text(f"{gen:,.0f} tokens/s generated · {prompt:,.0f} prompted · {items:,.1f} items/s · "
                          f"{stats.requests:,} requests · {stats.retries} retries · "
                          f"elapsed {time.time() - stats.started:,.0f}s"))
        return Group(*lines)


def summary_table(result: RunResult) -> Group:
    """The end-of-run summary: per round counts, acceptance, speed and where things are."""
    table = Table(title="isheep run summary", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    trained = any(r.training_s or r.swap_s for r in result.rounds)
    columns = ["round", "model", "prop.", "kept", "rej.", "fail", "acc.", "gen", "tok/s"]
    columns += ["train", "swap"] if trained else []
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for r in result.rounds:
        rate = r.completion_tokens / r.generation_s if r.generation_s else 0.0
        row = [str(r.round) + ("*" if r.state == "rejected" else ""), r.model_version, str(r.proposed), str(r.kept),
               str(sum(r.rejected.values())),
               str(sum(r.failed.values())), f"{r.acceptance:.0%}", f"{r.generation_s:.0f}s", f"{rate:.0f}"]
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
        key = (state, reason.split(":", 1)[0])
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
        + (f" + {proposed - sum(totals.get(s, 0) for s in ('kept', 'rejected', 'failed'))} unfinished"
           if result.stopped else "")))
    lines.append(Text(f"model {result.model} · {result.completion_tokens:,} tokens generated · "
                      f"{result.elapsed_s:.0f}s in all" + (" · STOPPED (resume with --resume)" if result.stopped else "")))
    lines.append(Text(f"run folder: {result.folder}  (data: {result.folder / 'isheep.db'})"))
    lines.append(Text(f"export: isheep export {result.folder}"))
    for key, value in result.extra.items():
        lines.append(Text(f"{key}: {value}"))
    return Group(*lines)
