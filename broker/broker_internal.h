/*  broker_internal.h — what the broker's own files share: the broker's state (one struct, owned
    by the loop thread), the bookkeeping types, and the functions each file offers the others.
    Nothing outside the loop's files includes it.

    The files, along a job's path: broker.c (the loop: the turn, cron, construction, the table of
    commands), intake.c (SUBMIT, acknowledgements, recovery), dispatch.c (placements out as JOB
    messages), workers.c (READY, HEARTBEAT, BYE, liveness), results.c (RESULT, CANCEL, time
    limits: how attempts and jobs end), deps.c (jobs waiting on others: released or cancelled
    when a parent ends), watch.c (clients waiting, FINISHED), queries.c (STATUS,
    RESULT, JOBS, NODES, STATS, EXPLAIN, PING, /metrics), commit.c (the pending batch, the writer
    thread, job ids: commit.h states the contract). */
#ifndef GQ_BROKER_INTERNAL_H_INCLUDED
#define GQ_BROKER_INTERNAL_H_INCLUDED

#include <czmq.h>

#include "broker.h"
#include "commit.h"
#include "gq_msg.h"
#include "gq_spec.h"
#include "guard.h"
#include "metrics.h"
#include "queue.h"
#include "reader.h"
#include "sched.h"
#include "tuning.h"
#include "writer.h"

/* ---- State ----------------------------------------------------------------------------------- */

/* A client waiting for jobs to finish (WAIT, or SUBMIT with watch): one per request. */
typedef struct {
    zframe_t *routing_id; /* the client's connection */
    int64_t req;          /* the request the FINISHED messages answer */
    size_t refs;          /* jobs still pointing at this watch */
    zchunk_t *pending;    /* finished jobs (JSON objects, comma-separated) to send, or NULL */
    zlist_t *pages;       /* earlier parts of pending that filled a message (zchunk_t), or NULL */
    zlist_t *partials;    /* PARTIAL messages (gq_msg_t) held with the watch until its SUBMIT is
                             acknowledged (at most GQ_WATCH_HELD_PARTIALS_COUNT), or NULL */
    bool brief;           /* FINISHED carries only id, state, result and error */
    bool no_partials;     /* "partials": false: its client wants no PARTIAL messages */
    bool states;          /* "states": true: its client gets STATE when a job changes state */
    bool held;            /* a SUBMIT's watch before its acknowledgement: nothing is sent */
    bool dead;            /* the SUBMIT was refused: nothing is ever sent */
} gq_watch_t;

/* The watches of one job. */
typedef struct {
    size_t count;        /* used entries */
    gq_watch_t *items[]; /* borrowed: refs counts them */
} gq_watchers_t;

/* One connected (or once connected) worker; index = its matcher node index. */
typedef struct {
    int32_t node;          /* matcher index */
    zframe_t *routing_id;  /* current connection, NULL when offline */
    char key[520];         /* hex of routing_id (up to 255 bytes): workers-by-connection key */
    int64_t last_seen_us;  /* monotonic time of the last message */
    int64_t last_seen_ms;  /* wall time of the last message (for listings) */
    int64_t offline_us;    /* monotonic time it went offline, 0 while connected */
    gq_job_t *running;     /* jobs running there, linked through qprev/qnext */
    zchunk_t *jobs_out;    /* JOB entries placed this turn, as JSON text, or NULL */
    size_t jobs_out_count; /* entries in jobs_out */
    json_t *spec;          /* the worker's last READY spec (kinds, models, backend) */
    json_t *models_loaded; /* last reported [{name, load_ms}] */
    char owner_key[48];    /* CURVE key that first registered this name ("" without CURVE):
                              no other key may take the name over */
    int failures_in_row;   /* consecutive failed jobs (backoff) */
    bool dirty;            /* has entries in jobs_out */
    float *run_ms;         /* per kind id: the average run time of its jobs there (ms), < 0
                              before the first; NULL before its first result (prefetch) */
    float short_ms;        /* the average run time there of jobs of its short kinds (ms), 0
                              before the first */
} gq_link_t;

/* A job whose able nodes all failed it but one that went offline a moment ago: it waits for
   that node until until_us (results.c). */
typedef struct {
    int64_t id;       /* the job */
    int attempts;     /* its attempts then: a job that ran again since is not this case */
    int64_t until_us; /* monotonic end of the grace */
} gq_awaited_t;

