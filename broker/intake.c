/*  intake.c — jobs coming in: SUBMIT (a whole batch validated first, idempotency keys, the
    per-client rate and cap, the jobs' writes), its acknowledgement once its batch committed or
    its refusal when the batch failed, and the recovery of stored unfinished jobs at start. */
#include "broker_internal.h"

#include <string.h>

/* ---- SUBMIT ---------------------------------------------------------------------------------- */

/* A job as spec says; its payload is payload (taken) when not NULL, else the spec's. */
static gq_job_t *
s_job_from_spec (gq_broker_t *self, const gq_jobspec_t *spec, gq_msg_t *request, char *payload,
                 char *why, size_t whylen)
{
    int kind = gq_matcher_kind_id (self->matcher, spec->kind, true);
    if (kind < 0) {
        snprintf (why, whylen, "too many distinct kinds (at most %d)", GQ_MAX_KINDS);
        return NULL;
    }
    int64_t model = spec->model ? gq_matcher_model_id (self->matcher, spec->model, true) : 0;
    if (model < 0) {
        snprintf (why, whylen, "cannot register model \"%s\"", spec->model);
        return NULL;
    }
    gq_job_t *job = (gq_job_t *) calloc (1, sizeof *job);
    if (!job) {
        free (payload);
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    job->payload = payload                 ? payload
                   : spec->payload ? json_dumps (spec->payload, JSON_COMPACT | JSON_ENCODE_ANY)
                                   : strdup ("{}");
    if (!job->payload) {
        free (job);
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    job->payload_len = (uint32_t) strlen (job->payload);
    job->kind_id = (uint16_t) kind;
    job->model_id = (uint32_t) model;
    job->min_vram_mb = (int32_t) spec->min_vram_mb;
    job->priority = (uint8_t) spec->priority;
    job->timeout_ms = (uint32_t) (spec->timeout_ms > UINT32_MAX ? UINT32_MAX : spec->timeout_ms);
    job->max_attempts = (uint8_t) spec->max_attempts;
    job->node = -1;
    job->state = GQ_JOB_QUEUED;
    if (spec->gpu_pattern || spec->max_price >= 0 || spec->min_tflops > 0) {
        job->constraints = (gq_constraints_t *) calloc (1, sizeof *job->constraints);
        if (!job->constraints) {
            gq_broker_job_free (self, &job);
            snprintf (why, whylen, "out of memory");
            return NULL;
        }
        snprintf (job->constraints->gpu_pattern, GQ_PATTERN_MAX, "%s",
                  spec->gpu_pattern ? spec->gpu_pattern : "");
        job->constraints->max_price = spec->max_price;
        job->constraints->min_tflops = spec->min_tflops;
    }
    if (spec->blob_first >= 0) {
        zlist_t *blobs = zlist_new ();
        for (int i = 0; i < spec->blob_count; i++) {
            zlist_append (blobs, zframe_dup (gq_msg_blob (request, spec->blob_first + i)));
        }
        job->blobs = blobs;
    }
    return job;
}

/* An accepted job joins memory and its submission's watch, then the queue, or waits for its
   dependencies (*wait_p, taken). */
static void
s_job_join (gq_broker_t *self, gq_submit_t *submit, gq_job_t *job, gq_wait_t **wait_p)
{
    zhashx_insert (self->jobs, GQ_ID_KEY (job->id), job);
    self->submitted++;
    if (submit->watch) {
        gq_watch_add (job, submit->watch);
    }
    if (*wait_p) {
        gq_deps_join (self, job, wait_p);
        return;
    }
    gq_arrays_queue (self, job);
}

/* The payload of an array's element: base (the array's payload, an object as compact JSON) with
   "array_index" first. A new string, or NULL when out of memory. */
static char *
s_element_payload (const char *base, int64_t index)
{
    bool empty = streq (base, "{}");
    /* Sized exactly (not zsys_sprintf, which keeps a 256-byte buffer): a million of these stay
       queued. */
    char head[40];
    int n = snprintf (head, sizeof head, "{\"array_index\":%lld%s", (long long) index,
                      empty ? "}" : ",");
    size_t rest = empty ? 0 : strlen (base + 1);
    char *text = (char *) malloc ((size_t) n + rest + 1);
    if (text) {
        memcpy (text, head, (size_t) n);
        memcpy (text + n, base + 1, rest);
        text[(size_t) n + rest] = 0;
    }
    return text;
}

/* The batch, recorded or not yet committed, that inserts job id (NULL if none does). */
static gq_pending_t *
s_idem_owner (gq_broker_t *self, int64_t id)
{
    gq_pending_t *candidates[] = {self->pending, self->retry};
    for (size_t c = 0; c < 2; c++) {
        if (candidates[c] && id >= candidates[c]->id_first && id <= candidates[c]->id_last) {
            return candidates[c];
        }
    }
    for (gq_pending_t *p = (gq_pending_t *) zlist_first (self->inflight); p;
         p = (gq_pending_t *) zlist_next (self->inflight)) {
        if (id >= p->id_first && id <= p->id_last) {
            return p;
        }
    }
    return NULL;
}

/* A pipeline's names in a SUBMIT: each name an entry gives is new, and each name it depends on
   was given by an entry before it (so no cycle can form). *names is made on first use. 0 or
   GQ_EINVAL with why. */
static int
s_names_check (zhashx_t **names, const gq_jobspec_t *spec, size_t index, char *why,
               size_t whylen)
{
    if (!*names && !(*names = zhashx_new ())) {
        snprintf (why, whylen, "out of memory");
        return GQ_ENOMEM;
    }
    for (int k = 0; k < GQ_DEP_KINDS; k++) {
        size_t i;
        json_t *item;
        json_array_foreach (spec->after[k], i, item) {
            if (json_is_string (item) && !zhashx_lookup (*names, json_string_value (item))) {
                snprintf (why, whylen, "\"%s\": no job named \"%s\" before this one in the "
                          "request (a job may depend only on jobs given before it)",
                          gq_dep_fields[k], json_string_value (item));
                return GQ_EINVAL;
            }
        }
    }
    if (spec->name && zhashx_lookup (*names, spec->name)) {
        snprintf (why, whylen, "name \"%s\" is given twice (jobs[%zu] has it already)",
                  spec->name, (size_t) (intptr_t) zhashx_lookup (*names, spec->name) - 1);
        return GQ_EINVAL;
    }
    if (spec->name && zhashx_insert (*names, spec->name, (void *) (intptr_t) (index + 1))) {
        snprintf (why, whylen, "out of memory");
        return GQ_ENOMEM;
    }
    return GQ_OK;
}

/* The elements of an array entry: the array takes the next id, its elements the ones after, in
   index order, each with its index in its payload; they go to submit->jobs from job `at`, their
   spec to job_spec from the same place (both indexed from the submission's first job). 0 or
   GQ_ENOMEM. */
static int
s_array_jobs (gq_broker_t *self, gq_submit_t *submit, const gq_jobspec_t *spec,
              const gq_jobspec_t **job_spec, size_t at, uint32_t owner, int64_t now_ms,
              zhashx_t *names, char *why, size_t whylen)
{
    gq_arrayspec_t aspec;
    if (gq_arrayspec_parse (spec->array, &aspec, why, whylen)) {
        return GQ_EINVAL; /* validated already */
    }
    char *base =
        spec->payload ? json_dumps (spec->payload, JSON_COMPACT) : strdup ("{}");
    int64_t id = self->next_id++;
    gq_array_t *array = base ? gq_arrays_new (self, id, spec->array, &aspec, now_ms) : NULL;
    if (!array || gq_arrays_describe (array, spec->kind, spec->model, spec->priority)) {
        free (base);
        return GQ_ENOMEM;
    }
    submit->arrays[submit->n_arrays++] = id;
    int rc = GQ_OK;
    for (int64_t k = 0; k < aspec.count && rc == GQ_OK; k++) {
        size_t i = at + (size_t) k;
        job_spec[i] = spec;
        char *payload = s_element_payload (base, gq_arrayspec_index (&aspec, k));
        gq_job_t *job = payload ? s_job_from_spec (self, spec, NULL, payload, why, whylen) : NULL;
        if (!job) {
            rc = GQ_ENOMEM;
            break;
        }
        job->id = self->next_id++;
        job->in_array = 1;
        job->submitted_ms = now_ms;
        job->owner = owner;
        submit->jobs[i] = job;
        submit->ids[i] = job->id;
        if (spec->n_after && !(submit->waits[i] = gq_deps_wait_new (spec, names))) {
            rc = GQ_ENOMEM;
        }
    }
    free (base);
    return rc;
}

void
gq_intake_submit (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    json_t *body = gq_msg_body (request);
    json_t *jobs = json_object_get (body, "jobs");
    char why[300];
    bool submit_watch;
    if (!json_is_array (jobs) || json_array_size (jobs) == 0 ||
        json_array_size (jobs) > GQ_MAX_BATCH_JOBS) {
        gq_broker_reject (self, request, GQ_EINVAL, "\"jobs\" must be an array of 1..10000 jobs");
        return;
    }
    bool brief, partials, states;
    if (gq_json_bool (body, "watch", false, &submit_watch, why, sizeof why) ||
        gq_json_bool (body, "brief", false, &brief, why, sizeof why) ||
        gq_json_bool (body, "partials", true, &partials, why, sizeof why) ||
        gq_json_bool (body, "states", false, &states, why, sizeof why)) {
        gq_broker_reject (self, request, GQ_EINVAL, why);
        return;
    }
    size_t n_entries = json_array_size (jobs);
    size_t count = 0; /* jobs: an array's elements count one each */
    /* Validate the whole batch first: a batch is all or nothing. The specs borrow from the
       request's JSON, which lives until the batch is settled. */
    gq_jobspec_t *specs = (gq_jobspec_t *) malloc (n_entries * sizeof *specs);
    if (!specs) {
        gq_broker_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    /* Kinds are interned for good: count the batch's new ones before interning any, so that a
       refused batch uses up nothing and one client cannot fill the table. */
    const char *new_kinds[GQ_MAX_KINDS];
    size_t n_new_kinds = 0;
    size_t new_models = 0; /* unknown model names in the batch (repeats counted: a bound) */
    zhashx_t *names = NULL; /* a pipeline's names: name -> entry index + 1, then its id */
    for (size_t i = 0; i < n_entries; i++) {
        int rc = gq_jobspec_parse (json_array_get (jobs, i), &specs[i], why, sizeof why);
        count += specs[i].array ? (size_t) specs[i].array_count : 1;
        if (rc == GQ_OK && count > GQ_MAX_ARRAY_ELEMENTS) {
            snprintf (why, sizeof why, "one SUBMIT makes %d jobs at most (array elements count "
                      "one each)", GQ_MAX_ARRAY_ELEMENTS);
            rc = GQ_EINVAL;
        }
        if (rc == GQ_OK && specs[i].blob_first >= 0 &&
            (size_t) (specs[i].blob_first + specs[i].blob_count) > gq_msg_blobs (request)) {
            snprintf (why, sizeof why, "\"blobs\" names frames the message does not have");
            rc = GQ_EINVAL;
        }
        if (rc == GQ_OK && gq_matcher_kind_id (self->matcher, specs[i].kind, false) < 0) {
            bool seen = false;
            for (size_t k = 0; k < n_new_kinds && !seen; k++) {
                seen = streq (new_kinds[k], specs[i].kind);
            }
            if (!seen && gq_matcher_kinds (self->matcher) + n_new_kinds >= GQ_MAX_KINDS) {
                snprintf (why, sizeof why, "kind \"%s\": this broker knows %d kinds already",
                          specs[i].kind, GQ_MAX_KINDS);
                rc = GQ_EINVAL;
            } else if (!seen) {
                new_kinds[n_new_kinds++] = specs[i].kind;
            }
        }
        if (rc == GQ_OK && specs[i].model &&
            gq_matcher_model_id (self->matcher, specs[i].model, false) < 0 &&
            gq_matcher_model_names (self->matcher) + ++new_models > GQ_MAX_MODEL_NAMES) {
            snprintf (why, sizeof why, "model \"%s\": this broker knows %d model names already",
                      specs[i].model, GQ_MAX_MODEL_NAMES);
            rc = GQ_EINVAL;
        }
        if (rc == GQ_OK && specs[i].n_after) {
            rc = gq_deps_check (self, &specs[i], why, sizeof why);
        }
        if (rc == GQ_OK && (specs[i].name || specs[i].n_named)) {
            rc = s_names_check (&names, &specs[i], i, why, sizeof why);
        }
        if (rc) {
            self->rejected++;
            gq_msg_t *reply = gq_msg_error (request, rc, "jobs[%zu]: %s", i, why);
            json_object_set_new (gq_msg_body (reply), "index", json_integer ((json_int_t) i));
            gq_broker_reply (self, reply);
            free (specs);
            zhashx_destroy (&names);
            return;
        }
    }
    /* A key that a submission not yet committed holds: this one waits for that outcome, and is
       handled anew when it is known (then the key is stored, or free again). */
    for (size_t i = 0; i < n_entries; i++) {
        void *hit = specs[i].idem ? zhashx_lookup (self->idem_pending, specs[i].idem) : NULL;
        gq_pending_t *owner = hit ? s_idem_owner (self, (int64_t) (intptr_t) hit) : NULL;
        if (owner && zlist_append (owner->held, request) == 0) {
            *request_p = NULL;
            free (specs);
            zhashx_destroy (&names);
            return;
        }
    }
    if (self->store_down_ms) {
        /* Nothing can be committed: refused now rather than after a batch that fails. */
        free (specs);
        zhashx_destroy (&names);
        self->rejected++;
        gq_broker_reply (self, gq_msg_error (request, GQ_ESTORE,
                                             "the broker cannot write its store (%s); nothing "
                                             "was accepted, retry later",
                                             self->store_error));
        return;
    }
    int64_t retry_after_ms = 0;
    if (gq_guard_take (self->guard, request, n_entries, gq_mono_us (), &retry_after_ms)) {
        free (specs);
        zhashx_destroy (&names);
        self->rejected++;
        gq_msg_t *reply = gq_msg_error (request, GQ_ERATE, "too many submissions; retry in %lld ms",
                                        (long long) retry_after_ms);
        json_object_set_new (gq_msg_body (reply), "retry_after_ms",
                             json_integer ((json_int_t) retry_after_ms));
        gq_broker_reply (self, reply);
        return;
    }
    uint32_t owner = gq_guard_owner (self->guard, gq_msg_user_id (request));
    int capped = gq_guard_queued (self->guard, owner, (int64_t) count, true, why, sizeof why);
    if (capped) {
        free (specs);
        zhashx_destroy (&names);
        self->rejected++;
        gq_msg_t *reply = gq_msg_error (request, capped, "%s", why);
        if (capped == GQ_ERATE) {
            json_object_set_new (gq_msg_body (reply), "retry_after_ms", json_integer (1000));
        }
        gq_broker_reply (self, reply);
        return;
    }
    gq_submit_t *submit = (gq_submit_t *) calloc (1, sizeof *submit);
    if (submit) {
        submit->owner = owner;
        submit->jobs = (gq_job_t **) calloc (count, sizeof *submit->jobs);
        submit->ids = (int64_t *) calloc (count, sizeof *submit->ids);
        submit->waits = (gq_wait_t **) calloc (count, sizeof *submit->waits);
        submit->entry_ids = (int64_t *) calloc (n_entries, sizeof *submit->entry_ids);
        submit->arrays = (int64_t *) calloc (n_entries, sizeof *submit->arrays);
    }
    /* The spec of each job (an array's elements share theirs). */
    const gq_jobspec_t **job_spec = (const gq_jobspec_t **) malloc (count * sizeof *job_spec);
    if (!submit || !submit->jobs || !submit->ids || !submit->waits || !submit->entry_ids ||
        !submit->arrays || !job_spec) {
        if (submit) {
            free (submit->jobs);
            free (submit->ids);
            free (submit->waits);
            free (submit->entry_ids);
            free (submit->arrays);
            free (submit);
        }
        free (job_spec);
        free (specs);
        zhashx_destroy (&names);
        gq_guard_queued (self->guard, owner, -(int64_t) count, false, why, sizeof why);
        gq_broker_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    submit->count = count;
    submit->n_entries = n_entries;
    submit->request = request;
    *request_p = NULL;
    int64_t now_ms = gq_now_ms ();
    /* Every job first (only allocation or an idem lookup can fail now: the batch was
       validated), so that a failure leaves nothing behind. An idem key names a job of this same
       submission (idem_pending: the repeat gets its id) or a stored one. */
    int rc = GQ_OK;
    size_t repeats = 0;
    size_t i = 0; /* the job */
    for (size_t e = 0; e < n_entries && rc == GQ_OK; e++) {
        gq_jobspec_t *spec = &specs[e];
        if (spec->array) {
            rc = s_array_jobs (self, submit, spec, job_spec, i, owner, now_ms, names, why,
                               sizeof why);
            submit->entry_ids[e] = submit->n_arrays ? submit->arrays[submit->n_arrays - 1] : 0;
            if (spec->name) {
                zhashx_update (names, spec->name, (void *) (intptr_t) submit->entry_ids[e]);
            }
            i += (size_t) spec->array_count;
            continue;
        }
        job_spec[i] = spec;
        if (spec->idem) {
            void *hit = zhashx_lookup (self->idem_pending, spec->idem);
            int64_t existing = (int64_t) (intptr_t) hit;
            int found = hit ? 1 : gq_store_job_by_idem (self->store, spec->idem, &existing);
            if (found < 0) {
                rc = GQ_ESTORE;
                break;
            }
            if (found) { /* idempotent repeat: the first job's id, nothing new */
                submit->ids[i] = submit->entry_ids[e] = existing;
                if (spec->name) {
                    zhashx_update (names, spec->name, (void *) (intptr_t) existing);
                }
                repeats++;
                i++;
                continue;
            }
        }
        gq_job_t *job = s_job_from_spec (self, spec, request, NULL, why, sizeof why);
        if (!job) {
            rc = GQ_ENOMEM;
            break;
        }
        job->id = self->next_id++;
        job->submitted_ms = now_ms;
        job->owner = owner;
        submit->jobs[i] = job;
        submit->ids[i] = submit->entry_ids[e] = job->id;
        if (spec->name) {
            zhashx_update (names, spec->name, (void *) (intptr_t) job->id);
        }
        if (spec->n_after && !(submit->waits[i] = gq_deps_wait_new (spec, names))) {
            rc = GQ_ENOMEM;
            break;
        }
        char *affinity = spec->affinity ? strdup (spec->affinity) : NULL;
        if (spec->affinity &&
            (!affinity || zhashx_insert (self->affinity_of, GQ_ID_KEY (job->id), affinity))) {
            free (affinity);
            rc = GQ_ENOMEM;
            break;
        }
        if (spec->idem && (!(job->idem = strdup (spec->idem)) ||
                           zhashx_insert (self->idem_pending, spec->idem,
                                          (void *) (intptr_t) job->id))) {
            rc = GQ_ENOMEM;
        }
        i++;
    }
    if (rc == GQ_OK && submit_watch) {
        submit->watch = gq_watch_new (submit->request);
        if (submit->watch) {
            submit->watch->held = true;
            submit->watch->refs = 1; /* the submission's, until it is acknowledged */
        } else {
            rc = GQ_ENOMEM;
        }
    }
    if (rc) {
        for (size_t i = 0; i < count; i++) {
            if (submit->jobs[i] && job_spec[i]->idem) {
                zhashx_delete (self->idem_pending, job_spec[i]->idem);
            }
        }
        free (job_spec);
        for (size_t a = 0; a < submit->n_arrays; a++) {
            gq_arrays_forget (self, submit->arrays[a]);
        }
        gq_guard_queued (self->guard, owner, -(int64_t) count, false, why, sizeof why);
        self->rejected++;
        gq_msg_t *reply =
            rc == GQ_ESTORE ? gq_msg_error (submit->request, GQ_ESTORE,
                                            "the broker could not read its store (%s); nothing was "
                                            "accepted, retry later",
                                            gq_store_errmsg (self->store))
                            : gq_msg_error (submit->request, GQ_ENOMEM, "out of memory");
        gq_broker_reply (self, reply);
        gq_intake_submit_free (self, &submit);
        free (specs);
        zhashx_destroy (&names);
        return;
    }
    if (repeats) {
        gq_guard_queued (self->guard, owner, -(int64_t) repeats, false, why, sizeof why);
    }
    /* A client watching an idem repeat hears of that job too: now if it ended already. */
    for (size_t i = 0; i < count && submit->watch && repeats; i++) {
        if (submit->jobs[i]) {
            continue;
        }
        gq_watch_job (self, submit->watch, submit->ids[i]);
    }
    /* The writes; jobs whose ids are covered join memory and the queue now (they may be
       placed at the end of this turn, before their batch commits). */
    gq_pending_t *pending = self->pending;
    submit->covered = self->next_id <= self->id_committed;
    gq_commit_reserve_ids (self);
    submit->group = gq_batch_group_begin (pending->batch);
    gq_commit_recorded (self, submit->group < 0 ? submit->group : GQ_OK);
    for (size_t i = 0; i < count; i++) {
        gq_job_t *job = submit->jobs[i];
        if (!job) {
            continue;
        }
        gq_array_t *array = job->in_array ? gq_arrays_find (self, job->id - 1) : NULL;
        if (!pending->id_first) {
            pending->id_first = array ? array->id : job->id;
        }
        pending->id_last = job->id;
        if (array) { /* its first element: the array's row comes first */
            gq_commit_recorded (self, gq_batch_array_insert (pending->batch, array->id,
                                                             array->first, array->count,
                                                             array->text, array->submitted_ms));
        }
        gq_commit_recorded (
            self, gq_batch_job_insert (
                      pending->batch, job, gq_matcher_kind_name (self->matcher, job->kind_id),
                      gq_broker_model_name (self, job), job_spec[i]->idem,
                      gq_msg_user_id (request)));
        gq_wait_t *wait = submit->waits[i];
        uint32_t e = 0; /* the edges are the after arrays' items, in order */
        for (int k = 0; wait && k < GQ_DEP_KINDS; k++) {
            size_t n;
            json_t *item;
            json_array_foreach (job_spec[i]->after[k], n, item) {
                gq_commit_recorded (self, gq_batch_dep_insert (pending->batch, job->id,
                                                               wait->edges[e].parent,
                                                               wait->edges[e].kind,
                                                               json_string_value (item),
                                                               wait->inputs));
                e++;
            }
        }
        zlist_t *blobs = (zlist_t *) job->blobs;
        int idx = 0;
        for (zframe_t *frame = blobs ? (zframe_t *) zlist_first (blobs) : NULL; frame;
             frame = (zframe_t *) zlist_next (blobs), idx++) {
            gq_commit_recorded (self,
                                gq_batch_blob_insert (pending->batch, job->id, idx,
                                                      zframe_data (frame), zframe_size (frame)));
        }
        if (job_spec[i]->idem && zlist_append (pending->idems, (void *) job_spec[i]->idem)) {
            /* Out of memory: not kept as pending (the unique index still guards the key). */
            zhashx_delete (self->idem_pending, job_spec[i]->idem);
        }
        if (submit->covered) {
            s_job_join (self, submit, job, &submit->waits[i]);
        }
    }
    free (job_spec);
    free (specs);
    zhashx_destroy (&names);
    zlist_append (pending->submits, submit);
    gq_commit_recorded (self, gq_batch_group_end (pending->batch));
}

/* ---- Acknowledgement, or refusal when the batch failed ------------------------------------- */

void
gq_intake_submit_free (gq_broker_t *self, gq_submit_t **submit_p)
{
    gq_submit_t *submit = *submit_p;
    if (!submit) {
        return;
    }
    for (size_t i = 0; i < submit->count && !submit->covered; i++) {
        gq_broker_job_free (self, &submit->jobs[i]);
    }
    for (size_t i = 0; i < submit->count && submit->waits; i++) {
        free (submit->waits[i]);
    }
    free (submit->waits);
    free (submit->entry_ids);
    free (submit->arrays);
    if (submit->watch) {
        submit->watch->dead = true;
        gq_watch_drop_pending (submit->watch);
        gq_watch_release (self, submit->watch);
    }
    free (submit->jobs);
    free (submit->ids);
    gq_msg_destroy (&submit->request);
    free (submit);
    *submit_p = NULL;
}

/* A job of a submission whose batch failed: it leaves the queue, or its node (which is told to
   stop it), and memory (gq_commit_back drops its writes from the pending batch). One that ended
   already stops counting; its burial frees it. */
static void
s_withdraw (gq_broker_t *self, gq_job_t *job, int64_t now_ms)
{
    if (gq_job_state_final (job->state)) {
        self->counts[job->state]--; /* it never was: it does not count */
        self->finished[job->state]--;
        return;
    }
    if (job->state == GQ_JOB_QUEUED) {
        gq_queue_remove (self->queue, job);
        self->counts[GQ_JOB_QUEUED]--;
    } else if (job->state == GQ_JOB_WAITING) {
        gq_deps_forget (self, job); /* the index forgets it when its parents end */
    } else {
        gq_link_t *worker = self->workers[job->node];
        gq_workers_send (self, worker, "CANCEL", json_pack ("{s:[I]}", "ids", (json_int_t) job->id));
        gq_workers_running_unlink (worker, job);
        gq_matcher_release (self->matcher, job->node, job, now_ms);
        gq_broker_count_running (self, job, -1);
    }
    if (job->owner) {
        char why[100];
        gq_guard_queued (self->guard, job->owner, -1, false, why, sizeof why);
    }
    zhashx_delete (self->jobs, GQ_ID_KEY (job->id));
    gq_broker_job_free (self, &job);
}

void
gq_intake_id_range (const gq_submit_t *submit, int64_t *first, int64_t *last)
{
    *first = *last = 0;
    for (size_t i = 0; i < submit->count; i++) {
        if (submit->jobs[i]) {
            *first = *first ? *first : submit->ids[i];
            *last = submit->ids[i];
        }
    }
    if (submit->n_arrays && (!*first || submit->arrays[0] < *first)) {
        *first = submit->arrays[0]; /* an array's id comes before its elements' */
    }
}

/* A SUBMIT's batch is back: acknowledged (its jobs join memory if they had to wait, its watch
   starts talking), or refused with the store's reason and its jobs withdrawn. */
void
gq_intake_settle (gq_broker_t *self, gq_submit_t *submit, bool committed, const char *errmsg)
{
    int64_t now_ms = gq_now_ms ();
    if (!committed) {
        self->rejected++;
        zsys_warning ("broker: refusing a submission of %zu jobs: the store failed", submit->count);
        gq_msg_t *reply = gq_msg_error (submit->request, GQ_ESTORE,
                                        "the broker could not store the jobs (%s); nothing "
                                        "was accepted, retry later",
                                        errmsg);
        gq_msg_send (&reply, self->router);
        for (size_t i = 0; i < submit->count; i++) {
            gq_job_t *job = submit->jobs[i];
            if (job && submit->covered) {
                submit->jobs[i] = NULL;
                s_withdraw (self, job, now_ms);
            } else if (job && job->owner) {
                char why[100];
                gq_guard_queued (self->guard, job->owner, -1, false, why, sizeof why);
            }
        }
        for (size_t a = 0; a < submit->n_arrays; a++) {
            gq_arrays_forget (self, submit->arrays[a]);
        }
        gq_intake_submit_free (self, &submit);
        return;
    }
    zchunk_t *text = zchunk_new (NULL, 32 + 12 * submit->n_entries);
    gq_chunk_printf (text, "{\"req\":%lld,\"ids\":[", (long long) gq_msg_req (submit->request));
    for (size_t e = 0; e < submit->n_entries; e++) {
        if (e) {
            zchunk_extend (text, ",", 1);
        }
        gq_chunk_int (text, submit->entry_ids[e]);
    }
    for (size_t i = 0; i < submit->count && !submit->covered; i++) {
        if (submit->jobs[i]) {
            s_job_join (self, submit, submit->jobs[i], &submit->waits[i]);
            submit->jobs[i] = NULL;
        }
    }
    gq_chunk_raw (text, "]}");
    gq_msg_t *reply = gq_msg_new_raw (GQ_ROLE_CLIENT, "SUBMIT", (const char *) zchunk_data (text),
                                      zchunk_size (text));
    zchunk_destroy (&text);
    gq_msg_set_routing_id (reply, gq_msg_routing_id (submit->request));
    gq_msg_send (&reply, self->router);
    gq_watch_t *watch = submit->watch;
    if (watch) {
        submit->watch = NULL;
        watch->held = false;
        watch->refs--; /* the submission's own reference */
        gq_watch_flush (self, watch);
    }
    submit->covered = true; /* nothing left to free but the submission */
    gq_intake_submit_free (self, &submit);
}

/* ---- Recovery ------------------------------------------------------------------------------ */

int
gq_intake_recover (void *arg, const gq_job_row_t *row, const char *const *excluded,
                   size_t n_excluded)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    gq_jobspec_t spec = {0};
    spec.kind = row->kind;
    spec.model = row->model && *row->model ? row->model : NULL;
    spec.min_vram_mb = row->min_vram_mb;
    spec.priority = row->priority;
    spec.gpu_pattern = row->gpu_pattern && *row->gpu_pattern ? row->gpu_pattern : NULL;
    spec.max_price = row->max_price;
    spec.min_tflops = row->min_tflops;
    spec.timeout_ms = row->timeout_ms;
    spec.max_attempts = row->max_attempts;
    spec.blob_first = -1;
    char why[200];
    gq_job_t *job = s_job_from_spec (self, &spec, NULL, NULL, why, sizeof why);
    if (!job) {
        zsys_error ("broker: recovery of job %lld: %s", (long long) row->id, why);
        return GQ_ENOMEM;
    }
    free (job->payload);
    job->payload = strdup (row->payload ? row->payload : "{}");
    if (!job->payload) {
        gq_broker_job_free (self, &job);
        return GQ_ENOMEM;
    }
    job->payload_len = (uint32_t) strlen (job->payload);
    job->id = row->id;
    job->in_array = 1;
    job->in_array = gq_arrays_of (self, job) != NULL;
    job->submitted_ms = row->submitted_ms;
    job->owner = gq_guard_owner (self->guard, row->client);
    if (job->owner) {
        gq_guard_queued (self->guard, job->owner, 1, false, why, sizeof why);
    }
    job->attempts = (uint8_t) row->attempts;
    for (size_t i = 0; i < n_excluded; i++) {
        int32_t node = gq_matcher_node_find_or_add (self->matcher, excluded[i]);
        if (node >= 0) {
            gq_results_exclude (job, node);
        }
    }
    void **data;
    size_t *sizes;
    int n = gq_store_job_blobs (self->store, job->id, "in", &data, &sizes);
    if (n > 0) {
        zlist_t *blobs = zlist_new ();
        for (int i = 0; i < n; i++) {
            zlist_append (blobs, zframe_new (data[i], sizes[i]));
        }
        job->blobs = blobs;
        gq_store_blobs_free (data, sizes, n);
    }
    zhashx_insert (self->jobs, GQ_ID_KEY (job->id), job);
    gq_queue_push (self->queue, job);
    self->counts[GQ_JOB_QUEUED]++;
    if (job->attempts >= job->max_attempts) {
        /* Its last attempt was lost with the broker: max_attempts holds across restarts. */
        snprintf (why, sizeof why, "failed after %d attempt%s; the last was lost when the broker "
                  "stopped",
                  job->attempts, job->attempts == 1 ? "" : "s");
        gq_results_job_end (self, job, GQ_JOB_FAILED, NULL, why, -1, gq_now_ms ());
    }
    return 0;
}
