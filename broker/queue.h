/*  queue.h — the queued jobs in dispatch order: priority 9 first, FIFO within a priority, with
    aging. A job's key is submitted_ms - priority * aging_ms, so one level of priority is worth
    aging_ms of waiting: a priority-0 job outranks fresh priority-9 work after 9 * aging_ms.
    Every operation is O(1) (one FIFO per priority, merged by key on iteration). The queue links
    jobs it does not own. */
#ifndef GQ_QUEUE_H_INCLUDED
#define GQ_QUEUE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "job.h"

typedef struct _gq_queue_t gq_queue_t;

gq_queue_t *gq_queue_new (int64_t aging_ms);
void gq_queue_destroy (gq_queue_t **self_p);
/* Links job at its place; requeued jobs keep their original submitted_ms. */
void gq_queue_push (gq_queue_t *self, gq_job_t *job);
/* Unlinks job (it must be in this queue). */
void gq_queue_remove (gq_queue_t *self, gq_job_t *job);
size_t gq_queue_size (const gq_queue_t *self);
size_t gq_queue_size_priority (const gq_queue_t *self, int priority);
/* Dispatch order: the first job, and the one after job; NULL at the end. */
gq_job_t *gq_queue_first (gq_queue_t *self);
gq_job_t *gq_queue_next (gq_queue_t *self, gq_job_t *job);
/* Oldest submitted_ms among queued jobs, 0 when empty. */
int64_t gq_queue_oldest_ms (const gq_queue_t *self);

void gq_queue_test (bool verbose);

#endif
