/*  test_warm_routing.c — warm beats cold at equal specs. Two identical one-slot CPU workers serve
    the same models folder (model m1, made by gridq-model). The first m1 job runs on one of them
    and loads m1 there; once that node's heartbeat reports m1 loaded, ten more m1 jobs, one at a
    time, all run on that node, although the other is identical and has been idle longer (the
    tie-break it would win at equal scores). EXPLAIN shows why: the warm term. Every output
    matches the CPU reference (`gridq-model run`) within 1e-5. An mlp job for a model no worker
    has stays queued, with verdict "model" on both nodes. */
#include <czmq.h>
#include <math.h>

#include "harness.h"

#define S_WARM_JOBS 10
#define S_IN        16 /* --layers 16,8,4 */
#define S_OUT       4
#define S_ROWS      2
#define S_TOLERANCE 1e-5
#define S_WAIT_MS   20000

/* Input rows for job k: multiples of 1/8 in [-1, 1], exact in binary, different per job. */
static json_t *
s_input (int k)
{
    json_t *rows = json_array ();
    for (int r = 0; r < S_ROWS; r++) {
        json_t *row = json_array ();
        for (int i = 0; i < S_IN; i++) {
            int v = (i * 7 + r * 5 + k * 3) % 17 - 8;
            json_array_append_new (row, json_real (v / 8.0));
        }
        json_array_append_new (rows, row);
    }
    return rows;
}

/* An mlp job for model with the input rows (borrowed). */
static json_t *
s_mlp_job (const char *model, json_t *input)
{
    return json_pack ("{s:s, s:s, s:{s:O}}", "kind", "mlp", "model", model, "payload", "input",
                      input);
}

/* The CPU reference: `gridq-model run model --input JSON` (new reference). */
static json_t *
s_reference (const char *model_file, json_t *input)
{
    char *text = json_dumps (input, JSON_COMPACT);
    CHECK (text);
    char command[2048];
    snprintf (command, sizeof command, "'%s/gridq-model' run '%s' --input '%s'", h_bin (),
              model_file, text);
    free (text);
    char *out = NULL;
    int rc = h_run (command, &out);
    if (rc != 0) {
        fprintf (stderr, "%s exited %d: %s\n", command, rc, out ? out : "");
        free (out);
        h_fail ();
    }
    json_t *reference = json_loads (out, 0, NULL);
    if (!json_is_array (json_object_get (reference, "output"))) {
        fprintf (stderr, "gridq-model run printed no output array: %s\n", out);
        free (out);
        h_fail ();
    }
    free (out);
    return reference;
}

/* The job's result matches the reference: same shape, every value within S_TOLERANCE, same
   argmax. */
static void
s_check_output (int64_t id, json_t *result, json_t *reference)
{
    json_t *got = json_object_get (result, "output");
    json_t *want = json_object_get (reference, "output");
    CHECK_EQ (json_array_size (got), S_ROWS);
    CHECK_EQ (json_array_size (want), S_ROWS);
    for (size_t r = 0; r < S_ROWS; r++) {
        json_t *got_row = json_array_get (got, r);
        json_t *want_row = json_array_get (want, r);
        CHECK_EQ (json_array_size (got_row), S_OUT);
        CHECK_EQ (json_array_size (want_row), S_OUT);
        for (size_t i = 0; i < S_OUT; i++) {
            double g = json_number_value (json_array_get (got_row, i));
            double w = json_number_value (json_array_get (want_row, i));
            if (!(fabs (g - w) <= S_TOLERANCE)) {
                fprintf (stderr,
                         "job %lld output[%zu][%zu] is %.9g, reference %.9g (|diff| %.3g > %g)\n",
                         (long long) id, r, i, g, w, fabs (g - w), S_TOLERANCE);
                h_fail ();
            }
        }
        CHECK_EQ (json_integer_value (json_array_get (json_object_get (result, "argmax"), r)),
                  json_integer_value (json_array_get (json_object_get (reference, "argmax"), r)));
    }
}

/* Runs job (borrowed) to the end: done, output checked against the reference. Returns the node
   it ran on (static buffer). */
