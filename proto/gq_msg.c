/*  gq_msg.c — one gridq wire message: encode, decode, validate. */
#include "gq_msg.h"
#include "gq_check.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

struct _gq_msg_t {
    gq_role_t role;               /* client or worker */
    char command[GQ_COMMAND_MAX]; /* upper-case ASCII */
    json_t *body;                 /* parsed JSON object; NULL for a raw message */
    char *raw;                    /* trusted JSON text of a raw message, or NULL */
    size_t raw_size;              /* bytes of raw */
    zframe_t *text;               /* a received JSON frame not parsed yet (gq_msg_decode_lazy),
                                     untrusted; NULL once parsed */
    zframe_t *routing_id;         /* ROUTER routing id, or NULL */
    char user_id[48];             /* CURVE public key of the sender (Z85), or "" */
    zframe_t *blobs[GQ_MAX_BLOBS];/* binary frames after the JSON */
    size_t n_blobs;               /* used entries of blobs */
};

static bool
s_valid_command (const char *command)
{
    size_t n = 0;
    for (const char *p = command; *p; p++, n++) {
        if (n + 1 >= GQ_COMMAND_MAX || !((*p >= 'A' && *p <= 'Z') || *p == '_')) {
            return false;
        }
    }
    return n > 0;
}

static gq_msg_t *
s_new (gq_role_t role, const char *command)
{
    if (!command || !s_valid_command (command) ||
        (role != GQ_ROLE_CLIENT && role != GQ_ROLE_WORKER)) {
        return NULL;
    }
    gq_msg_t *self = (gq_msg_t *) calloc (1, sizeof *self);
    if (self) {
        self->role = role;
        strcpy (self->command, command);
    }
    return self;
}

gq_msg_t *
gq_msg_new (gq_role_t role, const char *command, json_t *body)
{
    gq_msg_t *self = s_new (role, command);
    if (!self) {
        json_decref (body);
        return NULL;
    }
    self->body = body ? body : json_object ();
    return self;
}

gq_msg_t *
gq_msg_new_raw (gq_role_t role, const char *command, const char *json, size_t size)
{
    gq_msg_t *self = s_new (role, command);
    if (!self) {
        return NULL;
    }
    self->raw = (char *) malloc (size + 1);
    if (!self->raw) {
        free (self);
        return NULL;
    }
    memcpy (self->raw, json, size);
    self->raw[size] = 0;
    self->raw_size = size;
    return self;
}

void
gq_msg_destroy (gq_msg_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_msg_t *self = *self_p;
    json_decref (self->body);
    free (self->raw);
    zframe_destroy (&self->text);
    zframe_destroy (&self->routing_id);
    for (size_t i = 0; i < self->n_blobs; i++) {
        zframe_destroy (&self->blobs[i]);
    }
    free (self);
    *self_p = NULL;
}

int
gq_json_depth (json_t *value)
{
    int deepest = 0;
    if (json_is_object (value)) {
        const char *key;
        json_t *item;
        json_object_foreach (value, key, item) {
            int d = gq_json_depth (item);
            if (d > deepest) {
                deepest = d;
            }
        }
        return deepest + 1;
    }
    if (json_is_array (value)) {
        size_t i;
        json_t *item;
        json_array_foreach (value, i, item) {
            int d = gq_json_depth (item);
            if (d > deepest) {
                deepest = d;
            }
        }
        return deepest + 1;
    }
    return 0;
}

/* The JSON frame's checks: an object, nested at most GQ_MAX_JSON_DEPTH deep; sets self->body. */
static int
s_parse (gq_msg_t *self, const char *json, size_t size, char *why, size_t whylen)
{
    json_error_t error;
    json_t *body = json_loadb (json, size, JSON_REJECT_DUPLICATES, &error);
    if (!body) {
        return gq_why (why, whylen, GQ_EINVAL, "JSON frame: %s at byte %d", error.text,
                       error.position);
    }
    if (!json_is_object (body)) {
        json_decref (body);
        return gq_why (why, whylen, GQ_EINVAL, "JSON frame is not an object");
    }
    self->body = body;
    if (gq_json_depth (body) > GQ_MAX_JSON_DEPTH) {
        return gq_why (why, whylen, GQ_ETOOBIG, "JSON nesting deeper than %d", GQ_MAX_JSON_DEPTH);
    }
    return GQ_OK;
}

