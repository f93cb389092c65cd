#!/usr/bin/env python3
"""engine_test.py MODEL DIR — a tiny gridq engine for tests/test_engine.c.

It appends its pid to DIR/started-MODEL, says it is ready with model MODEL, then answers each
job line on stdin with a partial and a result that carries its pid, the engine's model, the
job's model and payload. Payload {"crash_once": true}: the first engine (of all, through the
file DIR/crashed, created exclusively) to get such a job writes "MODEL PID" there and exits 3
without answering. Payload {"exit": true}: it exits 4 at once. Payload {"hang": true}: it writes DIR/hanging-ID and answers nothing. A cancel
line writes DIR/cancel-ID."""
import json
import os
import sys

model, folder = sys.argv[1], sys.argv[2]


def touch(name, text=""):
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


with open(os.path.join(folder, "started-" + model), "a") as f:
    f.write("%d\n" % os.getpid())
print(json.dumps({"ready": True, "models": [model]}), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    job = msg["id"]
    if msg.get("cancel"):
        touch("cancel-%d" % job, "cancelled\n")
        continue
    payload = msg.get("payload") or {}
    if payload.get("crash_once"):
        try:
            fd = os.open(os.path.join(folder, "crashed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, ("%s %d\n" % (model, os.getpid())).encode())
            os.close(fd)
            print("engine_test: crashing on job %d as asked" % job, file=sys.stderr, flush=True)
            os._exit(3)
        except FileExistsError:
            pass
    if payload.get("exit"):
        print("engine_test: exiting on job %d as asked" % job, file=sys.stderr, flush=True)
        os._exit(4)
    if payload.get("hang"):
        touch("hanging-%d" % job)
        continue
    print(json.dumps({"id": job, "partial": {"step": 1}}), flush=True)
    result = {"pid": os.getpid(), "engine_model": model, "model": msg.get("model"),
              "kind": msg.get("kind"), "payload": payload}
    print(json.dumps({"id": job, "result": result}), flush=True)
