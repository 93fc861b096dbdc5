"""isheep: the I-SHEEP self-alignment loop as an asyncio runtime.

Scripted use::

    import isheep

    config = isheep.load_config("examples/configs/hosted.toml", {"rounds": 2})
    result = isheep.run(config)
    print(result.totals)
"""

from isheep.runtime.app import RunResult, arun, run
from isheep.runtime.config import RunConfig, load_config
from isheep.runtime.errors import UserError
from isheep.runtime.export import export_run
from isheep.runtime.store import RunStore

__all__ = ["RunConfig", "RunResult", "RunStore", "UserError", "arun", "export_run", "load_config", "run"]