int
gq_msg_decode (zmsg_t **zmsg_p, bool routed, gq_msg_t **msg_p, char *why, size_t whylen)
{
    return gq_msg_decode_lazy (zmsg_p, routed, NULL, msg_p, why, whylen);
}

int
gq_msg_decode_lazy (zmsg_t **zmsg_p, bool routed, const char *lazy, gq_msg_t **msg_p, char *why,
                    size_t whylen)
{
    zmsg_t *zmsg = *zmsg_p;
    *zmsg_p = NULL;
    *msg_p = NULL;
    gq_msg_t *self = NULL;
    int rc = GQ_OK;
    if (!zmsg) {
        snprintf (why, whylen, "no message");
        return GQ_EPROTO;
    }
    size_t frames = zmsg_size (zmsg);
    zframe_t *routing_id = NULL;
    if (routed) {
        routing_id = zmsg_pop (zmsg);
        frames--;
        if (!routing_id) {
            snprintf (why, whylen, "no routing id");
            zmsg_destroy (&zmsg);
            return GQ_EPROTO;
        }
    }
    zframe_t *proto = zmsg_pop (zmsg);
    gq_role_t role = 0;
    if (proto && zframe_streq (proto, GQ_PROTO_CLIENT)) {
        role = GQ_ROLE_CLIENT;
    } else if (proto && zframe_streq (proto, GQ_PROTO_WORKER)) {
        role = GQ_ROLE_WORKER;
    }
    if (!role) {
        snprintf (why, whylen, "frame 0 is not GQC1 or GQW1");
        zframe_destroy (&proto);
        zframe_destroy (&routing_id);
        zmsg_destroy (&zmsg);
        return GQ_EPROTO;
    }
    /* From here a reply can be addressed: keep a partial message for ERROR replies. */
    self = s_new (role, "ERROR");
    if (!self) {
        zframe_destroy (&proto);
        zframe_destroy (&routing_id);
        zmsg_destroy (&zmsg);
        return GQ_ENOMEM;
    }
    self->command[0] = 0;
    self->routing_id = routing_id;
    const char *user = zframe_meta (proto, "User-Id");
    if (user) {
        snprintf (self->user_id, sizeof self->user_id, "%s", user);
    }
    zframe_destroy (&proto);

    if (frames < 3) {
        rc = gq_why (why, whylen, GQ_EPROTO,
                     "expected at least 3 frames (protocol, command, JSON), got %zu", frames);
        goto done;
    }
    if (frames > GQ_MAX_FRAMES) {
        rc = gq_why (why, whylen, GQ_ETOOBIG, "%zu frames exceed the limit of %d", frames,
                     GQ_MAX_FRAMES);
        goto done;
    }
    zframe_t *command = zmsg_pop (zmsg);
    size_t csize = zframe_size (command);
    if (csize == 0 || csize >= GQ_COMMAND_MAX) {
        zframe_destroy (&command);
        rc = gq_why (why, whylen, GQ_EPROTO, "command frame of %zu bytes", csize);
        goto done;
    }
    char name[GQ_COMMAND_MAX];
    memcpy (name, zframe_data (command), csize);
    name[csize] = 0;
    zframe_destroy (&command);
    if (strlen (name) != csize || !s_valid_command (name)) {
        rc = gq_why (why, whylen, GQ_EPROTO, "command is not upper-case ASCII");
        goto done;
    }
    strcpy (self->command, name);

    zframe_t *json = zmsg_pop (zmsg);
    size_t jsize = zframe_size (json);
    /* A broker takes GQ_MAX_JSON_BYTES from its peers; they take more from it (one job whole). */
    size_t limit = routed ? GQ_MAX_JSON_BYTES : GQ_MAX_FROM_BROKER_JSON_BYTES;
    if (jsize > limit) {
        zframe_destroy (&json);
        rc = gq_why (why, whylen, GQ_ETOOBIG, "JSON frame of %zu bytes exceeds %zu", jsize,
                     limit);
        goto done;
    }
    if (lazy && role == GQ_ROLE_WORKER && streq (name, lazy)) {
        self->text = json; /* parsed by gq_msg_parse, or read by a scanner of its own shape */
    } else {
        rc = s_parse (self, (const char *) zframe_data (json), jsize, why, whylen);
        zframe_destroy (&json);
        if (rc) {
            goto done;
        }
    }
    zframe_t *blob;
    while ((blob = zmsg_pop (zmsg))) {
        if (zframe_size (blob) > GQ_MAX_BLOB_BYTES) {
            size_t bsize = zframe_size (blob);
            zframe_destroy (&blob);
            rc = gq_why (why, whylen, GQ_ETOOBIG, "blob of %zu bytes exceeds %d", bsize,
                         GQ_MAX_BLOB_BYTES);
            goto done;
        }
        self->blobs[self->n_blobs++] = blob;
    }
done:
    /* The message; on failure the partial one, kept because it can carry an ERROR reply. */
    *msg_p = self;
    zmsg_destroy (&zmsg);
    return rc;
}

