"""Play a deployment for `command` swaps against the test server: change what it serves.

    python tests/support/redeploy.py PORT model=test-model-$ISHEEP_VERSION keep_rate=0.0

Each KEY=VALUE becomes a behaviour change (VALUE read as JSON when it parses, else a string).
``kill=PID`` stops that server instead: an endpoint that never comes back.
"""

import json
import os
import sys
import urllib.request

port, pairs = sys.argv[1], dict(arg.split("=", 1) for arg in sys.argv[2:])
if "kill" in pairs:
    os.kill(int(pairs["kill"]), 9)
    sys.exit(0)
changes = {}
for key, raw in pairs.items():
    try:
        changes[key] = json.loads(raw)
    except ValueError:
        changes[key] = raw
request = urllib.request.Request(f"http://127.0.0.1:{port}/_control", data=json.dumps(changes).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
urllib.request.urlopen(request, timeout=10).read()
