/*  results.c — how attempts and jobs end: RESULT from workers (first result wins; a run the
    broker lost track of is an attempt of its own), CANCEL from clients, time limits; exclusions
    of nodes that failed a job, and each node's reliability and backoff. */
#include "broker_internal.h"
#include "gq_result.h"

#include <math.h>
#include <string.h>

/* A job that ended leaves the broker's tables now, and memory when the batch that holds its
   last writes is back committed (the batch borrows its payload, blobs and end); until then it
   is answered for from the ended index. Its watchers are released. */
static void
s_job_bury (gq_broker_t *self, gq_job_t *job)
{
    gq_watch_drop_job (self, job);
    zhashx_delete (self->jobs, GQ_ID_KEY (job->id));
    zhashx_insert (self->ended, GQ_ID_KEY (job->id), job);
    zlist_append (self->pending->dead, job);
}

void
gq_results_attempt_end (gq_broker_t *self, gq_job_t *job, const char *outcome,
                        const char *reason, int64_t now_ms)
{
    if (job->node < 0) {
        return;
    }
    gq_link_t *worker = self->workers[job->node];
    gq_workers_running_unlink (worker, job);
    gq_matcher_release (self->matcher, job->node, job, now_ms);
    gq_broker_count_running (self, job, -1);
    if (job->attempts == 1 && streq (outcome, "ok") && !job->run_recorded) {
        return; /* the job's own row tells this one */
    }
    gq_commit_recorded (self, gq_batch_attempt (self->pending->batch, job->id, job->attempts,
                                                gq_broker_node_name (self, job->node),
                                                job->started_ms, now_ms, outcome, reason,
                                                true));
}

/* A job reached a final state: recorded, watchers told, buried, and the jobs waiting on it
   released or cancelled (deps.c). text is the result's JSON text (taken) or NULL; the node of
   the last attempt stays in the record. */
void
gq_results_job_end (gq_broker_t *self, gq_job_t *job, int state, char *text,
                    const char *error, int32_t last_node, int64_t now_ms)
{
    bool element = job->in_array;
    bool admitted = job->state == GQ_JOB_QUEUED || job->state == GQ_JOB_RUNNING;
    if (job->state == GQ_JOB_QUEUED) {
        gq_queue_remove (self->queue, job);
        self->counts[GQ_JOB_QUEUED]--;
    }
    gq_deps_forget (self, job);
    job->state = (uint8_t) state;
    self->counts[state]++;
    self->finished[state]++;
    if (job->owner) {
        char why[100];
        gq_guard_queued (self->guard, job->owner, -1, false, why, sizeof why);
    }
    if (job->started_ms && state == GQ_JOB_DONE) {
        gq_metrics_observe (self->metrics, GQ_HIST_LATENCY_MS, (double) (now_ms - job->started_ms));
    }
    const char *node = gq_broker_node_name (self, last_node);
    gq_job_end_t *end = (gq_job_end_t *) calloc (1, sizeof *end);
    if (end) {
        end->result = text;
        end->error = error ? strdup (error) : NULL;
        end->finished_ms = now_ms;
        end->node = last_node;
        job->end = end;
    } else {
        free (text);
        text = NULL;
    }
    gq_watch_job_ended (self, job);
    /* The batch borrows the end's result and error. */
    gq_commit_recorded (self, end ? gq_batch_job_finish (self->pending->batch, job->id, state,
                                                         job->attempts, node, job->started_ms,
                                                         now_ms, end->result, end->error)
                                  : GQ_ENOMEM);
    int64_t id = job->id;
    s_job_bury (self, job);
    /* Last: the jobs it releases or cancels see it ended; its array admits the next. */
    gq_deps_ended (self, id, state, now_ms);
    if (element) {
        gq_arrays_ended (self, id, admitted, state, now_ms);
    }
}

