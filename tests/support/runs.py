"""A finished run with fixed content and fixed clocks, written through the real store API.

The monitor's snapshot tests need a run whose every number and timestamp is known; a real run
against the test server is used where behaviour (keys, live data) is what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

from isheep.runtime.core.messages import Assessment, Instruction, ModelEvent, Response, RoundEvent, Score, Verdict
from isheep.runtime.store.records import model_row_op, op_for
from isheep.runtime.store import RunStore

T0 = 1_800_000_000.0
#: The run's one session: its parts add up to its wall time, as a real budget's do.
BUDGET = {"started_at": T0, "wall_s": 412.0, "startup_s": 1.5, "server_start_s": 31.0, "generation_s": 250.0,
          "round_tail_s": 18.0, "evaluation_s": 0.0, "training_s": 80.0, "swap_s": 21.0, "shutdown_s": 2.5,
          "idle_s": 8.0, "saturated_s": 155.0, "observed_s": 250.0, "saturated_share": 0.62, "past_quota": 7}


def make_finished_run(folder: Path, rounds: int = 2, items: int = 30) -> Path:
    store = RunStore.create(folder, {"isheep_version": "test", "run_name": "fixture-run",
                                     "config": {"rounds": rounds}, "model": "test-model"})
    ops = [model_row_op("v0", parent=None, round=0, served_name="test-model", path="/models/base", state="serving",
                        detail={})]
    t = T0
    for k in range(1, rounds + 1):
        version = f"v{k - 1}"
        ops += op_for(RoundEvent(id=f"round-{k}", round=k, model_version=version, state="generating",
                                 detail=f"on model {version}", created_at=t))
        for n in range(1, items + 1):
            t += 1.0
            item = Instruction(id=f"r{k:02d}-{n:06d}", round=k, model_version=version, created_at=t,
                               instruction=f"Explain topic number {n} of round {k} in two sentences.")
            if n % 7 == 0:
                ops += op_for(Verdict(id=item.id, round=k, model_version=version, status="rejected", stage="proposer",
                                      reason="blacklist:image", instruction=item.instruction, created_at=t), n)
                continue
            ops += op_for(item, n)
            response = Response(id=item.id, round=k, model_version=version, instruction=item, created_at=t + 0.1,
                                text=f"Topic {n} is explained here. It matters because of reason {n}.")
            if n % 11 == 0:
                ops += op_for(Verdict(id=item.id, round=k, model_version=version, status="failed", stage="responder",
                                      reason="http_500", created_at=t + 0.1))
                continue
            ops += op_for(response)
            quality, following = 5 + (n * 3) % 6, 4 + (n * 5) % 7
            assessment = Assessment(id=item.id, round=k, model_version=version, response=response,
                                    created_at=t + 0.2,
                                    quality=Score(value=quality, explanation="Correct and clear." if quality > 8
                                                  else "Partly wrong.", raw=f"{quality}||x"),
                                    following=Score(value=following, explanation="Follows it.", raw=f"{following}||y"))
            ops += op_for(assessment)
            keep = quality > 8 and following > 8
            reason = None if keep else ("low_quality:%d" % quality if quality <= 8 else "low_following:%d" % following)
            ops += op_for(Verdict(id=item.id, round=k, model_version=version, status="kept" if keep else "rejected",
                                  stage="curator", reason=reason, created_at=t + 0.3))
        t += 5
        ops.append(("INSERT INTO events (ts, round, level, kind, message, data) VALUES (?, ?, ?, ?, ?, ?)",
                    (t, k, "warning", "retry", "127.0.0.1:8000/v1: http_500 (attempt 1, retrying in 0.5s)", None)))
        losses = []
        for step in range(1, 9):
            loss = 2.0 / (step + k)
            losses.append({"step": step, "loss": loss})
            ops.append(("INSERT INTO events (ts, round, level, kind, message, data) VALUES (?, ?, ?, ?, ?, ?)",
                        (t + step, k, "info", "train_step", f"step {step}: loss {loss:.4f}",
                         json.dumps({"step": step, "max_steps": 8, "loss": loss}))))
        new = f"v{k}"
        failed = k == 2
        detail = {"loss": losses, "examples": 9, "swap": {"strategy": "reload", "seconds": 1.2}
                  if not failed else {"strategy": "reload", "error": "reload failed, v1 restored"}}
        ops.append(model_row_op(new, parent="v0", round=k, served_name="test-model", path=f"/ckpt/{new}",
                                state="trained", detail=detail))
        ops += op_for(ModelEvent(id=new, round=k, model_version=new, parent=version, created_at=t + 10,
                                 kind="rolled_back" if failed else "serving",
                                 detail="reload failed, v1 restored" if failed else "reload swap in 1.2s"))
        ops += op_for(RoundEvent(id=f"round-{k}", round=k, model_version=version, state="done",
                                 detail=f"quota met ({k + 4} kept)", created_at=t + 11))
        for i in range(3):
            snapshot = {"state": "generating", "round": k, "roles": {
                "proposer": {"workers": 4, "busy": 1, "done": 10 * k + i, "failed": 0, "mean_latency": 0.5},
                "responder": {"workers": 32, "busy": 20, "done": 100 * k + 30 * i, "failed": 2, "mean_latency": 1.5},
                "critic": {"workers": 32, "busy": 18, "done": 90 * k + 28 * i, "failed": 0, "mean_latency": 0.8},
                "curator": {"workers": 1, "busy": 0, "done": 90 * k + 28 * i, "failed": 0, "mean_latency": 0.0},
                "trainer": {"workers": 1, "busy": 0, "done": 20 * k + i, "failed": 0, "mean_latency": 0.0}},
                "queues": {"responder": 3, "critic": 1, "curator": 0, "trainer": 0},
                "prompt_tokens": 50000 * k + 9000 * i, "completion_tokens": 20000 * k + 4000 * i,
                "requests": 300 * k + 90 * i, "retries": k, "endpoints": ["http://127.0.0.1:8000/v1"],
                "rounds_total": rounds, "started": T0}
            ops.append(("INSERT INTO metrics (ts, round, data) VALUES (?, ?, ?)",
                        (T0 + 100 * k + 2 * i, k, json.dumps(snapshot))))
    final = json.loads(ops[-1][1][2])
    final["state"] = "done"
    ops.append(("INSERT INTO metrics (ts, round, data) VALUES (?, ?, ?)", (t + 12, rounds, json.dumps(final))))
    ops += store.set_time_budgets([BUDGET])
    store.write_sync(ops)
    store.close_sync()
    return folder
