#!/usr/bin/env python3
"""openai_server.py — a small OpenAI-compatible server for tests/test_openai.c.

It streams exactly as vLLM's `vllm serve` does (--style vllm, the default) or llama.cpp's
`llama-server` does (--style llamacpp): HTTP/1.1 with chunked transfer encoding, one SSE event
per chunk, `data: {json}` lines each followed by a blank line:
  - chat: a role chunk (delta {"role": "assistant", "content": ""}; llama.cpp: content null),
    a content delta per token, a chunk with finish_reason and an empty delta, then (vLLM, with
    stream_options.include_usage) a usage chunk with "choices": []; llama.cpp puts usage (and
    "timings") on the finish chunk instead;
  - completions: a text delta per token, a finish chunk, the usage chunk;
  - then `data: [DONE]`.
The reply is deterministic: the last user message (or the prompt) reversed word by word,
"max_tokens" words at most (finish_reason "length" then, else "stop"). A request body field
"delay_ms" sleeps that long before each token (the real servers would ignore it), so that a test
can cancel mid-stream. Errors are answered as vLLM does: a JSON body
{"object": "error", "message", "type", "param", "code"} with the HTTP status.

Usage: openai_server.py --port-file FILE [--port N] [--model NAME] [--style vllm|llamacpp]
                        [--log FILE]
The port it listens on (127.0.0.1) is written to --port-file once it listens. --log appends one
JSON line per event: {"event": "request", "path", "model"}, {"event": "finished", "tokens"},
{"event": "disconnected", "tokens"} (the client went away mid-stream: generation stops)."""
import argparse
import http.server
import json
import os
import sys
import threading
import time

ARGS = None
LOG_LOCK = threading.Lock()
COUNTER = [0]


def log(event):
    if ARGS.log:
        with LOG_LOCK, open(ARGS.log, "a") as f:
            f.write(json.dumps(event) + "\n")


def reply_tokens(body, chat):
    if chat:
        text = ""
        for message in body.get("messages") or []:
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                text = message["content"]
    else:
        text = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
    words = list(reversed(text.split()))
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    limit = body.get("max_tokens")
    if isinstance(limit, int) and limit < len(tokens):
        return tokens[:limit], "length", len(text.split())
    return tokens, "stop", len(text.split())


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the test reads --log
        pass

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, kind):
        self.send_json(status, {"object": "error", "message": message, "type": kind,
                                "param": None, "code": status})

    def do_GET(self):
        if self.path != "/v1/models":
            return self.error(404, "Not Found", "NotFoundError")
        self.send_json(200, {"object": "list", "data": [
            {"id": ARGS.model, "object": "model", "created": 1700000000, "owned_by": "gridq",
             "root": ARGS.model, "parent": None, "max_model_len": 2048}]})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        chat = self.path == "/v1/chat/completions"
        if not chat and self.path != "/v1/completions":
            return self.error(404, "Not Found", "NotFoundError")
        try:
            body = json.loads(raw)
        except ValueError:
            return self.error(400, "the body is not JSON", "BadRequestError")
        log({"event": "request", "path": self.path, "model": body.get("model"),
             "stream": body.get("stream"), "stream_options": body.get("stream_options"),
             "auth": self.headers.get("Authorization")})
        if body.get("model") != ARGS.model:
            return self.error(404, "The model `%s` does not exist." % body.get("model"),
                              "NotFoundError")
        if chat and not isinstance(body.get("messages"), list):
            return self.error(400, "messages: field required", "BadRequestError")
        tokens, finish, prompt_tokens = reply_tokens(body, chat)
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + len(tokens),
                 "completion_tokens": len(tokens)}
        COUNTER[0] += 1
        ident = ("chatcmpl-%d" if chat else "cmpl-%d") % COUNTER[0]
        if not body.get("stream"):
            return self.error(400, "this test server answers streams only", "BadRequestError")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.stream(body, chat, ident, tokens, finish, usage)

    def event(self, obj):
        data = ("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def stream(self, body, chat, ident, tokens, finish, usage):
        head = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": ARGS.model}
        if ARGS.style == "llamacpp":
            head["system_fingerprint"] = "b4000-test"
        delay = (body.get("delay_ms") or 0) / 1000.0
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        sent = 0
        try:
            if chat:
                role = {"role": "assistant",
                        "content": None if ARGS.style == "llamacpp" else ""}
                self.event(dict(head, choices=[{"index": 0, "delta": role, "logprobs": None,
                                                "finish_reason": None}]))
            for token in tokens:
                if delay:
                    time.sleep(delay)
                part = {"index": 0, "logprobs": None, "finish_reason": None}
                part.update({"delta": {"content": token}} if chat else {"text": token})
                self.event(dict(head, choices=[part]))
                sent += 1
            last = {"index": 0, "logprobs": None, "finish_reason": finish}
            last.update({"delta": {}} if chat else {"text": ""})
            if ARGS.style == "llamacpp":
                self.event(dict(head, choices=[last], usage=usage,
                                timings={"predicted_n": len(tokens)}))
            else:
                self.event(dict(head, choices=[last]))
                if include_usage:
                    self.event(dict(head, choices=[], usage=usage))
            self.event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            log({"event": "finished", "tokens": sent})
        except (BrokenPipeError, ConnectionResetError):
            log({"event": "disconnected", "tokens": sent})
            self.close_connection = True


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--model", default="tiny-llm")
    parser.add_argument("--style", choices=["vllm", "llamacpp"], default="vllm")
    parser.add_argument("--log")
    ARGS = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    tmp = ARGS.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, ARGS.port_file)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
