"""``restart``: restart the managed server on the new model folder (the baseline: ~45 s on CPU)."""

from __future__ import annotations

from pathlib import Path

from ..api import ServerApi
from ..server import ManagedServer
from .base import FolderSwap, Phases


class RestartSwap(FolderSwap):
    """Stops the managed server and starts it again on the checkpoint's folder."""

    name = "restart"

    def __init__(self, server: ManagedServer, api: ServerApi) -> None:
        super().__init__()
        self.server = server
        self.api = api

    async def _load(self, path: str, version: str, clock: Phases) -> None:
        # The server names the model by its served name, not the version: nothing else to set.
        await self.server.restart(Path(path))
