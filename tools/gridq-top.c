/*  gridq-top.c — a live, full-screen view of a gridq fleet, in the manner of htop and nvtop.

    Each refresh is one round of four requests over the client API (NODES, STATS, and JOBS for
    the latest jobs and for the latest failures, an array one entry in each), sent together and
    matched by correlation id; rates come from the differences between rounds (jobs per minute
    per node from jobs_ok, done and failed per second from the broker's counts). The screen loop
    never blocks on the broker: it polls the client socket and the keyboard together, so 'q'
    answers at once even when the broker is away.

    --once prints one snapshot as text or JSON without curses, for scripts and tests.

    Exit status: 0 success; 2 usage error; 3 no broker answered; 4 the broker refused. */
#define _GNU_SOURCE
#include <curses.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gq_arrayview.h"
#include "gq_client.h"
#include "tool.h"
#include "tuning.h"

#ifndef GQ_VERSION
#define GQ_VERSION "0.1.0"
#endif

enum {
    S_EXIT_OK = 0,     /* success */
    S_EXIT_USAGE = 2,  /* bad command line */
    S_EXIT_BROKER = 3, /* no broker answered */
    S_EXIT_REFUSED = 4 /* the broker answered ERROR (a key without the client role, ...) */
};

/* ---- Counter series: rates from differences --------------------------------------------- */

typedef struct {
    int64_t t_us[GQ_TOP_HISTORY_SAMPLES]; /* when each sample was taken (monotonic) */
    double value[GQ_TOP_HISTORY_SAMPLES]; /* the counter then */
    size_t head;                          /* next slot to write */
    size_t size;                          /* samples held */
} s_series_t;

/* Adds a sample; a counter that went backwards (a node registered again, old jobs purged)
   starts the series afresh. */
static void
s_series_add (s_series_t *self, int64_t t_us, double value)
{
    if (self->size) {
        size_t last = (self->head + GQ_TOP_HISTORY_SAMPLES - 1) % GQ_TOP_HISTORY_SAMPLES;
        if (value < self->value[last]) {
            self->size = 0;
        }
    }
    self->t_us[self->head] = t_us;
    self->value[self->head] = value;
    self->head = (self->head + 1) % GQ_TOP_HISTORY_SAMPLES;
    if (self->size < GQ_TOP_HISTORY_SAMPLES) {
        self->size++;
    }
}

/* Increase per second over the last window_us (at most), or NAN with fewer than two samples. */
static double
s_series_rate (s_series_t *self, int64_t window_us)
{
    if (self->size < 2) {
        return NAN;
    }
    size_t last = (self->head + GQ_TOP_HISTORY_SAMPLES - 1) % GQ_TOP_HISTORY_SAMPLES;
    size_t first = last;
    for (size_t i = 1; i < self->size; i++) {
        size_t at = (last + GQ_TOP_HISTORY_SAMPLES - i) % GQ_TOP_HISTORY_SAMPLES;
        if (self->t_us[last] - self->t_us[at] > window_us) {
            break;
        }
        first = at;
    }
    if (first == last) {
        /* Only samples older than the window: use the newest of them. */
        first = (last + GQ_TOP_HISTORY_SAMPLES - 1) % GQ_TOP_HISTORY_SAMPLES;
    }
    double secs = (double) (self->t_us[last] - self->t_us[first]) / 1e6;
    return secs > 0 ? (self->value[last] - self->value[first]) / secs : NAN;
}

/* ---- State --------------------------------------------------------------------------------- */

typedef enum { S_SORT_NAME, S_SORT_VRAM, S_SORT_RUNNING, S_SORT_RTT, S_SORTS } s_sort_t;
static const char *s_sort_names[S_SORTS] = {"name", "vram", "running", "rtt"};

/* The requests of one round, in this order. */
enum { S_REQ_NODES, S_REQ_STATS, S_REQ_JOBS, S_REQ_RECENT, S_REQS };
static const char *s_req_commands[S_REQS] = {"NODES", "STATS", "JOBS", "JOBS"};

typedef struct {
    s_series_t ok;            /* the node's jobs_ok */
    int64_t round;            /* last round that listed the node */
} s_node_hist_t;

typedef struct {
    gq_client_t *client;      /* our connection to the broker */
    int timeout_ms;           /* how long a round may take */
    int interval_ms;          /* time between rounds */
    s_sort_t sort;            /* fleet order */
    bool paused;              /* no new rounds */
    bool expand;              /* arrays show their elements under their rows */

    /* The latest complete round (owned), NULL before the first. */
    json_t *nodes;            /* NODES "nodes", each with "jobs_per_min" added */
    json_t *stats;            /* STATS reply */
    json_t *failures;         /* JOBS "jobs" (failed, newest first; an array one entry) */
    json_t *recent;           /* JOBS "jobs" (all states, newest first; an array one entry) */
    double done_per_s;        /* jobs done per second, NAN until measured */
    double failed_per_s;      /* jobs failed per second, NAN until measured */
    int64_t updated_ms;       /* wall clock of that round */
    int64_t rounds;           /* complete rounds */

    s_series_t done;          /* STATS jobs.done */
    s_series_t failed;        /* STATS jobs.failed */
    zhashx_t *node_hist;      /* node name -> s_node_hist_t */

    /* The round in flight. */
    bool in_flight;           /* requests sent, replies awaited */
    int64_t req[S_REQS];      /* their correlation ids */
    json_t *reply[S_REQS];    /* replies received so far (owned) */
    int64_t sent_us;          /* when they were sent */

    char error[512];          /* why the last round failed, "" after a good one */
    bool refused;             /* the last round failed on an ERROR reply */
} s_top_t;

static volatile sig_atomic_t s_interrupted = 0;
static bool s_curses_on = false;   /* endwin is due */

static void
s_on_signal (int sig)
{
    (void) sig;
    s_interrupted = 1;
}

static void
s_restore_terminal (void)
{
    if (s_curses_on) {
        endwin ();
        s_curses_on = false;
    }
}

/* ---- JSON helpers -------------------------------------------------------------------------- */

static const char *
s_str (json_t *obj, const char *key, const char *otherwise)
{
    const char *value = json_string_value (json_object_get (obj, key));
    return value ? value : otherwise;
}

static int64_t
s_int (json_t *obj, const char *key)
{
    return (int64_t) json_integer_value (json_object_get (obj, key));
}

static double
s_num (json_t *obj, const char *key)
{
    json_t *value = json_object_get (obj, key);
    return json_is_number (value) ? json_number_value (value) : NAN;
}

/* ---- Rounds: three requests out, three replies in ----------------------------------------- */

static void
s_round_clear (s_top_t *top)
{
    for (int i = 0; i < S_REQS; i++) {
        json_decref (top->reply[i]);
        top->reply[i] = NULL;
        top->req[i] = 0;
    }
    top->in_flight = false;
}

