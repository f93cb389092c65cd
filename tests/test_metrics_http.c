/*  test_metrics_http.c — /metrics of a real gridq-broker (--metrics 127.0.0.1:PORT) after jobs
    ran on two CPU workers: scraped over plain HTTP (also by several scrapers at once), parsed
    as Prometheus text; the counters match what was submitted, every histogram is cumulative
    and its _count matches. Bad --metrics values and a port in use are refused clearly, and the
    broker with its HTTP thread stops promptly. */
#define _GNU_SOURCE
#include <czmq.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "harness.h"
#include "metrics.h"

#define N_JOBS 40
#define N_SCRAPERS 4

static int s_port;  /* the metrics port */

/* ---- The text format, parsed --------------------------------------------------------------- */

typedef struct {
    json_t *samples;   /* "name{labels}" -> value */
    json_t *types;     /* family -> "counter" | "gauge" | "histogram" */
    json_t *helps;     /* family -> HELP text */
} s_exposition_t;

static void
s_parse (const char *text, s_exposition_t *ex)
{
    ex->samples = json_object ();
    ex->types = json_object ();
    ex->helps = json_object ();
    char *copy = strdup (text), *saveptr = NULL;
    int lineno = 0;
    for (char *line = strtok_r (copy, "\n", &saveptr); line;
         line = strtok_r (NULL, "\n", &saveptr)) {
        lineno++;
        char name[256], rest[512];
        if (strncmp (line, "# TYPE ", 7) == 0) {
            CHECK (sscanf (line + 7, "%255s %511s", name, rest) == 2);
            CHECK (streq (rest, "counter") || streq (rest, "gauge") || streq (rest, "histogram"));
            CHECK (!json_object_get (ex->types, name));  /* one TYPE per family */
            json_object_set_new (ex->types, name, json_string (rest));
            continue;
        }
        if (strncmp (line, "# HELP ", 7) == 0) {
            CHECK (sscanf (line + 7, "%255s", name) == 1);
            json_object_set_new (ex->helps, name, json_string (line + 7 + strlen (name)));
            continue;
        }
        CHECK (line[0] != '#' && line[0] != ' ');
        /* name{labels} value: the value is the last field, a float. */
        char *space = strrchr (line, ' ');
        if (!space) {
            fprintf (stderr, "line %d is not \"name value\": %s\n", lineno, line);
            h_fail ();
        }
        *space = 0;
        char *end;
        double value = strtod (space + 1, &end);
        if (*end || isnan (value)) {
            fprintf (stderr, "line %d: \"%s\" is not a number\n", lineno, space + 1);
            h_fail ();
        }
        CHECK (!json_object_get (ex->samples, line));  /* no sample twice */
        json_object_set_new (ex->samples, line, json_real (value));
        /* The family is named by a TYPE line before its samples. */
        size_t len = strcspn (line, "{");
        snprintf (name, sizeof name, "%.*s", (int) len, line);
        const char *suffixes[] = {"_bucket", "_sum", "_count"};
        bool typed = json_object_get (ex->types, name) != NULL;
        for (int s = 0; s < 3 && !typed; s++) {
            size_t sl = strlen (suffixes[s]);
            if (len > sl && streq (name + len - sl, suffixes[s])) {
                name[len - sl] = 0;
                typed = streq (json_string_value (json_object_get (ex->types, name)), "histogram");
            }
        }
        if (!typed) {
            fprintf (stderr, "line %d: sample %s has no TYPE line before it\n", lineno, line);
            h_fail ();
        }
    }
    free (copy);
}

static void
s_exposition_free (s_exposition_t *ex)
{
    json_decref (ex->samples);
    json_decref (ex->types);
    json_decref (ex->helps);
}

static double
s_value (s_exposition_t *ex, const char *sample)
{
    json_t *value = json_object_get (ex->samples, sample);
    if (!value) {
        fprintf (stderr, "no sample %s in the scrape\n", sample);
        h_fail ();
    }
    return json_number_value (value);
}

/* Every histogram: buckets by ascending le, cumulative, ending at +Inf = _count; _sum there.
   Returns the number of histograms. */
static int
s_check_histograms (s_exposition_t *ex)
{
    int histograms = 0;
    const char *family;
    json_t *type;
    json_object_foreach (ex->types, family, type) {
        if (!streq (json_string_value (type), "histogram")) {
            continue;
        }
        histograms++;
        CHECK (json_object_get (ex->helps, family));
        /* Buckets in the order printed are not kept by a JSON object: sort them by le. */
        double les[64], counts[64];
        int n = 0;
        bool inf = false;
        double inf_count = -1;
        const char *sample;
        json_t *value;
        char prefix[300];
        snprintf (prefix, sizeof prefix, "%s_bucket{le=\"", family);
        json_object_foreach (ex->samples, sample, value) {
            if (strncmp (sample, prefix, strlen (prefix)) != 0) {
                continue;
            }
            const char *le = sample + strlen (prefix);
            if (strncmp (le, "+Inf\"}", 6) == 0) {
                inf = true;
                inf_count = json_number_value (value);
                continue;
            }
            CHECK (n < 64);
            char *end;
            les[n] = strtod (le, &end);
            CHECK (streq (end, "\"}"));
            counts[n++] = json_number_value (value);
        }
        CHECK (inf);
        CHECK (n > 0);
        for (int i = 0; i < n; i++) {
            for (int j = i + 1; j < n; j++) {
                if (les[j] < les[i]) {
                    double t = les[i];
                    les[i] = les[j];
                    les[j] = t;
                    t = counts[i];
                    counts[i] = counts[j];
                    counts[j] = t;
                }
            }
        }
        for (int i = 1; i < n; i++) {
            if (counts[i] < counts[i - 1]) {
                fprintf (stderr, "%s: bucket le=%g has %g, fewer than le=%g with %g\n", family,
                         les[i], counts[i], les[i - 1], counts[i - 1]);
                h_fail ();
            }
        }
        CHECK (inf_count >= counts[n - 1]);
        char name[300];
        snprintf (name, sizeof name, "%s_count", family);
        CHECK_EQ (s_value (ex, name), inf_count);
        snprintf (name, sizeof name, "%s_sum", family);
        CHECK (s_value (ex, name) >= 0);
    }
    return histograms;
}