/* A run started, for gq_dispatch_record_runs. */
typedef struct {
    int64_t id;              /* the job */
    int64_t started_mono_ms; /* monotonic clock at dispatch */
    int attempt;             /* its attempt number */
} gq_run_t;

/* A dependency of a waiting job on one parent. */
typedef struct {
    int64_t parent; /* the parent's id */
    int kind;       /* gq_dep_kind_t */
} gq_dep_t;

/* The dependencies of a waiting job (deps.c): out of line, so that a job without any costs
   nothing; the waits table holds it while the job waits. */
typedef struct {
    uint32_t count;      /* edges */
    uint32_t open;       /* edges whose parent has not ended */
    uint32_t fail_edges; /* after_fail edges */
    uint32_t fail_open;  /* of which the parent has not ended */
    uint32_t fail_hit;   /* of which the parent failed or was cancelled */
    uint32_t inputs;     /* 1: on release its payload gets its parents' results ("inputs") */
    uint32_t reading;    /* 1: released, its inputs being read (the reader thread): it waits
                            for them */
    gq_dep_t edges[];    /* in the order of the request (after_ok, after_any, after_fail) */
} gq_wait_t;

/* A job waiting on a parent, with its condition on that parent. */
typedef struct {
    int64_t id; /* the waiting job */
    int kind;   /* gq_dep_kind_t */
} gq_child_t;

/* The jobs waiting on one parent (the children index's entry, deps.c). */
typedef struct {
    uint32_t count;      /* used entries */
    uint32_t size;       /* allocated entries */
    gq_child_t items[];  /* in the order they came (submission order) */
} gq_children_t;

/* A parent whose end the dependency index has yet to hear (deps.c). */
typedef struct {
    int64_t id; /* the job that ended */
    int state;  /* its final state */
} gq_ended_t;

/* A job array (arrays.c): its elements are the jobs first .. first + count - 1, in index order.
   Elements beyond the limit are held out of the queue (state waiting) and admitted one by one as
   admitted ones end, so that never more than limit run at once. */
typedef struct {
    int64_t id;             /* the array's id (first - 1; names no job) */
    int64_t first, count;   /* its elements */
    int64_t submitted_ms;   /* wall clock at submission */
    int64_t active;         /* elements admitted (queued or running) and not ended */
    int64_t running;        /* of which running (so the rest of them are queued) */
    int64_t ended[GQ_JOB_STATES]; /* elements ended, by final state */
    int64_t *held;          /* ids of elements held back by the limit, a ring (FIFO) */
    size_t held_head, held_count, held_size; /* the ring's first entry, entries, allocated */
    char *text;             /* the spec as submitted (malloc'd): stored, and shown */
    gq_arrayspec_t spec;    /* indexes and limit */
    char *kind, *model;     /* what its elements share, for listings (malloc'd; model NULL for
                               none, kind NULL when unknown: no element was left at recovery) */
    int priority;           /* its elements' priority */
} gq_array_t;

/* A SUBMIT waiting for its batch to commit. */
typedef struct {
    gq_msg_t *request; /* the SUBMIT (routing id, req, blobs; the batch borrows from it) */
    gq_job_t **jobs;   /* its new jobs (NULL entries for idem repeats); owned here until
                          they join memory, borrowed after (see covered) */
    int64_t *ids;      /* the id of each job of the batch */
    gq_wait_t **waits; /* the dependencies of each job (NULL for none); owned here until the job
                          joins memory */
    size_t count;      /* jobs (an array's elements count one each) */
    int64_t *entry_ids; /* the id of each entry of the request (a job's, or an array's) */
    size_t n_entries;  /* entries of the request */
    int64_t *arrays;   /* ids of the arrays it made (their elements are among jobs), or NULL */
    size_t n_arrays;   /* entries of arrays */
    uint32_t owner;    /* submitter, for the per-client cap */
    int group;         /* its writes' group in the batch (they stand or fall together) */
    gq_watch_t *watch; /* SUBMIT with watch: held until the acknowledgement, or NULL */
    bool covered;      /* its ids are below a committed next_job_id: its jobs joined memory
                          and the queue at once; otherwise they join when it commits */
} gq_submit_t;

