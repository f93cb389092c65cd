/*  gq_msg.h — one gridq wire message: encode, decode, validate.

    Layout (after the ROUTER routing id, on the broker side):
        frame 0  protocol and role: "GQC1" (client) or "GQW1" (worker)
        frame 1  command: upper-case ASCII, 1..31 bytes
        frame 2  UTF-8 JSON object (at most GQ_MAX_JSON_BYTES, nesting at most GQ_MAX_JSON_DEPTH)
        frame 3+ binary blobs, referenced from the JSON by index (at most GQ_MAX_BLOBS)

    Decoding never asserts on wire data: every violation is an error code with a reason. */
#ifndef GQ_MSG_H_INCLUDED
#define GQ_MSG_H_INCLUDED

#include <czmq.h>
#include <jansson.h>

#include "gq_common.h"
#include "gq_json.h"

typedef enum { GQ_ROLE_CLIENT = 1, GQ_ROLE_WORKER = 2 } gq_role_t;

#define GQ_PROTO_CLIENT "GQC1"
#define GQ_PROTO_WORKER "GQW1"
#define GQ_COMMAND_MAX  32

typedef struct _gq_msg_t gq_msg_t;

/* A new message; takes ownership of body (NULL means an empty object). NULL on a bad command. */
gq_msg_t *gq_msg_new (gq_role_t role, const char *command, json_t *body);
/* A new message whose JSON frame is the given text, sent as is (trusted: built by gridq itself
   with gq_chunk_* of gq_json.h, e.g. the broker splicing stored payload text). The text is
   copied. */
gq_msg_t *gq_msg_new_raw (gq_role_t role, const char *command, const char *json, size_t size);
/* Destroys the message and NULLs the pointer; safe on NULL. */
void gq_msg_destroy (gq_msg_t **self_p);

/* Decodes a received multipart message, taking ownership of *zmsg_p (NULLed). With `routed`, the
   first frame is the ROUTER routing id. Returns 0 and a message in *msg_p, or a gq_err_t with a
   reason in why. On error *msg_p is still set when a reply can be addressed (routing id and role
   readable, command may be ""), so the caller can answer ERROR; else it is NULL. */
int gq_msg_decode (zmsg_t **zmsg_p, bool routed, gq_msg_t **msg_p, char *why, size_t whylen);
/* As gq_msg_decode, but a worker's message of command `lazy` (NULL: none) keeps its JSON frame
   as text, checked for size only: gq_msg_text reads it, gq_msg_parse parses it (as
   gq_msg_decode would), and gq_msg_body is NULL until then. For a hot message whose usual shape
   a reader of its own takes apart without a tree (gq_result.h: RESULT). */
int gq_msg_decode_lazy (zmsg_t **zmsg_p, bool routed, const char *lazy, gq_msg_t **msg_p,
                        char *why, size_t whylen);
/* Receives one message from sock (blocking per the socket's timeout) and decodes it. */
int gq_msg_recv (void *sock, bool routed, gq_msg_t **msg_p, char *why, size_t whylen);
/* Encodes and sends; destroys the message whatever happens. 0 or GQ_EIO. */
int gq_msg_send (gq_msg_t **self_p, void *sock);

/* Getters: borrowed pointers valid while the message lives. */
gq_role_t gq_msg_role (const gq_msg_t *self);
const char *gq_msg_command (const gq_msg_t *self);
json_t *gq_msg_body (const gq_msg_t *self);        /* parsed body (NULL for a raw message) */
const char *gq_msg_raw (const gq_msg_t *self, size_t *size); /* raw text of a raw message */
/* The JSON text of a message decoded lazily and not parsed yet (not NUL-terminated), or NULL. */
const char *gq_msg_text (const gq_msg_t *self, size_t *size);
/* Parses the text of a lazily decoded message into its body, with gq_msg_decode's checks: 0,
   or the gq_err_t and reason gq_msg_decode would have given. 0 at once when already parsed. */
int gq_msg_parse (gq_msg_t *self, char *why, size_t whylen);
zframe_t *gq_msg_routing_id (const gq_msg_t *self); /* NULL unless routed */
const char *gq_msg_user_id (const gq_msg_t *self);  /* CURVE public key (Z85) or "" */
size_t gq_msg_blobs (const gq_msg_t *self);
zframe_t *gq_msg_blob (const gq_msg_t *self, size_t index);
/* The request's correlation id ("req"), or -1 when absent or not an integer. */
int64_t gq_msg_req (const gq_msg_t *self);

/* Setters. */
void gq_msg_set_routing_id (gq_msg_t *self, zframe_t *routing_id);  /* copies */
void gq_msg_set_body (gq_msg_t *self, json_t *body);                /* takes ownership */
/* Appends a blob, taking ownership of *frame_p. 0, or GQ_ETOOBIG when there are too many. */
int gq_msg_add_blob (gq_msg_t *self, zframe_t **frame_p);
/* Moves all blobs of src to self. */
void gq_msg_move_blobs (gq_msg_t *self, gq_msg_t *src);

/* A reply to request: same role and routing id, body with "req" copied; takes body. */
gq_msg_t *gq_msg_reply (const gq_msg_t *request, const char *command, json_t *body);
/* An ERROR reply: {"req": r, "code": "BAD_REQUEST", "message": "..."}. */
gq_msg_t *gq_msg_error (const gq_msg_t *request, int code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

/* ---- Validated field access: each returns 0, or GQ_EINVAL with a reason in why. ------------ */
/* Missing or null fields take the default; present fields must have the right type and range. */
int gq_json_int (json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t dflt,
                 int64_t *out, char *why, size_t whylen);
int gq_json_num (json_t *obj, const char *key, double lo, double hi, double dflt, double *out,
                 char *why, size_t whylen);
/* *out is borrowed from obj (or dflt). Strings must be shorter than max bytes. */
int gq_json_str (json_t *obj, const char *key, size_t max, const char *dflt, const char **out,
                 char *why, size_t whylen);
int gq_json_bool (json_t *obj, const char *key, bool dflt, bool *out, char *why, size_t whylen);
/* An array of job ids (positive integers), 1..GQ_MAX_IDS; *ids is malloc'd (caller frees). */
int gq_json_ids (json_t *obj, const char *key, int64_t **ids, size_t *count, char *why,
                 size_t whylen);
/* Nesting depth of a JSON value (a scalar is 0). */
int gq_json_depth (json_t *value);

void gq_msg_test (bool verbose);

#endif
