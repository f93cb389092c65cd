/*  gq_client.h — libgridq's client API: what gridq, gridq-top, gridq-bench and tests use to talk
    to a broker. One DEALER socket; many requests in flight, matched by correlation id; every call
    bounded by the client's timeout. Not thread-safe: one client per thread. */
#ifndef GQ_CLIENT_H_INCLUDED
#define GQ_CLIENT_H_INCLUDED

#include <czmq.h>
#include <jansson.h>

#include "gq_common.h"

typedef struct _gq_client_t gq_client_t;

/* JSON bytes of the jobs in one SUBMIT: the frame limit, less room for the envelope. */
#define GQ_CLIENT_SUBMIT_BYTES (GQ_MAX_JSON_BYTES - 4096)

typedef struct {
    const char *endpoint;         /* NULL: $GRIDQ_BROKER or GQ_DEFAULT_ENDPOINT */
    int timeout_ms;               /* per call; 0: GQ_CLIENT_TIMEOUT_MS */
    const char *cert_path;        /* client secret certificate (CURVE), or NULL ($GRIDQ_CERT) */
    const char *server_cert_path; /* broker public certificate, or NULL ($GRIDQ_SERVER_CERT) */
} gq_client_opts_t;

/* Connects (lazily, as ZeroMQ does). NULL with a reason in why on a bad endpoint or cert. */
gq_client_t *gq_client_new (const gq_client_opts_t *opts, char *why, size_t whylen);
void gq_client_destroy (gq_client_t **self_p);
/* Text of the last failure: "no broker answered at tcp://127.0.0.1:5555 within 5 s: is
   gridq-broker running?", "BAD_REQUEST: jobs[3]: \"priority\" is 99, outside 0..9". */
const char *gq_client_error (gq_client_t *self);
/* gq_err_t of the last failure (GQ_ETIMEOUT, or the code of an ERROR reply). */
int gq_client_errcode (gq_client_t *self);
const char *gq_client_endpoint (gq_client_t *self);
zsock_t *gq_client_socket (gq_client_t *self);
/* Index (0-based, in the jobs given to gq_client_submit) of the job that the last ERROR reply
   named with "index", or -1. */
int64_t gq_client_error_index (gq_client_t *self);
/* The per-call timeout in ms, as configured. */
int gq_client_timeout (gq_client_t *self);
/* How gq_client_submit splits a large batch: chunk_jobs per SUBMIT (0 or above
   GQ_MAX_BATCH_JOBS: GQ_MAX_BATCH_JOBS), in_flight SUBMITs sent before the first reply is awaited
   (pipelining; default 4). A chunk the broker refuses is not accepted, but chunks before it may
   be: their ids are set, the others are 0. */
void gq_client_set_submit_window (gq_client_t *self, size_t chunk_jobs, size_t in_flight);
/* How a submit goes through a rate limit. A chunk the broker refuses with RATE_LIMITED is sent
   again after the broker's hint while the timeout allows; past the timeout (the broker answers,
   so it is busy, not gone) as well, until the chunk has been refused `retries` times with no
   chunk of the submit accepted meanwhile. A rate limit then lets every chunk through in its
   turn, however long that takes; a cap that nothing frees (--max-queued) ends the submit.
   0, the default: only while the timeout allows. */
void gq_client_set_rate_retries (gq_client_t *self, size_t retries);
/* After gq_client_submit failed on an ERROR reply: true, with the input jobs (index of the first,
   count) of the chunk the broker refused; the error text is the broker's reason. Other chunks
   may have been refused too, or not sent after that: their ids are 0 as well. false when the
   last submit had no chunk refused. */
bool gq_client_refused (gq_client_t *self, size_t *first, size_t *count);
/* Bytes of a job's compact JSON, as gq_client_submit counts them: chunks are also split so that
   each SUBMIT frame stays under GQ_CLIENT_SUBMIT_BYTES, and a single job above that is refused
   (GQ_ETOOBIG, with gq_client_error_index) before anything is sent. job is borrowed. */
int64_t gq_client_job_bytes (json_t *job);

/* Sends a request; takes body; returns its req id (> 0) or a negative gq_err_t. */
int64_t gq_client_send (gq_client_t *self, const char *command, json_t *body);
/* Receives the next message for any request within timeout_ms; 0 and the parts (body: caller
   owns), or GQ_ETIMEOUT. blobs (may be NULL) receives output frames: caller destroys. */
int gq_client_recv (gq_client_t *self, int timeout_ms, char command[32], int64_t *req,
                    json_t **body, zlist_t **blobs);
/* One request, one reply: takes body; returns the reply body (caller owns) or NULL with the
   error set (ERROR replies and timeouts). Messages for other requests that arrive meanwhile
   (FINISHED) are kept for gq_client_recv. RATE_LIMITED is retried after its hint while the
   timeout allows. */
json_t *gq_client_call (gq_client_t *self, const char *command, json_t *body);

/* Submits jobs (a JSON array of job objects; borrowed). ids receives one id per job (caller
   allocates json_array_size(jobs)). With watch, FINISHED messages for these jobs follow (an
   array's: one per element, ids[i] + 1 ...; read them with gq_client_wait). Batches above
   GQ_MAX_BATCH_JOBS (or GQ_MAX_JSON_BYTES of JSON) are split, and the parts pipelined
   (gq_client_set_submit_window). A submit whose reply timed out is sent again when every job
   carries an idem key (so it cannot run twice). 0 or a gq_err_t. */
int gq_client_submit (gq_client_t *self, json_t *jobs, bool watch, int64_t *ids);

/* Called once per finished job (borrowed JSON); return non-zero to stop waiting. */
typedef int (gq_finished_fn) (void *arg, json_t *job);
/* Waits until every id has finished (done, failed or cancelled), calling fn for each (ids that
   the broker does not know are reported with state "missing"). Re-sends WAIT for the rest when
   the broker is silent for a while, so it rides through a broker restart. total_timeout_ms < 0
   waits forever. Returns 0 when all finished, GQ_ETIMEOUT otherwise (or fn's non-zero value when
   fn stopped it, or the gq_err_t of an ERROR reply). Ids submitted with watch on this client get
   no WAIT until they have been silent for a while: their FINISHED is already on its way. */
int gq_client_wait (gq_client_t *self, const int64_t *ids, size_t count, int64_t total_timeout_ms,
                    gq_finished_fn *fn, void *arg);

/* Called once per PARTIAL the broker relays (an engine's partial result of a job this client
   watches: SUBMIT with watch, or WAIT), in the order the engine wrote them and before that
   job's FINISHED, from whichever call reads the socket (gq_client_wait, gq_client_recv,
   gq_client_call, gq_client_submit). partial is borrowed for the call (json_incref to keep it);
   dropped counts partials of the job lost just before this one at the worker (it fell behind).
   The callback must not call into the client. A slow client may miss partials (the broker
   never waits for it); FINISHED still comes. */
typedef void (gq_client_partial_fn) (void *arg, int64_t id, int64_t seq, json_t *partial,
                                     int64_t dropped);
/* Sets (fn NULL: clears) the partials' callback. Without one, PARTIAL messages are dropped. */
void gq_client_set_partial_fn (gq_client_t *self, gq_client_partial_fn *fn, void *arg);

void gq_client_test (bool verbose);

#endif
