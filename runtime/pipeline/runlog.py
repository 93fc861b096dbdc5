"""The run folder's ``run.log``, with every secret masked before a line is written."""

from __future__ import annotations

import logging
import re
from pathlib import Path


class Redact(logging.Filter):
    """Masks the run's own secrets, and anything that looks like a bearer token or API key."""

    _PATTERN = re.compile(r"(Bearer\s+|api[_-]?key['\"=:\s]+|sk-)[A-Za-z0-9._\-]{6,}", re.IGNORECASE)

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = self._PATTERN.sub(r"\1***", message), None
        return True


class RunLog:
    """The ``isheep`` logger's file in the run folder, attached once the folder exists.

    Its owner registers :meth:`close` first and attaches later, so the file is the last thing
    released: whatever is logged while the rest of a run is torn down still lands in it.
    """

    def __init__(self) -> None:
        self._handler: logging.Handler | None = None

    def attach(self, folder: Path, secrets: list[str]) -> None:
        path = folder / "run.log"
        path.touch(mode=0o600, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(Redact(secrets))
        root = logging.getLogger("isheep")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        self._handler = handler

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger("isheep").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
