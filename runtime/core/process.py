"""Child processes that never outlive the runtime (the managed server, the training job)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal


def new_session_dying_with_parent() -> None:
    """In a child, before exec: a process group of its own, and SIGTERM when the parent dies.

    The group lets the runtime take the child and everything it starts down at once; the
    parent-death signal (Linux ``PR_SET_PDEATHSIG``; a no-op elsewhere) covers the runtime being
    killed in any way, even ``kill -9``.
    """
    os.setsid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
