"""The run folder's ``run.log``, with every secret masked before a line is written."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Iterator


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


@contextlib.contextmanager
def run_log(folder: Path, secrets: list[str]) -> Iterator[logging.Handler]:
    """Send the ``isheep`` logger to ``folder/run.log`` (user-only) while the block runs."""
    path = folder / "run.log"
    path.touch(mode=0o600, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redact(secrets))
    root = logging.getLogger("isheep")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
