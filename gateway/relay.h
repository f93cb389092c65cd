/*  relay.h — the gateway's broker thread: one gq_client (one DEALER socket) that carries every
    HTTP request in flight to the broker and hands the answers back (see relay.c). */
#ifndef GW_RELAY_H_INCLUDED
#define GW_RELAY_H_INCLUDED

#include "call.h"
#include "gq_client.h"

typedef struct _gw_relay_t gw_relay_t;

typedef struct {
    gq_client_opts_t client;         /* broker endpoint, CURVE keys, reply timeout */
    char chat_kind[GQ_KIND_MAX];     /* the job kind of /v1/chat/completions */
    char completion_kind[GQ_KIND_MAX]; /* the job kind of /v1/completions */
    int64_t max_queued;              /* jobs of one token that have not ended, at most; 0: no cap */
} gw_relay_opts_t;

/* Starts the relay thread, which connects to the broker. NULL with a reason in why. */
gw_relay_t *gw_relay_new (const gw_relay_opts_t *opts, char *why, size_t whylen);
/* Answers every call still in flight with 503 (streams end) and stops the thread; posts are
   refused from then on. Safe twice. The HTTP server stops after this, then destroy. */
void gw_relay_stop (gw_relay_t *self);
/* Stops the relay if it runs, and frees it. */
void gw_relay_destroy (gw_relay_t **self_p);
/* Hands a call to the relay (any thread; it takes a reference of its own). -1 when the relay
   is stopping: the caller answers the call itself. */
int gw_relay_post (gw_relay_t *self, gw_call_t *call);
/* Tells the relay that the HTTP side is done with call (its client left or it was answered);
   takes the caller's reference. A chat or completion job still running is cancelled. */
void gw_relay_gone (gw_relay_t *self, gw_call_t **call_p);
/* The job kind an OpenAI path maps to ("chat" for chat completions, by default). */
const char *gw_relay_kind (gw_relay_t *self, bool chat);

#endif