static void *
s_scraper (void *arg)
{
    int *ok = (int *) arg;
    for (int i = 0; i < 5; i++) {
        char *body, ctype[128];
        if (gq_metrics_http_get (s_port, "/metrics", &body, ctype, sizeof ctype) == 200 && body &&
            strstr (body, "gridq_jobs_submitted_total ")) {
            (*ok)++;
        }
        free (body);
    }
    return NULL;
}

int
main (void)
{
    h_init ("metrics_http", 100);
    h_require ("gridq-worker");
    s_port = h_free_port ();
    char metrics[64];
    snprintf (metrics, sizeof metrics, "127.0.0.1:%d", s_port);
    pid_t broker = h_start_broker ("--metrics", metrics, NULL);
    gq_client_t *client = h_start_workers (2, 5000, "m1", "m2", NULL);
    /* libmicrohttpd is up once the broker answers: it starts before the loop runs. */

    json_t *jobs = h_echo_jobs (N_JOBS);
    int64_t ids[N_JOBS];
    CHECK_EQ (gq_client_submit (client, jobs, true, ids), 0);
    json_decref (jobs);
    CHECK_EQ (gq_client_wait (client, ids, N_JOBS, 30000, NULL, NULL), 0);

    char *body, ctype[128];
    CHECK_EQ (gq_metrics_http_get (s_port, "/metrics", &body, ctype, sizeof ctype), 200);
    CHECK (strstr (ctype, "text/plain"));
    CHECK (strstr (ctype, "version=0.0.4"));
    s_exposition_t ex;
    s_parse (body, &ex);
    CHECK_EQ (s_value (&ex, "gridq_jobs_submitted_total"), N_JOBS);
    CHECK_EQ (s_value (&ex, "gridq_jobs_finished_total{state=\"done\"}"), N_JOBS);
    CHECK_EQ (s_value (&ex, "gridq_jobs{state=\"queued\"}"), 0);
    CHECK_EQ (s_check_histograms (&ex), 3);
    /* Every job done was dispatched and answered: one latency observation each. */
    CHECK_EQ (s_value (&ex, "gridq_job_latency_seconds_count"), N_JOBS);
    CHECK (s_value (&ex, "gridq_match_decision_seconds_count") >= 1);
    CHECK (s_value (&ex, "gridq_commit_batch_writes_count") >= 1);
    CHECK (s_value (&ex, "gridq_job_latency_seconds_sum") < 30);  /* seconds, not ms */
    s_exposition_free (&ex);
    free (body);

    CHECK_EQ (gq_metrics_http_get (s_port, "/nope", &body, ctype, sizeof ctype), 404);
    free (body);

    /* Several scrapers at once, as when two Prometheus servers watch one broker. */
    pthread_t threads[N_SCRAPERS];
    int ok[N_SCRAPERS] = {0};
    for (int i = 0; i < N_SCRAPERS; i++) {
        CHECK (pthread_create (&threads[i], NULL, s_scraper, &ok[i]) == 0);
    }
    for (int i = 0; i < N_SCRAPERS; i++) {
        pthread_join (threads[i], NULL);
        CHECK_EQ (ok[i], 5);
    }

    /* Refusals: a host name, a missing port, the metrics port already taken. */
    char command[1400], *out = NULL;
    const char *bad[] = {"example.com:9100", "127.0.0.1", metrics};
    const char *want[] = {"IPv4 address or localhost", "HOST:PORT", "in use"};
    for (int i = 0; i < 3; i++) {
        snprintf (command, sizeof command,
                  "timeout -k 2 10 '%s/gridq-broker' --endpoint tcp://127.0.0.1:%d "
                  "--db '%s/other%d.db' --metrics '%s' 2>&1",
                  h_bin (), h_free_port (), h_dir (), i, bad[i]);
        int rc = h_run (command, &out);
        if (rc == 0 || rc == 124 || !strstr (out, want[i])) {
            fprintf (stderr, "--metrics %s: exit %d, expected a refusal with \"%s\":\n%s\n",
                     bad[i], rc, want[i], out);
            h_fail ();
        }
        free (out);
    }

    /* The broker, HTTP thread and all, stops promptly on SIGINT. */
    int64_t t0 = gq_mono_us ();
    h_kill (broker, SIGINT);
    CHECK (gq_mono_us () - t0 < 5 * 1000000LL);
    CHECK (gq_metrics_http_get (s_port, "/metrics", &body, ctype, sizeof ctype) < 0);
    free (body);

    printf ("metrics_http: ok\n");
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
