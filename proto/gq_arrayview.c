/*  gq_arrayview.c — a job array as the listings show it (gq_arrayview.h). */
#include "gq_arrayview.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "gq_check.h"
#include "gq_spec.h"

/* The element states in the bar's order (GQ_ARRAYVIEW_CELLS gives each its cell). */
static const char *const s_states[] = {"done", "failed", "cancelled", "running", "queued",
                                       "waiting"};
#define S_STATES 6

static long long
s_count (json_t *summary, const char *state)
{
    json_int_t n = json_integer_value (json_object_get (json_object_get (summary, "counts"),
                                                        state));
    return n > 0 ? (long long) n : 0;
}

char *
gq_arrayview_label (json_t *summary, char *buf, size_t size)
{
    const char *spec = json_string_value (json_object_get (summary, "spec"));
    snprintf (buf, size, "%lld_[%s]",
              (long long) json_integer_value (json_object_get (summary, "id")), spec ? spec : "?");
    return buf;
}

char *
gq_arrayview_task (json_t *summary, long long job_id, char *buf, size_t size)
{
    gq_arrayspec_t spec;
    char why[100];
    const char *text = json_string_value (json_object_get (summary, "spec"));
    long long first = json_integer_value (json_object_get (summary, "first"));
    int64_t index = text && !gq_arrayspec_parse (text, &spec, why, sizeof why)
                        ? gq_arrayspec_index (&spec, job_id - first)
                        : -1;
    long long id = json_integer_value (json_object_get (summary, "id"));
    if (index < 0) {
        snprintf (buf, size, "%lld_?", id);
    } else {
        snprintf (buf, size, "%lld_%lld", id, (long long) index);
    }
    return buf;
}

const char *
gq_arrayview_state (json_t *summary)
{
    static const char *const live[] = {"running", "queued", "waiting"};
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        if (s_count (summary, live[i])) {
            return live[i];
        }
    }
    const char *state = json_string_value (json_object_get (summary, "state"));
    return state ? state : "?";
}

char *
gq_arrayview_bar (json_t *summary, int width, char *buf, size_t size)
{
    long long n[S_STATES], total = 0;
    int cells[S_STATES];
    for (int s = 0; s < S_STATES; s++) {
        n[s] = s_count (summary, s_states[s]);
        total += n[s];
    }
    long long count = json_integer_value (json_object_get (summary, "count"));
    total = count > total ? count : total; /* what is not counted yet stays blank */
    width = width < 0 ? 0 : width;
    int left = width;
    for (int s = 0; s < S_STATES; s++) {
        cells[s] = total ? (int) (n[s] * width / total) : 0;
        left -= cells[s];
    }
    /* The cells rounding left over go to the largest remainders (the bar's order breaks ties),
       so that the bar is full once every element is counted. */
    while (left > 0 && total) {
        int best = -1;
        long long best_rem = 0;
        for (int s = 0; s < S_STATES; s++) {
            long long rem = n[s] * width - (long long) cells[s] * total;
            if (rem > best_rem) {
                best = s, best_rem = rem;
            }
        }
        if (best < 0) {
            break; /* the rest is the blank of elements not counted */
        }
        cells[best]++;
        left--;
    }
    /* A state with elements shows at least once (one failure among thousands), taken from the
       largest that can spare a cell. */
    for (int s = 0; s < S_STATES; s++) {
        if (n[s] && !cells[s]) {
            int largest = 0;
            for (int t = 1; t < S_STATES; t++) {
                largest = cells[t] > cells[largest] ? t : largest;
            }
            if (cells[largest] > 1) {
                cells[largest]--;
                cells[s]++;
            }
        }
    }
    size_t at = 0;
    if (size < 3) {
        buf[0] = 0;
        return buf;
    }
    buf[at++] = '[';
    for (int s = 0; s < S_STATES; s++) {
        for (int c = 0; c < cells[s] && at + 2 < size; c++) {
            buf[at++] = GQ_ARRAYVIEW_CELLS[s];
        }
    }
    while (at + 2 < size && at < (size_t) width + 1) {
        buf[at++] = ' ';
    }
    buf[at++] = ']';
    buf[at] = 0;
    return buf;
}

