/*  bench-engine.c — gridq-bench-engine: the engine that `gridq-bench --mode partials` runs on
    its worker (`--engine partials=gridq-bench-engine`), speaking docs/PROTOCOL.md's "Engines".

    Per job line, payload {"partials": N, "interval_us": U, "pad": B} (each optional: 0), it
    writes N partial lines {"i": I, "t": T, "pad": "xxx..."} (pad: B characters; none when 0),
    then the result {"partials": N, "t": T}. T is the wall clock (CLOCK_REALTIME, microseconds)
    read just before the line is written, so a client on the same machine subtracts it from
    its own clock: engine write -> client, per partial and for the result. A job's lines are U
    microseconds apart (0: as fast as the pipe takes them); several jobs in flight take turns,
    one line each, as an engine that batches its sequences writes a token for each per step.
    A cancel line ends its job with no more lines; at the end of its input the engine finishes
    the jobs in flight and exits. Each line is one write(2): nothing waits in
    a buffer, since what is measured starts when the engine writes.

    In C rather than Python: at 100000 partials/s and more an interpreter's own cost per line
    would be what the figure measures. libc and jansson (for the job lines) only. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "gq_common.h"

#define S_MAX_JOBS  GQ_MAX_SLOTS /* jobs in flight at most: a worker's slots */
#define S_MAX_PAD   60000        /* pad characters at most: a partial stays under 64 KiB */

/* A job in flight. */
typedef struct {
    int64_t id;                /* the job's id */
    int64_t partials;          /* partial lines to write */
    int64_t written;           /* partial lines written so far */
    int64_t interval_us;       /* between two of its lines */
    int64_t due_us;            /* monotonic time of its next line */
    int pad;                   /* pad characters per partial */
} s_job_t;

static s_job_t s_jobs[S_MAX_JOBS]; /* jobs in flight, in the order they came */
static int s_njobs;                /* entries of s_jobs in use */
static char *s_line;               /* the line being written (S_MAX_PAD + room) */

/* Writes all of text, or exits: a worker that stopped reading has gone. */
static void
s_write (const char *text, size_t len)
{
    while (len > 0) {
        ssize_t n = write (1, text, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            exit (0);
        }
        text += n;
        len -= (size_t) n;
    }
}

/* Writes job's next line: a partial, or its result once every partial is out. true when the
   job is over. */
static bool
s_job_step (s_job_t *job)
{
    int64_t now = bench_wall_us ();
    bool over = job->written == job->partials;
    int n;
    if (!over) {
        n = snprintf (s_line, 128, "{\"id\":%" PRId64 ",\"partial\":{\"i\":%" PRId64
                      ",\"t\":%" PRId64, job->id, job->written, now);
        if (job->pad > 0) {
            memcpy (s_line + n, ",\"pad\":\"", 8);
            n += 8;
            memset (s_line + n, 'x', (size_t) job->pad);
            n += job->pad;
            s_line[n++] = '"';
        }
        memcpy (s_line + n, "}}\n", 3);
        n += 3;
        job->written++;
    } else {
        n = snprintf (s_line, 128,
                      "{\"id\":%" PRId64 ",\"result\":{\"partials\":%" PRId64 ",\"t\":%" PRId64
                      "}}\n", job->id, job->written, now);
    }
    s_write (s_line, (size_t) n);
    return over;
}

static void
s_job_remove (int index)
{
    memmove (&s_jobs[index], &s_jobs[index + 1], (size_t) (s_njobs - index - 1) * sizeof *s_jobs);
    s_njobs--;
}

/* A number of obj, within 0..hi (else 0). */
static int64_t
s_field (json_t *obj, const char *name, int64_t hi)
{
    json_int_t value = json_integer_value (json_object_get (obj, name));
    return value < 0 ? 0 : value > hi ? hi : (int64_t) value;
}