static const char *
s_run_checked (gq_client_t *client, const char *model_file, int k)
{
    static char node[64];
    json_t *input = s_input (k);
    json_t *job = s_mlp_job ("m1", input);
    int64_t id = h_submit (client, job);
    json_decref (job);
    if (!h_wait_state (client, id, "done", S_WAIT_MS)) {
        json_t *status = h_status (client, id);
        fprintf (stderr, "m1 job %lld (#%d) is \"%s\" after %d ms, expected \"done\"\n",
                 (long long) id, k, h_str (status, "state"), S_WAIT_MS);
        json_decref (status);
        h_fail ();
    }
    json_t *done = h_result (client, id);
    CHECK (done);
    snprintf (node, sizeof node, "%s", h_str (done, "node"));
    CHECK_EQ (h_int (done, "attempts"), 1);
    json_t *reference = s_reference (model_file, input);
    s_check_output (id, json_object_get (done, "result"), reference);
    json_decref (reference);
    json_decref (done);
    json_decref (input);
    return node;
}

/* True when the named node lists model in models_available (list) or models_loaded (objects). */
static bool
s_node_has (gq_client_t *client, const char *name, const char *list, const char *model)
{
    json_t *node = h_node (client, name);
    bool found = false;
    size_t i;
    json_t *entry;
    json_array_foreach (json_object_get (node, list), i, entry) {
        const char *text = json_is_string (entry) ? json_string_value (entry)
                                                  : h_str (entry, "name");
        if (text && streq (text, model)) {
            found = true;
        }
    }
    json_decref (node);
    return found;
}

typedef struct {
    gq_client_t *client;
    const char *name;
    const char *list;
} s_has_arg_t;

static bool
s_has_m1 (void *arg)
{
    s_has_arg_t *a = (s_has_arg_t *) arg;
    return s_node_has (a->client, a->name, a->list, "m1");
}

/* The score of node name in an EXPLAIN reply (borrowed), or NULL. */
static json_t *
s_explain_row (json_t *explain, const char *name)
{
    size_t i;
    json_t *row;
    json_array_foreach (json_object_get (explain, "nodes"), i, row) {
        if (streq (h_str (row, "node"), name)) {
            return row;
        }
    }
    return NULL;
}

static json_t *
s_explain (gq_client_t *client, int64_t id)
{
    json_t *explain = gq_client_call (client, "EXPLAIN",
                                      json_pack ("{s:I}", "id", (json_int_t) id));
    if (!explain) {
        fprintf (stderr, "EXPLAIN %lld: %s\n", (long long) id, gq_client_error (client));
        h_fail ();
    }
    return explain;
}

