/*  openai.h — OpenAI-compatible servers as engines: `--openai KIND=URL` sends the jobs of KIND
    to a server on this machine that speaks the OpenAI API (vLLM's `vllm serve`, llama.cpp's
    `llama-server`, ...), streamed, over HTTP with libcurl (docs/PROTOCOL.md, "OpenAI servers").

    - Ready: the worker asks `GET URL/models` until it answers; the ids it lists are advertised
      as the node's models, available and loaded, as an engine's ready line does.
    - A job: its payload (a JSON object: the request body) goes to `POST URL/completions` when
      KIND is "completion", to `POST URL/chat/completions` for any other kind, with "stream"
      forced on, "stream_options": {"include_usage": true} when the payload has no
      stream_options, and "model" set to the job's model (or the server's first) when the
      payload has none. Every SSE `data:` chunk is a partial (as the server sent it); the
      chunks together are the result: a `chat.completion` (or `text_completion`) object with
      the whole message (content, reasoning_content, tool_calls), finish_reason and usage.
    - Cancel and time limits close the connection (seen within GQ_ENGINE_TICK_MS): the server
      stops generating, as it does for any client that goes away.
    - A server that cannot be reached is down: its jobs fail at once ("unreachable"; the job
      was not sent) and the worker stops offering KIND, probing again with back-off
      (GQ_ENGINE_BACKOFF_MIN_MS doubling up to GQ_ENGINE_BACKOFF_MAX_MS). While up it is probed
      every GQ_OPENAI_PROBE_MS, so that a server that went away while idle is seen.
    - OPENAI_API_KEY in the worker's environment, when set, is sent as the bearer token (for
      servers started with --api-key).

    Threads: one probe thread per server; gq_openai_run is called from slot threads, several at
    once (each on a connection of its own), and runs libcurl on its caller's thread: partials
    are handed to job->on_partial there, in order, before it returns. */
#ifndef GQ_OPENAI_H_INCLUDED
#define GQ_OPENAI_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _gq_openai_t gq_openai_t;

/* A server from "KIND=URL" (URL: http:// or https://, the API's base, e.g.
   http://127.0.0.1:8000/v1), probed at once; NULL with a reason (bad spec, cannot start its
   thread). slots: jobs in flight on it at most; ready_timeout_ms: how long
   gq_openai_wait_ready waits for the first answer. A server that does not answer is not an
   error here: it is down until it does. */
gq_openai_t *gq_openai_new (const char *spec, int slots, int64_t ready_timeout_ms, char *why,
                            size_t whylen);
/* Stops the probe thread; every gq_openai_run must have returned. NULLs the pointer. */
void gq_openai_destroy (gq_openai_t **self_p);

const char *gq_openai_kind (gq_openai_t *self);
const char *gq_openai_url (gq_openai_t *self);
/* Blocks until the server answered GET URL/models, or ready_timeout_ms passed. true when up. */
bool gq_openai_wait_ready (gq_openai_t *self);
/* The ids the server listed last, as a new array of names. */
json_t *gq_openai_models (gq_openai_t *self);
/* Whether the server is down (unreachable, or never answered yet). Thread-safe. */
bool gq_openai_down (gq_openai_t *self);

/* Runs one job on the server (job->kind, if set, must be the server's) and blocks until the
   stream ends, the job is cancelled or its time limit passes. 0 with *result (a new
   reference), or an error with the reason: GQ_EINVAL (the payload is not a JSON object),
   GQ_EBACKEND (unreachable, an HTTP error status with the server's message, a chunk that is not
   JSON, an error chunk, a stream that ended before `data: [DONE]`), GQ_ETOOBIG (a chunk above
   GQ_MAX_PARTIAL_BYTES), GQ_ETIMEOUT, GQ_ESTATE ("cancelled"), GQ_ENOMEM. */
int gq_openai_run (gq_openai_t *self, const gq_engine_job_t *job, json_t **result, char *error,
                   size_t errlen);

void gq_openai_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
