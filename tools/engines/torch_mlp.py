#!/usr/bin/python3
"""torch_mlp.py — a gridq engine that serves the MLP models of a folder with PyTorch.

usage: torch_mlp.py --models DIR [--log FILE]

Loads every DIR/NAME.safetensors in the layout `gridq-model make` writes (layers.{i}.weight
[out, in] and layers.{i}.bias [out], F32, F16 or BF16, ReLU between layers) once, at start,
onto CUDA where torch sees a device (else the CPU), widened to f32, and says
{"ready": true, "models": [NAME, ...]}; a file that is not such a model is left out, with a
line on stderr. Then it answers jobs as the worker's built-in kind `mlp` does:

  payload {"input": [[x, ...], ...], "softmax": false, "dtype": "f32"|"tf32", "model": M?}
  result  {"output": [[y, ...], ...], "argmax": [i, ...], "engine_pid": PID, "device": D}

The model is the job's model, else the payload's "model". A bad payload, an unknown model or
a wrong row width fails the job alone. Jobs run one at a time, in order; a cancelled job is
not answered. --log FILE appends a JSON line per start and per job (tools/engines/README.md).

  gridq-worker --engine 'torch-mlp=exec tools/engines/torch_mlp.py --models /srv/models'
  gridq submit --kind torch-mlp --model mnist --payload '{"input": [[0, 0, ...]]}' --wait"""
import argparse
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gridq_engine  # noqa: E402
import torch  # noqa: E402

NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,63}$")  # a name gridq accepts (gq_valid_name)
MAX_LAYERS = 256  # as the worker's GQ_MODEL_MAX_LAYERS
FLOAT_MAX = 3.4028234663852886e38  # the largest finite float32


def check_model(tensors):
    """The layers of an MLP as [(weight, bias)], checked as the worker checks them."""
    count = 0
    while "layers.%d.weight" % count in tensors and count < MAX_LAYERS:
        count += 1
    if count == 0:
        raise ValueError("no tensor 'layers.0.weight': not an MLP in gridq's layout")
    layers, width = [], None
    for i in range(count):
        weight = tensors["layers.%d.weight" % i]
        bias = tensors.get("layers.%d.bias" % i)
        if weight.dim() != 2 or 0 in weight.shape:
            raise ValueError("'layers.%d.weight': shape %s is not [out, in]"
                             % (i, list(weight.shape)))
        if width is not None and weight.shape[1] != width:
            raise ValueError("'layers.%d.weight': shape %s does not chain: layer %d gives %d "
                             "outputs" % (i, list(weight.shape), i - 1, width))
        if bias is None:
            raise ValueError("layer %d has no tensor 'layers.%d.bias'" % (i, i))
        if list(bias.shape) != [weight.shape[0]]:
            raise ValueError("'layers.%d.bias': shape %s should be [%d]"
                             % (i, list(bias.shape), weight.shape[0]))
        width = weight.shape[0]
        layers.append((weight, bias))
    for name in tensors:
        match = re.match(r"^layers\.(\d+)\.(weight|bias)$", name)
        if name.startswith("layers.") and (not match or int(match.group(1)) >= count):
            raise ValueError("'%s' is not part of the chain" % name)
    return layers


def load_models(folder, dev):
    """{name: [(weight, bias)]} of the models in folder, f32 on dev."""
    models = {}
    for entry in sorted(os.listdir(folder)):
        name, ext = os.path.splitext(entry)
        if ext != ".safetensors":
            continue
        try:
            if not NAME.match(name):
                raise ValueError("'%s' is not a valid model name" % name)
            layers = check_model(gridq_engine.read_safetensors(os.path.join(folder, entry)))
        except (OSError, ValueError) as e:
            print("torch_mlp: leaving out %s: %s" % (entry, e), file=sys.stderr, flush=True)
            continue
        models[name] = [(w.to(dev, torch.float32), b.to(dev, torch.float32)) for w, b in layers]
    return models


def parse_input(payload, width, name):
    """The payload's "input" as a rows x width f32 tensor (CPU)."""
    rows = payload.get("input")
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], list) or not rows[0]:
        raise gridq_engine.JobError('"input" must be a non-empty array of rows')
    cols = len(rows[0])
    for r, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != cols or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and abs(v) <= FLOAT_MAX for v in row):
            raise gridq_engine.JobError('"input": row %d is not an array of %d finite numbers'
                                        % (r, cols))
    if cols != width:
        raise gridq_engine.JobError("input rows have %d values but model '%s' takes %d"
                                    % (cols, name, width))
    return torch.tensor(rows, dtype=torch.float32)


def make_handler(models, dev):
    def handle(job):
        payload = job.payload
        if not isinstance(payload, dict):
            raise gridq_engine.JobError("payload must be a JSON object")
        dtype = payload.get("dtype")
        if dtype not in (None, "f32", "tf32"):
            raise gridq_engine.JobError('"dtype" must be one of "f32", "tf32"')
        softmax = payload.get("softmax", False)
        if not isinstance(softmax, bool):
            raise gridq_engine.JobError('"softmax" must be true or false')
        name = job.model or payload.get("model")
        if not isinstance(name, str):
            raise gridq_engine.JobError("mlp needs a model")
        if name not in models:
            raise gridq_engine.JobError("model '%s' not found" % name)
        layers = models[name]
        x = parse_input(payload, layers[0][0].shape[1], name).to(dev)
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        with torch.no_grad():
            for i, (weight, bias) in enumerate(layers):
                if job.cancelled():
                    return None  # not answered
                x = torch.addmm(bias, x, weight.t())
                if i + 1 < len(layers):
                    x = torch.relu(x)
            if softmax:
                x = torch.softmax(x, dim=1)
        out = x.cpu()
        if not bool(torch.isfinite(out).all()):
            raise gridq_engine.JobError("the output of model '%s' is not finite" % name)
        job.stats["rows"] = out.shape[0]
        return {"output": out.tolist(), "argmax": torch.argmax(out, dim=1).tolist(),
                "engine_pid": os.getpid(), "device": dev.type}
    return handle


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 2)[2], usage="torch_mlp.py --models DIR [--log FILE]",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True, metavar="DIR",
                        help="folder of NAME.safetensors MLP models, each served as NAME")
    parser.add_argument("--log", metavar="FILE",
                        help="append a JSON line per start and per job (outcome, rows)")
    args = parser.parse_args()
    dev = gridq_engine.device()
    try:
        models = load_models(args.models, dev)
    except OSError as e:
        parser.exit(1, "torch_mlp: %s\n" % e)
    print("torch_mlp: %d models on %s: %s" % (len(models), dev, " ".join(models)),
          file=sys.stderr, flush=True)
    gridq_engine.serve(make_handler(models, dev), sorted(models), args.log)


if __name__ == "__main__":
    main()
