"""The run store: guarded transitions, group commits, integrity checks, refusal of foreign folders."""

import asyncio
import os

import pytest

from isheep.runtime.core.errors import UserError
from isheep.runtime.core.messages import Instruction, Response, Verdict
from isheep.runtime.store.records import op_for
from isheep.runtime.store import RunStore, StoreIntegrityError


def instruction(n: int) -> Instruction:
    return Instruction(id=f"r01-{n:06d}", round=1, model_version="v0", instruction=f"Task number {n} please.")


async def test_transitions_are_committed_in_order_and_guarded(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_name": "t"})
    await store.start()
    items = [instruction(n) for n in range(1, 51)]
    await asyncio.gather(*(store.write(op_for(i, n)) for n, i in enumerate(items, 1)))
    responses = [Response(id=i.id, round=1, model_version="v0", instruction=i, text="ok") for i in items]
    await asyncio.gather(*(store.write(op_for(r)) for r in responses))
    assert store.counts() == {"responded": 50}
    # Answering an item twice is refused for that item only; the others in the batch commit.
    again = store.write(op_for(responses[0]))
    verdicts = [store.write(op_for(Verdict(id=i.id, round=1, model_version="v0", status="rejected",
                                            stage="critic", reason="x"))) for i in items[1:]]
    results = await asyncio.gather(again, *verdicts, return_exceptions=True)
    assert isinstance(results[0], StoreIntegrityError) and "r01-000001" in str(results[0])
    assert all(r is None for r in results[1:])
    assert store.counts() == {"responded": 1, "rejected": 49}
    store.event("test", "an event")
    await store.aclose()
    reopened = RunStore.open(tmp_path / "run", readonly=True)
    assert reopened.integrity() == []
    assert len(reopened.events_after(0)) == 1
    reopened.close_sync()


def test_run_folder_is_user_only_and_never_reused(tmp_path):
    store = RunStore.create(tmp_path / "run", {})
    store.close_sync()
    assert (os.stat(tmp_path / "run").st_mode & 0o777) == 0o700
    assert (os.stat(tmp_path / "run" / "isheep.db").st_mode & 0o777) == 0o600
    with pytest.raises(UserError, match="already holds a run"):
        RunStore.create(tmp_path / "run", {})


def test_other_versions_and_foreign_files_are_refused(tmp_path):
    store = RunStore.create(tmp_path / "run", {})
    store.write_sync(store.set_meta("schema_version", 999))
    store.close_sync()
    with pytest.raises(UserError, match="another isheep version"):
        RunStore.open(tmp_path / "run")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "isheep.db").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="not a readable isheep database"):
        RunStore.open(tmp_path / "junk")
