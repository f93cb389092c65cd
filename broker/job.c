/*  job.c — job state names and the one JSON form of a job (for in-memory and stored jobs). */
#include "job.h"
#include "gq_check.h"
#include "gq_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_state_names[GQ_JOB_STATES] = {"queued", "running", "done", "failed",
                                                   "cancelled", "waiting"};

const char *
gq_job_state_name (int state)
{
    if (state < 0 || state >= GQ_JOB_STATES) {
        return NULL;
    }
    return s_state_names[state];
}

int
gq_job_state_parse (const char *name)
{
    for (int i = 0; name && i < GQ_JOB_STATES; i++) {
        if (strcmp (s_state_names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

void
gq_job_row_from (gq_job_row_t *row, const gq_job_t *job, const char *kind, const char *model,
                 const char *node)
{
    memset (row, 0, sizeof *row);
    row->id = job->id;
    row->kind = kind;
    row->model = model;
    row->min_vram_mb = job->min_vram_mb;
    row->priority = job->priority;
    row->max_price = -1;
    if (job->constraints) {
        row->gpu_pattern = job->constraints->gpu_pattern;
        row->max_price = job->constraints->max_price;
        row->min_tflops = job->constraints->min_tflops;
    }
    row->timeout_ms = job->timeout_ms;
    row->max_attempts = job->max_attempts;
    row->payload = job->payload;
    row->state = job->state;
    row->attempts = job->attempts;
    row->node = node;
    row->submitted_ms = job->submitted_ms;
    row->started_ms = job->started_ms;
    row->idem = job->idem;
    if (job->end) {
        row->result = job->end->result;
        row->error = job->end->error;
        row->finished_ms = job->end->finished_ms;
    }
}

/* ---- JSON ------------------------------------------------------------------------------------ */

/* A double as jansson writes it (10 -> 10.0), so that text and tree agree. */
static void
s_chunk_real (zchunk_t *out, double value)
{
    json_t *real = json_real (value);
    if (!real || gq_chunk_json (out, real)) {
        gq_chunk_raw (out, "null");
    }
    json_decref (real);
}

/* JSON text (payload, result) as it is, or as a string when verbatim is false. */
static void
s_chunk_text (zchunk_t *out, const char *text, bool verbatim)
{
    if (verbatim) {
        gq_chunk_raw (out, text);
    } else {
        gq_chunk_quoted (out, text);
    }
}

/* The serializer behind gq_job_row_text and gq_job_row_json: payload and result are spliced
   verbatim unless the flags say they must go as strings (text that does not parse). */
static void
s_row_text (zchunk_t *out, const gq_job_row_t *row, bool payload_verbatim, bool result_verbatim)
{
    const char *state = gq_job_state_name (row->state);
    gq_chunk_raw (out, "{\"id\":");
    gq_chunk_int (out, row->id);
    if (state) {
        gq_chunk_name (out, ",\"state\":", state);
    } else {
        gq_chunk_raw (out, ",\"state\":");
        gq_chunk_int (out, row->state);
    }
    gq_chunk_name (out, ",\"kind\":", row->kind);
    gq_chunk_name (out, ",\"model\":", row->model && *row->model ? row->model : NULL);
    gq_chunk_raw (out, ",\"min_vram_mb\":");
    gq_chunk_int (out, row->min_vram_mb);
    gq_chunk_raw (out, ",\"priority\":");
    gq_chunk_int (out, row->priority);
    bool has_gpu = row->gpu_pattern && *row->gpu_pattern;
    if (has_gpu || row->max_price >= 0 || row->min_tflops > 0) {
        const char *sep = "{";
        gq_chunk_raw (out, ",\"constraints\":");
        if (has_gpu) {
            gq_chunk_raw (out, "{\"gpu\":");
            gq_chunk_quoted (out, row->gpu_pattern);
            sep = ",";
        }
        if (row->max_price >= 0) {
            gq_chunk_raw (out, sep);
            gq_chunk_raw (out, "\"max_price\":");
            s_chunk_real (out, row->max_price);
            sep = ",";
        }
        if (row->min_tflops > 0) {
            gq_chunk_raw (out, sep);
            gq_chunk_raw (out, "\"min_tflops\":");
            s_chunk_real (out, row->min_tflops);
        }
        gq_chunk_raw (out, "}");
    }
    gq_chunk_raw (out, ",\"timeout_ms\":");
    gq_chunk_int (out, row->timeout_ms);
    gq_chunk_raw (out, ",\"max_attempts\":");
    gq_chunk_int (out, row->max_attempts);
    if (row->idem) {
        gq_chunk_raw (out, ",\"idem\":");
        gq_chunk_quoted (out, row->idem);
    }
    if (row->payload) {
        gq_chunk_raw (out, ",\"payload\":");
        s_chunk_text (out, row->payload, payload_verbatim);
    }
    gq_chunk_name (out, ",\"node\":", row->node && *row->node ? row->node : NULL);
    gq_chunk_raw (out, ",\"attempts\":");
    gq_chunk_int (out, row->attempts);
    gq_chunk_raw (out, ",\"result\":");
    if (row->result) {
        s_chunk_text (out, row->result, result_verbatim);
    } else {
        gq_chunk_raw (out, "null");
    }
    gq_chunk_raw (out, ",\"error\":");
    gq_chunk_quoted (out, row->error);
    gq_chunk_time (out, ",\"submitted_at\":", row->submitted_ms);
    gq_chunk_time (out, ",\"started_at\":", row->started_ms);
    gq_chunk_time (out, ",\"finished_at\":", row->finished_ms);
    gq_chunk_raw (out, "}");
}

void
gq_job_row_text (zchunk_t *out, const gq_job_row_t *row)
{
    s_row_text (out, row, true, true);
}

/* True when text is one JSON value. */
static bool
s_parses (const char *text)
{
    json_t *value = json_loads (text, JSON_DECODE_ANY, NULL);
    json_decref (value);
    return value != NULL;
}

json_t *
gq_job_row_json (const gq_job_row_t *row)
{
    zchunk_t *text = zchunk_new (NULL, 512);
    if (!text) {
        return NULL;
    }
    s_row_text (text, row, true, true);
    json_t *obj = json_loadb ((const char *) zchunk_data (text), zchunk_size (text), 0, NULL);
    if (!obj) {
        /* A stored payload or result that is not JSON still shows, as a string. */
        zchunk_set (text, NULL, 0);
        s_row_text (text, row, !row->payload || s_parses (row->payload),
                    !row->result || s_parses (row->result));
        obj = json_loadb ((const char *) zchunk_data (text), zchunk_size (text), 0, NULL);
    }
    zchunk_destroy (&text);
    return obj;
}

/* ---- Selftest -------------------------------------------------------------------------------- */

/* The object serialised with sorted keys: one string to compare against. */
static char *
s_dump (json_t *obj)
{
    char *text = json_dumps (obj, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        fprintf (stderr, "\njob: json_dumps failed\n");
        abort ();
    }
    return text;
}

void
gq_job_test (bool verbose)
{
    /* State names round trip, and unknown ones are refused both ways. */
    for (int s = 0; s < GQ_JOB_STATES; s++) {
        GQ_CHECK_EQ (gq_job_state_parse (gq_job_state_name (s)), s);
    }
    GQ_CHECK_STR (gq_job_state_name (GQ_JOB_CANCELLED), "cancelled");
    GQ_CHECK_EQ (gq_job_state_name (-1) == NULL, 1);
    GQ_CHECK_EQ (gq_job_state_name (GQ_JOB_STATES) == NULL, 1);
    GQ_CHECK_EQ (gq_job_state_parse ("Queued"), -1);
    GQ_CHECK_EQ (gq_job_state_parse (""), -1);
    GQ_CHECK_EQ (gq_job_state_parse (NULL), -1);
    GQ_CHECK_EQ (gq_job_state_final (GQ_JOB_RUNNING), 0);
    GQ_CHECK_EQ (gq_job_state_final (GQ_JOB_DONE), 1);
    GQ_CHECK_EQ (gq_job_state_final (GQ_JOB_CANCELLED), 1);
    GQ_CHECK_EQ (gq_job_state_final (GQ_JOB_WAITING), 0);
    GQ_CHECK_STR (gq_job_state_name (GQ_JOB_WAITING), "waiting");

    /* A finished stored job with every field set. */
    gq_job_row_t row = {
        .id = 42,
        .idem = "batch-7/row-3",
        .kind = "echo",
        .model = "mnist-mlp",
        .min_vram_mb = 2048,
        .priority = 9,
        .gpu_pattern = "A100|H100",
        .max_price = 2.5,
        .min_tflops = 10,
        .timeout_ms = 30000,
        .max_attempts = 3,
        .payload = "{\"x\": [1, 2]}",
        .state = GQ_JOB_DONE,
        .attempts = 2,
        .node = "gpu-a",
        .submitted_ms = 1764411673123,
        .started_ms = 1764411673200,
        .finished_ms = 1764411674001,
        .result = "{\"y\":3}",
        .error = NULL,
    };
    json_t *obj = gq_job_row_json (&row);
    char *text = s_dump (obj);
    GQ_CHECK_STR (text, "{\"attempts\":2,\"constraints\":{\"gpu\":\"A100|H100\",\"max_price\":2.5,"
                    "\"min_tflops\":10.0},\"error\":null,\"finished_at\":\"2025-11-29T10:21:14.001Z\","
                    "\"id\":42,\"idem\":\"batch-7/row-3\",\"kind\":\"echo\",\"max_attempts\":3,"
                    "\"min_vram_mb\":2048,\"model\":\"mnist-mlp\",\"node\":\"gpu-a\","
                    "\"payload\":{\"x\":[1,2]},\"priority\":9,\"result\":{\"y\":3},"
                    "\"started_at\":\"2025-11-29T10:21:13.200Z\",\"state\":\"done\","
                    "\"submitted_at\":\"2025-11-29T10:21:13.123Z\",\"timeout_ms\":30000}");
    if (verbose) {
        printf ("\n  %s\n  ", text);
    }
    free (text);
    json_decref (obj);

    /* Unset things: no constraints key, no idem key, nulls; bad JSON text kept as a string. */
    row = (gq_job_row_t) {.id = 1, .kind = "sleep", .model = "", .max_price = -1,
                          .max_attempts = 1, .payload = "{not json", .state = GQ_JOB_FAILED,
                          .result = "[1,", .error = "worker died", .submitted_ms = 1000};
    obj = gq_job_row_json (&row);
    text = s_dump (obj);
    GQ_CHECK_STR (text, "{\"attempts\":0,\"error\":\"worker died\",\"finished_at\":null,\"id\":1,"
                    "\"kind\":\"sleep\",\"max_attempts\":1,\"min_vram_mb\":0,\"model\":null,"
                    "\"node\":null,\"payload\":\"{not json\",\"priority\":0,\"result\":\"[1,\","
                    "\"started_at\":null,\"state\":\"failed\","
                    "\"submitted_at\":\"1970-01-01T00:00:01.000Z\",\"timeout_ms\":0}");
    free (text);
    json_decref (obj);

    /* Without a payload the key is absent (listings); a lone constraint shows alone; scalar JSON
       payloads are kept as they are. */
    row.payload = NULL;
    row.max_price = 0;
    row.result = "7";
    obj = gq_job_row_json (&row);
    GQ_CHECK_EQ (json_object_get (obj, "payload") == NULL, 1);
    text = s_dump (json_object_get (obj, "constraints"));
    GQ_CHECK_STR (text, "{\"max_price\":0.0}");
    free (text);
    GQ_CHECK_EQ (json_integer_value (json_object_get (obj, "result")), 7);
    json_decref (obj);

    /* From an in-memory job: constraints and names carried over, the rest left for the caller. */
    gq_constraints_t constraints = {.gpu_pattern = "4090", .max_price = -1, .min_tflops = 50};
    char payload[] = "{\"ms\":5}";
    gq_job_t job = {.id = 7, .submitted_ms = 5000, .started_ms = 6000, .payload = payload,
                    .constraints = &constraints, .payload_len = sizeof payload - 1,
                    .timeout_ms = 100, .min_vram_mb = 512, .node = 3, .priority = 4,
                    .state = GQ_JOB_RUNNING, .attempts = 1, .max_attempts = 3};
    gq_job_row_from (&row, &job, "sleep", NULL, "box-3");
    obj = gq_job_row_json (&row);
    text = s_dump (obj);
    GQ_CHECK_STR (text, "{\"attempts\":1,\"constraints\":{\"gpu\":\"4090\",\"min_tflops\":50.0},"
                    "\"error\":null,\"finished_at\":null,\"id\":7,\"kind\":\"sleep\","
                    "\"max_attempts\":3,\"min_vram_mb\":512,\"model\":null,\"node\":\"box-3\","
                    "\"payload\":{\"ms\":5},\"priority\":4,\"result\":null,"
                    "\"started_at\":\"1970-01-01T00:00:06.000Z\",\"state\":\"running\","
                    "\"submitted_at\":\"1970-01-01T00:00:05.000Z\",\"timeout_ms\":100}");
    free (text);
    json_decref (obj);
    job.constraints = NULL;
    gq_job_row_from (&row, &job, "sleep", NULL, NULL);
    GQ_CHECK_EQ (row.max_price < 0 && row.min_tflops == 0 && row.gpu_pattern == NULL, 1);
}
