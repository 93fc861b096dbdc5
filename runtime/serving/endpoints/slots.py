"""Requests in flight to one endpoint: a semaphore whose size changes while requests wait.

``asyncio.Semaphore`` has a fixed size; the concurrency controller moves an endpoint's limit up
and down as the server's signals change, and a ``Retry-After`` holds every new request back
for a while. Waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
import collections
import time


class Slots:
    """At most :attr:`limit` holders at once, and none before :attr:`paused_until`.

    Attributes:
        limit: Holders allowed now; lowering it never interrupts a holder, it only keeps new
            ones waiting until enough have left.
        paused_until: ``time.monotonic()`` before which no new holder starts (0: not paused).
        used: Holders now.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.paused_until = 0.0
        self.used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def load(self) -> float:
        """Holders and waiters for each slot allowed: where a new request waits least."""
        return (self.used + len(self._waiters)) / self.limit

    def _open(self) -> bool:
        return self.used < self.limit and time.monotonic() >= self.paused_until

    async def acquire(self) -> None:
        """Wait for a free slot (behind those already waiting) and take it."""
        if not self._waiters and self._open():
            self.used += 1
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            while True:
                await future
                if self._open():
                    break
                # Woken by a pause's end or a raised limit that others took first: wait again, first in line.
                future = asyncio.get_running_loop().create_future()
                self._waiters.appendleft(future)
        except asyncio.CancelledError:
            if future in self._waiters:
                self._waiters.remove(future)
            if future.done() and not future.cancelled():
                self._wake()  # it was woken for a slot it will not take: pass the turn on
            raise
        finally:
            if future in self._waiters and future.done():
                self._waiters.remove(future)
        self.used += 1
        self._wake()  # a raised limit may have room for the next in line too

    def release(self) -> None:
        self.used -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._wake()

    def pause_until(self, when: float) -> None:
        """No new holder before ``when`` (monotonic seconds); an earlier pause is only ever extended."""
        if when <= self.paused_until:
            return
        self.paused_until = when
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, when - time.monotonic()), self._wake)

    def _wake(self) -> None:
        """Wake as many waiters, from the front, as there are free slots now."""
        if time.monotonic() < self.paused_until:
            return  # the pause's timer wakes them
        free = self.limit - self.used
        for future in self._waiters:
            if free <= 0:
                break
            if not future.done():
                future.set_result(None)
                free -= 1
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
