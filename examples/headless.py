"""Run the loop from a script: two small data-only rounds against an endpoint, then export.

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python examples/headless.py runs/scripted

Any OpenAI-compatible server works; the served model is picked when it is the only one.
"""

import sys

import isheep

folder = sys.argv[1] if len(sys.argv) > 1 else "runs/scripted"
config = isheep.load_config(overrides={
    "out": folder,
    "rounds": 2,
    "round_size": 20,          # kept pairs wanted per round
    "max_proposed": 400,       # never propose more than this per round
    "proposer.temperature": 0.7,
})
result = isheep.run(config)    # resumable: isheep.run(config, resume=True) continues it
for r in result.rounds:
    print(f"round {r.round}: {r.kept} kept of {r.proposed} proposed ({r.acceptance:.0%})")
info = isheep.export_run(result.folder)
print("exported to", info["folder"])