/* One line from the worker: a job, or a cancel. */
static void
s_on_line (const char *text, size_t len)
{
    json_t *line = json_loadb (text, len, 0, NULL);
    int64_t id = (int64_t) json_integer_value (json_object_get (line, "id"));
    if (!line || id <= 0) {
        json_decref (line);
        return;
    }
    if (json_is_true (json_object_get (line, "cancel"))) {
        for (int i = 0; i < s_njobs; i++) {
            if (s_jobs[i].id == id) {
                s_job_remove (i);
                break;
            }
        }
    } else if (s_njobs < S_MAX_JOBS) {
        json_t *payload = json_object_get (line, "payload");
        s_job_t *job = &s_jobs[s_njobs++];
        memset (job, 0, sizeof *job);
        job->id = id;
        job->partials = s_field (payload, "partials", INT64_MAX);
        job->interval_us = s_field (payload, "interval_us", 3600000000LL);
        job->pad = (int) s_field (payload, "pad", S_MAX_PAD);
        job->due_us = gq_mono_us ();
    }
    json_decref (line);
}

/* Reads what stdin has and takes each whole line; false at the end of input. */
static bool
s_read (void)
{
    static char *buf;
    static size_t len, cap;
    if (cap - len < 65536) {
        cap = cap ? cap * 2 : 1 << 20;
        buf = (char *) realloc (buf, cap);
        if (!buf) {
            exit (1);
        }
    }
    ssize_t n = read (0, buf + len, cap - len);
    if (n < 0 && errno == EINTR) {
        return true;
    }
    if (n <= 0) {
        return false;
    }
    len += (size_t) n;
    size_t start = 0;
    char *end;
    while ((end = (char *) memchr (buf + start, '\n', len - start))) {
        s_on_line (buf + start, (size_t) (end - (buf + start)));
        start = (size_t) (end - buf) + 1;
    }
    memmove (buf, buf + start, len - start);
    len -= start;
    return true;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-bench-engine\n"
             "\n"
             "A gridq engine (docs/PROTOCOL.md, \"Engines\") for gridq-bench --mode partials:\n"
             "run it as gridq-worker --engine partials=gridq-bench-engine. Per job, payload\n"
             "{\"partials\": N, \"interval_us\": U, \"pad\": B}, it writes N partials\n"
             "{\"i\": I, \"t\": T, \"pad\": \"x...\"} U microseconds apart (0: at once), then the\n"
             "result {\"partials\": N, \"t\": T}; T is the wall clock in microseconds when the\n"
             "line was written. Jobs in flight take turns, a line each.\n");
}

int
main (int argc, char **argv)
{
    if (argc == 2 && strcmp (argv[1], "--help") == 0) {
        s_usage (stdout);
        return 0;
    }
    if (argc > 1) {
        fprintf (stderr, "gridq-bench-engine: unknown argument '%s'\n", argv[1]);
        s_usage (stderr);
        return 2;
    }
    /* Wake on time: the pacing between lines is what the latency run relies on. */
    prctl (PR_SET_TIMERSLACK, 1UL);
    s_line = (char *) malloc (S_MAX_PAD + 256);
    if (!s_line) {
        return 1;
    }
    static const char ready[] = "{\"ready\":true,\"models\":[]}\n";
    s_write (ready, sizeof ready - 1);
    bool input = true; /* stdin is open: after its end, the jobs in flight finish */
    while (input || s_njobs > 0) {
        /* Sleep until the earliest job is due, or a line comes; not at all when one is due. */
        int64_t now = gq_mono_us ();
        int64_t wait_us = -1;
        for (int i = 0; i < s_njobs; i++) {
            int64_t left = s_jobs[i].due_us - now;
            wait_us = left <= 0 ? 0 : wait_us < 0 || left < wait_us ? left : wait_us;
        }
        struct timespec timeout = {wait_us / 1000000, (wait_us % 1000000) * 1000};
        struct pollfd in = {input ? 0 : -1, POLLIN, 0};
        if (ppoll (&in, 1, wait_us < 0 ? NULL : &timeout, NULL) > 0 && !s_read ()) {
            input = false;
        }
        /* Every job that is due writes one line, in turn. */
        now = gq_mono_us ();
        for (int i = 0; i < s_njobs;) {
            s_job_t *job = &s_jobs[i];
            if (job->due_us > now) {
                i++;
                continue;
            }
            bool over = s_job_step (job);
            /* Keep the pace without bursts: a job that fell behind starts again from now. */
            job->due_us += job->interval_us;
            if (job->due_us < now) {
                job->due_us = now;
            }
            if (over) {
                s_job_remove (i);
            } else {
                i++;
            }
        }
    }
    return 0;
}