int
gq_msg_recv (void *sock, bool routed, gq_msg_t **msg_p, char *why, size_t whylen)
{
    zmsg_t *zmsg = zmsg_recv (sock);
    if (!zmsg) {
        *msg_p = NULL;
        snprintf (why, whylen, "receive interrupted or timed out");
        return GQ_ETIMEOUT;
    }
    return gq_msg_decode (&zmsg, routed, msg_p, why, whylen);
}

int
gq_msg_send (gq_msg_t **self_p, void *sock)
{
    gq_msg_t *self = *self_p;
    *self_p = NULL;
    if (!self) {
        return GQ_EINVAL;
    }
    zmsg_t *zmsg = zmsg_new ();
    if (self->routing_id) {
        zmsg_append (zmsg, &self->routing_id);
    }
    zmsg_addstr (zmsg, self->role == GQ_ROLE_CLIENT ? GQ_PROTO_CLIENT : GQ_PROTO_WORKER);
    zmsg_addstr (zmsg, self->command);
    if (self->raw) {
        zmsg_addmem (zmsg, self->raw, self->raw_size);
    } else {
        /* A message received unparsed is not sent on: it has no body to send. */
        char *text = self->body ? json_dumps (self->body, JSON_COMPACT) : NULL;
        if (!text) {
            zmsg_destroy (&zmsg);
            gq_msg_destroy (&self);
            return GQ_ENOMEM;
        }
        zmsg_addmem (zmsg, text, strlen (text));
        free (text);
    }
    for (size_t i = 0; i < self->n_blobs; i++) {
        zmsg_append (zmsg, &self->blobs[i]);
    }
    self->n_blobs = 0;
    gq_msg_destroy (&self);
    return zmsg_send (&zmsg, sock) == 0 ? GQ_OK : GQ_EIO;
}

gq_role_t
gq_msg_role (const gq_msg_t *self)
{
    return self->role;
}

const char *
gq_msg_command (const gq_msg_t *self)
{
    return self->command;
}

json_t *
gq_msg_body (const gq_msg_t *self)
{
    return self->body;
}

const char *
gq_msg_text (const gq_msg_t *self, size_t *size)
{
    if (size) {
        *size = self->text ? zframe_size (self->text) : 0;
    }
    return self->text ? (const char *) zframe_data (self->text) : NULL;
}

int
gq_msg_parse (gq_msg_t *self, char *why, size_t whylen)
{
    if (!self->text) {
        return GQ_OK;
    }
    int rc = s_parse (self, (const char *) zframe_data (self->text), zframe_size (self->text), why,
                      whylen);
    zframe_destroy (&self->text);
    return rc;
}

const char *
gq_msg_raw (const gq_msg_t *self, size_t *size)
{
    if (size) {
        *size = self->raw_size;
    }
    return self->raw;
}

zframe_t *
gq_msg_routing_id (const gq_msg_t *self)
{
    return self->routing_id;
}

const char *
gq_msg_user_id (const gq_msg_t *self)
{
    return self->user_id;
}

size_t
gq_msg_blobs (const gq_msg_t *self)
{
    return self->n_blobs;
}

zframe_t *
gq_msg_blob (const gq_msg_t *self, size_t index)
{
    return index < self->n_blobs ? self->blobs[index] : NULL;
}

