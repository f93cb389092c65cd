/*  broker.h — the gridq broker: one ROUTER socket, one zloop, every decision from memory, every
    accepted job written through to SQLite before it is acknowledged. */
#ifndef GQ_BROKER_H_INCLUDED
#define GQ_BROKER_H_INCLUDED

#include "opts.h"

typedef struct _gq_broker_t gq_broker_t;

/* Opens the store, recovers unfinished jobs, binds the endpoint. NULL with a reason. */
gq_broker_t *gq_broker_new (const gq_broker_opts_t *opts, char *why, size_t whylen);
/* Runs the loop until SIGINT/SIGTERM (zsys_interrupted). 0 on a clean stop. */
int gq_broker_run (gq_broker_t *self);
void gq_broker_destroy (gq_broker_t **self_p);

#endif
