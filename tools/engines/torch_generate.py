#!/usr/bin/python3
"""torch_generate.py — a streaming gridq engine: a tiny character-level recurrent model in
PyTorch that generates text one token (character) at a time, greedily, so the same prompt
always gives the same text, and sends each token as a partial as soon as it is made.

usage: torch_generate.py [--weights FILE | --seed N] [--name NAME] [--log FILE]
                         [--crash-marker FILE]
       torch_generate.py --seed N --write-weights FILE

The model (vocabulary: newline and printable ASCII; hidden size 64): h = tanh(embed[c] w_x^T
+ h w_h^T + bias), logits = h head^T + head_bias. Its weights come from --weights (a
.safetensors file with embed, cell.w_x, cell.w_h, cell.bias, head.weight, head.bias, as
--write-weights writes them) or are drawn from --seed (default 1). It says
{"ready": true, "models": [NAME]} (default "char-rnn"), then per job:

  payload  {"prompt": "text", "max_tokens": 16, "delay_ms": 0, "crash_after": K?}
  partials {"token": "c", "index": i}                     one per token, in order
  result   {"text", "prompt", "finish_reason": "length", "engine_pid", "model",
            "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}

An OpenAI chat request as the payload (what gridq-gateway sends for /v1/chat/completions,
with --kind-map chat=generate) is answered in OpenAI's shapes: the prompt is the last user
message's content; the partials are chat.completion.chunk objects (a role chunk, a content
delta per token, a finish chunk) and the result is the chat.completion, usage included.

max_tokens is 1..4096, delay_ms (a pause after each token, for demos and tests) 0..60000. A
cancel line stops the job between two tokens: it is not answered, and --log records how many
tokens it made. "crash_after": K (tests only) needs --crash-marker FILE: the first engine to
create FILE exits after K tokens, mid-job; later ones (FILE exists) ignore it. Jobs run one
at a time, in order.

  gridq-worker --engine 'generate=exec tools/engines/torch_generate.py --seed 1'
  gridq submit --kind generate --payload '{"prompt": "Hello", "max_tokens": 32}' --stream"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gridq_engine  # noqa: E402
import torch  # noqa: E402

VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))  # token i is VOCAB[i]
HIDDEN = 64
MAX_TOKENS = 4096
MAX_DELAY_MS = 60000
MAX_PROMPT = 4096  # characters


def seeded_weights(seed):
    """The weights drawn from seed: the same seed, the same weights (and text) everywhere."""
    gen = torch.Generator().manual_seed(seed)
    v, h = len(VOCAB), HIDDEN

    def draw(*shape, scale):
        return torch.randn(*shape, generator=gen) * scale
    return {"embed": draw(v, h, scale=1.0), "cell.w_x": draw(h, h, scale=h ** -0.5),
            "cell.w_h": draw(h, h, scale=1.2 * h ** -0.5), "cell.bias": draw(h, scale=0.1),
            "head.weight": draw(v, h, scale=2.0 * h ** -0.5), "head.bias": draw(v, scale=0.1)}


class Model:
    """The recurrent cell and its head, on a device, f32."""

    SHAPES = {"embed": [len(VOCAB), HIDDEN], "cell.w_x": [HIDDEN, HIDDEN],
              "cell.w_h": [HIDDEN, HIDDEN], "cell.bias": [HIDDEN],
              "head.weight": [len(VOCAB), HIDDEN], "head.bias": [len(VOCAB)]}

    def __init__(self, weights, dev):
        for name, shape in self.SHAPES.items():
            if name not in weights or list(weights[name].shape) != shape:
                raise ValueError("tensor '%s' should have shape %s" % (name, shape))
        self.w = {name: weights[name].to(dev, torch.float32) for name in self.SHAPES}
        self.dev = dev

    def step(self, h, token):
        """The next state and the greedy next token after token."""
        w = self.w
        x = w["embed"][token]
        h = torch.tanh(x @ w["cell.w_x"].t() + h @ w["cell.w_h"].t() + w["cell.bias"])
        logits = h @ w["head.weight"].t() + w["head.bias"]
        return h, int(torch.argmax(logits))


def int_field(payload, key, default, low, high):
    value = payload.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise gridq_engine.JobError('"%s" must be an integer in %d..%d' % (key, low, high))
    return value


def crash_now(marker):
    """Whether this engine is the first to crash (it creates marker); writes its pid there."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, b"%d\n" % os.getpid())
    os.close(fd)
    return True