int64_t
gq_msg_req (const gq_msg_t *self)
{
    json_t *req = self->body ? json_object_get (self->body, "req") : NULL;
    return json_is_integer (req) ? (int64_t) json_integer_value (req) : -1;
}

void
gq_msg_set_routing_id (gq_msg_t *self, zframe_t *routing_id)
{
    zframe_destroy (&self->routing_id);
    self->routing_id = routing_id ? zframe_dup (routing_id) : NULL;
}

void
gq_msg_set_body (gq_msg_t *self, json_t *body)
{
    json_decref (self->body);
    self->body = body;
    free (self->raw);
    self->raw = NULL;
    self->raw_size = 0;
}

int
gq_msg_add_blob (gq_msg_t *self, zframe_t **frame_p)
{
    if (self->n_blobs >= GQ_MAX_BLOBS) {
        zframe_destroy (frame_p);
        return GQ_ETOOBIG;
    }
    self->blobs[self->n_blobs++] = *frame_p;
    *frame_p = NULL;
    return GQ_OK;
}

void
gq_msg_move_blobs (gq_msg_t *self, gq_msg_t *src)
{
    for (size_t i = 0; i < src->n_blobs; i++) {
        gq_msg_add_blob (self, &src->blobs[i]);
    }
    src->n_blobs = 0;
}

gq_msg_t *
gq_msg_reply (const gq_msg_t *request, const char *command, json_t *body)
{
    gq_msg_t *reply = gq_msg_new (request->role, command, body);
    if (!reply) {
        return NULL;
    }
    json_t *req = request->body ? json_object_get (request->body, "req") : NULL;
    if (req) {
        json_object_set (reply->body, "req", req);
    }
    if (request->routing_id) {
        reply->routing_id = zframe_dup (request->routing_id);
    }
    return reply;
}

/* Makes text valid UTF-8 in place: each byte that does not start a complete, well-formed
   sequence becomes '?'. Reasons quote peer input and snprintf may cut them inside a character;
   json_pack refuses invalid UTF-8, which would leave an ERROR without code and message. */
static void
s_utf8_scrub (char *text)
{
    unsigned char *p = (unsigned char *) text;
    while (*p) {
        size_t len = 0;
        uint32_t cp = 0;
        if (*p < 0x80) {
            p++;
            continue;
        } else if ((*p & 0xE0) == 0xC0) {
            len = 2;
            cp = *p & 0x1F;
        } else if ((*p & 0xF0) == 0xE0) {
            len = 3;
            cp = *p & 0x0F;
        } else if ((*p & 0xF8) == 0xF0) {
            len = 4;
            cp = *p & 0x07;
        }
        bool ok = len > 0;
        for (size_t i = 1; ok && i < len; i++) {
            ok = (p[i] & 0xC0) == 0x80; /* also stops at the terminating NUL */
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                   (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
                   (cp >= 0xD800 && cp <= 0xDFFF))) {
            ok = false; /* overlong, out of range, or a surrogate */
        }
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += len;
    }
}

gq_msg_t *
gq_msg_error (const gq_msg_t *request, int code, const char *format, ...)
{
    char text[512];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    s_utf8_scrub (text);
    return gq_msg_reply (request, "ERROR",
                         json_pack ("{s:s, s:s}", "code", gq_errname (code), "message", text));
}

/* ---- Validated field access ---------------------------------------------------------------- */

int
gq_json_int (json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t dflt, int64_t *out,
             char *why, size_t whylen)
{
    json_t *v = json_object_get (obj, key);
    if (!v || json_is_null (v)) {
        *out = dflt;
        return GQ_OK;
    }
    int64_t n;
    if (json_is_integer (v)) {
        n = (int64_t) json_integer_value (v);
    } else if (json_is_real (v) && json_real_value (v) == floor (json_real_value (v)) &&
               fabs (json_real_value (v)) < 9e15) {
        n = (int64_t) json_real_value (v);
    } else {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" must be an integer", key);
    }
    if (n < lo || n > hi) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" is %lld, outside %lld..%lld", key,
                       (long long) n, (long long) lo, (long long) hi);
    }
    *out = n;
    return GQ_OK;
}