void
gq_results_exclude (gq_job_t *job, int32_t node)
{
    for (int i = 0; i < job->n_excluded; i++) {
        if (job->excluded[i] == node) {
            return;
        }
    }
    if (job->n_excluded < GQ_JOB_MAX_EXCLUDED) {
        job->excluded[job->n_excluded++] = node;
    } else {
        /* Keep the most recent failures: the oldest one leaves. */
        memmove (job->excluded, job->excluded + 1, (GQ_JOB_MAX_EXCLUDED - 1) * sizeof (int32_t));
        job->excluded[GQ_JOB_MAX_EXCLUDED - 1] = node;
    }
}

/* True when some connected node could run job were it not for the job's exclusions, and none
   can with them: every node able to run it failed it. */
static bool
s_nowhere_to_go (gq_broker_t *self, const gq_job_t *job)
{
    gq_job_t unexcluded = *job;
    unexcluded.n_excluded = 0;
    bool capable = false, untried = false;
    size_t nodes = gq_matcher_nodes (self->matcher);
    for (size_t n = 0; n < nodes && !untried; n++) {
        capable = capable || gq_matcher_could_run (self->matcher, (int32_t) n, &unexcluded);
        untried = gq_matcher_could_run (self->matcher, (int32_t) n, job);
    }
    return capable && !untried;
}

/* When a node that could run job went offline less than the grace period ago, job waits for it
   (in the awaiting list, checked by gq_results_timeouts) and this returns true. */
static bool
s_awaited (gq_broker_t *self, gq_job_t *job)
{
    int64_t now_us = gq_mono_us (), until_us = 0;
    for (size_t w = 0; w < self->workers_size; w++) {
        gq_link_t *link = self->workers[w];
        int64_t end_us = link && link->offline_us ? link->offline_us + self->grace_us : 0;
        if (end_us > now_us && end_us > until_us &&
            gq_matcher_fits (self->matcher, (int32_t) w, job)) {
            until_us = end_us;
        }
    }
    if (!until_us) {
        return false;
    }
    gq_awaited_t *awaited = (gq_awaited_t *) malloc (sizeof *awaited);
    if (!awaited || zlist_append (self->awaiting, awaited)) {
        free (awaited);
        return false;
    }
    *awaited = (gq_awaited_t) {job->id, job->attempts, until_us};
    return true;
}

/* Jobs waiting for a node that went offline: one whose grace ended with still no connected
   node able to run it (and none other just gone) fails now. */
static void
s_awaiting_check (gq_broker_t *self, int64_t now_ms)
{
    int64_t now_us = gq_mono_us ();
    gq_awaited_t *awaited = (gq_awaited_t *) zlist_first (self->awaiting);
    while (awaited) {
        gq_awaited_t *next = (gq_awaited_t *) zlist_next (self->awaiting);
        if (awaited->until_us <= now_us) {
            gq_job_t *job = gq_broker_job_lookup (self, awaited->id);
            zlist_remove (self->awaiting, awaited);
            if (job && job->state == GQ_JOB_QUEUED && job->attempts == awaited->attempts &&
                s_nowhere_to_go (self, job) && !s_awaited (self, job)) {
                char error[300];
                snprintf (error, sizeof error,
                          "failed on every node that can run it (%d attempt%s); no other node "
                          "that can came back within %lld ms",
                          job->attempts, job->attempts == 1 ? "" : "s",
                          (long long) (self->grace_us / 1000));
                gq_results_job_end (self, job, GQ_JOB_FAILED, NULL, error, -1, now_ms);
            }
            free (awaited);
        }
        awaited = next;
    }
}

/* An attempt failed (outcome failed, lost, timeout): the job goes back to the queue without
   that node, or fails for good after max_attempts. */