struct _gq_broker_t {
    gq_broker_opts_t opts;           /* configuration (strings borrowed from the caller) */
    zsock_t *router;                 /* the one socket */
    zloop_t *loop;                   /* its event loop */
    gq_store_t *store;               /* SQLite: start, reads, and the shutdown's next_job_id */
    gq_lane_t *writer;               /* the thread that commits batches */
    gq_lane_t *reader;         /* the thread that reads the store for STATUS and inputs */
    gq_pending_t *pending;           /* the batch being recorded */
    zlist_t *inflight;               /* gq_pending_t handed to the writer, oldest first */
    zhashx_t *idem_pending;    /* idem key -> the gq_pending_t that inserts it (not committed) */
    int64_t next_id;                 /* the next job id */
    int64_t id_committed;            /* ids below it are covered by a committed next_job_id */
    int64_t id_recorded;             /* the largest next_job_id recorded (committed or not) */
    int lazy_timer;                  /* zloop timer that hands a lazy batch over, or -1 */
    gq_pending_t *retry;       /* a batch the store refused, applied again after a backoff:
                                  nothing recorded later is handed over before it commits */
    int retry_timer;           /* zloop timer of the next try, or -1 */
    int64_t retry_delay_ms;    /* backoff before the next try (doubles while it fails) */
    int64_t store_down_ms;     /* wall clock of the first failure of an outage; 0 while commits
                                  succeed (then no new work is placed, SUBMIT is refused) */
    char store_error[256];     /* why the store failed last */
    int64_t store_failures;    /* batches the store refused since start (counter) */
    gq_matcher_t *matcher;           /* nodes and placement */
    gq_queue_t *queue;               /* queued jobs in dispatch order */
    gq_sched_t *sched;               /* placement policy over queue and matcher */
    gq_guard_t *guard;               /* CURVE roles and rate limits */
    gq_metrics_t *metrics;           /* counters, histograms and /metrics */
    int64_t submitted;               /* jobs accepted since start (counter) */
    int64_t finished[GQ_JOB_STATES]; /* jobs ended since start, per final state (counters) */
    zhashx_t *jobs;                  /* id -> gq_job_t, every job not ended */
    zhashx_t *ended;           /* id -> gq_job_t that ended, until its end is committed */
    zhashx_t *waits;           /* id -> gq_wait_t of every waiting job (deps.c) */
    zhashx_t *children;        /* parent id -> gq_children_t: the jobs waiting on it that its
                                  end may release; dropped when it ends (deps.c) */
    gq_ended_t *deps_ended;    /* parents ended whose children are not yet told (a cascade) */
    size_t deps_ended_count, deps_ended_size; /* its entries, allocated entries */
    bool deps_releasing;       /* deps.c is telling children: a parent that ends meanwhile
                                  joins deps_ended, not a recursion */
    zhashx_t *arrays;          /* array id -> gq_array_t (arrays.c) */
    gq_array_t **array_list;   /* the same, by id (so by first element): an element's array by
                                  binary search */
    size_t array_count, array_size; /* entries of array_list, allocated entries */
    zhashx_t *by_connection;         /* routing-id hex -> gq_link_t */
    gq_link_t **workers;             /* by node index */
    size_t workers_size;             /* allocated entries of workers */
    zlist_t *replies;                /* gq_msg_t of this turn */
    zlist_t *dirty_watches;          /* gq_watch_t with pending FINISHED */
    zlist_t *dirty_workers;          /* gq_link_t with jobs to send */
    gq_dispatch_t *placed;           /* scheduler output buffer */
    zlist_t *awaiting;         /* gq_awaited_t: jobs waiting for a node to come back */
    int64_t grace_us;          /* how long they wait (opts.node_grace_ms) */
    gq_run_t *runs;            /* runs started, oldest first (a ring), not yet old enough to be
                                  recorded "running" */
    size_t runs_head, runs_count, runs_size; /* the ring's first entry, entries, allocated */
    int64_t counts[GQ_JOB_STATES];   /* jobs per state (queued/running from memory) */
    int64_t recalled;          /* prefetched jobs taken back unstarted (counter) */
    zhashx_t *kept;            /* job id -> gq_kept_t: the last partials of a running job, for
                                  a WAIT that resumes after a seq ("after_seq") */
    zhashx_t *affinity_of;     /* job id -> its affinity key (malloc'd text), for the jobs in
                                  memory that have one (not stored: a hint, lost at restart) */
    zhashx_t *affinity_node;   /* affinity key -> 1 + the node that ran its last job; emptied
                                  when it would pass GQ_AFFINITY_KEYS (a cache of hints) */
    size_t recall_cursor;      /* the worker gq_workers_recall starts at (its budget ran out
                                  there last tick) */
    int64_t rejected;                /* bad messages dropped or answered with ERROR */
    int64_t started_ms;              /* wall clock at start */
    int64_t next_heartbeat_us, next_timeouts_us, next_retention_us; /* cron periods */
    bool turn_wrote; /* this turn recorded writes: its replies wait for them */
};

