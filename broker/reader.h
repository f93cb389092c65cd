/*  reader.h — the store's reader thread: the loop's reads of the store, off the loop. A thread
    with a store connection of its own answers questions about many stored jobs (STATUS of ids
    that left memory), so that a client polling thousands of finished ids costs the loop
    nothing but the hand-over; and it reads the parents' results of jobs released with
    "inputs": "after" (deps.c), so that a release never waits on the disk.

    The loop hands a read (gq_read_t) over, goes on, and gets it back with the stored jobs'
    JSON text appended (a STATUS), or with each job's new payload (inputs); it then sends the
    reply, or queues the jobs. Reads come back in the order they went. Only one thread touches
    a read at a time: the loop until it hands it over, the reader until it hands it back. */
#ifndef GQ_READER_H_INCLUDED
#define GQ_READER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lane.h"
#include "store.h"

/* What a read is for. */
typedef enum {
    GQ_READ_STATUS, /* a STATUS's jobs */
    GQ_READ_INPUTS  /* the inputs of released jobs */
} gq_read_kind_t;

/* One id of a read, in the order asked. A STATUS's: a job the loop answered (its text in pre),
   one to read from the store, or one the broker does not know. An inputs read's: a released
   job (its payload in pre), and what the reader made of it. */
typedef struct {
    int64_t id;
    uint32_t offset, length; /* its text in pre (length 0: not the loop's) */
    bool stored;             /* read it from the store */
    char *payload;           /* inputs: its payload with "inputs" (malloc'd), or NULL */
    char *error;             /* inputs: why there is no payload (malloc'd), or NULL */
} gq_read_entry_t;

/* One STATUS, or the inputs of jobs released together. The loop adds its ids in order, then
   hands it over when some are stored (else runs it itself); gq_read_run makes the reply's
   parts, or the payloads. */
typedef struct {
    gq_read_kind_t kind;      /* what it reads */
    void *request;            /* the request it answers (the loop's, untouched by the reader) */
    gq_read_entry_t *entries; /* the ids, in the order asked (malloc'd, owned) */
    size_t count, capacity;   /* entries used, allocated */
    size_t stored;            /* entries to read from the store */
    zchunk_t *pre;            /* texts of the jobs the loop answered (owned) */
    size_t budget_bytes;      /* jobs text past this is not made: those ids go to more */
    zchunk_t *jobs;           /* the reply's JSON objects, comma-separated (owned) */
    zchunk_t *missing;        /* ids not known, comma-separated (owned) */
    zchunk_t *more;           /* ids left for another question, comma-separated (owned) */
    size_t n_missing;         /* entries of missing */
    int error;                /* 0, or GQ_ESTORE (the store failed: errmsg says why) */
    char errmsg[256];
} gq_read_t;

/* A new STATUS read for request (borrowed) of at most capacity ids; NULL when out of memory. */
gq_read_t *gq_read_new (void *request, size_t capacity, size_t budget_bytes);
/* A new inputs read of at most capacity jobs; NULL when out of memory. The loop adds each job
   with its payload (gq_read_text_begin, the payload's text into pre, gq_read_text_end);
   gq_read_run gives each entry its payload with "inputs" (gq_store_dep_inputs) or an error: the
   parents' results could not be read, or make a payload past GQ_INPUTS_MAX_BYTES. */
gq_read_t *gq_read_inputs_new (size_t capacity);
void gq_read_destroy (gq_read_t **self_p);
/* The next id: answered by the loop (it appends the job's text to read->pre between
   gq_read_text_begin and gq_read_text_end), to read from the store, or unknown. */
void gq_read_text_begin (gq_read_t *self, int64_t id);
void gq_read_text_end (gq_read_t *self);
void gq_read_stored (gq_read_t *self, int64_t id);
void gq_read_unknown (gq_read_t *self, int64_t id);
/* A STATUS: makes jobs, missing and more from the entries, in order, reading the stored ones
   from store (which may be NULL when there are none). Inputs: makes each entry's payload. */
void gq_read_run (gq_read_t *self, gq_store_t *store);

/* The reader thread: a lane (lane.h) that runs each read handed to it (gq_read_run) with a
   connection of its own; NULL with why. */
gq_lane_t *gq_reader_new (const char *db_path, char *why, size_t whylen);

void gq_reader_test (bool verbose);

#endif
