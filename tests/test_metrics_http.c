/*  test_metrics_http.c — /metrics of a real gridq-broker (--metrics 127.0.0.1:PORT) after jobs
    ran on two CPU workers: scraped over plain HTTP (also by several scrapers at once), parsed
    as Prometheus text; the counters match what was submitted, every histogram is cumulative
    and its _count matches. Bad --metrics values and a port in use are refused clearly, and the
    broker with its HTTP thread stops promptly. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <czmq.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define N_JOBS 40
#define N_SCRAPERS 4

static int s_port;  /* the metrics port */

/* A plain HTTP/1.0 GET on 127.0.0.1:port: the status (or -1), the body (malloc'd) and the
   Content-Type. */
static int
s_http_get (int port, const char *path, char **body, char *ctype, size_t ctlen)
{
    *body = NULL;
    ctype[0] = 0;
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t) port);
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr) < 0) {
        close (fd);
        return -1;
    }
    char request[256];
    int n = snprintf (request, sizeof request, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (send (fd, request, (size_t) n, MSG_NOSIGNAL) != n) {
        close (fd);
        return -1;
    }
    size_t size = 0, cap = 65536;
    char *buf = (char *) malloc (cap);
    ssize_t got;
    while (buf && (got = recv (fd, buf + size, cap - size - 1, 0)) > 0) {
        size += (size_t) got;
        if (cap - size < 2) {
            cap *= 2;
            buf = (char *) realloc (buf, cap);
        }
    }
    close (fd);
    if (!buf) {
        return -1;
    }
    buf[size] = 0;
    int status = -1;
    char *headers_end = strstr (buf, "\r\n\r\n");
    if (sscanf (buf, "HTTP/1.%*d %d", &status) != 1 || !headers_end) {
        free (buf);
        return -1;
    }
    *headers_end = 0;
    const char *ct = strcasestr (buf, "\r\nContent-Type: ");
    if (ct) {
        ct += 16;
        snprintf (ctype, ctlen, "%.*s", (int) strcspn (ct, "\r\n"), ct);
    }
    *body = strdup (headers_end + 4);
    free (buf);
    return status;
}

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
        if (s_http_get (s_port, "/metrics", &body, ctype, sizeof ctype) == 200 && body &&
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
    CHECK_EQ (s_http_get (s_port, "/metrics", &body, ctype, sizeof ctype), 200);
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

    CHECK_EQ (s_http_get (s_port, "/nope", &body, ctype, sizeof ctype), 404);
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
    CHECK (s_http_get (s_port, "/metrics", &body, ctype, sizeof ctype) < 0);
    free (body);

    printf ("metrics_http: ok\n");
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