/* A command of the wire protocol: who may send it and what handles it. A handler borrows the
   request (*request_p) unless it takes it over and NULLs *request_p (SUBMIT keeps it until its
   batch commits); worker is the sender's link, or NULL (clients, and connections the broker
   does not know yet). */
typedef void (gq_handler_fn) (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *worker);

/* ---- Small helpers (broker.c) ------------------------------------------------------------------
 */

/* zhashx key of a job id: the id itself in the key pointer (no allocation per entry). */
#define GQ_ID_KEY(id) ((void *) (uintptr_t) (id))

/* The job of that id in memory (not ended), or NULL. */
static inline gq_job_t *
gq_broker_job_lookup (gq_broker_t *self, int64_t id)
{
    return (gq_job_t *) zhashx_lookup (self->jobs, GQ_ID_KEY (id));
}

/* The job of that id in memory: not ended, or ended and its end not yet committed. NULL means
   the store has the last word on it (gq_broker_id_issued says whether to ask it). */
static inline gq_job_t *
gq_broker_job_find (gq_broker_t *self, int64_t id)
{
    gq_job_t *job = gq_broker_job_lookup (self, id);
    return job ? job : (gq_job_t *) zhashx_lookup (self->ended, GQ_ID_KEY (id));
}

/* false for an id this broker never handed out (no store read can find it). */
static inline bool
gq_broker_id_issued (gq_broker_t *self, int64_t id)
{
    return id > 0 && id < self->next_id;
}

/* Hex of a frame's bytes into out (size bytes, NUL-terminated). */
void gq_broker_hex (zframe_t *frame, char *out, size_t size);
/* The name of node index node, or NULL for -1. Borrowed from the matcher. */
const char *gq_broker_node_name (gq_broker_t *self, int32_t node);
/* The job's model name, or NULL. Borrowed from the matcher. */
const char *gq_broker_model_name (gq_broker_t *self, const gq_job_t *job);
/* Queues a reply of this turn (sent at its end, or with its batch when the turn wrote); takes
   reply; NULL is ignored. */
void gq_broker_reply (gq_broker_t *self, gq_msg_t *reply);
/* Counts a refused request and replies ERROR code with why. */
void gq_broker_reject (gq_broker_t *self, gq_msg_t *request, int code, const char *why);
/* The JSON form of an in-memory job (new reference). with_payload includes the payload text. */
json_t *gq_broker_job_json (gq_broker_t *self, const gq_job_t *job, bool with_payload);
/* Appends the JSON text of an in-memory job (gq_job_row_text: the same fields as its JSON);
   the payload only with with_payload. */
void gq_broker_job_text (gq_broker_t *self, const gq_job_t *job, bool with_payload,
                         zchunk_t *out);
/* Frees a job with its payload, blobs and constraints, releasing its watchers; NULLs *job_p. */
void gq_broker_job_free (gq_broker_t *self, gq_job_t **job_p);
/* job starts (delta 1) or stops (-1) running: the broker's count, and its array's. */
void gq_broker_count_running (gq_broker_t *self, const gq_job_t *job, int delta);
/* Makes table's keys ids (GQ_ID_KEY), as the broker's own tables of jobs are. */
void gq_broker_id_keys (zhashx_t *table);
/* The request's "ids" (malloc'd, the caller frees), or false after refusing the request. */
bool gq_broker_request_ids (gq_broker_t *self, gq_msg_t *request, int64_t **ids, size_t *count);
/* Counts unknown ids a client asked about against its rate limit (a poller of ids that do not
   exist pays for its questions as a submitter does for its jobs). */