def chat_prompt(payload):
    """The prompt of an OpenAI chat request: its last user message's text."""
    for message in reversed(payload["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            raise gridq_engine.JobError("the user message's content must be a string")
    raise gridq_engine.JobError('"messages" has no user message')


class ChatShape:
    """OpenAI's chat shapes for one job: the chunks (partials) and the whole (result)."""

    def __init__(self, job, name):
        self.head = {"id": "chatcmpl-%d" % job.id, "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": name}

    def chunk(self, delta, finish=None):
        return dict(self.head, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}])

    def whole(self, text, usage):
        return dict(self.head, object="chat.completion", usage=usage, choices=[{
            "index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
            "finish_reason": "length"}])


def make_handler(model, name, crash_marker):
    def handle(job):
        payload = job.payload if job.payload is not None else {}
        if not isinstance(payload, dict):
            raise gridq_engine.JobError("payload must be a JSON object")
        if job.model not in (None, name):
            raise gridq_engine.JobError("model '%s' is not served here (this engine serves "
                                        "'%s')" % (job.model, name))
        chat = ChatShape(job, name) if isinstance(payload.get("messages"), list) else None
        prompt = chat_prompt(payload) if chat else payload.get("prompt", "")
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
            raise gridq_engine.JobError('"prompt" must be a string of %d characters at most'
                                        % MAX_PROMPT)
        bad = [c for c in prompt if c not in VOCAB]
        if bad:
            raise gridq_engine.JobError('"prompt" has %r, which is not in the vocabulary '
                                        '(newline and printable ASCII)' % bad[0])
        max_tokens = int_field(payload, "max_tokens", 16, 1, MAX_TOKENS)
        delay = int_field(payload, "delay_ms", 0, 0, MAX_DELAY_MS) / 1000.0
        crash_after = int_field(payload, "crash_after", -1, 0, MAX_TOKENS) \
            if "crash_after" in payload else -1
        if crash_after >= 0 and not crash_marker:
            raise gridq_engine.JobError('"crash_after" needs an engine started with '
                                        '--crash-marker')
        text = []
        job.stats["tokens"] = 0
        if chat:
            job.partial(chat.chunk({"role": "assistant", "content": ""}))
        with torch.no_grad():
            h = torch.zeros(HIDDEN, device=model.dev)
            token = 0  # the newline starts every text
            for c in prompt:
                h, token = model.step(h, token)
                token = VOCAB.index(c)
            for i in range(max_tokens):
                if i == crash_after and crash_now(crash_marker):
                    print("torch_generate: crashing in job %d after %d tokens, as asked"
                          % (job.id, i), file=sys.stderr, flush=True)
                    os._exit(3)
                h, token = model.step(h, token)
                text.append(VOCAB[token])
                job.stats["tokens"] = i + 1
                job.partial(chat.chunk({"content": VOCAB[token]}) if chat
                            else {"token": VOCAB[token], "index": i})
                if job.cancelled() or (delay and job.wait(delay)):
                    return None  # cancelled between two tokens: not answered
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(text),
                 "total_tokens": len(prompt) + len(text)}
        if chat:
            job.partial(chat.chunk({}, "length"))
            return chat.whole("".join(text), usage)
        return {"text": "".join(text), "prompt": prompt, "finish_reason": "length",
                "usage": usage, "engine_pid": os.getpid(), "model": name}
    return handle


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 2)[2],
        usage="torch_generate.py [--weights FILE | --seed N] [--name NAME] [--log FILE]\n"
              "                         [--crash-marker FILE]\n"
              "       torch_generate.py --seed N --write-weights FILE",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", metavar="FILE", help="load the weights from a .safetensors")
    parser.add_argument("--seed", type=int, default=1, help="draw the weights from this seed")
    parser.add_argument("--name", default="char-rnn", help="the model name to advertise")
    parser.add_argument("--log", metavar="FILE",
                        help="append a JSON line per start and per job (outcome, tokens)")
    parser.add_argument("--crash-marker", metavar="FILE",
                        help='allow "crash_after" (tests): the first engine to create FILE exits')
    parser.add_argument("--write-weights", metavar="FILE",
                        help="write the weights drawn from --seed to FILE and exit")
    args = parser.parse_args()
    if args.write_weights:
        gridq_engine.write_safetensors(args.write_weights, seeded_weights(args.seed))
        return
    dev = gridq_engine.device()
    try:
        weights = gridq_engine.read_safetensors(args.weights) if args.weights \
            else seeded_weights(args.seed)
        model = Model(weights, dev)
    except (OSError, ValueError) as e:
        parser.exit(1, "torch_generate: %s\n" % e)
    print("torch_generate: model %s on %s" % (args.name, dev), file=sys.stderr, flush=True)
    gridq_engine.serve(make_handler(model, args.name, args.crash_marker), [args.name], args.log)


if __name__ == "__main__":
    main()
