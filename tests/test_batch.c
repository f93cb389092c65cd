/*  test_batch.c — `gridq submit --file JOBS --wait` as a person and as a script see it: on a
    terminal a progress line ("400/400 100% ...") is drawn on stderr; when stderr is not a
    terminal no '\r' progress appears; either way a one-line summary closes the run, and the
    exit status is non-zero when a job failed. Real broker, two CPU workers. */
#include <czmq.h>

#include "harness.h"
#include "ops_pty.h"

#define N_JOBS 400

static char s_gridq[512];

static void
s_write_jobs (const char *path, int echo_jobs, bool with_failure)
{
    FILE *file = fopen (path, "w");
    CHECK (file);
    for (int i = 0; i < echo_jobs; i++) {
        fprintf (file, "{\"kind\": \"echo\", \"payload\": {\"i\": %d}}\n", i);
    }
    if (with_failure) {
        /* Fails for good: the sleep outlives its time limit and there is no second attempt. */
        fprintf (file, "{\"kind\": \"sleep\", \"payload\": {\"ms\": 5000}, \"time_limit\": "
                       "\"200ms\", \"max_attempts\": 1}\n");
    }
    CHECK (fclose (file) == 0);
}

/* The contents of a file (malloc'd). */
static char *
s_slurp (const char *path)
{
    char command[600], *out = NULL;
    snprintf (command, sizeof command, "cat '%s'", path);
    CHECK_EQ (h_run (command, &out), 0);
    return out;
}

static int
s_count_lines (const char *text)
{
    int lines = 0;
    for (const char *c = text; *c; c++) {
        lines += *c == '\n';
    }
    return lines;
}

int
main (void)
{
    h_init ("batch", 150);
    h_require ("gridq-worker");
    snprintf (s_gridq, sizeof s_gridq, "%s/gridq", h_bin ());
    h_start_broker (NULL, NULL);
    gq_client_t *client = h_start_workers (4, 5000, "b1", "b2", NULL);

    char jobs[400], failing[400], endpoint[128];
    snprintf (jobs, sizeof jobs, "%s/jobs.jsonl", h_dir ());
    snprintf (failing, sizeof failing, "%s/failing.jsonl", h_dir ());
    snprintf (endpoint, sizeof endpoint, "%s", h_endpoint ());
    s_write_jobs (jobs, N_JOBS, false);
    s_write_jobs (failing, 3, true);

    /* On a terminal: the progress line, then the summary; exit 0. */
    char *argv[] = {s_gridq, "--broker", endpoint, "submit", "--file", jobs, "--wait", NULL};
    ops_pty_t *pty = ops_pty_start (24, 100, argv);
    CHECK (pty);
    int rc = ops_pty_wait_exit (pty, 60000);
    char *plain = ops_pty_plain (ops_pty_output (pty));
    char progress[32];
    snprintf (progress, sizeof progress, "%d/%d 100%%", N_JOBS, N_JOBS);
    if (rc != 0 || !strstr (ops_pty_output (pty), progress) ||
        !strstr (ops_pty_output (pty), "\r") || !strstr (plain, "400 jobs: 400 done, 0 failed")) {
        fprintf (stderr, "on a terminal: exit %d, expected 0, \"%s\" and the summary; saw:\n%s\n",
                 rc, progress, plain);
        h_fail ();
    }
    free (plain);
    ops_pty_destroy (&pty);

    /* stderr not a terminal: no '\r' progress, one summary line; the ids on stdout. */
    char command[1400], *out = NULL, path[600];
    snprintf (command, sizeof command,
              "timeout -k 2 60 '%s' --broker %s submit --file '%s' --wait > '%s/ids' "
              "2> '%s/err'",
              s_gridq, endpoint, jobs, h_dir (), h_dir ());
    CHECK_EQ (h_run (command, NULL), 0);
    snprintf (path, sizeof path, "%s/err", h_dir ());
    char *err = s_slurp (path);
    if (strchr (err, '\r') || !strstr (err, "400 jobs: 400 done, 0 failed") ||
        s_count_lines (err) != 1) {
        fprintf (stderr, "stderr to a file: expected one summary line and no '\\r':\n%s\n", err);
        h_fail ();
    }
    free (err);
    snprintf (path, sizeof path, "%s/ids", h_dir ());
    out = s_slurp (path);
    CHECK_EQ (s_count_lines (out), N_JOBS);
    free (out);

    /* A job that fails: the summary says so and the exit status is non-zero (1). */
    snprintf (command, sizeof command,
              "timeout -k 2 60 '%s' --broker %s submit --file '%s' --wait 2>&1 >/dev/null",
              s_gridq, endpoint, failing);
    rc = h_run (command, &out);
    if (rc != 1 || !strstr (out, "4 jobs: 3 done, 1 failed")) {
        fprintf (stderr, "with a failing job: exit %d, expected 1 and \"4 jobs: 3 done, 1 "
                         "failed\":\n%s\n", rc, out);
        h_fail ();
    }
    free (out);

    printf ("batch: ok\n");
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