void gq_broker_charge_unknown (gq_broker_t *self, gq_msg_t *request, size_t unknown);
/* The request's "id" (required), or false after refusing the request. */
bool gq_broker_request_id (gq_broker_t *self, gq_msg_t *request, int64_t *id);
/* Replies command with {"jobs": jobs, "missing": missing} (both taken). */
void gq_broker_reply_jobs (gq_broker_t *self, gq_msg_t *request, const char *command, json_t *jobs,
                           json_t *missing);
/* Hands a valid message, in its role, to its command's handler (the handler may take it). */
void gq_broker_handle (gq_broker_t *self, gq_msg_t **msg_p);
/* Ends a turn: its replies go now, or with its batch when it wrote; then the FINISHED notices,
   the scheduler's placements, and the batch to the writer if it is due (all again when the loop
   committed it itself: jobs may have joined the queue, held requests may have replies). */
void gq_broker_turn_end (gq_broker_t *self);

/* ---- Intake (intake.c) --------------------------------------------------------------------- */

/* SUBMIT: validates the whole batch, creates its jobs, records their writes; the reply waits
   for the commit. Takes the request over. */
gq_handler_fn gq_intake_submit;
/* A SUBMIT's batch is back: acknowledged (its jobs join memory if they had to wait, its watch
   starts talking), or refused with the store's reason and its jobs withdrawn. Frees submit. */
void gq_intake_settle (gq_broker_t *self, gq_submit_t *submit, bool committed, const char *errmsg);
/* The first and last ids of the jobs a submission made (its ids are consecutive); 0, 0 when it
   made none (idem repeats only). */
void gq_intake_id_range (const gq_submit_t *submit, int64_t *first, int64_t *last);
/* Frees a submission and the jobs it still owns; NULLs *submit_p. */
void gq_intake_submit_free (gq_broker_t *self, gq_submit_t **submit_p);
/* gq_store_recover's callback: a stored unfinished job joins memory and the queue. */
int gq_intake_recover (void *arg, const gq_job_row_t *row, const char *const *excluded,
                       size_t n_excluded);

/* ---- Dependencies (deps.c) ----------------------------------------------------------------- */

/* The dependencies a job spec names, as a wait (nothing counted yet); NULL when out of memory.
   The spec's after arrays are validated (gq_jobspec_parse), and a name there is a key of names
   (name -> the id of the job of the same SUBMIT that has it). */
gq_wait_t *gq_deps_wait_new (const gq_jobspec_t *spec, zhashx_t *names);
/* Whether every parent a spec names by id exists (in memory or stored; names are the SUBMIT's
   to check): 0, or GQ_EINVAL / GQ_ESTORE with why naming the field and the id. */
int gq_deps_check (gq_broker_t *self, const gq_jobspec_t *spec, char *why, size_t whylen);
/* A job with dependencies joins memory (it is in the jobs table, in no queue, not counted): it
   waits, joins the queue when its parents ended as it asks, or ends cancelled when they did
   not. Takes *wait_p. */
void gq_deps_join (gq_broker_t *self, gq_job_t *job, gq_wait_t **wait_p);
/* A job ended (state final): the jobs waiting on it are released or cancelled, and their own
   dependents in turn. O(its children). A job released joins the queue when the batch being
   recorded (which holds that end, or commits after the one that does) is back. */
void gq_deps_ended (gq_broker_t *self, int64_t id, int state, int64_t now_ms);
/* A batch is back (committed, or never to be): the jobs it released join the queue; those that
   take their parents' results ("inputs") once the reader thread has read them. */
void gq_deps_released (gq_broker_t *self, gq_pending_t *done);
/* An inputs read is back (reader.h): each job still waiting for it gets its new payload and
   joins the queue, or fails with the read's error (the parents' results could not be read, or
   are too large to carry). Frees read. */
void gq_deps_inputs_back (gq_broker_t *self, gq_read_t *read);
/* A waiting job leaves that state (it ends, or is withdrawn): its wait is freed and uncounted.
   Nothing for a job that is not waiting. */
void gq_deps_forget (gq_broker_t *self, gq_job_t *job);
/* At start, after the jobs that had not ended were recovered (queued): those with dependencies
   wait again, or are released or cancelled by what their parents did meanwhile. 0 or an
   error of the store. */