static void
s_round_send (s_top_t *top)
{
    s_round_clear (top);
    top->sent_us = gq_mono_us ();
    int expand = top->expand ? GQ_TOP_ARRAY_ELEMENTS : 0;
    for (int i = 0; i < S_REQS; i++) {
        json_t *body = json_object ();
        if (i == S_REQ_JOBS) {
            json_decref (body);
            body = json_pack ("{s:s, s:i, s:b, s:i}", "state", "failed", "limit",
                              GQ_TOP_FAILED_JOBS, "arrays", true, "expand", expand);
        } else if (i == S_REQ_RECENT) {
            json_decref (body);
            body = json_pack ("{s:i, s:b, s:i}", "limit", GQ_TOP_RECENT_JOBS, "arrays", true,
                              "expand", expand);
        }
        top->req[i] = gq_client_send (top->client, s_req_commands[i], body);
        if (top->req[i] < 0) {
            snprintf (top->error, sizeof top->error, "%s", gq_client_error (top->client));
            s_round_clear (top);
            return;
        }
    }
    top->in_flight = true;
}

/* The JSON array reply[key] (a new reference; an empty one when the reply has none). */
static json_t *
s_reply_array (json_t *reply, const char *key)
{
    json_t *array = json_object_get (reply, key);
    return json_is_array (array) ? json_incref (array) : json_array ();
}

/* The round's replies are all in: they become the latest snapshot, rates are updated. */
static void
s_round_apply (s_top_t *top)
{
    int64_t now_us = gq_mono_us ();
    top->rounds++;
    json_decref (top->nodes);
    json_decref (top->stats);
    json_decref (top->failures);
    json_decref (top->recent);
    top->nodes = s_reply_array (top->reply[S_REQ_NODES], "nodes");
    top->stats = json_incref (top->reply[S_REQ_STATS]);
    top->failures = s_reply_array (top->reply[S_REQ_JOBS], "jobs");
    top->recent = s_reply_array (top->reply[S_REQ_RECENT], "jobs");
    json_t *jobs = json_object_get (top->stats, "jobs");
    s_series_add (&top->done, now_us, (double) s_int (jobs, "done"));
    s_series_add (&top->failed, now_us, (double) s_int (jobs, "failed"));
    top->done_per_s = s_series_rate (&top->done, GQ_TOP_RATE_WINDOW_US);
    top->failed_per_s = s_series_rate (&top->failed, GQ_TOP_RATE_WINDOW_US);

    size_t i;
    json_t *node;
    json_array_foreach (top->nodes, i, node) {
        const char *name = s_str (node, "name", "?");
        s_node_hist_t *hist = (s_node_hist_t *) zhashx_lookup (top->node_hist, name);
        if (!hist) {
            hist = (s_node_hist_t *) calloc (1, sizeof *hist);
            assert (hist);
            zhashx_insert (top->node_hist, name, hist);
        }
        hist->round = top->rounds;
        s_series_add (&hist->ok, now_us, (double) s_int (node, "jobs_ok"));
        double per_min = s_series_rate (&hist->ok, GQ_TOP_NODE_WINDOW_US) * 60;
        json_object_set_new (node, "jobs_per_min", isnan (per_min) ? json_null ()
                                                                   : json_real (per_min));
    }
    /* Forget nodes that the broker no longer lists. */
    zlistx_t *gone = zlistx_new ();
    for (s_node_hist_t *hist = (s_node_hist_t *) zhashx_first (top->node_hist); hist;
         hist = (s_node_hist_t *) zhashx_next (top->node_hist)) {
        if (hist->round != top->rounds) {
            zlistx_add_end (gone, (void *) zhashx_cursor (top->node_hist));
        }
    }
    for (const char *name = (const char *) zlistx_first (gone); name;
         name = (const char *) zlistx_next (gone)) {
        zhashx_delete (top->node_hist, name);
    }
    zlistx_destroy (&gone);
    top->updated_ms = gq_now_ms ();
    top->error[0] = 0;
    s_round_clear (top);
}

/* Takes one message from the broker (body: owned). Returns true when it completed a round. */
static bool
s_round_take (s_top_t *top, const char *command, int64_t req, json_t *body)
{
    int slot = -1;
    for (int i = 0; top->in_flight && i < S_REQS; i++) {
        if (top->req[i] == req) {
            slot = i;
        }
    }
    if (slot < 0) {
        json_decref (body);  /* a late reply to a round given up */
        return false;
    }
    if (streq (command, "ERROR")) {
        top->refused = true;
        snprintf (top->error, sizeof top->error, "%s %s: %s", s_req_commands[slot],
                  s_str (body, "code", "ERROR"), s_str (body, "message", "refused"));
        json_decref (body);
        s_round_clear (top);
        return false;
    }
    json_decref (top->reply[slot]);
    top->reply[slot] = body;
    for (int i = 0; i < S_REQS; i++) {
        if (!top->reply[i]) {
            return false;
        }
    }
    s_round_apply (top);
    return true;
}

/* Gives up on a round that took longer than the timeout. true when it did. */
static bool
s_round_expire (s_top_t *top, int64_t now_us)
{
    if (!top->in_flight || now_us - top->sent_us < (int64_t) top->timeout_ms * 1000) {
        return false;
    }
    top->refused = false;
    snprintf (top->error, sizeof top->error,
              "no broker answered at %s within %g s: is gridq-broker running?",
              gq_client_endpoint (top->client), top->timeout_ms / 1000.0);
    s_round_clear (top);
    return true;
}

/* Reads what the broker has sent, without waiting. true when a round completed. */
static bool
s_round_drain (s_top_t *top)
{
    bool completed = false;
    char command[32];
    int64_t req;
    json_t *body;
    while (gq_client_recv (top->client, 0, command, &req, &body, NULL) == 0) {
        completed |= s_round_take (top, command, req, body);
    }
    return completed;
}

/* One round, waiting for it (bounded by the timeout). 0, or -1 with top->error set. */
static int
s_round_blocking (s_top_t *top)
{
    int64_t before = top->rounds;
    s_round_send (top);
    while (top->in_flight && !s_interrupted) {
        int64_t left_ms = top->timeout_ms - (gq_mono_us () - top->sent_us) / 1000;
        if (left_ms <= 0) {
            s_round_expire (top, gq_mono_us ());
            break;
        }
        char command[32];
        int64_t req;
        json_t *body;
        if (gq_client_recv (top->client, (int) left_ms, command, &req, &body, NULL) == 0) {
            s_round_take (top, command, req, body);
        }
    }
    if (top->in_flight) {
        s_round_clear (top);
        snprintf (top->error, sizeof top->error, "interrupted");
    }
    return top->rounds > before ? 0 : -1;
}

/* ---- Formatting ---------------------------------------------------------------------------- */

/* MiB as "512M", "23.5G", "1.2T". */
static char *
s_fmt_mb (double mb, char *buf, size_t size)
{
    if (isnan (mb)) {
        snprintf (buf, size, "-");
    } else if (mb < 1024) {
        snprintf (buf, size, "%.0fM", mb);
    } else if (mb < 1024 * 1024) {
        snprintf (buf, size, "%.1fG", mb / 1024);
    } else {
        snprintf (buf, size, "%.1fT", mb / 1024 / 1024);
    }
    return buf;
}