int
gq_json_num (json_t *obj, const char *key, double lo, double hi, double dflt, double *out,
             char *why, size_t whylen)
{
    json_t *v = json_object_get (obj, key);
    if (!v || json_is_null (v)) {
        *out = dflt;
        return GQ_OK;
    }
    if (!json_is_number (v)) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" must be a number", key);
    }
    double d = json_number_value (v);
    if (!isfinite (d) || d < lo || d > hi) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" is %g, outside %g..%g", key, d, lo, hi);
    }
    *out = d;
    return GQ_OK;
}

int
gq_json_str (json_t *obj, const char *key, size_t max, const char *dflt, const char **out,
             char *why, size_t whylen)
{
    json_t *v = json_object_get (obj, key);
    if (!v || json_is_null (v)) {
        *out = dflt;
        return GQ_OK;
    }
    if (!json_is_string (v)) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" must be a string", key);
    }
    size_t len = json_string_length (v);
    if (len >= max) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" is %zu bytes, the limit is %zu", key, len,
                       max - 1);
    }
    if (strlen (json_string_value (v)) != len) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" contains a NUL byte", key);
    }
    *out = json_string_value (v);
    return GQ_OK;
}

int
gq_json_bool (json_t *obj, const char *key, bool dflt, bool *out, char *why, size_t whylen)
{
    json_t *v = json_object_get (obj, key);
    if (!v || json_is_null (v)) {
        *out = dflt;
        return GQ_OK;
    }
    if (!json_is_boolean (v)) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" must be true or false", key);
    }
    *out = json_is_true (v);
    return GQ_OK;
}

int
gq_json_ids (json_t *obj, const char *key, int64_t **ids, size_t *count, char *why,
             size_t whylen)
{
    *ids = NULL;
    *count = 0;
    json_t *v = json_object_get (obj, key);
    if (!json_is_array (v)) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" must be an array of job ids", key);
    }
    size_t n = json_array_size (v);
    if (n == 0 || n > GQ_MAX_IDS) {
        return gq_why (why, whylen, GQ_EINVAL, "\"%s\" holds %zu ids; 1..%d allowed", key, n,
                       GQ_MAX_IDS);
    }
    int64_t *out = (int64_t *) malloc (n * sizeof *out);
    if (!out) {
        return GQ_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get (v, i);
        if (!json_is_integer (item) || json_integer_value (item) <= 0) {
            free (out);
            return gq_why (why, whylen, GQ_EINVAL, "\"%s\"[%zu] is not a positive integer id", key,
                           i);
        }
        out[i] = (int64_t) json_integer_value (item);
    }
    *ids = out;
    *count = n;
    return GQ_OK;
}

/* ---- Selftest ------------------------------------------------------------------------------ */

static zmsg_t *
s_frames (const char *const *texts, size_t n)
{
    zmsg_t *zmsg = zmsg_new ();
    for (size_t i = 0; i < n; i++) {
        zmsg_addstr (zmsg, texts[i]);
    }
    return zmsg;
}

/* Decodes frames and returns the code; *replyable tells whether a partial message came back. */
static int
s_decode_texts (const char *const *texts, size_t n, bool routed, bool *replyable)
{
    zmsg_t *zmsg = s_frames (texts, n);
    gq_msg_t *msg = NULL;
    char why[256] = "";
    int rc = gq_msg_decode (&zmsg, routed, &msg, why, sizeof why);
    assert (zmsg == NULL);
    *replyable = msg != NULL;
    gq_msg_destroy (&msg);
    return rc;
}

