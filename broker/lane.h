/*  lane.h — a thread with a store connection of its own, fed by the broker's loop: the loop
    hands items over (pointers), the thread applies one function to each with its connection and
    hands them back, in the order they went. The writer (writer.h: batches of writes) and the
    reader (reader.h: STATUS of stored jobs) are lanes.

    Only one thread touches an item at a time: the loop until it hands it over, the lane until
    it hands it back. The pipe carries the pointer; a release/acquire pair on the lane's own
    counters carries the ordering of everything written before, in terms that the C memory
    model and ThreadSanitizer see. */
#ifndef GQ_LANE_H_INCLUDED
#define GQ_LANE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

#include "store.h"

typedef struct _gq_lane_t gq_lane_t;

/* What the lane does to each item, on its thread, with its store connection. */
typedef void (gq_lane_fn) (void *item, gq_store_t *store);

/* Opens a store connection of its own on db_path and starts the thread; NULL with why (what
   names the lane in messages: "writer", "reader"). */
gq_lane_t *gq_lane_new (const char *what, const char *db_path, gq_durability_t durability,
                        gq_lane_fn *fn, char *why, size_t whylen);
/* Stops the thread after the item it is working on, and closes its connection. Items handed
   over and not received back are lost: drain first (gq_lane_busy). Safe on NULL. */
void gq_lane_destroy (gq_lane_t **self_p);
/* Hands an item over; it is done after every item handed over before it. 0 or GQ_EIO. */
int gq_lane_send (gq_lane_t *self, void *item);
/* The next item back, done (blocks until there is one); NULL if the thread is gone. */
void *gq_lane_recv (gq_lane_t *self);
/* Items handed over and not received back yet. */
size_t gq_lane_busy (const gq_lane_t *self);
/* The socket that is readable when an item is back (for zloop_reader). */
zsock_t *gq_lane_sock (gq_lane_t *self);

#endif