int gq_deps_recover (gq_broker_t *self);
/* A job made queued again (retry.c) takes up its stored dependencies: it waits, is released,
   or ends cancelled, as at recovery. 1 when it had some, 0 when none, or an error of the
   store. */
int gq_deps_restart (gq_broker_t *self, gq_job_t *job);
/* EXPLAIN of a waiting job: [{id, condition, state}] per parent (a new reference), or NULL for a
   job that does not wait. */
json_t *gq_deps_explain (gq_broker_t *self, const gq_job_t *job);
/* The ids of the waiting jobs, oldest first, into *ids_p (malloc'd, the caller frees; NULL
   when out of memory): those waiting for their dependencies, and at most per_array of the
   elements each array's limit holds. Returns how many. */
size_t gq_deps_waiting (gq_broker_t *self, size_t per_array, int64_t **ids_p);
/* Frees the waits and the index (at shutdown). */
void gq_deps_destroy (gq_broker_t *self);

/* ---- Arrays (arrays.c) ------------------------------------------------------------------- */

/* A new array id with elements id + 1 .. id + spec->count (text borrowed, copied); NULL when out
   of memory. */
gq_array_t *gq_arrays_new (gq_broker_t *self, int64_t id, const char *text,
                           const gq_arrayspec_t *spec, int64_t submitted_ms);
/* Forgets array id (its submission was refused). */
void gq_arrays_forget (gq_broker_t *self, int64_t id);
/* The array of that id, or NULL. */
gq_array_t *gq_arrays_find (gq_broker_t *self, int64_t id);
/* Sets what an array's elements share, for listings (copied; model NULL for none). GQ_OK or
   GQ_ENOMEM. */
int gq_arrays_describe (gq_array_t *array, const char *kind, const char *model, int priority);
/* The array job is an element of, or NULL. */
gq_array_t *gq_arrays_of (gq_broker_t *self, const gq_job_t *job);
/* The array whose element job id is (a job in memory or not), or NULL. */
gq_array_t *gq_arrays_holding (gq_broker_t *self, int64_t id);
/* The index of element job_id of array. */
int64_t gq_arrays_index (const gq_array_t *array, int64_t job_id);
/* A job ready to run (not ended, in no queue, not counted) joins the queue; an element of an
   array at its limit is held instead (waiting) until an element of its array ends. */
void gq_arrays_queue (gq_broker_t *self, gq_job_t *job);
/* A worker that registered again runs element job, held by its array's limit (the broker
   restarted and admitted others): it takes the place of an admitted element still queued,
   which is held instead, so that the run goes on and the limit holds. Nothing when job is not
   a held element or every admitted one runs. */
void gq_arrays_adopt (gq_broker_t *self, gq_job_t *job);
/* Element id of an array ended in state; admitted: it was queued or running (so it counted
   against the limit). The next held elements are admitted; the array's own end (all elements
   ended) reaches the jobs that depend on it. */
void gq_arrays_ended (gq_broker_t *self, int64_t id, bool admitted, int state, int64_t now_ms);
/* The array's state as a parent: queued while an element has not ended; then done when every
   one is done, failed when one failed, else cancelled. */
int gq_arrays_state (const gq_array_t *array);
/* The array's elements by state, from its books (no element is looked at): the ended ones by
   their final state, the admitted ones running or queued, the rest waiting (held by the limit,
   or by their dependencies). */
void gq_arrays_counts (const gq_array_t *array, int64_t counts[GQ_JOB_STATES]);
/* {id, spec, first, count, limit, kind, model, priority, counts {waiting, queued, running, done,
   failed, cancelled}, state, submitted_at}: a new reference. */
json_t *gq_arrays_summary (const gq_array_t *array);
/* The array as STATUS and JOBS list it among jobs: {id, state, array: its summary}. */
json_t *gq_arrays_entry (const gq_array_t *array);
/* At start, before the jobs: the stored arrays join memory. 0 or an error of the store. */
int gq_arrays_recover (gq_broker_t *self);
/* At start, after the jobs and their dependencies: each array's limit holds again (the
   elements queued past it are held). */
void gq_arrays_recover_limits (gq_broker_t *self);
/* Writes the ids of the elements held by their arrays' limits into ids (at most max of them,
   and at most per_array of each array, in the order they are admitted); returns how many. */
