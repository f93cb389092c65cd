/*  sync.c — monotonic waits and thread stops for engines and OpenAI servers (sync.h). */
#include "sync.h"

#include <time.h>

void
gq_cond_init_monotonic (pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (cond, &attr);
    pthread_condattr_destroy (&attr);
}

void
gq_cond_wait_ms (pthread_cond_t *cond, pthread_mutex_t *lock, int64_t ms)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t) ts.tv_nsec + (ms > 0 ? ms : 0) * 1000000;
    ts.tv_sec += (time_t) (ns / 1000000000);
    ts.tv_nsec = (long) (ns % 1000000000);
    pthread_cond_timedwait (cond, lock, &ts);
}

void
gq_thread_stop (pthread_t thread, pthread_mutex_t *lock, pthread_cond_t *cond, bool *stop)
{
    pthread_mutex_lock (lock);
    *stop = true;
    pthread_cond_broadcast (cond);
    pthread_mutex_unlock (lock);
    pthread_join (thread, NULL);
}
