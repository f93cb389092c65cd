/*  gq_arrayview.h — a job array as the listings show it (gridq jobs, gridq-top): one line with
    the array's label as Slurm's squeue writes it, the state the line shows, a fixed-width
    progress bar, and its elements counted by state. Everything is read from the array's summary
    as STATUS and JOBS give it ({"id", "spec", "count", "counts": {...}, "state", ...}); the
    summary is borrowed. */
#ifndef GQ_ARRAYVIEW_H_INCLUDED
#define GQ_ARRAYVIEW_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The bar's cells, one character per element state, in the bar's order (left to right):
   done, failed, cancelled, running, queued, waiting. */
#define GQ_ARRAYVIEW_CELLS "#!x>-."

/* "41_[0-9%2]": the array's id and spec, as squeue writes an array. Returns buf. */
char *gq_arrayview_label (json_t *summary, char *buf, size_t size);
/* "41_3": an element of the array (job job_id) as squeue writes an array's task, by its index;
   "41_?" when job_id is not one of the array's. Returns buf. */
char *gq_arrayview_task (json_t *summary, long long job_id, char *buf, size_t size);
/* The state the array's line shows: running while an element runs, else queued while one is
   queued, else waiting while one waits, else the array's own final state. */
const char *gq_arrayview_state (json_t *summary);
/* The progress bar: width cells between brackets (buf holds width + 3 bytes at least, else the
   bar is cut), each state's cells (GQ_ARRAYVIEW_CELLS) in proportion to its elements, by
   largest remainders, and at least one for a state that has any while a larger one can spare
   it. Returns buf. */
char *gq_arrayview_bar (json_t *summary, int width, char *buf, size_t size);
/* "7/10: 5 done, 2 failed, 1 running, 2 queued": the elements ended of all, then each state
   that has any, in the bar's order. Returns buf. */
char *gq_arrayview_counts (json_t *summary, char *buf, size_t size);

void gq_arrayview_test (bool verbose);

#endif