/* A duration in ms as "850ms", "12.3s", "5m02s", "3h07m", "2d04h". */
static char *
s_fmt_duration (int64_t ms, char *buf, size_t size)
{
    if (ms < 0) {
        ms = 0;
    }
    int64_t s = ms / 1000;
    if (ms < 1000) {
        snprintf (buf, size, "%lldms", (long long) ms);
    } else if (s < 60) {
        snprintf (buf, size, "%.1fs", ms / 1000.0);
    } else if (s < 3600) {
        snprintf (buf, size, "%lldm%02llds", (long long) (s / 60), (long long) (s % 60));
    } else if (s < 86400) {
        snprintf (buf, size, "%lldh%02lldm", (long long) (s / 3600), (long long) (s / 60 % 60));
    } else {
        snprintf (buf, size, "%lldd%02lldh", (long long) (s / 86400),
                  (long long) (s / 3600 % 24));
    }
    return buf;
}

/* A rate with one decimal, or "-" when not measured yet. */
static char *
s_fmt_rate (double rate, char *buf, size_t size)
{
    if (isnan (rate)) {
        snprintf (buf, size, "-");
    } else {
        snprintf (buf, size, "%.1f", rate < 0 ? 0 : rate);
    }
    return buf;
}

/* "2026-11-29T10:21:13.123Z" -> ms since the epoch, or -1. */
static int64_t
s_parse_time (const char *text)
{
    struct tm tm = {0};
    int ms = 0;
    if (!text || sscanf (text, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                         &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t) timegm (&tm) * 1000 + ms;
}

/* How long ago a timestamp was, "12.0s ago", or "-". */
static char *
s_fmt_ago (const char *when, int64_t now_ms, char *buf, size_t size)
{
    int64_t at = s_parse_time (when);
    if (at < 0) {
        snprintf (buf, size, "-");
        return buf;
    }
    char span[32];
    snprintf (buf, size, "%s ago", s_fmt_duration (now_ms - at, span, sizeof span));
    return buf;
}

/* The names of a node's loaded models, "a,b", or "-". */
static char *
s_fmt_models (json_t *node, char *buf, size_t size)
{
    size_t i, used = 0;
    json_t *model;
    buf[0] = 0;
    json_array_foreach (json_object_get (node, "models_loaded"), i, model) {
        const char *name = json_is_string (model) ? json_string_value (model)
                                                  : s_str (model, "name", NULL);
        if (name && used < size) {
            used += (size_t) snprintf (buf + used, size - used, "%s%s", used ? "," : "", name);
        }
    }
    if (!buf[0]) {
        snprintf (buf, size, "-");
    }
    return buf;
}

/* One line of text: newlines and tabs become spaces (errors may span lines). */
static void
s_one_line (char *text)
{
    for (char *c = text; *c; c++) {
        if (*c == '\n' || *c == '\r' || *c == '\t') {
            *c = ' ';
        }
    }
}

/* ---- The fleet, sorted --------------------------------------------------------------------- */

static double
s_vram_used_mb (json_t *node)
{
    return s_num (node, "vram_total_mb") - s_num (node, "vram_free_mb");
}

static s_sort_t s_sort_by;  /* for s_cmp_nodes: qsort has no context argument */

static int
s_cmp_nodes (const void *a, const void *b)
{
    json_t *x = *(json_t *const *) a, *y = *(json_t *const *) b;
    double dx = 0, dy = 0;
    switch (s_sort_by) {
    case S_SORT_VRAM:
        dx = s_vram_used_mb (x), dy = s_vram_used_mb (y);
        break;
    case S_SORT_RUNNING:
        dx = (double) s_int (x, "running"), dy = (double) s_int (y, "running");
        break;
    case S_SORT_RTT:
        dx = s_num (x, "rtt_ms"), dy = s_num (y, "rtt_ms");
        break;
    default:
        break;
    }
    dx = isnan (dx) ? -1 : dx;
    dy = isnan (dy) ? -1 : dy;
    /* Biggest first for the numbers (as top does), names A to Z, names break ties. */
    if (dx != dy) {
        return dx > dy ? -1 : 1;
    }
    return strcmp (s_str (x, "name", ""), s_str (y, "name", ""));
}

/* The nodes in display order (borrowed pointers; caller frees the array). */
static json_t **
s_sorted_nodes (s_top_t *top, size_t *count)
{
    *count = json_array_size (top->nodes);
    json_t **nodes = (json_t **) calloc (*count ? *count : 1, sizeof *nodes);
    assert (nodes);
    for (size_t i = 0; i < *count; i++) {
        nodes[i] = json_array_get (top->nodes, i);
    }
    s_sort_by = top->sort;
    qsort (nodes, *count, sizeof *nodes, s_cmp_nodes);
    return nodes;
}

/* "[|||||       ]" for a fraction, width inside the brackets. */
static char *
s_fmt_bar (double fraction, int width, char *buf, size_t size)
{
    int fill = isnan (fraction) ? 0 : (int) (fraction * width + 0.5);
    fill = fill < 0 ? 0 : fill > width ? width : fill;
    size_t at = 0;
    buf[at++] = '[';
    for (int i = 0; i < width && at + 2 < size; i++) {
        buf[at++] = i < fill ? '|' : ' ';
    }
    buf[at++] = ']';
    buf[at] = 0;
    return buf;
}

/* The fields of one fleet row, as text. */
typedef struct {
    char vram[48];     /* "12.0G/24.0G" */
    char bar[GQ_TOP_BAR_COLS + 3];
    double fraction;   /* VRAM in use, 0..1, NAN when the total is unknown */
    char slots[24];    /* "2/4", "3/1+16" with prefetch */
    char rtt[24];      /* "0.42ms" */
    char per_min[24];  /* "120.0" */
    char models[256];  /* "llama,mlp" */
} s_row_t;

static void
s_row (json_t *node, s_row_t *row)
{
    double total = s_num (node, "vram_total_mb"), used = s_vram_used_mb (node);
    char a[16], b[16];
    row->fraction = total > 0 ? used / total : NAN;
    if (total > 0) {
        snprintf (row->vram, sizeof row->vram, "%s/%s", s_fmt_mb (used, a, sizeof a),
                  s_fmt_mb (total, b, sizeof b));
    } else {
        snprintf (row->vram, sizeof row->vram, "-");  /* a CPU node: no VRAM to speak of */
    }
    s_fmt_bar (row->fraction, GQ_TOP_BAR_COLS, row->bar, sizeof row->bar);
    /* A node that prefetches shows "+N": jobs it may hold beyond its slots (docs/PROTOCOL.md,
       "Prefetch"), so that running above slots reads as it is. */
    if (s_int (node, "prefetch") > 0) {
        snprintf (row->slots, sizeof row->slots, "%lld/%lld+%lld",
                  (long long) s_int (node, "running"), (long long) s_int (node, "slots"),
                  (long long) s_int (node, "prefetch"));
    } else {
        snprintf (row->slots, sizeof row->slots, "%lld/%lld", (long long) s_int (node, "running"),
                  (long long) s_int (node, "slots"));
    }
    double rtt = s_num (node, "rtt_ms");
    if (isnan (rtt)) {
        snprintf (row->rtt, sizeof row->rtt, "-");
    } else {
        snprintf (row->rtt, sizeof row->rtt, rtt < 10 ? "%.2fms" : "%.0fms", rtt);
    }
    s_fmt_rate (s_num (node, "jobs_per_min"), row->per_min, sizeof row->per_min);
    s_fmt_models (node, row->models, sizeof row->models);
}

/* ---- Jobs lists: the recent jobs and the failures, an array a row ------------------------- */

/* One row of a jobs list: a job; an array (its bar and counts as detail); or, expanded, one of
   its elements under it, named as squeue names an array's task, then by its own id. */
typedef struct {
    char id[64];        /* "42", "41_[0-9%2]", "41_3 (45)" */
    const char *state;  /* the job's; for an array, the state of its liveliest elements */
    const char *kind;   /* the job's, the array's elements' */
    const char *node;   /* where the job ran last, "-" */
    char when[32];      /* how long ago: since it finished (failures) or was submitted */
    char attempts[16];  /* "2", "-" for an array */
    char detail[512];   /* a failed job's reason, or an array's bar and counts */
    bool array;         /* an array's row */
} s_jobrow_t;

/* A job's row (an element of array when array is not NULL). */
static void
s_job_row (json_t *job, json_t *array, const char *when_key, int64_t now_ms, s_jobrow_t *row)
{
    char task[48];
    int64_t id = s_int (job, "id");
    if (array) {
        snprintf (row->id, sizeof row->id, "%s (%lld)",
                  gq_arrayview_task (array, (long long) id, task, sizeof task), (long long) id);
    } else {
        snprintf (row->id, sizeof row->id, "%lld", (long long) id);
    }
    row->state = s_str (job, "state", "?");
    row->kind = s_str (job, "kind", "-");
    row->node = s_str (job, "node", "-");
    s_fmt_ago (s_str (job, when_key, NULL), now_ms, row->when, sizeof row->when);
    snprintf (row->attempts, sizeof row->attempts, "%lld", (long long) s_int (job, "attempts"));
    snprintf (row->detail, sizeof row->detail, "%s", s_str (job, "error", ""));
    s_one_line (row->detail);
    row->array = false;
}

/* An array's row, from its summary. */
static void
s_array_row (json_t *summary, const char *when_key, int64_t now_ms, s_jobrow_t *row)
{
    char bar[GQ_TOP_ARRAY_BAR_COLS + 3], counts[256];
    gq_arrayview_label (summary, row->id, sizeof row->id);
    row->state = gq_arrayview_state (summary);
    row->kind = s_str (summary, "kind", "-");
    row->node = "-";
    /* Its submission in the recent jobs; no one time ends it ("-") among the failures. */
    s_fmt_ago (s_str (summary, when_key, NULL), now_ms, row->when, sizeof row->when);
    snprintf (row->attempts, sizeof row->attempts, "-");
    snprintf (row->detail, sizeof row->detail, "%s %s",
              gq_arrayview_bar (summary, GQ_TOP_ARRAY_BAR_COLS, bar, sizeof bar),
              gq_arrayview_counts (summary, counts, sizeof counts));
    row->array = true;
}

/* The rows of a listing (JOBS with "arrays"): each entry, and under an array the elements it
   came with ("expand"). A malloc'd array (the caller frees) of *count rows; strings borrowed
   from entries. *id_cols: the widest id, at most GQ_TOP_ID_COLS. */
static s_jobrow_t *
s_job_rows (json_t *entries, const char *when_key, int64_t now_ms, size_t *count, int *id_cols)
{
    size_t n = 0, i, e;
    json_t *entry, *element;
    json_array_foreach (entries, i, entry) {
        n += 1 + json_array_size (json_object_get (entry, "elements"));
    }
    s_jobrow_t *rows = (s_jobrow_t *) calloc (n ? n : 1, sizeof *rows);
    assert (rows);
    *count = 0;
    *id_cols = 10;
    json_array_foreach (entries, i, entry) {
        json_t *summary = json_object_get (entry, "array");
        if (summary) {
            s_array_row (summary, when_key, now_ms, &rows[(*count)++]);
        } else {
            s_job_row (entry, NULL, when_key, now_ms, &rows[(*count)++]);
        }
        json_array_foreach (json_object_get (entry, "elements"), e, element) {
            s_job_row (element, summary, when_key, now_ms, &rows[(*count)++]);
        }
    }
    for (i = 0; i < *count; i++) {
        int len = (int) strlen (rows[i].id);
        *id_cols = len > *id_cols ? len : *id_cols;
    }
    *id_cols = *id_cols > GQ_TOP_ID_COLS ? GQ_TOP_ID_COLS : *id_cols;
    return rows;
}

/* ---- --once: text and JSON ----------------------------------------------------------------- */

static void
s_print_text (s_top_t *top, FILE *out)
{
    char now_text[GQ_TIME_BUF], a[32], b[32], c[32];
    json_t *jobs = json_object_get (top->stats, "jobs");
    json_t *fleet = json_object_get (top->stats, "nodes");
    json_t *queue = json_object_get (top->stats, "queue");
    fprintf (out, "gridq-top  %s  %s  up %s\n", gq_client_endpoint (top->client),
             gq_format_time (top->updated_ms, now_text),
             s_fmt_duration (s_int (top->stats, "uptime_ms"), a, sizeof a));
    fprintf (out, "Jobs   waiting %lld  queued %lld  running %lld  done %lld (%s/s)  "
                  "failed %lld (%s/s)  cancelled %lld\n",
             (long long) s_int (jobs, "waiting"), (long long) s_int (jobs, "queued"), (long long) s_int (jobs, "running"),
             (long long) s_int (jobs, "done"), s_fmt_rate (top->done_per_s, b, sizeof b),
             (long long) s_int (jobs, "failed"), s_fmt_rate (top->failed_per_s, c, sizeof c),
             (long long) s_int (jobs, "cancelled"));
    fprintf (out, "Queue  by priority");
    json_t *by_priority = json_object_get (queue, "by_priority");
    for (int p = 9; p >= 0; p--) {
        fprintf (out, " %d:%lld", p,
                 (long long) json_integer_value (json_array_get (by_priority, (size_t) p)));
    }
    fprintf (out, "  oldest wait %s\n",
             s_fmt_duration (s_int (queue, "oldest_wait_ms"), a, sizeof a));
    fprintf (out, "Nodes  %lld online  %lld busy  %lld draining  %lld offline  rejected %lld\n",
             (long long) s_int (fleet, "online"), (long long) s_int (fleet, "busy"),
             (long long) s_int (fleet, "draining"), (long long) s_int (fleet, "offline"),
             (long long) s_int (top->stats, "rejected"));
    json_t *store = json_object_get (top->stats, "store");
    if (store && !json_is_true (json_object_get (store, "ok"))) {
        fprintf (out, "STORE  cannot commit since %s: %s; %lld writes waiting, new work paused\n",
                 json_string_value (json_object_get (store, "since")) ?: "-",
                 json_string_value (json_object_get (store, "error")) ?: "-",
                 (long long) s_int (store, "writes_waiting"));
    }
    fprintf (out, "\n%-*s %-*s %-*s %-13s %-7s %-8s %-9s %8s %s\n", GQ_TOP_NAME_COLS, "NODE",
             GQ_TOP_GPU_COLS, "GPU", GQ_TOP_BAR_COLS + 2, "VRAM", "USED/TOTAL", "SLOTS", "RTT",
             "STATUS", "JOBS/MIN", "MODELS");
    size_t count;
    json_t **nodes = s_sorted_nodes (top, &count);
    for (size_t i = 0; i < count; i++) {
        s_row_t row;
        s_row (nodes[i], &row);
        fprintf (out, "%-*s %-*s %s %-13s %-7s %-8s %-9s %8s %s\n", GQ_TOP_NAME_COLS,
                 s_str (nodes[i], "name", "?"), GQ_TOP_GPU_COLS, s_str (nodes[i], "gpu_model", "-"),
                 row.bar, row.vram, row.slots, row.rtt, s_str (nodes[i], "status", "?"),
                 row.per_min, row.models);
    }
    if (!count) {
        fprintf (out, "(no nodes: start gridq-worker --broker %s)\n",
                 gq_client_endpoint (top->client));
    }
    free (nodes);
    int id_w;
    size_t n;
    s_jobrow_t *rows = s_job_rows (top->recent, "submitted_at", top->updated_ms, &n, &id_w);
    fprintf (out, "\nRecent jobs%s\n", n ? "" : ": none");
    if (n) {
        fprintf (out, "%-*s %-9s %-12s %-*s %-14s %s\n", id_w, "ID", "STATE", "KIND",
                 GQ_TOP_NAME_COLS, "NODE", "SUBMITTED", "PROGRESS");
    }
    for (size_t i = 0; i < n; i++) {
        fprintf (out, "%-*s %-9s %-12s %-*s %-14s %s\n", id_w, rows[i].id, rows[i].state,
                 rows[i].kind, GQ_TOP_NAME_COLS, rows[i].node, rows[i].when,
                 rows[i].array ? rows[i].detail : "");
    }
    free (rows);
    rows = s_job_rows (top->failures, "finished_at", top->updated_ms, &n, &id_w);
    fprintf (out, "\nRecent failures%s\n", n ? "" : ": none");
    if (n) {
        fprintf (out, "%-*s %-14s %-*s %-12s %-4s %s\n", id_w, "ID", "WHEN", GQ_TOP_NAME_COLS,
                 "NODE", "KIND", "ATT", "REASON");
    }
    for (size_t i = 0; i < n; i++) {
        fprintf (out, "%-*s %-14s %-*s %-12s %-4s %s\n", id_w, rows[i].id, rows[i].when,
                 GQ_TOP_NAME_COLS, rows[i].node, rows[i].kind, rows[i].attempts,
                 rows[i].detail[0] ? rows[i].detail : "-");
    }
    free (rows);
}

static json_t *
s_rate_json (double rate)
{
    return isnan (rate) ? json_null () : json_real (rate);
}

static void
s_print_json (s_top_t *top, FILE *out)
{
    char now_text[GQ_TIME_BUF];
    json_t *queue = json_deep_copy (json_object_get (top->stats, "queue"));
    if (!json_is_object (queue)) {
        json_decref (queue);
        queue = json_object ();
    }
    json_object_set_new (queue, "done_per_s", s_rate_json (top->done_per_s));
    json_object_set_new (queue, "failed_per_s", s_rate_json (top->failed_per_s));
    json_t *jobs = json_object_get (top->stats, "jobs");
    json_t *fleet = json_object_get (top->stats, "nodes");
    json_t *store = json_object_get (top->stats, "store");
    json_t *snapshot = json_pack (
        "{s:s, s:s, s:O, s:O, s:o, s:O, s:O, s:I, s:I, s:O}", "broker",
        gq_client_endpoint (top->client), "time", gq_format_time (top->updated_ms, now_text),
        "nodes", top->nodes, "jobs", jobs ? jobs : json_null (), "queue", queue, "fleet",
        fleet ? fleet : json_null (), "failures", top->failures, "rejected",
        (json_int_t) s_int (top->stats, "rejected"), "uptime_ms",
        (json_int_t) s_int (top->stats, "uptime_ms"), "store", store ? store : json_null ());
    assert (snapshot);
    json_object_set (snapshot, "recent", top->recent);
    json_dumpf (snapshot, out, JSON_COMPACT);
    fputc ('\n', out);
    json_decref (snapshot);
}

/* ---- The screen ---------------------------------------------------------------------------- */

enum { S_COLOR_OK = 1, S_COLOR_WARN, S_COLOR_BAD, S_COLOR_DIM, S_COLOR_TITLE };

/* Writes text at (y, x), clipped to the screen, with attributes. Returns the column after. */
static int
s_put (int y, int x, attr_t attr, const char *format, ...) __attribute__ ((format (printf, 4, 5)));

static int
s_put (int y, int x, attr_t attr, const char *format, ...)
{
    if (y < 0 || y >= LINES || x >= COLS) {
        return x;
    }
    char text[1024];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    attron (attr);
    mvaddnstr (y, x, text, COLS - x);
    attroff (attr);
    int len = (int) strlen (text);
    return x + len;
}

static attr_t
s_status_attr (const char *status)
{
    if (!has_colors ()) {
        return streq (status, "offline") ? A_BOLD : A_NORMAL;
    }
    if (streq (status, "online")) {
        return COLOR_PAIR (S_COLOR_OK);
    }
    if (streq (status, "busy")) {
        return COLOR_PAIR (S_COLOR_WARN);
    }
    return COLOR_PAIR (S_COLOR_BAD) | A_BOLD;
}

/* A job's state: red when it failed, green when done, bold while it runs. */
static attr_t
s_state_attr (const char *state)
{
    if (streq (state, "running")) {
        return A_BOLD;
    }
    if (!has_colors ()) {
        return A_NORMAL;
    }
    return streq (state, "failed") ? COLOR_PAIR (S_COLOR_BAD)
           : streq (state, "done") ? COLOR_PAIR (S_COLOR_OK)
                                   : A_NORMAL;
}

static attr_t
s_bar_attr (double fraction)
{
    if (!has_colors () || isnan (fraction)) {
        return A_NORMAL;
    }
    return COLOR_PAIR (fraction < 0.6 ? S_COLOR_OK : fraction < 0.9 ? S_COLOR_WARN
                                                                    : S_COLOR_BAD);
}

static void
s_draw (s_top_t *top)
{
    erase ();
    char a[32], b[32], c[32];
    int y = 0;
    int64_t now_ms = gq_now_ms ();

    /* Title bar. */
    attr_t title = has_colors () ? COLOR_PAIR (S_COLOR_TITLE) | A_BOLD : A_REVERSE;
    attron (title);
    mvhline (y, 0, ' ', COLS);
    attroff (title);
    time_t now_s = (time_t) (now_ms / 1000);
    struct tm tm;
    localtime_r (&now_s, &tm);
    char clock[16];
    strftime (clock, sizeof clock, "%H:%M:%S", &tm);
    s_put (y, 1, title, "gridq-top  %s  up %s  %s%s", gq_client_endpoint (top->client),
           top->stats ? s_fmt_duration (s_int (top->stats, "uptime_ms"), a, sizeof a) : "-",
           clock, top->paused ? "  [PAUSED]" : "");
    y += 2;

    if (!top->stats) {
        s_put (y, 1, A_NORMAL, "waiting for the broker...");
    } else {
        json_t *jobs = json_object_get (top->stats, "jobs");
        json_t *fleet = json_object_get (top->stats, "nodes");
        json_t *queue = json_object_get (top->stats, "queue");
        int x = s_put (y, 1, A_BOLD, "Jobs  ");
        x = s_put (y, x, A_NORMAL,
                   "waiting %lld   queued %lld   running %lld   done %lld (%s/s)   ",
                   (long long) s_int (jobs, "waiting"), (long long) s_int (jobs, "queued"), (long long) s_int (jobs, "running"),
                   (long long) s_int (jobs, "done"), s_fmt_rate (top->done_per_s, a, sizeof a));
        attr_t failed_attr = s_int (jobs, "failed") && has_colors () ? COLOR_PAIR (S_COLOR_BAD)
                                                                     : A_NORMAL;
        x = s_put (y, x, failed_attr, "failed %lld (%s/s)", (long long) s_int (jobs, "failed"),
                   s_fmt_rate (top->failed_per_s, b, sizeof b));
        s_put (y, x, A_NORMAL, "   cancelled %lld", (long long) s_int (jobs, "cancelled"));
        y++;
        x = s_put (y, 1, A_BOLD, "Queue ");
        x = s_put (y, x, A_NORMAL, "by priority");
        json_t *by_priority = json_object_get (queue, "by_priority");
        for (int p = 9; p >= 0; p--) {
            int64_t n = (int64_t) json_integer_value (json_array_get (by_priority, (size_t) p));
            x = s_put (y, x, n ? A_BOLD : A_DIM, " %d:%lld", p, (long long) n);
        }
        s_put (y, x, A_NORMAL, "   oldest wait %s",
               s_fmt_duration (s_int (queue, "oldest_wait_ms"), c, sizeof c));
        y++;
        x = s_put (y, 1, A_BOLD, "Nodes ");
        s_put (y, x, A_NORMAL, "%lld online   %lld busy   %lld draining   %lld offline   "
                               "rejected messages %lld",
               (long long) s_int (fleet, "online"), (long long) s_int (fleet, "busy"),
               (long long) s_int (fleet, "draining"), (long long) s_int (fleet, "offline"),
               (long long) s_int (top->stats, "rejected"));
        json_t *store = json_object_get (top->stats, "store");
        if (store && !json_is_true (json_object_get (store, "ok"))) {
            y++;
            x = s_put (y, 1, A_BOLD | A_REVERSE, "STORE");
            s_put (y, x, A_BOLD, " cannot commit since %s: %s; %lld writes waiting, new work "
                                 "paused",
                   json_string_value (json_object_get (store, "since")) ?: "-",
                   json_string_value (json_object_get (store, "error")) ?: "-",
                   (long long) s_int (store, "writes_waiting"));
        }
    }
    y += 2;

    /* The fleet table: as many rows as fit, leaving room for some failures. */
    size_t count = 0;
    json_t **nodes = top->nodes ? s_sorted_nodes (top, &count) : NULL;
    int name_w = 4, gpu_w = 3;
    for (size_t i = 0; i < count; i++) {
        int n = (int) strlen (s_str (nodes[i], "name", "?"));
        int g = (int) strlen (s_str (nodes[i], "gpu_model", "-"));
        name_w = n > name_w ? n : name_w;
        gpu_w = g > gpu_w ? g : gpu_w;
    }
    name_w = name_w > GQ_TOP_NAME_COLS ? GQ_TOP_NAME_COLS : name_w;
    gpu_w = gpu_w > GQ_TOP_GPU_COLS ? GQ_TOP_GPU_COLS : gpu_w;
    const char *heads[] = {"NODE", "GPU", "VRAM", "SLOTS", "RTT", "STATUS", "JOBS/MIN", "MODELS"};
    int widths[] = {name_w, gpu_w, GQ_TOP_BAR_COLS + 2 + 1 + 13, 7, 8, 9, 9, 0};
    /* Which header is the sort column. */
    const int sort_col[S_SORTS] = {0, 2, 3, 4};
    attron (A_REVERSE);
    mvhline (y, 0, ' ', COLS);
    attroff (A_REVERSE);
    int x = 1;
    for (int col = 0; col < 8; col++) {
        attr_t attr = A_REVERSE | (col == sort_col[top->sort] ? A_BOLD | A_UNDERLINE : 0);
        s_put (y, x, attr, "%s", heads[col]);
        x += widths[col] + 1;
    }
    y++;
    size_t nrecent = 0, nfail = 0;
    int recent_w = 10, fail_w = 10;
    s_jobrow_t *recent =
        top->recent ? s_job_rows (top->recent, "submitted_at", now_ms, &nrecent, &recent_w) : NULL;
    s_jobrow_t *failures =
        top->failures ? s_job_rows (top->failures, "finished_at", now_ms, &nfail, &fail_w) : NULL;
    /* The fleet comes first; the recent jobs and the failures keep at least their title and the
       newest one (with its column names), and a blank line before each. */
    int fail_min = 1 + (nfail ? 3 : 1);
    int recent_min = nrecent ? 3 : 1;
    int room = LINES - 1 - y - fail_min - recent_min - 1;
    size_t shown = 0;
    for (size_t i = 0; i < count && (int) shown < room; i++, shown++) {
        s_row_t row;
        s_row (nodes[i], &row);
        const char *status = s_str (nodes[i], "status", "?");
        x = 1;
        s_put (y, x, A_BOLD, "%.*s", name_w, s_str (nodes[i], "name", "?"));
        x += name_w + 1;
        s_put (y, x, A_NORMAL, "%.*s", gpu_w, s_str (nodes[i], "gpu_model", "-"));
        x += gpu_w + 1;
        s_put (y, x, s_bar_attr (row.fraction), "%s", row.bar);
        s_put (y, x + GQ_TOP_BAR_COLS + 3, A_NORMAL, "%s", row.vram);
        x += widths[2] + 1;
        s_put (y, x, A_NORMAL, "%s", row.slots);
        x += widths[3] + 1;
        s_put (y, x, A_NORMAL, "%s", row.rtt);
        x += widths[4] + 1;
        s_put (y, x, s_status_attr (status), "%s", status);
        x += widths[5] + 1;
        s_put (y, x, A_NORMAL, "%8s", row.per_min);
        x += widths[6] + 1;
        s_put (y, x, A_NORMAL, "%s", row.models);
        y++;
    }
    if (shown < count) {
        s_put (y++, 1, A_DIM, "... %zu more (a taller terminal shows them)", count - shown);
    } else if (top->nodes && !count) {
        s_put (y++, 1, A_DIM, "no nodes: start gridq-worker --broker %s",
               gq_client_endpoint (top->client));
    }
    free (nodes);
    y++;

    /* The rest is shared: the failures take what they need up to half of it, the recent jobs
       (newest first; an array a row, its elements under it when expanded) the others. */
    int fail_lines = 2 + (nfail ? 1 + (int) nfail : 0);
    int fail_take = fail_lines < (LINES - 1 - y) / 2 ? fail_lines : (LINES - 1 - y) / 2;
    int recent_end = LINES - 1 - (fail_take > fail_min ? fail_take : fail_min);
    if (y < recent_end) {
        s_put (y++, 1, A_BOLD, "Recent jobs%s", nrecent ? "" : ": none");
    }
    if (nrecent && y + 1 < recent_end) {  /* the column names only above at least one row */
        s_put (y++, 1, A_UNDERLINE, "%-*s %-9s %-12s %-*s %-14s %s", recent_w, "ID", "STATE",
               "KIND", name_w, "NODE", "SUBMITTED", "PROGRESS");
    }
    size_t i = 0;
    for (; i < nrecent && y < recent_end; i++, y++) {
        if (i + 1 < nrecent && y + 1 == recent_end) {
            break; /* the last line says how many more */
        }
        s_jobrow_t *row = &recent[i];
        x = s_put (y, 1, row->array ? A_BOLD : A_NORMAL, "%-*.*s ", recent_w, recent_w, row->id);
        x = s_put (y, x, s_state_attr (row->state), "%-9s ", row->state);
        s_put (y, x, A_NORMAL, "%-12s %-*.*s %-14s %s", row->kind, name_w, name_w, row->node,
               row->when, row->array ? row->detail : "");
    }
    if (i < nrecent && y < recent_end) {
        s_put (y++, 1, A_DIM, "... %zu more", nrecent - i);
    }
    y++;

    /* Recent failures, newest first, in what is left above the footer. */
    if (y < LINES - 1) {
        s_put (y++, 1, A_BOLD, "Recent failures%s", nfail ? "" : ": none");
    }
    if (nfail && y + 1 < LINES - 1) {  /* the column names only above at least one row */
        s_put (y++, 1, A_UNDERLINE, "%-*s %-14s %-*s %-12s %-4s %s", fail_w, "ID", "WHEN",
               name_w, "NODE", "KIND", "ATT", "REASON");
    }
    for (i = 0; i < nfail && y < LINES - 1; i++, y++) {
        s_jobrow_t *row = &failures[i];
        x = s_put (y, 1, row->array ? A_BOLD : A_NORMAL, "%-*.*s %-14s %-*.*s %-12s %-4s ",
                   fail_w, fail_w, row->id, row->when, name_w, name_w, row->node, row->kind,
                   row->attempts);
        s_put (y, x, has_colors () && !row->array ? COLOR_PAIR (S_COLOR_BAD) : A_NORMAL, "%s",
               row->detail[0] ? row->detail : "-");
    }
    free (recent);
    free (failures);

    /* Footer: the keys, and the broker's trouble if any. */
    int foot = LINES - 1;
    attron (A_REVERSE);
    mvhline (foot, 0, ' ', COLS);
    attroff (A_REVERSE);
    x = s_put (foot, 1, A_REVERSE, "q quit  s sort: %s  p %s  a %s arrays",
               s_sort_names[top->sort], top->paused ? "resume" : "pause",
               top->expand ? "collapse" : "expand");
    if (top->error[0]) {
        attr_t bad = A_REVERSE | A_BOLD | (has_colors () ? COLOR_PAIR (S_COLOR_BAD) : 0);
        s_put (foot, x + 3, bad, "%s", top->error);
    } else {
        s_put (foot, x + 3, A_REVERSE, "refresh every %s",
               s_fmt_duration (top->interval_ms, a, sizeof a));
    }
    refresh ();
}

static void
s_screen_start (void)
{
    initscr ();
    s_curses_on = true;
    cbreak ();
    noecho ();
    nonl ();
    nodelay (stdscr, TRUE);
    keypad (stdscr, TRUE);
    curs_set (0);
    if (has_colors ()) {
        start_color ();
        use_default_colors ();
        init_pair (S_COLOR_OK, COLOR_GREEN, -1);
        init_pair (S_COLOR_WARN, COLOR_YELLOW, -1);
        init_pair (S_COLOR_BAD, COLOR_RED, -1);
        init_pair (S_COLOR_DIM, COLOR_BLUE, -1);
        init_pair (S_COLOR_TITLE, COLOR_BLACK, COLOR_CYAN);
    }
}

/* The interactive loop: rounds every interval, keys at once, redraws on news and resize. */
static int
s_run_screen (s_top_t *top)
{
    s_screen_start ();
    void *socket = zsock_resolve (gq_client_socket (top->client));
    int64_t next_us = gq_mono_us () + (int64_t) top->interval_ms * 1000;
    int64_t drawn_us = 0;
    bool dirty = true, quit = false;
    while (!quit && !s_interrupted) {
        int64_t now_us = gq_mono_us ();
        if (!top->paused && !top->in_flight && now_us >= next_us) {
            s_round_send (top);
            next_us = now_us + (int64_t) top->interval_ms * 1000;
        }
        dirty |= s_round_expire (top, now_us);
        /* Redraw once a second even without news: the clock and "updated ... ago" move. */
        if (dirty || now_us - drawn_us >= 1000000) {
            s_draw (top);
            drawn_us = now_us;
            dirty = false;
        }
        int64_t wait_ms = (next_us - now_us) / 1000;
        wait_ms = top->in_flight || top->paused ? GQ_TOP_POLL_MAX_MS : wait_ms;
        wait_ms = wait_ms < 1 ? 1 : wait_ms > GQ_TOP_POLL_MAX_MS ? GQ_TOP_POLL_MAX_MS : wait_ms;
        zmq_pollitem_t items[] = {{socket, 0, ZMQ_POLLIN, 0}, {NULL, STDIN_FILENO, ZMQ_POLLIN, 0}};
        int rc = zmq_poll (items, 2, (long) wait_ms);
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) {
            dirty |= s_round_drain (top) || !top->in_flight;
        }
        /* Keys, and KEY_RESIZE (SIGWINCH also wakes zmq_poll). */
        int key;
        while ((key = getch ()) != ERR) {
            dirty = true;
            if (key == 'q' || key == 'Q') {
                quit = true;
            } else if (key == 's' || key == 'S') {
                top->sort = (s_sort_t) ((top->sort + 1) % S_SORTS);
            } else if (key == 'p' || key == 'P' || key == ' ') {
                top->paused = !top->paused;
                next_us = gq_mono_us ();
            } else if (key == 'a' || key == 'A') {
                /* The next round asks for the elements (or not): it goes now. */
                top->expand = !top->expand;
                next_us = gq_mono_us ();
            } else if (key == KEY_RESIZE) {
                clear ();
            }
        }
    }
    s_restore_terminal ();
    return S_EXIT_OK;
}