void
gq_msg_test (bool verbose)
{
    /* Round trip over a real socket pair, with a blob. */
    zsock_t *server = zsock_new_router ("inproc://gq_msg_test");
    zsock_t *client = zsock_new_dealer (">inproc://gq_msg_test");
    assert (server && client);
    zsock_set_rcvtimeo (server, 2000);
    zsock_set_rcvtimeo (client, 2000);
    gq_msg_t *msg = gq_msg_new (GQ_ROLE_CLIENT, "SUBMIT",
                                json_pack ("{s:I, s:[{s:s}]}", "req", (json_int_t) 7, "jobs",
                                           "kind", "echo"));
    assert (msg);
    zframe_t *blob = zframe_new ("\x01\x02\x03", 3);
    GQ_CHECK_EQ (gq_msg_add_blob (msg, &blob), GQ_OK);
    GQ_CHECK_EQ (gq_msg_send (&msg, client), GQ_OK);
    assert (msg == NULL);
    char why[256];
    gq_msg_t *got = NULL;
    GQ_CHECK_EQ (gq_msg_recv (server, true, &got, why, sizeof why), GQ_OK);
    assert (got);
    assert (streq (gq_msg_command (got), "SUBMIT"));
    GQ_CHECK_EQ (gq_msg_role (got), GQ_ROLE_CLIENT);
    GQ_CHECK_EQ (gq_msg_req (got), 7);
    GQ_CHECK_EQ (gq_msg_blobs (got), 1);
    GQ_CHECK_EQ (zframe_size (gq_msg_blob (got, 0)), 3);
    assert (gq_msg_routing_id (got));

    /* Reply carries req and reaches the right peer; a raw message is sent as is. */
    gq_msg_t *reply = gq_msg_reply (got, "SUBMIT", json_pack ("{s:[I]}", "ids", (json_int_t) 1));
    GQ_CHECK_EQ (gq_msg_send (&reply, server), GQ_OK);
    gq_msg_t *back = NULL;
    GQ_CHECK_EQ (gq_msg_recv (client, false, &back, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (gq_msg_req (back), 7);
    gq_msg_destroy (&back);
    gq_msg_t *raw = gq_msg_new_raw (GQ_ROLE_WORKER, "JOB", "{\"jobs\":[]}", 11);
    gq_msg_set_routing_id (raw, gq_msg_routing_id (got));
    GQ_CHECK_EQ (gq_msg_send (&raw, server), GQ_OK);
    GQ_CHECK_EQ (gq_msg_recv (client, false, &back, why, sizeof why), GQ_OK);
    assert (json_is_array (json_object_get (gq_msg_body (back), "jobs")));
    GQ_CHECK_EQ (gq_msg_role (back), GQ_ROLE_WORKER);
    gq_msg_destroy (&back);

    /* A reason cut inside a character (or quoting invalid bytes) still makes a full ERROR. */
    gq_msg_t *cut = gq_msg_error (got, GQ_EINVAL, "%s", "field \"\xc3\xa9\xc3\" \xff\xed\xa0\x80");
    assert (cut);
    GQ_CHECK_EQ (strcmp (json_string_value (json_object_get (gq_msg_body (cut), "message")),
                        "field \"\xc3\xa9?\" ????"), 0);
    gq_msg_destroy (&cut);
    gq_msg_t *err = gq_msg_error (got, GQ_ERATE, "slow down %d", 5);
    assert (streq (gq_msg_command (err), "ERROR"));
    assert (streq (json_string_value (json_object_get (gq_msg_body (err), "code")),
                   "RATE_LIMITED"));
    gq_msg_destroy (&err);
    gq_msg_destroy (&got);
    gq_msg_destroy (&got); /* safe twice */
    zsock_destroy (&client);
    zsock_destroy (&server);

    /* Malformed frames: each is an error code, never a crash. */
    bool replyable;
    const char *bad_proto[] = {"id", "XXXX", "SUBMIT", "{}"};
    GQ_CHECK_EQ (s_decode_texts (bad_proto, 4, true, &replyable), GQ_EPROTO);
    assert (!replyable);
    const char *short_msg[] = {"id", "GQC1", "SUBMIT"};
    GQ_CHECK_EQ (s_decode_texts (short_msg, 3, true, &replyable), GQ_EPROTO);
    assert (replyable);
    const char *lower[] = {"id", "GQC1", "submit", "{}"};
    GQ_CHECK_EQ (s_decode_texts (lower, 4, true, &replyable), GQ_EPROTO);
    const char *bad_json[] = {"id", "GQW1", "READY", "{\"a\":"};
    GQ_CHECK_EQ (s_decode_texts (bad_json, 4, true, &replyable), GQ_EINVAL);
    assert (replyable);
    const char *not_object[] = {"id", "GQW1", "READY", "[1,2]"};
    GQ_CHECK_EQ (s_decode_texts (not_object, 4, true, &replyable), GQ_EINVAL);
    const char *dupe[] = {"id", "GQC1", "STATUS", "{\"a\":1,\"a\":2}"};
    GQ_CHECK_EQ (s_decode_texts (dupe, 4, true, &replyable), GQ_EINVAL);
    const char *empty[] = {"id"};
    GQ_CHECK_EQ (s_decode_texts (empty, 1, true, &replyable), GQ_EPROTO);
    char deep[256] = "";
    for (int i = 0; i < 40; i++) {
        strcat (deep, "[");
    }
    for (int i = 0; i < 40; i++) {
        strcat (deep, "]");
    }
    char deep_obj[300];
    snprintf (deep_obj, sizeof deep_obj, "{\"x\":%s}", deep);
    const char *too_deep[] = {"id", "GQC1", "SUBMIT", deep_obj};
    GQ_CHECK_EQ (s_decode_texts (too_deep, 4, true, &replyable), GQ_ETOOBIG);
    const char *many[GQ_MAX_FRAMES + 2] = {"id", "GQC1", "SUBMIT", "{}"};
    for (int i = 4; i < GQ_MAX_FRAMES + 2; i++) {
        many[i] = "blob";
    }
    GQ_CHECK_EQ (s_decode_texts (many, GQ_MAX_FRAMES + 2, true, &replyable), GQ_ETOOBIG);
    zmsg_t *nul_cmd = zmsg_new ();
    zmsg_addstr (nul_cmd, "id");
    zmsg_addstr (nul_cmd, "GQC1");
    zmsg_addmem (nul_cmd, "AB\0C", 4);
    zmsg_addstr (nul_cmd, "{}");
    gq_msg_t *m = NULL;
    GQ_CHECK_EQ (gq_msg_decode (&nul_cmd, true, &m, why, sizeof why), GQ_EPROTO);
    gq_msg_destroy (&m);
    assert (gq_msg_new (GQ_ROLE_CLIENT, "bad cmd", NULL) == NULL);

    /* Field validation. */
    json_t *obj = json_pack ("{s:i, s:f, s:s, s:b, s:[I,I], s:f, s:[i]}", "n", 5, "x", 1.5, "s",
                             "abc", "b", 1, "ids", (json_int_t) 3, (json_int_t) 4, "nan", 2.5,
                             "badids", -1);
    int64_t n;
    double d;
    const char *s;
    bool b;
    GQ_CHECK_EQ (gq_json_int (obj, "n", 0, 9, 1, &n, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (n, 5);
    GQ_CHECK_EQ (gq_json_int (obj, "n", 0, 4, 1, &n, why, sizeof why), GQ_EINVAL);
    GQ_CHECK_EQ (gq_json_int (obj, "missing", 0, 4, 3, &n, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (n, 3);
    GQ_CHECK_EQ (gq_json_int (obj, "s", 0, 4, 3, &n, why, sizeof why), GQ_EINVAL);
    GQ_CHECK_EQ (gq_json_int (obj, "x", 0, 4, 3, &n, why, sizeof why), GQ_EINVAL);
    GQ_CHECK_EQ (gq_json_num (obj, "x", 0, 2, 0, &d, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (gq_json_num (obj, "x", 2, 3, 0, &d, why, sizeof why), GQ_EINVAL);
    GQ_CHECK_EQ (gq_json_str (obj, "s", 4, "", &s, why, sizeof why), GQ_OK);
    assert (streq (s, "abc"));
    GQ_CHECK_EQ (gq_json_str (obj, "s", 3, "", &s, why, sizeof why), GQ_EINVAL);
    GQ_CHECK_EQ (gq_json_bool (obj, "b", false, &b, why, sizeof why), GQ_OK);
    assert (b);
    GQ_CHECK_EQ (gq_json_bool (obj, "n", false, &b, why, sizeof why), GQ_EINVAL);
    int64_t *ids;
    size_t count;
    GQ_CHECK_EQ (gq_json_ids (obj, "ids", &ids, &count, why, sizeof why), GQ_OK);
    GQ_CHECK_EQ (count, 2);
    GQ_CHECK_EQ (ids[1], 4);
    free (ids);
    GQ_CHECK_EQ (gq_json_ids (obj, "badids", &ids, &count, why, sizeof why), GQ_EINVAL);
    GQ_CHECK_EQ (gq_json_ids (obj, "n", &ids, &count, why, sizeof why), GQ_EINVAL);
    json_decref (obj);
    if (verbose) {
        printf ("(last reason: %s) ", why);
    }
}
