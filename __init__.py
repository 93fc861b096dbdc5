"""isheep: the I-SHEEP self-alignment loop as an asyncio runtime.

Scripted use::

    import isheep

    config = isheep.load_config("examples/configs/hosted.toml", {"rounds": 2})
    result = isheep.run(config)
    print(result.totals)

``isheep.Run`` is the same as a context manager that owns what it starts (``async with
isheep.Run(config) as run: await run.execute()``); ``isheep.agents`` holds the roles and the
:class:`~isheep.agents.Role` interface a replacement role implements.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Resolved on first use, so that importing one module of the package (vLLM loading isheep's
# plugin in each of its processes, the server's guard) does not import the whole runtime.
_PUBLIC = {
    "Run": "isheep.runtime.pipeline", "RunResult": "isheep.runtime.pipeline", "arun": "isheep.runtime.pipeline",
    "run": "isheep.runtime.pipeline", "RunConfig": "isheep.runtime.core.config",
    "load_config": "isheep.runtime.core.loading", "UserError": "isheep.runtime.core.errors",
    "RunStore": "isheep.runtime.store", "export_run": "isheep.runtime.store",
}
__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
    from isheep.runtime.core.config import RunConfig
    from isheep.runtime.core.errors import UserError
    from isheep.runtime.core.loading import load_config
    from isheep.runtime.pipeline import Run, RunResult, arun, run
    from isheep.runtime.store import RunStore, export_run


_PACKAGES = ("agents", "runtime", "prompts", "tui")


def __getattr__(name: str) -> Any:
    if name in _PACKAGES:  # ``import isheep`` then ``isheep.agents.Role``, as before the names were lazy
        return importlib.import_module(f"isheep.{name}")
    if name not in _PUBLIC:
        raise AttributeError(f"module 'isheep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