/* ---- Command line -------------------------------------------------------------------------- */

static void
s_help (FILE *out)
{
    fprintf (out,
             "Usage: gridq-top [OPTIONS]\n"
             "\n"
             "A live view of a gridq fleet, refreshed every second: each node (GPU model, VRAM in\n"
             "use, slots in use, round trip, status, loaded models, jobs per minute), the queue\n"
             "(queued by priority, running, done and failed per second, oldest wait), the latest\n"
             "jobs, and the latest failures with their reasons.\n"
             "\n"
             "An array is one row in both lists, as squeue shows it (41_[0-999%%16]), with a\n"
             "progress bar and its elements counted by state: [#########!>>>-..] 10/16: 9 done,\n"
             "1 failed, 3 running, 1 queued, 2 waiting; a cell per share of its elements:\n"
             "# done, ! failed, x cancelled, > running, - queued, . waiting. Expanded ('a', or\n"
             "--expand), up to %d of its elements follow it, each named as squeue names an\n"
             "array's task, then by its own id: 41_3 (45).\n"
             "\n"
             "Options:\n"
             "  --broker EP          broker endpoint (default $GRIDQ_BROKER or %s)\n"
             "  --timeout DURATION   how long to wait for the broker to answer (default 5s)\n"
             "  --cert FILE          client secret certificate for CURVE (or $GRIDQ_CERT)\n"
             "  --server-cert FILE   the broker's public certificate (or $GRIDQ_SERVER_CERT)\n"
             "  --interval DURATION  time between refreshes (default 1s)\n"
             "  --sort COLUMN        fleet order: name, vram, running or rtt (default name)\n"
             "  --once               print one plain-text snapshot and exit (no screen); rates\n"
             "                       are measured over one interval (--interval 0: not at all)\n"
             "  --json               with --once: one JSON object {\"nodes\": [...],\n"
             "                       \"jobs\": {...}, \"queue\": {...}, \"fleet\": {...},\n"
             "                       \"recent\": [...], \"failures\": [...]} (the lists as\n"
             "                       gridq jobs --json gives them)\n"
             "  --expand             arrays show their elements (the screen's 'a' key)\n"
             "  --help, --version\n"
             "\n"
             "Keys: q quit, s cycle the sort column (name, vram, running, rtt), p pause/resume,\n"
             "a expand/collapse the arrays.\n"
             "Ctrl-C also quits; the terminal is restored either way.\n"
             "\n"
             "Exit status: 0 success; 2 usage error; 3 no broker answered; 4 the broker refused\n"
             "the request (e.g. a certificate without the client role).\n"
             "\n"
             "Examples:\n"
             "  gridq-top --broker tcp://gpu-head.example.net:5555\n"
             "  gridq-top --once --json | jq '.nodes[] | {name, running, jobs_per_min}'\n",
             GQ_TOP_ARRAY_ELEMENTS, GQ_DEFAULT_ENDPOINT);
}

