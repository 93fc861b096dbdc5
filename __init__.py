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

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.loading import load_config
from isheep.runtime.core.errors import UserError
from isheep.runtime.pipeline import Run, RunResult, arun, run
from isheep.runtime.store import RunStore, export_run

__all__ = ["Run", "RunConfig", "RunResult", "RunStore", "UserError", "arun", "export_run", "load_config", "run"]
