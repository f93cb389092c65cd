/*  lane.c — a thread with a store connection of its own, fed by the loop (lane.h): a czmq actor
    that receives an item's pointer on its pipe, applies the lane's function, and sends it back. */
#include "lane.h"

#include <stdatomic.h>

struct _gq_lane_t {
    zactor_t *actor;     /* the thread */
    gq_store_t *store;   /* its connection: used by the thread only, closed after it stopped */
    gq_lane_fn *fn;      /* what it does to each item */
    size_t busy;         /* items handed over and not received back */
    atomic_uint to_lane; /* bumped (release) before each hand-over, read (acquire) after */
    atomic_uint to_loop; /* the same, the other way */
};

static void
s_lane_actor (zsock_t *pipe, void *arg)
{
    gq_lane_t *self = (gq_lane_t *) arg;
    zsock_signal (pipe, 0);
    while (true) {
        char *command = NULL;
        void *item = NULL;
        if (zsock_recv (pipe, "sp", &command, &item) < 0) {
            break; /* interrupted */
        }
        bool stop = !command || streq (command, "$TERM");
        free (command);
        if (stop) {
            break;
        }
        if (item) {
            atomic_load_explicit (&self->to_lane, memory_order_acquire);
            self->fn (item, self->store);
            atomic_fetch_add_explicit (&self->to_loop, 1, memory_order_release);
            zsock_send (pipe, "p", item);
        }
    }
}

gq_lane_t *
gq_lane_new (const char *what, const char *db_path, gq_durability_t durability, gq_lane_fn *fn,
             char *why, size_t whylen)
{
    gq_lane_t *self = (gq_lane_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    self->fn = fn;
    self->store = gq_store_open (db_path, durability, why, whylen);
    if (self->store) {
        self->actor = zactor_new (s_lane_actor, self);
        if (!self->actor) {
            snprintf (why, whylen, "cannot start the store's %s thread", what);
        }
    }
    if (!self->actor) {
        gq_lane_destroy (&self);
    }
    return self;
}

void
gq_lane_destroy (gq_lane_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_lane_t *self = *self_p;
    zactor_destroy (&self->actor); /* waits for the thread */
    gq_store_close (&self->store);
    free (self);
    *self_p = NULL;
}

int
gq_lane_send (gq_lane_t *self, void *item)
{
    atomic_fetch_add_explicit (&self->to_lane, 1, memory_order_release);
    if (zsock_send (self->actor, "sp", "ITEM", item) < 0) {
        return GQ_EIO;
    }
    self->busy++;
    return GQ_OK;
}

void *
gq_lane_recv (gq_lane_t *self)
{
    void *item = NULL;
    if (self->busy == 0 || zsock_recv (self->actor, "p", &item) < 0) {
        return NULL;
    }
    self->busy--;
    atomic_load_explicit (&self->to_loop, memory_order_acquire);
    return item;
}

size_t
gq_lane_busy (const gq_lane_t *self)
{
    return self->busy;
}

zsock_t *
gq_lane_sock (gq_lane_t *self)
{
    return zactor_sock (self->actor);
}