char *
gq_arrayview_counts (json_t *summary, char *buf, size_t size)
{
    long long ended = s_count (summary, "done") + s_count (summary, "failed") +
                      s_count (summary, "cancelled");
    int used = snprintf (buf, size, "%lld/%lld", ended,
                         (long long) json_integer_value (json_object_get (summary, "count")));
    const char *sep = ": ";
    for (int s = 0; s < S_STATES && used >= 0 && (size_t) used < size; s++) {
        long long n = s_count (summary, s_states[s]);
        if (n) {
            used += snprintf (buf + used, size - (size_t) used, "%s%lld %s", sep, n, s_states[s]);
            sep = ", ";
        }
    }
    return buf;
}

/* ---- Selftest ------------------------------------------------------------------------------ */

/* A summary of array 41 (0-9%2) with count elements, so many in each state. */
static json_t *
s_array (long long count, long long done, long long failed, long long cancelled,
         long long running, long long queued, long long waiting)
{
    return json_pack ("{s:i, s:s, s:i, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I}, s:s}", "id", 41,
                      "spec", "0-9%2", "first", 42, "count", (json_int_t) count, "counts",
                      "done", (json_int_t) done, "failed", (json_int_t) failed, "cancelled",
                      (json_int_t) cancelled, "running", (json_int_t) running, "queued",
                      (json_int_t) queued, "waiting", (json_int_t) waiting, "state", "queued");
}

void
gq_arrayview_test (bool verbose)
{
    (void) verbose;
    char buf[128];
    /* Ten elements over twenty cells: two cells each, in the bar's order. */
    json_t *a = s_array (10, 4, 2, 0, 1, 1, 2);
    GQ_CHECK_STR (gq_arrayview_bar (a, 20, buf, sizeof buf), "[########!!!!>>--....]");
    GQ_CHECK_STR (gq_arrayview_counts (a, buf, sizeof buf),
                  "6/10: 4 done, 2 failed, 1 running, 1 queued, 2 waiting");
    GQ_CHECK_STR (gq_arrayview_label (a, buf, sizeof buf), "41_[0-9%2]");
    GQ_CHECK_STR (gq_arrayview_state (a), "running");
    GQ_CHECK_STR (gq_arrayview_task (a, 45, buf, sizeof buf), "41_3");
    GQ_CHECK_STR (gq_arrayview_task (a, 52, buf, sizeof buf), "41_?");
    json_decref (a);
    /* Slurm's forms: the task is the element's index, not its place. */
    a = json_pack ("{s:i, s:s, s:i, s:i}", "id", 7, "spec", "1,3,10-20:5", "first", 8, "count", 5);
    GQ_CHECK_STR (gq_arrayview_task (a, 11, buf, sizeof buf), "7_15");
    GQ_CHECK_STR (gq_arrayview_label (a, buf, sizeof buf), "7_[1,3,10-20:5]");
    json_decref (a);
    /* One failure among a thousand still shows; the bar stays its width. */
    a = s_array (1000, 999, 1, 0, 0, 0, 0);
    GQ_CHECK_STR (gq_arrayview_bar (a, 10, buf, sizeof buf), "[#########!]");
    GQ_CHECK_STR (gq_arrayview_state (a), "queued"); /* its own state: nothing live */
    json_decref (a);
    /* Thirds: the remainders go in the bar's order. */
    a = s_array (3, 1, 1, 1, 0, 0, 0);
    GQ_CHECK_STR (gq_arrayview_bar (a, 10, buf, sizeof buf), "[####!!!xxx]");
    GQ_CHECK_STR (gq_arrayview_counts (a, buf, sizeof buf),
                  "3/3: 1 done, 1 failed, 1 cancelled");
    json_decref (a);
    /* Elements not counted yet (a submission being committed) stay blank; a small buffer cuts
       the bar but ends it. */
    a = s_array (4, 1, 0, 0, 0, 0, 0);
    GQ_CHECK_STR (gq_arrayview_bar (a, 8, buf, sizeof buf), "[##      ]");
    GQ_CHECK_STR (gq_arrayview_bar (a, 8, buf, 6), "[## ]");
    GQ_CHECK_EQ (strlen (gq_arrayview_bar (a, 0, buf, sizeof buf)), 2);
    json_decref (a);
}
