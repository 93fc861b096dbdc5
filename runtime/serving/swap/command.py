"""``command``: for endpoints this run does not manage. Your shell command makes the endpoint
serve the checkpoint (copy it, call your deployment's API, restart a service...); then the
endpoint is probed until the expected model answers, for at most ``swap.timeout_s``. On
failure ``swap.rollback_command`` runs, if given, and the swap is reported failed.

With several endpoints the command runs once per replica (all at once, as one transaction:
see :mod:`.fleet`), with ``ISHEEP_ENDPOINT`` (that replica's base URL) and ``ISHEEP_REPLICA``
(its index, from 0) in its environment, so one script can redeploy each host.
"""

from __future__ import annotations

import asyncio
import os

from isheep.runtime.core.types import Checkpoint, ServedModel

from ..api import ServerApi, SwapError
from .base import SwapStrategy


class CommandSwap(SwapStrategy):
    """Runs the user's command to redeploy, then probes until the new model answers."""

    name = "command"

    def __init__(self, api: ServerApi, command: str, *, rollback_command: str | None, expect_model: str | None,
                 timeout_s: float, replica: int = 0) -> None:
        super().__init__()
        self.replica = replica
        self.api = api
        self.command = command
        self.rollback_command = rollback_command
        self.expect_model = expect_model
        self.timeout_s = timeout_s

    async def _shell(self, command: str, env: dict[str, str]) -> None:
        where = {"ISHEEP_ENDPOINT": self.api.base_url, "ISHEEP_REPLICA": str(self.replica)}
        proc = await asyncio.create_subprocess_shell(command, env={**os.environ, **where, **env},
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise SwapError(f"swap command did not finish within {self.timeout_s:.0f}s") from None
        if proc.returncode != 0:
            last = (output.decode(errors="replace").strip().splitlines() or [""])[-1]
            raise SwapError(f"swap command exited with status {proc.returncode}: {last[:200]}")

    async def swap(self, checkpoint: Checkpoint, current: ServedModel) -> ServedModel:
        name = (self.expect_model or current.name).format(version=checkpoint.version, round=checkpoint.round)
        env = {"ISHEEP_CHECKPOINT": str(checkpoint.path), "ISHEEP_ADAPTER": str(checkpoint.adapter or ""),
               "ISHEEP_VERSION": checkpoint.version, "ISHEEP_ROUND": str(checkpoint.round), "ISHEEP_MODEL": name}
        try:
            await self._shell(self.command, env)
            await self.api.wait_for(name, self.timeout_s)
        except SwapError as exc:
            if self.rollback_command:
                try:
                    await self._shell(self.rollback_command, {**env, "ISHEEP_MODEL": current.name,
                                                              "ISHEEP_VERSION": current.version})
                    await self.api.wait_for(current.name, self.timeout_s)
                except SwapError as again:
                    raise SwapError(f"{exc}; rollback failed too: {again}", restored=False) from None
                raise SwapError(f"{exc}; rolled back to {current.version}") from None
            # Nothing puts the previous model back: what the endpoint serves now is unknown.
            raise SwapError(f"{exc}; no swap.rollback_command, so {current.version} was not put back",
                            restored=False) from None
        return ServedModel(version=checkpoint.version, name=name, path=checkpoint.path)

    async def restore(self, previous: ServedModel, served: ServedModel) -> ServedModel:
        if not self.rollback_command:
            raise SwapError("no swap.rollback_command to put the previous model back")
        await self._shell(self.rollback_command, {"ISHEEP_CHECKPOINT": str(previous.path or ""),
                                                  "ISHEEP_VERSION": previous.version, "ISHEEP_MODEL": previous.name,
                                                  "ISHEEP_ADAPTER": "", "ISHEEP_ROUND": ""})
        await self.api.wait_for(previous.name, self.timeout_s)
        return previous
