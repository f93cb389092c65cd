/*  harness.h — integration-test helpers: free loopback ports, real gridq processes started and
    stopped by PID, bounded waits on conditions (never fixed sleeps), checks that print both
    values. */
#ifndef GQ_HARNESS_H_INCLUDED
#define GQ_HARNESS_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "gq_client.h"

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            h_fail ();                                                                        \
        }                                                                                     \
    } while (0)
#define CHECK_EQ(a, b)                                                                        \
    do {                                                                                      \
        long long _a = (long long) (a), _b = (long long) (b);                                 \
        if (_a != _b) {                                                                       \
            fprintf (stderr, "%s:%d: %s is %lld, expected %s = %lld\n", __FILE__, __LINE__, #a, \
                     _a, #b, _b);                                                             \
            h_fail ();                                                                        \
        }                                                                                     \
    } while (0)
#define CHECK_STR(a, b)                                                                       \
    do {                                                                                      \
        const char *_a = (a), *_b = (b);                                                      \
        if (!_a || !_b || strcmp (_a, _b) != 0) {                                             \
            fprintf (stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,  \
                     _a ? _a : "(null)", _b ? _b : "(null)");                                 \
            h_fail ();                                                                        \
        }                                                                                     \
    } while (0)

/* Sets up: a temporary folder, the bin folder ($GQ_BIN or ./bin), a deadline for the whole test
   (seconds), and an alarm that fails the test when it passes. */
void h_init (const char *name, int deadline_s);
/* Stops every process started, removes the temporary folder. */
void h_cleanup (void);
/* Has h_cleanup (also on a failure) call undo last, once: for what a test set up outside its
   folder (a mount). */
void h_at_cleanup (void (*undo) (void));
/* Stops everything and exits 1. */
void h_fail (void) __attribute__ ((noreturn));
/* The temporary folder of this test. */
const char *h_dir (void);
/* The folder of the programs under test: $GQ_BIN, or ./bin. */
const char *h_bin (void);
/* Exits 77 (ctest: skipped), after cleaning up, when program is not built in h_bin (). */
void h_require (const char *program);
/* A TCP port on 127.0.0.1 that was free a moment ago. */
int h_free_port (void);
/* "tcp://127.0.0.1:PORT" for a port picked once per test. */
const char *h_endpoint (void);

/* Starts build/bin/PROGRAM (or PROGRAM, given by absolute path) with arguments
   (NULL-terminated), output to DIR/LOGNAME.log. Returns its PID. */
pid_t h_start (const char *program, const char *logname, ...) __attribute__ ((sentinel));
/* Writes DIR/broker.json with json (text) for the broker's --config; returns its path (static,
   valid until the next call). */
const char *h_broker_config (const char *json);
/* The broker on h_endpoint() with DIR/gridq.db plus extra arguments (NULL-terminated). */
pid_t h_start_broker (const char *extra, ...) __attribute__ ((sentinel));
/* A CPU worker named name with slots and extra arguments (NULL-terminated). */
pid_t h_start_worker (const char *name, int slots, ...) __attribute__ ((sentinel));
/* A CPU worker with slots for each name (NULL-terminated); returns a client of the test broker
   (timeout_ms per call) that has seen every one of them register. */
gq_client_t *h_start_workers (int slots, int timeout_ms, const char *name, ...)
    __attribute__ ((sentinel));
/* Sends sig to pid (one we started) and, for SIGKILL/SIGTERM/SIGINT, waits for it. */
void h_kill (pid_t pid, int sig);
/* true while pid runs. */
bool h_alive (pid_t pid);

/* A client of the test broker (timeout per call in ms). */
gq_client_t *h_client (int timeout_ms);
/* Waits (bounded by timeout_ms) until the broker reports at least n nodes online or busy. */
void h_wait_nodes (gq_client_t *client, int n, int timeout_ms);
/* Waits until fn(arg) returns true, polling every 20 ms, at most timeout_ms; false on timeout. */
bool h_wait_until (bool (*fn) (void *arg), void *arg, int timeout_ms);
/* A job's JSON via STATUS (new reference) or NULL. */
json_t *h_status (gq_client_t *client, int64_t id);
/* Runs a command line through /bin/sh, returns its exit status; its stdout in out (may be NULL,
   malloc'd). */
int h_run (const char *command, char **out);

/* ---- Reliability helpers (tests/test_reliability_*.c) ---- */
/* Waits (bounded) until the broker answers PING; fails the test otherwise. */
void h_wait_broker (gq_client_t *client, int timeout_ms);
/* Polls STATUS until job id is in state ("queued" ... "cancelled", or "missing"); false on
   timeout. */
bool h_wait_state (gq_client_t *client, int64_t id, const char *state, int timeout_ms);
/* RESULT's job object, with attempts_detail (new reference), or NULL. */
json_t *h_result (gq_client_t *client, int64_t id);
/* For a test with two workers w1 and w2: the one that runs job id (its STATUS node; the test
   fails when it is neither) into node, the other into other (each GQ_NAME_MAX bytes); returns
   true when it is w1. */
bool h_running_on (gq_client_t *client, int64_t id, char *node, char *other);
/* The node called name as NODES reports it (new reference), or NULL. */
json_t *h_node (gq_client_t *client, const char *name);
/* ---- Partials through the C API ---- */
/* What the partial and FINISHED callbacks below saw of one job: clear it with h_seen_reset,
   then gq_client_set_partial_fn (client, h_on_partial, &seen) and gq_client_wait (..,
   h_on_finished, &seen). */
typedef struct {
    int64_t seqs[64];  /* seq of each partial, in arrival order (the first 64) */
    json_t *partials;  /* every partial, in arrival order */
    int n;             /* partials seen */
    int at_finish;     /* partials seen when FINISHED came, -1 before */
    char state[16];    /* the job's state in its FINISHED */
} h_seen_t;
/* Empties seen (its partials freed). */
void h_seen_reset (h_seen_t *seen);
/* gq_client_partial_fn recording into an h_seen_t (arg); fails the test on a dropped partial. */
void h_on_partial (void *arg, int64_t id, int64_t seq, json_t *partial, int64_t dropped);
/* gq_client_wait's callback recording the FINISHED into an h_seen_t (arg). */
int h_on_finished (void *arg, json_t *job);

/* ---- OpenAI streams ---- */
/* The chunks of an OpenAI SSE answer (text: its "data: " lines; blank lines and others
   skipped), as a JSON array of chat.completion.chunk objects (new reference). The test fails
   when a chunk is not JSON, is not a chat.completion.chunk, anything follows "data: [DONE]",
   or [DONE] never comes. text is cut into lines (strtok). */
json_t *h_sse_chunks (char *text);
/* The chunks' delta contents joined, into out (size bytes). */
void h_sse_text (json_t *chunks, char *out, size_t size);

/* ---- A fake broker: a raw ROUTER socket that a real worker talks to (tests of the worker's
   own behaviour, exact because the test decides every broker message) ---- */
/* The fake broker's socket, bound to h_endpoint (). */
zsock_t *h_fake_broker (void);
/* Reads the worker's READY and answers WELCOME (heartbeats of 10 s: the worker sends none of
   its own meanwhile) for node name; returns the worker's routing id (the caller destroys it). */
zframe_t *h_fake_welcome (zsock_t *router, const char *name);
/* The next message from the worker within 10 s (fails the test otherwise): its command into
   command (32 bytes), its body returned (new reference); the routing id into *from once. */
json_t *h_fake_recv (zsock_t *router, zframe_t **from, char *command);
/* h_fake_recv, skipping the HEARTBEATs the worker sends of its own (those with no echo). */
json_t *h_fake_next (zsock_t *router, zframe_t **from, char *command);
/* Sends the worker a broker message (protocol GQW1) with a JSON body (text). */
void h_fake_send (zsock_t *router, zframe_t *to, const char *command, const char *body);

/* Starts tests/openai_server.py (script) as NAME, streaming in style ("vllm", "llamacpp") for
   model, its events in DIR/NAME.events; returns its pid and, in *port, its port (given 0:
   any). */
pid_t h_start_openai_server (const char *script, const char *name, const char *style,
                             const char *model, int *port);

/* Whether node name, as NODES reports it, offers kind. */
bool h_node_offers (gq_client_t *client, const char *name, const char *kind);
/* Polls NODES until node name has status ("online", "busy", "offline", ...); false on timeout. */
bool h_wait_node_status (gq_client_t *client, const char *name, const char *status,
                         int timeout_ms);
/* Submits one job (borrowed) and returns its id; fails the test when it is refused. */
int64_t h_submit (gq_client_t *client, json_t *job);
/* Submits one job of kind with payload (taken), model (NULL: none) and max_attempts; returns its
   id; fails the test when it is refused. */
int64_t h_submit_payload (gq_client_t *client, const char *kind, const char *model,
                          json_t *payload, int max_attempts);
/* Submits one job (borrowed) with n_blobs binary frames (taken; the job's payload refers to them
   by index) in a SUBMIT built here, since the client API sends JSON only; returns its id; fails
   the test when it is refused. */
int64_t h_submit_blobs (gq_client_t *client, json_t *job, zframe_t **blobs, size_t n_blobs);
/* CANCELs one id; returns the state the reply gives (a static buffer). */
const char *h_cancel (gq_client_t *client, int64_t id);
/* Submits a job that sleeps ms (it holds a slot while it runs, where echo runs inline); returns
   its id. */
int64_t h_submit_sleep (gq_client_t *client, int ms);
/* n echo jobs, the i-th with payload {"i": i} (new reference). */
json_t *h_echo_jobs (int n);
/* One integer that the sqlite3 CLI prints for sql on db (DIR/gridq.db when NULL); -1 when the
   CLI fails. sql must not contain double quotes. */
int64_t h_sql_int (const char *db, const char *sql);
/* h_sql_int until it gives want (at most timeout_ms), then its last value. The broker sends a
   result before the batch that records it commits (milliseconds later): a test that reads the
   store right after FINISHED waits for it with this. */
int64_t h_sql_settled (const char *db, const char *sql, int64_t want, int timeout_ms);
/* Waits (at most timeout_ms) until the store (DIR/gridq.db) holds jobs jobs, every one done,
   and edges dependency rows; fails the test otherwise. */
void h_sql_all_done (int64_t jobs, int64_t edges, int timeout_ms);
/* For h_sql_int after a broker was killed and restarted: the jobs with more than one successful
   run (each result is recorded once; a run the kill cut short is "lost", not "ok"). */
#define H_SQL_RUN_TWICE                                                                       \
    "select count(*) from (select job_id from attempts where outcome = 'ok' group by job_id " \
    "having count(*) > 1)"
/* The same: the edges whose child ran (its job row's run, or any recorded attempt) before its
   parent's end was recorded. */
#define H_SQL_CHILD_EARLY                                                                     \
    "select count(*) from deps d join jobs p on p.id = d.parent join jobs c on c.id = "       \
    "d.child where p.finished_at is null or c.started_at < p.finished_at or exists (select " \
    "1 from attempts a where a.job_id = c.id and a.started_at < p.finished_at)"
/* Creates (or truncates) the file at path: a gate a test engine or handler waits for. */
void h_touch (const char *path);
/* A string member of a JSON object, or "" (never NULL). */
const char *h_str (json_t *object, const char *key);
/* An integer member of a JSON object, or 0. */
int64_t h_int (json_t *object, const char *key);

#endif