size_t gq_arrays_held (gq_broker_t *self, int64_t *ids, size_t max, size_t per_array);
/* Frees the arrays (at shutdown). */
void gq_arrays_destroy (gq_broker_t *self);

/* ---- Dispatch (dispatch.c) ----------------------------------------------------------------- */

/* Places queued jobs on nodes and sends each worker its JOB messages of this turn. */
void gq_dispatch_turn (gq_broker_t *self);
/* gq_sched_prefer_fn (arg: the broker): the node that ran the last job of job's affinity key,
   or -1. */
int32_t gq_dispatch_preferred (void *arg, const gq_job_t *job);
/* A run of job starts now (dispatched, or taken back from a worker that registered again). */
void gq_dispatch_started (gq_broker_t *self, gq_job_t *job, int64_t now_ms);
/* Cron: runs that have lasted GQ_RUN_RECORD_AFTER_MS are recorded "running", so that a broker
   killed while they run still shows them after its restart (as lost); shorter ones are recorded
   only when they end, which saves a write for most jobs. */
void gq_dispatch_record_runs (gq_broker_t *self, int64_t now_mono_ms);

/* ---- Workers (workers.c) ------------------------------------------------------------------- */

/* The link of node index node, created (offline) when absent; NULL when out of memory. */
gq_link_t *gq_workers_link (gq_broker_t *self, int32_t node);
/* The link of a connection, or NULL when the broker does not know it. */
gq_link_t *gq_workers_by_connection (gq_broker_t *self, zframe_t *routing_id);
/* Links a job into (or out of) the list of jobs running on worker. */
/* A job of kind ran ms on worker (its RESULT): the kind's average there moves, and with it
   what the node may prefetch. */
void gq_workers_ran (gq_broker_t *self, gq_link_t *worker, int kind, double ms);
/* Sets the node's prefetch from its round trip and its short kinds' run time (0 with
   --prefetch-max 0); indexes follow. */
void gq_workers_prefetch (gq_broker_t *self, gq_link_t *worker);
/* Where job stands on its node: 0 when it may have started there (it is among the node's
   slots oldest jobs: the worker starts them in the order they came), else how many of the
   node's jobs are ahead of it (it was prefetched and waits for a slot). */
int32_t gq_workers_queued_behind (gq_broker_t *self, const gq_job_t *job);
/* Cron: sends RECALL for prefetched jobs that have waited on their node longer than
   --prefetch-recall-ms while another node could take them now. */
void gq_workers_recall (gq_broker_t *self, int64_t now_us);
/* RECALLED from a worker: the jobs it gave back unstarted go back to the queue. */
void gq_workers_recalled (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *worker);
void gq_workers_running_link (gq_link_t *worker, gq_job_t *job);
void gq_workers_running_unlink (gq_link_t *worker, gq_job_t *job);
/* Sends worker a command with body (taken); nothing when it is offline. */
void gq_workers_send (gq_broker_t *self, gq_link_t *worker, const char *command, json_t *body);
/* A worker is gone (silent, said goodbye, or replaced): its jobs go back to the queue. */
void gq_workers_lost (gq_broker_t *self, gq_link_t *worker, const char *reason, bool exclude,
                      int64_t now_ms);
/* READY, HEARTBEAT and BYE. */
gq_handler_fn gq_workers_ready;
gq_handler_fn gq_workers_heartbeat;
gq_handler_fn gq_workers_bye;
/* Cron: heartbeats out, and workers silent for liveness heartbeats are lost. */
void gq_workers_cron (gq_broker_t *self, int64_t now_us, int64_t now_ms);

/* ---- Results: how attempts and jobs end (results.c) ----------------------------------------- */

/* Ends the current attempt of a running job: its slot released, unlinked, and its row recorded
   (not for a first attempt that succeeded: the job's own row tells that one). */
void gq_results_attempt_end (gq_broker_t *self, gq_job_t *job, const char *outcome,
                             const char *reason, int64_t now_ms);
/* An attempt failed (outcome failed, lost, timeout): the job goes back to the queue without
   that node, or fails for good after max_attempts. */
/* A prefetched job the node had not started goes back to the queue: no node excluded, no
   attempt counted against max_attempts. Nothing is recorded, unless its run was recorded
   "running" already: then that record ends "cancelled" ("recalled before it started") and
   its number stays taken (job->recalls). */
