"""gridq_engine.py — what the engines in tools/engines/ share: the JSON-lines loop of a gridq
engine (docs/PROTOCOL.md, "Engines"), a .safetensors reader and writer, the device choice.

serve(handler, models, log) says it is ready with models, then reads job lines on a thread of
its own (so that a cancel line is seen while a job runs) and runs the jobs one at a time, in
the order they came: handler(job) returns the job's result or raises JobError (the job's error
line); any other exception is answered as an error too, and the engine goes on. A job whose
cancel line came is never answered; its handler sees job.cancelled() and stops early. With a
log path, one JSON line is appended per start ({"event": "start", "pid"}) and per job
({"id", "kind", "model", "outcome": "done"|"error"|"cancelled", "pid", ...job.stats}), which
is how tests see what the engine did."""
import json
import os
import queue
import struct
import sys
import threading
import traceback

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
HEADER_MAX = 100 << 20  # bytes of a safetensors JSON header at most


class JobError(Exception):
    """A job's failure, answered as {"id", "error": str(e)}."""


class Job:
    """One job line, while it is queued or running."""

    def __init__(self, line, say):
        self.id = line["id"]  # the job id (a positive integer)
        self.kind = line.get("kind")  # the job's kind
        self.model = line.get("model")  # the job's model, or None
        self.payload = line.get("payload")  # the job's payload (any JSON)
        self.stats = {}  # what the handler wants in the log line
        self._cancel = threading.Event()  # set by the reader on a cancel line
        self._say = say

    def cancelled(self):
        return self._cancel.is_set()

    def wait(self, seconds):
        """Sleeps up to seconds; True at once when the job is cancelled."""
        return self._cancel.wait(seconds)

    def partial(self, value):
        self._say({"id": self.id, "partial": value})


def device():
    """CUDA where torch sees a device (the worker names its GPU in CUDA_VISIBLE_DEVICES)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def read_safetensors(path):
    """The tensors of a .safetensors file as {name: tensor} (CPU, their file dtype); raises
    ValueError naming what is wrong. Format: an 8-byte little-endian header length, the JSON
    header {name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the data."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("%s: shorter than a header" % path)
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(HEADER_MAX, len(data) - 8):
        raise ValueError("%s: header length %d does not fit the file" % (path, length))
    try:
        header = json.loads(data[8:8 + length])
    except ValueError as e:
        raise ValueError("%s: header is not JSON (%s)" % (path, e))
    if not isinstance(header, dict):
        raise ValueError("%s: header is not a JSON object" % path)
    body = bytearray(data[8 + length:])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[info["dtype"]]
            shape = [int(n) for n in info["shape"]]
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("%s: tensor '%s' is not {dtype F32|F16|BF16, shape, "
                             "data_offsets}" % (path, name))
        count = 1
        for n in shape:
            count *= n
        size = torch.tensor([], dtype=dtype).element_size()
        if min(shape, default=1) < 0 or not 0 <= begin <= end <= len(body) \
                or end - begin != count * size:
            raise ValueError("%s: tensor '%s' has data_offsets [%d, %d] for shape %s"
                             % (path, name, begin, end, shape))
        flat = torch.frombuffer(body, dtype=dtype, count=count, offset=begin) if count \
            else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape).clone()
    return tensors


def write_safetensors(path, tensors):
    """Writes {name: tensor} as F32, names in sorted order, the header padded to 8 bytes."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        blob = tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class _Loop:
    """The state of serve(): the job queue, the jobs not answered yet, stdout, the log."""

    def __init__(self, log):
        self.jobs = queue.Queue()  # Job objects in arrival order; None at end of input
        self.pending = {}  # id -> Job, queued or running (the reader's, under lock)
        self.lock = threading.Lock()  # guards pending and stdout
        self.log = log  # path of the log, or None

    def say(self, obj):
        self.write(json.dumps(obj, separators=(",", ":"), allow_nan=False))

    def write(self, text):
        with self.lock:
            try:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                os._exit(0)  # the worker is gone

    def record(self, entry):
        if self.log:
            entry["pid"] = os.getpid()
            with open(self.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def read(self):
        """The reader thread: job lines go to the queue, cancel lines to their job."""
        for raw in sys.stdin.buffer:
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                ok = isinstance(line, dict) and isinstance(line.get("id"), int)
            except ValueError:
                ok = False
            if not ok:
                print("engine: ignoring a line that is not a job: %r" % raw[:200],
                      file=sys.stderr, flush=True)
                continue
            with self.lock:
                if line.get("cancel"):
                    job = self.pending.get(line["id"])
                    if job:
                        job._cancel.set()
                    continue
                job = Job(line, self.say)
                self.pending[job.id] = job
            self.jobs.put(job)
        self.jobs.put(None)

    def run(self, job, handler):
        """Runs one job and answers it, unless it was cancelled."""
        answer, failed = None, True
        if not job.cancelled():
            try:
                result = {"id": job.id, "result": handler(job)}
                answer = json.dumps(result, separators=(",", ":"), allow_nan=False)
                failed = False
            except JobError as e:
                answer = json.dumps({"id": job.id, "error": str(e)})
            except Exception as e:  # a bug, or a payload that slipped through: the job's error
                traceback.print_exc(file=sys.stderr)
                answer = json.dumps({"id": job.id, "error": "%s: %s" % (type(e).__name__, e)})
        with self.lock:
            del self.pending[job.id]
            cancelled = job.cancelled()
        if not cancelled:
            self.write(answer)
        entry = {"id": job.id, "kind": job.kind, "model": job.model,
                 "outcome": "cancelled" if cancelled else "error" if failed else "done"}
        entry.update(job.stats)
        self.record(entry)


def serve(handler, models, log=None):
    """Runs the engine until its stdin closes (the worker stopped it)."""
    loop = _Loop(log)
    loop.record({"event": "start"})
    loop.say({"ready": True, "models": list(models)})
    threading.Thread(target=loop.read, daemon=True).start()
    while True:
        job = loop.jobs.get()
        if job is None:
            return
        loop.run(job, handler)
