/*  sync.h — the waiting that engines (engine.c) and OpenAI servers (openai.c) share: each has a
    mutex, a condition variable on CLOCK_MONOTONIC (waits do not jump with the wall clock), and
    a thread of its own that ends when told to stop. */
#ifndef GQ_SYNC_H_INCLUDED
#define GQ_SYNC_H_INCLUDED

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Initialises cond on CLOCK_MONOTONIC. */
void gq_cond_init_monotonic (pthread_cond_t *cond);
/* Waits on cond (lock held) for at most ms (0 or less: returns at once after a spurious
   check). */
void gq_cond_wait_ms (pthread_cond_t *cond, pthread_mutex_t *lock, int64_t ms);
/* Sets *stop under lock, wakes cond's waiters and joins thread. */
void gq_thread_stop (pthread_t thread, pthread_mutex_t *lock, pthread_cond_t *cond, bool *stop);

#ifdef __cplusplus
}
#endif

#endif
