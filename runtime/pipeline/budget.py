"""Where a run's wall time went: start-up, server start, generation, round tails, training, swaps.

One :class:`TimeBudget` per session of a run (a resumed run starts another), on one monotonic
clock. The run and its rounds enter named phases; every moment is credited to the innermost
phase open then, and a moment with none open is idle. So the phases and idle add up to the wall
time exactly, by construction, and idle holds only what no phase names (the bookkeeping between
phases: round events, the roles' round hooks, the trackers' per-round points).

The phases, in :data:`PHASES`:

``startup``
    The run's own start-up: reading the inputs, opening the store, building the roles, opening
    the trackers (and, with an external endpoint, asking it which model it serves).
``server_start``
    Starting the managed server(s), model provisioning included, until the server answers.
``generation``
    A round's pipeline, from its start until proposing ended: the quota met or the cap reached.
``round_tail``
    From then until the last item in flight finished (the rest of the round's generation).
``evaluation``
    The evaluation gate measuring the model served before a round trains (v0 before round 1).
``training``
    The rest of the updater's training step (the trainer, the server asleep meanwhile).
``swap``
    The updater's swap step, the gate's evaluation of the new model and pruning included; and,
    on a resumed run, serving its trained model again.
``shutdown``
    Tearing the run down: the trackers, the store, the servers stopped.

Besides time: the share of generation the server was saturated (:meth:`TimeBudget.observe`),
and how many answers were generated past the rounds' quotas (added round by round).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

#: The named phases in the order a run goes through them (idle is what is left).
PHASES = ("startup", "server_start", "generation", "round_tail", "evaluation", "training", "swap", "shutdown")


@dataclass
class TimeBudget:
    """Seconds per phase of one session of a run, and the server's saturation during generation.

    Phases nest (``with budget.phase("training"): ... with budget.phase("evaluation")``): the
    inner one's seconds are not the outer one's. Only the run's one sequential flow enters
    phases (the supervisor's rounds, the updater); concurrent tasks must not, or their times
    would be credited to whichever phase was entered last.
    """

    startup: float = 0.0
    server_start: float = 0.0
    generation: float = 0.0
    round_tail: float = 0.0
    evaluation: float = 0.0
    training: float = 0.0
    swap: float = 0.0
    shutdown: float = 0.0
    #: Generation seconds the server was saturated (requests waiting), of ``observed_s``.
    saturated_s: float = 0.0
    #: Generation seconds whose saturation is known (the server's metrics, or the pool's signal).
    observed_s: float = 0.0
    #: Answers generated past the quota, over the rounds of this session (see RoundAccount.answered).
    past_quota: int = 0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    #: When the session started (``time.time()``): which session a stored budget is.
    started_at: float = field(default_factory=time.time)
    _start: float = field(default=0.0, repr=False, compare=False)
    _end: float | None = field(default=None, repr=False, compare=False)
    _since: float = field(default=0.0, repr=False, compare=False)
    _stack: list[str] = field(default_factory=list, repr=False, compare=False)
    #: The generation seconds at the last sample, and the state it reported.
    _sampled_at: float = field(default=0.0, repr=False, compare=False)
    _held: bool | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._start = self._since = self.clock()

    # -- the clock ---------------------------------------------------------------------------
    def _credit(self) -> float:
        """Credit the time since the last change to the innermost open phase; the time now."""
        now = self.clock() if self._end is None else self._end
        if self._stack:
            name = self._stack[-1]
            setattr(self, name, getattr(self, name) + now - self._since)
        self._since = now
        return now

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Credit the time inside the block to ``name`` (less the phases nested in it)."""
        if name not in PHASES:
            raise ValueError(f"no phase {name!r} in a time budget")
        self._credit()
        self._stack.append(name)
        depth = len(self._stack)
        try:
            yield
        finally:
            self._credit()
            del self._stack[depth - 1:]  # a phase left open inside (an error) ends with this one

    def switch(self, current: str, to: str) -> bool:
        """From now on, credit the innermost phase to ``to`` if it is ``current`` (a round's
        generation becoming its tail); whether it was."""
        if to not in PHASES:
            raise ValueError(f"no phase {to!r} in a time budget")
        if not self._stack or self._stack[-1] != current:
            return False
        self._credit()
        self._stack[-1] = to
        return True

    def close(self) -> None:
        """Stop the clock: the session is over (its numbers stay as they are from now on)."""
        if self._end is None:
            self._credit()
            self._end = self._since

    @property
    def current(self) -> str | None:
        """The innermost open phase (None: idle)."""
        return self._stack[-1] if self._stack else None

    @property
    def wall_s(self) -> float:
        return (self._end if self._end is not None else self.clock()) - self._start

    # -- saturation --------------------------------------------------------------------------
    def observe(self, saturated: bool | None) -> None:
        """A sample of the server's state: saturated, not, or unknown (None: no metrics).

        The state a sample reports holds until the next sample, over the generation seconds in
        between (no other phase's seconds count); until a round's first sample, its generation
        is not observed (the sample before was taken in another phase): unknown, not guessed.
        """
        self._hold()
        self._held = saturated if self.current == "generation" else None

    def settle(self) -> None:
        """A round's generation ended: its seconds since the last sample take that sample's state,
        and the next round's wait for a sample of their own."""
        self._hold()
        self._held = None

    def _hold(self) -> None:
        self._credit()
        seconds = self.generation - self._sampled_at
        self._sampled_at = self.generation
        if self._held is not None:
            self.observed_s += seconds
            self.saturated_s += seconds if self._held else 0.0

    @property
    def saturated_share(self) -> float | None:
        """Of the generation seconds whose state is known, the share saturated; None: unknown."""
        return self.saturated_s / self.observed_s if self.observed_s > 0 else None

    # -- plain data --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The numbers as plain data (the store, the metrics snapshots, the monitor read this).

        ``<phase>_s`` for each phase and ``idle_s``, which sum to ``wall_s``; ``saturated_s``,
        ``observed_s``, ``saturated_share`` (None: unknown), ``past_quota``, ``started_at``.
        """
        self._credit()
        wall = self.wall_s
        out: dict[str, Any] = {"started_at": self.started_at, "wall_s": wall}
        out.update({f"{name}_s": getattr(self, name) for name in PHASES})
        out["idle_s"] = wall - sum(getattr(self, name) for name in PHASES)
        out.update(saturated_s=self.saturated_s, observed_s=self.observed_s, saturated_share=self.saturated_share,
                   past_quota=self.past_quota)
        return out
