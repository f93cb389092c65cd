/*  broker.h — the gridq broker: one ROUTER socket, one zloop, every decision from memory, every
    accepted job written through to SQLite before it is acknowledged. */
#ifndef GQ_BROKER_H_INCLUDED
#define GQ_BROKER_H_INCLUDED

#include "matcher.h"
#include "store.h"

typedef struct {
    const char *endpoint;      /* ROUTER bind endpoint */
    const char *db_path;       /* SQLite file */
    int heartbeat_ms;          /* heartbeat interval told to workers */
    int liveness;              /* missed heartbeats before a worker is offline */
    gq_durability_t durability;/* SQLite synchronous FULL or NORMAL */
    int64_t retention_ms;      /* how long finished jobs stay in the store */
    gq_weights_t weights;      /* matcher score weights */
    int64_t aging_ms;          /* one priority level per this much waiting */
    size_t backfill_window;    /* unplaceable jobs looked past before giving up */
    int64_t reserve_after_ms;  /* a blocked head job gets a node reserved after this wait */
    double backoff_base_ms;    /* first backoff of a failing node; doubles while it fails */
    const char *cert_path;     /* broker secret certificate (CURVE), or NULL */
    const char *clients_dir;   /* public keys allowed as clients */
    const char *workers_dir;   /* public keys allowed as workers */
    bool insecure;             /* allow a non-loopback bind without CURVE */
    double rate_per_s;         /* client token bucket rate; 0: unlimited */
    double burst;              /* client token bucket size */
    int64_t max_queued_per_client; /* 0: unlimited */
    const char *metrics;       /* HOST:PORT for /metrics, or NULL */
} gq_broker_opts_t;

/* Fills opts with the defaults of the command-line contract. */
void gq_broker_opts_default (gq_broker_opts_t *opts);
/* Reads a JSON config file into opts: {"weights": {fit, compute, ...}, "aging_ms",
   "backfill_window", "reserve_after_ms", "heartbeat_ms", "liveness", "retention", ...}.
   0 or GQ_EINVAL with a reason. */
int gq_broker_opts_load (gq_broker_opts_t *opts, const char *path, char *why, size_t whylen);

typedef struct _gq_broker_t gq_broker_t;

/* Opens the store, recovers unfinished jobs, binds the endpoint. NULL with a reason. */
gq_broker_t *gq_broker_new (const gq_broker_opts_t *opts, char *why, size_t whylen);
/* Runs the loop until SIGINT/SIGTERM (zsys_interrupted). 0 on a clean stop. */
int gq_broker_run (gq_broker_t *self);
void gq_broker_destroy (gq_broker_t **self_p);

#endif
