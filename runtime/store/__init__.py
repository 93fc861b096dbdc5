"""The run store: one SQLite database per run folder, the only place SQL is written.

:class:`RunStore` opens, writes (group-committed) and reads it by named queries; the records
module turns messages into the statements that record them, and rows back into messages; the
export module writes a run's data out as JSONL and a ``datasets`` folder.
"""

from .export import export_run
from .queries import RoundRow
from .records import checkpoint_from_row, message_from_row, model_row_op, op_for
from .schema import DB_NAME
from .store import Op, RunStore, StoreIntegrityError

__all__ = ["DB_NAME", "Op", "RoundRow", "RunStore", "StoreIntegrityError", "checkpoint_from_row", "export_run",
           "message_from_row", "model_row_op", "op_for"]