void
gq_results_attempt_failed (gq_broker_t *self, gq_job_t *job, const char *outcome,
                           const char *reason, bool exclude, int64_t now_ms)
{
    int32_t node = job->node;
    gq_results_attempt_end (self, job, outcome, reason, now_ms);
    job->node = -1;
    if (job->attempts >= job->max_attempts + job->recalls) {
        char error[600];
        snprintf (error, sizeof error, "failed after %d attempt%s; last on %s: %s", job->attempts,
                  job->attempts == 1 ? "" : "s", gq_broker_node_name (self, node), reason);
        gq_results_job_end (self, job, GQ_JOB_FAILED, NULL, error, node, now_ms);
        return;
    }
    if (exclude) {
        gq_results_exclude (job, node);
        /* Every connected node that could run it has failed it: waiting would be forever (the
           exclusions stand), so it fails, saying so; unless a node that could run it went
           offline a moment ago (a missed heartbeat): it waits for that one a grace period
           (s_awaited). Nodes that come later do not count: an empty fleet is not a verdict. */
        if (s_nowhere_to_go (self, job) && !s_awaited (self, job)) {
            char error[600];
            snprintf (error, sizeof error,
                      "failed on every node that can run it (%d attempt%s); last on %s: %s",
                      job->attempts, job->attempts == 1 ? "" : "s",
                      gq_broker_node_name (self, node), reason);
            gq_results_job_end (self, job, GQ_JOB_FAILED, NULL, error, node, now_ms);
            return;
        }
    }
    job->state = GQ_JOB_QUEUED;
    gq_queue_push (self->queue, job);
    self->counts[GQ_JOB_QUEUED]++;
    gq_watch_state (self, job);
}

void
gq_results_attempt_recalled (gq_broker_t *self, gq_job_t *job, int64_t now_ms)
{
    if (job->run_recorded) {
        /* Its run is on record already (it waited past GQ_RUN_RECORD_AFTER_MS): the record
           ends, its number stays taken, and it does not count against max_attempts. */
        gq_results_attempt_end (self, job, "cancelled", "recalled before it started", now_ms);
        job->recalls += job->recalls < 15;
    } else {
        gq_link_t *worker = self->workers[job->node];
        gq_workers_running_unlink (worker, job);
        gq_matcher_release (self->matcher, job->node, job, now_ms);
        gq_broker_count_running (self, job, -1);
        job->attempts--;
        job->started_ms = 0;
    }
    job->node = -1;
    job->state = GQ_JOB_QUEUED;
    gq_queue_push (self->queue, job);
    self->counts[GQ_JOB_QUEUED]++;
    gq_watch_state (self, job);
    self->recalled++;
}

/* Updates a node's reliability and backoff after a job outcome on it. */
static void
s_node_outcome (gq_broker_t *self, gq_link_t *worker, bool ok, int64_t now_ms)
{
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    node->reliability = (float) ((1 - GQ_RELIABILITY_EWMA_WEIGHT) * node->reliability +
                                (ok ? GQ_RELIABILITY_EWMA_WEIGHT : 0));
    if (ok) {
        node->jobs_ok++;
        worker->failures_in_row = 0;
        node->backoff_until_ms = 0;
    } else {
        node->jobs_failed++;
        worker->failures_in_row++;
        if (worker->failures_in_row >= GQ_BACKOFF_AFTER_FAILURES) {
            int doublings = worker->failures_in_row - GQ_BACKOFF_AFTER_FAILURES;
            double backoff = self->opts.backoff_base_ms * pow (2, doublings < 20 ? doublings : 20);
            if (backoff > GQ_BACKOFF_MAX_MS) {
                backoff = GQ_BACKOFF_MAX_MS;
            }
            node->backoff_until_ms = now_ms + (int64_t) backoff;
            zsys_warning ("broker: node %s failed %d jobs in a row; backed off for %.0f ms",
                          node->name, worker->failures_in_row, backoff);
        }
    }
    gq_matcher_node_changed (self->matcher, worker->node);
}

/* A client cancels job (not ended). */
static void
s_cancel_one (gq_broker_t *self, gq_job_t *job, int64_t now_ms)
{
    int32_t node = job->node;
    if (job->state == GQ_JOB_RUNNING) {
        /* The slot is free on the broker at once; the worker kills the job. */
        gq_workers_send (self, self->workers[node], "CANCEL",
                         json_pack ("{s:[I]}", "ids", (json_int_t) job->id));
        gq_results_attempt_end (self, job, "cancelled", "cancelled by a client", now_ms);
    }
    gq_results_job_end (self, job, GQ_JOB_CANCELLED, NULL, "cancelled by a client", node,
                        now_ms);
}

