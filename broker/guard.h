/*  guard.h — who may talk to the broker and how fast: CURVE through czmq zauth (keys in the
    clients and workers folders), the role each key may act in, a token bucket per client, and
    a cap on queued jobs per client. Without CURVE, roles come from frame 0 and rate limits are
    per connection. */
#ifndef GQ_GUARD_H_INCLUDED
#define GQ_GUARD_H_INCLUDED

#include <czmq.h>

#include "opts.h"
#include "gq_msg.h"

typedef struct _gq_guard_t gq_guard_t;

/* Prepares security for router before it binds: with opts->cert_path, starts zauth allowing the
   keys of clients_dir and workers_dir and makes router a CURVE server; without it, refuses a
   non-loopback endpoint unless opts->insecure. NULL with a reason. */
gq_guard_t *gq_guard_new (const gq_broker_opts_t *opts, zsock_t *router, char *why,
                          size_t whylen);
void gq_guard_destroy (gq_guard_t **self_p);

/* May msg's sender act in the role of msg (client or worker)? 0, or GQ_EDENIED with a reason. */
int gq_guard_role (gq_guard_t *self, gq_msg_t *msg, char *why, size_t whylen);
/* Takes tokens for jobs submissions by msg's sender at now_us (monotonic). 0, or GQ_ERATE with
   the wait before enough tokens are there in *retry_after_ms (at least 1). The bucket belongs to
   the sender's CURVE key, or to its connection without CURVE; opts->rate_per_s 0 is unlimited.
   A batch larger than the burst is taken when the bucket is full and leaves it in debt, so the
   long-run rate holds and no batch is refused for ever. */
int gq_guard_take (gq_guard_t *self, gq_msg_t *msg, size_t jobs, int64_t now_us,
                   int64_t *retry_after_ms);

/* ---- Cap on unfinished jobs per client (opts->max_queued_per_client) ------------------------ */
/* The owner id under which the jobs of client (gq_msg_user_id of the SUBMIT, or the client column
   of a stored job; NULL or "" without CURVE, so all such clients share one cap) are counted.
   0 when there is no cap: keep it in the job and pass it back to gq_guard_queued. */
uint32_t gq_guard_owner (gq_guard_t *self, const char *client);
/* Adds delta (negative when jobs end or a counted batch was not accepted after all) to the
   unfinished (queued or running) jobs of owner. With enforce, a positive delta that would pass
   the cap is refused whole and nothing is counted: GQ_ERATE with a reason (retry when jobs have
   finished), or GQ_EINVAL when delta alone exceeds the cap. Owner 0 is always 0. */
int gq_guard_queued (gq_guard_t *self, uint32_t owner, int64_t delta, bool enforce, char *why,
                     size_t whylen);
/* Unfinished jobs counted for owner (for tests and STATS). */
int64_t gq_guard_queued_count (gq_guard_t *self, uint32_t owner);

void gq_guard_test (bool verbose);

#endif
