"""The Textual monitor: ``isheep run --tui`` (live, steerable) and ``isheep monitor DIR`` (read-only)."""

from .app import MonitorApp
from .source import RunReader, Snapshot

__all__ = ["MonitorApp", "RunReader", "Snapshot"]