void
gq_results_cancel (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    int64_t *ids;
    size_t count;
    if (!gq_broker_request_ids (self, request, &ids, &count)) {
        return;
    }
    json_t *jobs = json_array ();
    json_t *missing = json_array ();
    int64_t now_ms = gq_now_ms ();
    for (size_t i = 0; i < count; i++) {
        gq_job_t *job = gq_broker_job_find (self, ids[i]);
        gq_array_t *array = job ? NULL : gq_arrays_find (self, ids[i]);
        if (array) {
            /* Every element not ended yet; held ones first (in reverse), so that no element is
               admitted by the end of another only to be cancelled next. */
            int64_t cancelled = 0;
            for (int pass = 0; pass < 2; pass++) {
                for (int64_t id = array->first + array->count - 1; id >= array->first; id--) {
                    gq_job_t *element = gq_broker_job_lookup (self, id);
                    if (element && !element->end &&
                        (pass == 1 || element->state == GQ_JOB_WAITING)) {
                        s_cancel_one (self, element, now_ms);
                        cancelled++;
                    }
                }
            }
            json_array_append_new (jobs, json_pack ("{s:I, s:s, s:I}", "id", (json_int_t) ids[i],
                                                    "state",
                                                    gq_job_state_name (gq_arrays_state (array)),
                                                    "cancelled", (json_int_t) cancelled));
            continue;
        }
        if (job && !job->end) {
            s_cancel_one (self, job, now_ms);
            json_array_append_new (
                jobs, json_pack ("{s:I, s:s}", "id", (json_int_t) ids[i], "state", "cancelled"));
            continue;
        }
        if (job) {
            /* Ended: its end is not committed yet, and this reply says it is (below). */
            json_array_append_new (jobs, json_pack ("{s:I, s:s}", "id", (json_int_t) ids[i],
                                                    "state", gq_job_state_name (job->state)));
            continue;
        }
        json_t *stored = gq_broker_id_issued (self, ids[i])
                             ? gq_store_job_brief_json (self->store, ids[i], false)
                             : NULL;
        if (stored) {
            json_array_append_new (jobs, json_pack ("{s:I, s:O}", "id", (json_int_t) ids[i],
                                                    "state", json_object_get (stored, "state")));
            json_decref (stored);
        } else {
            json_array_append_new (missing, json_integer (ids[i]));
        }
    }
    free (ids);
    gq_broker_charge_unknown (self, request, json_array_size (missing));
    /* The reply promises ends: it goes out when the next batch has committed them. */
    self->turn_wrote = true;
    gq_broker_reply_jobs (self, request, "CANCEL", jobs, missing);
}

/* One RESULT entry, read from the scanned text (gq_result.h) or from the parsed tree. */
typedef struct {
    bool has_id;        /* false: "id" is not an integer (the entry is refused) */
    int64_t id;
    bool ok;
    const char *error;  /* of a failed run, or NULL */
    double ms;          /* the run's length; < 0 when not given */
    int64_t attempt;    /* 0 when not given */
    bool has_at;        /* "at" is an integer */
    int64_t at;
    json_t *result;     /* parsed: the result (borrowed), or NULL */
    const char *text;   /* scanned: the result's JSON text (text_size bytes), or NULL */
    size_t text_size;
} s_entry_t;

