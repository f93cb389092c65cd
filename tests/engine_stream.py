#!/usr/bin/env python3
"""engine_stream.py — a streaming gridq engine for tests/test_stream.c.

It says it is ready (no models), then per job line, payload {"n": N, "gate": PATH?,
"tick": bool?, "big": bool?}: it writes partial {"i": 0, "marker": "PARTIALMARK"}, then (with
"gate") waits until the file PATH exists (60 s at most, then it answers an error), writing
partial {"tick": k} every 20 ms meanwhile when "tick" is set (a client that attaches then sees
one soon), then partials i = 1 .. N-1 with the marker, then the result {"n": N, "pid": its
pid}. With "big": one partial of 100000 bytes first (above the worker's limit of 64 KiB).
Jobs are answered one at a time."""
import json
import os
import sys
import time


def say(obj):
    print(json.dumps(obj), flush=True)


say({"ready": True, "models": []})
for line in sys.stdin:
    msg = json.loads(line)
    job = msg["id"]
    if msg.get("cancel"):
        continue
    payload = msg.get("payload") or {}
    n = int(payload.get("n", 3))
    if payload.get("big"):
        say({"id": job, "partial": {"pad": "x" * 100000}})
    say({"id": job, "partial": {"i": 0, "marker": "PARTIALMARK"}})
    gate = payload.get("gate")
    if gate:
        deadline = time.monotonic() + 60
        tick = 0
        while not os.path.exists(gate) and time.monotonic() < deadline:
            if payload.get("tick"):
                say({"id": job, "partial": {"tick": tick}})
                tick += 1
            time.sleep(0.02)
        if not os.path.exists(gate):
            say({"id": job, "error": "the gate never opened"})
            continue
    for i in range(1, n):
        say({"id": job, "partial": {"i": i, "marker": "PARTIALMARK"}})
    say({"id": job, "result": {"n": n, "pid": os.getpid()}})