int
main (void)
{
    h_init ("warm-routing", 100);
    char models[300], model_file[400], command[1200];
    snprintf (models, sizeof models, "%s/models", h_dir ());
    snprintf (model_file, sizeof model_file, "%s/m1.safetensors", models);
    snprintf (command, sizeof command,
              "mkdir -p '%s' && '%s/gridq-model' make --layers 16,8,4 --seed 1 --out '%s'",
              models, h_bin (), model_file);
    CHECK_EQ (h_run (command, NULL), 0);

    /* Heartbeats every 200 ms, so a loaded model shows within a fraction of a second. */
    h_start_broker ("--heartbeat-ms", "200", NULL);
    const char *names[2] = {"wa", "wb"};
    for (int i = 0; i < 2; i++) {
        h_start_worker (names[i], 1, "--gpu-model", "NVIDIA L4", "--vram", "24G", "--tflops",
                        "30", "--price", "0.50", "--models", models, NULL);
    }
    gq_client_t *client = h_client (3000);
    h_wait_nodes (client, 2, S_WAIT_MS);
    for (int i = 0; i < 2; i++) {
        s_has_arg_t arg = {client, names[i], "models_available"};
        if (!h_wait_until (s_has_m1, &arg, S_WAIT_MS)) {
            fprintf (stderr, "node %s does not list m1 in models_available\n", names[i]);
            h_fail ();
        }
        /* Both start cold: the first job's placement owes nothing to a loaded model. */
        CHECK (!s_node_has (client, names[i], "models_loaded", "m1"));
    }

    /* The first job: cold everywhere; it loads m1 where it runs. */
    char warm[64], cold[64];
    snprintf (warm, sizeof warm, "%s", s_run_checked (client, model_file, 0));
    CHECK (streq (warm, "wa") || streq (warm, "wb"));
    snprintf (cold, sizeof cold, "%s", streq (warm, "wa") ? "wb" : "wa");
    s_has_arg_t loaded = {client, warm, "models_loaded"};
    if (!h_wait_until (s_has_m1, &loaded, 5000)) {
        fprintf (stderr, "node %s ran m1 but its heartbeat does not report m1 loaded after "
                         "5000 ms\n", warm);
        h_fail ();
    }
    CHECK (!s_node_has (client, cold, "models_loaded", "m1"));

    /* Ten more, one at a time: all on the warm node. */
    for (int k = 1; k <= S_WARM_JOBS; k++) {
        const char *ran = s_run_checked (client, model_file, k);
        if (!streq (ran, warm)) {
            fprintf (stderr, "m1 job #%d ran on %s, expected the warm node %s\n", k, ran, warm);
            h_fail ();
        }
    }
    CHECK (!s_node_has (client, cold, "models_loaded", "m1"));

    /* Why: EXPLAIN (scored now, both idle) gives the warm node the warm term, and the pick. */
    json_t *jobs = gq_client_call (client, "JOBS", json_pack ("{s:s, s:i}", "state", "done",
                                                              "limit", 1));
    CHECK (jobs);
    int64_t last = h_int (json_array_get (json_object_get (jobs, "jobs"), 0), "id");
    json_decref (jobs);
    json_t *explain = s_explain (client, last);
    CHECK_STR (h_str (explain, "ran_on"), warm);
    CHECK_STR (h_str (explain, "node"), warm);
    json_t *warm_row = s_explain_row (explain, warm);
    json_t *cold_row = s_explain_row (explain, cold);
    CHECK (warm_row && cold_row);
    CHECK_STR (h_str (warm_row, "verdict"), "ok");
    CHECK_STR (h_str (cold_row, "verdict"), "ok");
    double warm_term = json_number_value (json_object_get (json_object_get (warm_row, "score"),
                                                           "warm"));
    double cold_term = json_number_value (json_object_get (json_object_get (cold_row, "score"),
                                                           "warm"));
    if (warm_term != 1.0 || cold_term != 0.0) {
        fprintf (stderr, "warm term: %s %g (expected 1), %s %g (expected 0)\n", warm, warm_term,
                 cold, cold_term);
        h_fail ();
    }
    json_decref (explain);

    /* A model no worker has: queued, both nodes filtered out by "model". */
    json_t *input = s_input (99);
    json_t *job = s_mlp_job ("m-nowhere", input);
    int64_t orphan = h_submit (client, job);
    json_decref (job);
    json_decref (input);
    /* A job submitted after it runs, so a scheduling pass has seen the orphan and left it. */
    const char *after = s_run_checked (client, model_file, 100);
    if (!streq (after, warm)) {
        fprintf (stderr, "m1 job #100 ran on %s, expected the warm node %s\n", after, warm);
        h_fail ();
    }
    json_t *status = h_status (client, orphan);
    CHECK_STR (h_str (status, "state"), "queued");
    json_decref (status);
    explain = s_explain (client, orphan);
    CHECK_STR (h_str (explain, "state"), "queued");
    CHECK (json_is_null (json_object_get (explain, "node")) ||
           !json_object_get (explain, "node"));
    CHECK_EQ (json_array_size (json_object_get (explain, "nodes")), 2);
    for (int i = 0; i < 2; i++) {
        json_t *row = s_explain_row (explain, names[i]);
        CHECK (row);
        CHECK_STR (h_str (row, "verdict"), "model");
        CHECK_STR (h_str (row, "reason"), "does not have model 'm-nowhere'");
    }
    CHECK_STR (h_str (explain, "hint"),
               "no online node that runs kind 'mlp' has model 'm-nowhere'");
    json_decref (explain);
    json_t *cancel = gq_client_call (client, "CANCEL",
                                     json_pack ("{s:[I]}", "ids", (json_int_t) orphan));
    CHECK (cancel);
    CHECK_STR (h_str (json_array_get (json_object_get (cancel, "jobs"), 0), "state"),
               "cancelled");
    json_decref (cancel);

    printf ("warm_routing: first m1 job loaded m1 on %s; %d more m1 jobs all ran there; outputs "
            "within %g of gridq-model run; unknown model queued with verdict \"model\"\n",
            warm, S_WARM_JOBS, S_TOLERANCE);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
