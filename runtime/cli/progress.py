"""The headless display: a live rich table while the run goes (the summary at the end is
:mod:`.summary`).

On a terminal it redraws a few times a second; when output is not a terminal (CI, a log
file) it prints one status line every ``interval`` seconds instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from isheep.runtime.core.progress import describe_training
from isheep.runtime.core.roles import ROLE_NAMES
from isheep.runtime.pipeline import Supervisor


class Rates:
    """Per-second rates of counters over a sliding window of samples.

    A counter that goes down has started again (a new round's counts start from zero): the
    window restarts there, so a rate is never negative.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, tuple[float, ...]]] = deque()

    def update(self, values: tuple[float, ...], now: float | None = None) -> tuple[float, ...]:
        now = time.monotonic() if now is None else now
        if self.samples and any(v < last for v, last in zip(values, self.samples[-1][1])):
            self.samples.clear()
        self.samples.append((now, values))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        t0, first = self.samples[0]
        span = now - t0
        if span <= 0:
            return tuple(0.0 for _ in values)
        return tuple((b - a) / span for a, b in zip(first, values))


class RichProgress:
    """Shows per-role progress, throughput and acceptance of a running supervisor.

    On a terminal it redraws a table a few times a second; otherwise (CI, a log file) it prints
    one status line every ``interval`` seconds.
    """

    def __init__(self, console: Console | None = None, *, interval: float = 10.0) -> None:
        self.console = console or Console(stderr=True)
        self.interval = interval
        self._supervisor: Supervisor | None = None
        self._live: Live | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._rates = Rates()

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
        finished = stats.account.finished if stats.account else 0
        gen, prompt, items = self._rates.update((stats.completion_tokens, stats.prompt_tokens, finished))
        return gen, prompt, items

    def status_line(self) -> str:
        gen, _, items = self._measure()
        stats = self._supervisor.stats  # type: ignore[union-attr]
        account = stats.account
        if account is None:
            return f"[{stats.state}]"
        if stats.state == "training" and stats.training:
            return f"round {account.round}/{stats.rounds_total} training: {describe_training(stats.training)}"
        return (f"round {account.round}/{stats.rounds_total} {stats.state}: proposed {account.proposed}/{account.cap}, "
                f"kept {account.kept}/{account.quota}, rejected {sum(account.rejected.values())}, "
                f"failed {sum(account.failed.values())}, {gen:.0f} tok/s, {items:.1f} items/s, "
                f"retries {stats.retries}")

    def _render(self) -> Group:
        gen, prompt, items = self._measure()
        stats = self._supervisor.stats  # type: ignore[union-attr]
        account = stats.account
        table = Table(title=f"isheep · {stats.run_name} · round {stats.round}/{stats.rounds_total} · "
                            f"model {stats.model_version} · {stats.state}", title_justify="left", expand=False)
        for column in ("role", "workers", "queue", "done", "failed", "latency"):
            table.add_column(column, justify="left" if column == "role" else "right")
        for name in ROLE_NAMES:
            role = stats.roles[name]
            table.add_row(name, f"{role.busy}/{role.workers}", str(stats.queue_depth.get(name, "")),
                          str(role.done), str(role.failed), f"{role.mean_latency:.2f}s")
        lines = [table]
        if account is not None:
            finished = account.finished
            rejected = ", ".join(f"{k} {v}" for k, v in account.rejected.most_common(4)) or "none"
            lines.append(Text(
                f"kept {account.kept}/{account.quota}   proposed {account.proposed}/{account.cap}   "
                f"acceptance {account.acceptance:.1%} of {finished}   rejected: {rejected}"))
            if account.failed:
                lines.append(Text("failed: " + ", ".join(f"{k} {v}" for k, v in account.failed.most_common(4))))
        training = stats.training
        if stats.state == "training" and training:
            lines.append(Text(f"training round {training.get('round')}: {training.get('examples')} pairs, "
                              f"{describe_training(training)}"))
        if stats.last_error:
            lines.append(Text(f"last problem: {stats.last_error[:150]}"))
        lines.append(Text(f"{gen:,.0f} tokens/s generated · {prompt:,.0f} prompted · {items:,.1f} items/s · "
                          f"{stats.requests:,} requests · {stats.retries} retries · "
                          f"elapsed {time.time() - stats.started:,.0f}s"))
        return Group(*lines)