/* The entry's result as text the job's end takes (malloc'd), or NULL when it has none. */
static char *
s_entry_result (const s_entry_t *e)
{
    if (e->text) {
        char *text = (char *) malloc (e->text_size + 1);
        if (text) {
            memcpy (text, e->text, e->text_size);
            text[e->text_size] = 0;
        }
        return text;
    }
    return e->result ? json_dumps (e->result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

/* The node an attempt is recorded on: the worker's, or, for a connection we do not know (we
   restarted and it has not registered yet), the node it names in "node"; -1 for none. */
static int32_t
s_reporting_node (gq_broker_t *self, gq_msg_t *request, gq_link_t *worker, const char *name,
                  bool reports)
{
    if (worker) {
        return worker->node;
    }
    int32_t named =
        name && gq_valid_name (name, GQ_NAME_MAX) ? gq_matcher_node_find (self->matcher, name) : -1;
    gq_link_t *known =
        named >= 0 && (size_t) named < self->workers_size ? self->workers[named] : NULL;
    if (known && known->spec) {
        /* Only the key that registered that name may report for it. */
        return streq (known->owner_key, gq_msg_user_id (request)) ? named : -1;
    }
    if (name && gq_valid_name (name, GQ_NAME_MAX) && reports &&
        (named >= 0 || gq_matcher_nodes (self->matcher) < GQ_MAX_NODES)) {
        /* A name we have not seen since we restarted: remember it, offline until it registers,
           so the attempt it reports is recorded there. */
        return gq_matcher_node_find_or_add (self->matcher, name);
    }
    return -1;
}

static void
s_entry (gq_broker_t *self, gq_link_t *worker, int32_t from, const s_entry_t *e, int64_t now_ms)
{
    if (!e->has_id) {
        self->rejected++;
        return;
    }
    gq_job_t *job = gq_broker_job_lookup (self, e->id);
    if (!job) {
        return; /* ended already (cancelled, or a result recorded first): ignore */
    }
    /* Ours: the attempt we placed there. Otherwise a run we lost track of (we restarted, or
       requeued it when the node fell silent) that finished all the same. */
    bool mine = worker && job->state == GQ_JOB_RUNNING && job->node == from;
    if (mine) {
        if (!e->ok) {
            /* The worker enforces the time limit too, and often first: that is the attempt's
               timeout, not a failure of the node. */
            bool timed_out = job->timeout_ms && gq_mono_us () / 1000 - job->started_mono_ms >=
                                                    (int64_t) job->timeout_ms;
            if (!timed_out) {
                s_node_outcome (self, worker, false, now_ms);
            }
            gq_results_attempt_failed (self, job, timed_out ? "timeout" : "failed",
                                       e->error ? e->error : "the job failed", true, now_ms);
            return;
        }
        gq_workers_ran (self, worker, job->kind_id, e->ms);
        gq_results_attempt_end (self, job, "ok", NULL, now_ms);
        s_node_outcome (self, worker, true, now_ms);
    } else if (!e->ok) {
        return; /* a failure of an attempt that was requeued anyway */
    } else if (job->state == GQ_JOB_RUNNING) {
        /* Requeued (node lost, broker restart) and running elsewhere now, but its first run
           finished: the first result wins, the other run is stopped. */
        gq_workers_send (self, self->workers[job->node], "CANCEL",
                         json_pack ("{s:[I]}", "ids", (json_int_t) job->id));
        gq_results_attempt_end (self, job, "cancelled", "another node finished it first", now_ms);
    }
    if (!mine && from >= 0) {
        /* Its run is recorded under its own number: a run recorded lost on that node is that
           run, which finished after all (one row, now ok); a number another node's run holds
           makes it an attempt after the last (gq_store_attempt_record). */
        int number = e->attempt >= 1 && e->attempt < 255 ? (int) e->attempt : job->attempts + 1;
        job->attempts = (uint8_t) (number > job->attempts ? number : job->attempts);
        /* A run that ended a while ago (sent again after we restarted) is recorded at its own
           time, as the worker's clock gives it ("at"), when that is plausible. */
        int64_t ended_ms =
            e->has_at && e->at <= now_ms && e->at > now_ms - GQ_LATE_RESULT_MAX_MS ? e->at : now_ms;
        job->started_ms = ended_ms - (int64_t) (e->ms > 0 ? e->ms : 0);
        gq_commit_recorded (self, gq_batch_attempt (self->pending->batch, job->id, number,
                                                    gq_broker_node_name (self, from),
                                                    job->started_ms, ended_ms, "ok", NULL, true));
        gq_link_t *named = gq_workers_link (self, from);
        if (named) {
            s_node_outcome (self, named, true, now_ms);
        }
    }
    gq_results_job_end (self, job, GQ_JOB_DONE, s_entry_result (e), NULL, from, now_ms);
}

/* A RESULT of the usual shape, taken apart without a tree; false when it has another. */
static bool
s_recv_scanned (gq_broker_t *self, gq_msg_t *request, gq_link_t *worker, int64_t now_ms)
{
    size_t size;
    const char *text = gq_msg_text (request, &size);
    gq_result_entry_t scanned[GQ_RESULT_SCAN_ENTRIES];
    char name[GQ_NAME_MAX];
    size_t count;
    /* R sits three levels down: the body, "results", the entry. */
    if (!text || !gq_result_scan (text, size, GQ_MAX_JSON_DEPTH - 3, name, sizeof name, scanned,
                                  GQ_RESULT_SCAN_ENTRIES, &count)) {
        return false;
    }
    int32_t from = s_reporting_node (self, request, worker, name, count > 0);
    for (size_t i = 0; i < count; i++) {
        s_entry_t e = {.has_id = true, .id = scanned[i].id, .ok = true, .ms = scanned[i].ms,
                       .attempt = scanned[i].attempt, .has_at = true, .at = scanned[i].at,
                       .text = scanned[i].result, .text_size = scanned[i].result_size};
        s_entry (self, worker, from, &e, now_ms);
    }
    return true;
}

void
gq_results_recv (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *worker)
{
    gq_msg_t *request = *request_p;
    int64_t now_ms = gq_now_ms ();
    if (s_recv_scanned (self, request, worker, now_ms)) {
        return;
    }
    char why[300];
    int rc = gq_msg_parse (request, why, sizeof why);
    if (rc) {
        self->rejected++;
        gq_broker_reply (self, gq_msg_error (request, rc, "%s", why));
        return;
    }
    json_t *body = gq_msg_body (request);
    json_t *results = json_object_get (body, "results");
    if (!json_is_array (results)) {
        gq_broker_reject (self, request, GQ_EINVAL, "\"results\" must be an array");
        return;
    }
    int32_t from = s_reporting_node (self, request, worker,
                                     json_string_value (json_object_get (body, "node")),
                                     json_array_size (results) > 0);
    size_t i;
    json_t *item;
    json_array_foreach (results, i, item)
    {
        json_t *id = json_object_get (item, "id");
        json_t *ms = json_object_get (item, "ms");
        json_t *at = json_object_get (item, "at");
        s_entry_t e = {.has_id = json_is_integer (id),
                       .id = (int64_t) json_integer_value (id),
                       .ok = json_is_true (json_object_get (item, "ok")),
                       .error = json_string_value (json_object_get (item, "error")),
                       .ms = json_is_number (ms) ? json_number_value (ms) : -1,
                       .attempt = (int64_t) json_integer_value (json_object_get (item, "attempt")),
                       .has_at = json_is_integer (at),
                       .at = (int64_t) json_integer_value (at),
                       .result = json_object_get (item, "result")};
        s_entry (self, worker, from, &e, now_ms);
    }
}

void
gq_results_timeouts (gq_broker_t *self, int64_t now_ms)
{
    s_awaiting_check (self, now_ms);
    int64_t now_mono_ms = gq_mono_us () / 1000; /* limits run on the monotonic clock */
    for (size_t w = 0; w < self->workers_size; w++) {
        gq_link_t *worker = self->workers[w];
        gq_job_t *job = worker ? worker->running : NULL;
        while (job) {
            gq_job_t *next = job->qnext;
            if (job->timeout_ms && now_mono_ms - job->started_mono_ms > (int64_t) job->timeout_ms) {
                char reason[100];
                snprintf (reason, sizeof reason, "time limit of %u ms exceeded", job->timeout_ms);
                gq_workers_send (self, worker, "CANCEL",
                                 json_pack ("{s:[I]}", "ids", (json_int_t) job->id));
                gq_results_attempt_failed (self, job, "timeout", reason, true, now_ms);
            }
            job = next;
        }
    }
}