void gq_results_attempt_recalled (gq_broker_t *self, gq_job_t *job, int64_t now_ms);
void gq_results_attempt_failed (gq_broker_t *self, gq_job_t *job, const char *outcome,
                                const char *reason, bool exclude, int64_t now_ms);
/* A job reached a final state: recorded, watchers told, buried, and the jobs waiting on it
   released or cancelled (gq_deps_ended). text is the result's JSON text (taken: malloc'd) or
   NULL; the node of the last attempt stays in the record. */
void gq_results_job_end (gq_broker_t *self, gq_job_t *job, int state, char *text,
                         const char *error, int32_t last_node, int64_t now_ms);
/* Adds node to the nodes that failed job (the oldest one leaves when it is full). */
void gq_results_exclude (gq_job_t *job, int32_t node);
/* RESULT from a worker, CANCEL from a client. */
gq_handler_fn gq_results_recv;
gq_handler_fn gq_results_cancel;
/* RETRY (retry.c): failed and cancelled jobs, an array's, and the dependents their failures
   cancelled, run again as the same jobs. */
gq_handler_fn gq_retry_request;
/* Cron: running jobs past their time limit fail their attempt (on the monotonic clock); jobs
   that waited in vain for a node to come back fail. */
void gq_results_timeouts (gq_broker_t *self, int64_t now_ms);

/* ---- Watches: clients waiting for jobs to end (watch.c) ----------------------------------- */

/* A watch for request's client; brief from the request's "brief" (validated by the caller). */
gq_watch_t *gq_watch_new (gq_msg_t *request);
/* Makes watch wait for job (once per client connection). 0 or GQ_ENOMEM. */
int gq_watch_add (gq_job_t *job, gq_watch_t *watch);
/* Drops one reference; frees the watch when none is left and nothing waits to be sent. */
void gq_watch_release (gq_broker_t *self, gq_watch_t *watch);
/* Lets go of the clients watching a job. */
void gq_watch_drop_job (gq_broker_t *self, gq_job_t *job);
/* Tells the clients watching job that it ended (FINISHED, full or brief as each asked), from its
   end. */
void gq_watch_job_ended (gq_broker_t *self, const gq_job_t *job);
/* Makes watch wait for job id: one in memory is watched (or told at once when it ended), one
   in the store is told at once. false when the broker knows no such job. */
bool gq_watch_job (gq_broker_t *self, gq_watch_t *watch, int64_t id);
/* Queues a stored job (JSON, borrowed) for a client watching it. */
void gq_watch_notify (gq_broker_t *self, gq_watch_t *watch, json_t *job_json);
/* Sends a watch's pending FINISHED notices; frees it when no job points at it any more. */
void gq_watch_flush (gq_broker_t *self, gq_watch_t *watch);
/* Drops the FINISHED notices a watch had to send (its SUBMIT was refused). */
void gq_watch_drop_pending (gq_watch_t *watch);
/* job's state changed (queued, running): STATE {"req", "id", "state", "node"?} to each of its
   watches that asked for states. Cheap when none did. */
void gq_watch_state (gq_broker_t *self, const gq_job_t *job);
/* Frees what is kept of job's partials (when it leaves memory). */
void gq_watch_forget (gq_broker_t *self, int64_t id);
/* The destructor of the kept table's entries. */
void gq_watch_kept_free (void **item);
/* WAIT. */
gq_handler_fn gq_watch_wait;
/* PARTIAL from a worker: relayed at once to every client watching the job (never stored),
   acknowledged to the worker with PARTIAL_ACK; a bad one is counted as rejected and dropped. */
gq_handler_fn gq_watch_partial;

/* ---- Queries (queries.c) ------------------------------------------------------------------- */

gq_handler_fn gq_queries_status;
gq_handler_fn gq_queries_result;
gq_handler_fn gq_queries_jobs;
gq_handler_fn gq_queries_nodes;
gq_handler_fn gq_queries_stats;
gq_handler_fn gq_queries_explain;
gq_handler_fn gq_queries_ping;
/* A STATUS whose stored part the reader thread has read: the reply goes; read is freed. */
void gq_queries_status_back (gq_broker_t *self, gq_read_t *read);
/* The text of one /metrics scrape (gq_metrics_render_fn; arg is the broker). */
void gq_queries_metrics (void *arg, zchunk_t *out);

#endif