static void
s_node_hist_destroy (void **item)
{
    free (*item);
    *item = NULL;
}

int
main (int argc, char **argv)
{
    tool_set_name ("gridq-top");
    enum { O_BROKER = 1000, O_TIMEOUT, O_CERT, O_SERVER_CERT, O_INTERVAL, O_SORT, O_ONCE,
           O_JSON, O_EXPAND, O_HELP, O_VERSION };
    static const struct option options[] = {
        {"broker", required_argument, NULL, O_BROKER},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"cert", required_argument, NULL, O_CERT},
        {"server-cert", required_argument, NULL, O_SERVER_CERT},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"sort", required_argument, NULL, O_SORT},
        {"once", no_argument, NULL, O_ONCE},
        {"json", no_argument, NULL, O_JSON},
        {"expand", no_argument, NULL, O_EXPAND},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0}};
    gq_client_opts_t opts = {0};
    s_top_t top = {.interval_ms = GQ_TOP_INTERVAL_MS, .done_per_s = NAN, .failed_per_s = NAN};
    bool once = false, json = false;
    opterr = 0;
    int option;
    while ((option = getopt_long (argc, argv, ":h", options, NULL)) != -1) {
        int64_t ms;
        switch (option) {
        case 'h':
        case O_HELP:
            s_help (stdout);
            return S_EXIT_OK;
        case O_VERSION:
            printf ("gridq-top %s\n", GQ_VERSION);
            return S_EXIT_OK;
        case O_BROKER:
            opts.endpoint = optarg;
            break;
        case O_TIMEOUT:
            if (gq_parse_duration_ms (optarg, &ms) || ms <= 0 || ms > INT_MAX) {
                return tool_usage ("--timeout \"%s\" is not a duration like 5s or 500ms", optarg);
            }
            opts.timeout_ms = (int) ms;
            break;
        case O_CERT:
            opts.cert_path = optarg;
            break;
        case O_SERVER_CERT:
            opts.server_cert_path = optarg;
            break;
        case O_INTERVAL:
            if (gq_parse_duration_ms (optarg, &ms) || ms < 0 || ms > 3600 * 1000) {
                return tool_usage ("--interval \"%s\" is not a duration like 1s or 500ms", optarg);
            }
            top.interval_ms = (int) ms;
            break;
        case O_SORT:
            top.sort = S_SORTS;
            for (int s = 0; s < S_SORTS; s++) {
                if (streq (optarg, s_sort_names[s])) {
                    top.sort = (s_sort_t) s;
                }
            }
            if (top.sort == S_SORTS) {
                return tool_usage ("--sort \"%s\" is not one of name, vram, running, rtt", optarg);
            }
            break;
        case O_ONCE:
            once = true;
            break;
        case O_JSON:
            json = true;
            break;
        case O_EXPAND:
            top.expand = true;
            break;
        case ':':
            return tool_usage ("option %s needs a value", argv[optind - 1]);
        default:
            return tool_usage ("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        return tool_usage ("unexpected argument \"%s\"", argv[optind]);
    }
    if (json && !once) {
        return tool_usage ("--json needs --once (the screen is for people)");
    }
    if (!once && top.interval_ms < GQ_TOP_MIN_INTERVAL_MS) {
        return tool_usage ("--interval must be at least %d ms on screen", GQ_TOP_MIN_INTERVAL_MS);
    }
    if (!once && (!isatty (STDIN_FILENO) || !isatty (STDOUT_FILENO))) {
        return tool_usage ("the screen needs a terminal; use --once (or --once --json) in scripts");
    }

    /* Our own SIGINT/SIGTERM handling (not czmq's): the loops see the flag and restore the
       terminal before leaving. */
    zsys_handler_set (NULL);
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_signal;
    sigemptyset (&action.sa_mask);
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
    atexit (s_restore_terminal);
    setlocale (LC_ALL, "");

    char why[512];
    top.client = gq_client_new (&opts, why, sizeof why);
    if (!top.client) {
        fprintf (stderr, "gridq-top: %s\n", why);
        return S_EXIT_USAGE;
    }
    top.timeout_ms = gq_client_timeout (top.client);
    top.node_hist = zhashx_new ();
    zhashx_set_destructor (top.node_hist, s_node_hist_destroy);

    /* The first round before anything else: an absent broker is an error, not a blank screen. */
    int rc = S_EXIT_OK;
    if (s_round_blocking (&top)) {
        fprintf (stderr, "gridq-top: %s\n", top.error);
        rc = top.refused ? S_EXIT_REFUSED : S_EXIT_BROKER;
    } else if (once) {
        if (top.interval_ms > 0) {
            /* A second round one interval later, so that the rates are measured. */
            zclock_sleep (top.interval_ms);
            if (s_round_blocking (&top)) {
                fprintf (stderr, "gridq-top: %s\n", top.error);
                rc = top.refused ? S_EXIT_REFUSED : S_EXIT_BROKER;
            }
        }
        if (rc == S_EXIT_OK) {
            if (json) {
                s_print_json (&top, stdout);
            } else {
                s_print_text (&top, stdout);
            }
        }
    } else {
        rc = s_run_screen (&top);
    }
    s_round_clear (&top);
    json_decref (top.nodes);
    json_decref (top.stats);
    json_decref (top.failures);
    json_decref (top.recent);
    zhashx_destroy (&top.node_hist);
    gq_client_destroy (&top.client);
    return rc;
}
