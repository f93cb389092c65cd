/*  fuzz_msg.c — libFuzzer target for everything the broker does with a peer's bytes before it
    touches its state: frame decoding (gq_msg_decode, routed as on the ROUTER), the ERROR reply
    to a bad message, and the validation of jobs, node specs, model lists, id lists and fields.

    Input framing (the seeds in tests/fuzz-corpus/ use it): a list of frames, each a 2-byte
    big-endian length and that many bytes (a short last frame takes what is left). The first
    frame is the routing id. At most S_MAX_FRAMES frames are used.

    Besides the sanitizers, the target checks three promises: an error reply always carries its
    code and message; a message that decodes has a valid command and a JSON object body within
    the depth limit; and the JSON frame, when RESULT's scanner (gq_result.h) takes it apart, is
    one jansson parses within the limits, to the same node, entries and results. Built with -DGRIDQ_FUZZ=ON and clang; run by tools/fuzz. */
#include <czmq.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "gq_msg.h"
#include "gq_result.h"
#include "gq_spec.h"

#define S_MAX_FRAMES (GQ_MAX_FRAMES + 8)

static void
s_check (bool ok, const char *what)
{
    if (!ok) {
        fprintf (stderr, "fuzz_msg: broken promise: %s\n", what);
        abort ();
    }
}

/* Splits the input into a zmsg as the ROUTER would deliver it. */
static zmsg_t *
s_frames (const uint8_t *data, size_t size)
{
    zmsg_t *zmsg = zmsg_new ();
    size_t at = 0;
    for (int n = 0; n < S_MAX_FRAMES && at < size; n++) {
        size_t len = at + 1 < size ? ((size_t) data[at] << 8 | data[at + 1]) : 0;
        at += 2;
        if (at > size) {
            break;
        }
        if (len > size - at) {
            len = size - at;
        }
        zmsg_addmem (zmsg, data + at, len);
        at += len;
    }
    return zmsg;
}

/* What an ERROR reply to msg looks like, as the broker builds it. */
static void
s_error_reply (gq_msg_t *msg, int code, const char *why)
{
    gq_msg_t *reply = gq_msg_error (msg, code, "%s", why);
    s_check (reply != NULL, "gq_msg_error returned NULL");
    json_t *body = gq_msg_body (reply);
    s_check (json_is_string (json_object_get (body, "code")), "ERROR without a code");
    s_check (json_is_string (json_object_get (body, "message")), "ERROR without a message");
    char *text = json_dumps (body, JSON_COMPACT);
    s_check (text != NULL, "ERROR body does not encode");
    free (text);
    gq_msg_destroy (&reply);
}

/* Every validator the broker runs on a client's or a worker's body; refusals are answered as
   the broker answers them. */
static void
s_validate (gq_msg_t *msg, json_t *body)
{
    char why[300];
    gq_jobspec_t job;
    json_t *jobs = json_object_get (body, "jobs");
    size_t i;
    json_t *item;
    json_array_foreach (jobs, i, item) {
        if (gq_jobspec_parse (item, &job, why, sizeof why) == GQ_OK) {
            s_check (job.kind && gq_valid_kind (job.kind), "job kind");
            s_check (job.priority >= 0 && job.priority <= 9, "job priority");
            s_check (job.min_vram_mb >= 0 && job.min_vram_mb <= GQ_MAX_VRAM_MB, "job vram");
            s_check (job.max_attempts >= 1 && job.max_attempts <= GQ_MAX_ATTEMPTS_LIMIT,
                     "job attempts");
            s_check (job.timeout_ms >= 0 && job.timeout_ms <= GQ_MAX_TIMEOUT_MS, "job timeout");
            s_check (job.blob_first < GQ_MAX_BLOBS && job.blob_count <= GQ_MAX_BLOBS,
                     "job blobs");
            s_check (!job.model || gq_valid_name (job.model, GQ_MODEL_MAX), "job model");
        } else {
            s_check (why[0] != 0, "a refused job without a reason");
            gq_msg_t *reply = gq_msg_error (msg, GQ_EINVAL, "jobs[%zu]: %s", i, why);
            s_check (json_is_string (json_object_get (gq_msg_body (reply), "code")),
                     "ERROR without a code");
            gq_msg_destroy (&reply);
        }
    }
    if (gq_jobspec_parse (body, &job, why, sizeof why)) {
        s_error_reply (msg, GQ_EINVAL, why);
    }

    gq_nodespec_t node;
    json_t *specs[2] = {json_object_get (body, "spec"), body};
    for (int s = 0; s < 2; s++) {
        if (gq_nodespec_parse (specs[s], &node, why, sizeof why)) {
            s_error_reply (msg, GQ_EINVAL, why);
        } else {
            s_check (node.slots >= 1 && node.slots <= GQ_MAX_SLOTS, "node slots");
            s_check (node.vram_free_mb >= 0 && node.vram_free_mb <= node.vram_total_mb,
                     "node vram");
            s_check (node.tflops >= 0 && node.tflops <= GQ_MAX_TFLOPS, "node tflops");
            s_check (node.name && gq_valid_name (node.name, GQ_NAME_MAX), "node name");
            s_check (json_array_size (node.kinds) >= 1, "node kinds");
        }
    }
    gq_models_validate (json_object_get (body, "models_loaded"), true, why, sizeof why);
    gq_models_validate (json_object_get (body, "models_available"), false, why, sizeof why);

    int64_t *ids = NULL;
    size_t count = 0;
    if (gq_json_ids (body, "ids", &ids, &count, why, sizeof why) == GQ_OK) {
        s_check (count >= 1 && count <= GQ_MAX_IDS, "id count");
        for (size_t k = 0; k < count; k++) {
            s_check (ids[k] > 0, "id value");
        }
    }
    free (ids);
    int64_t n;
    double d;
    const char *str;
    bool b;
    gq_json_int (body, "id", 1, INT64_MAX, 0, &n, why, sizeof why);
    gq_json_int (body, "limit", 1, GQ_MAX_IDS, 100, &n, why, sizeof why);
    gq_json_int (body, "vram_free_mb", 0, GQ_MAX_VRAM_MB, 0, &n, why, sizeof why);
    gq_json_num (body, "load_ms", 0, 1e9, 0, &d, why, sizeof why);
    gq_json_str (body, "state", 16, NULL, &str, why, sizeof why);
    gq_json_bool (body, "watch", false, &b, why, sizeof why);
}

/* The scanner against the parser: what scans parses, to the same values. */
static void
s_check_scan (const char *text, size_t size)
{
    gq_result_entry_t entries[8];
    char node[GQ_NAME_MAX];
    size_t count;
    if (!gq_result_scan (text, size, GQ_MAX_JSON_DEPTH - 3, node, sizeof node, entries, 8,
                         &count)) {
        return;
    }
    json_error_t error;
    json_t *body = json_loadb (text, size, JSON_REJECT_DUPLICATES, &error);
    s_check (body && json_is_object (body), "scanned, but jansson refuses it");
    s_check (gq_json_depth (body) <= GQ_MAX_JSON_DEPTH, "scanned, but too deep");
    s_check (streq (json_string_value (json_object_get (body, "node")), node), "scanned node");
    json_t *results = json_object_get (body, "results");
    s_check (json_array_size (results) == count, "scanned entries");
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get (results, i);
        s_check (json_integer_value (json_object_get (item, "id")) == entries[i].id, "id");
        s_check (json_integer_value (json_object_get (item, "attempt")) == entries[i].attempt,
                 "attempt");
        s_check (json_integer_value (json_object_get (item, "at")) == entries[i].at, "at");
        double ms = json_number_value (json_object_get (item, "ms"));
        s_check (fabs (ms - entries[i].ms) <= 1e-9 * (1 + fabs (ms)), "ms");
        json_t *result = json_loadb (entries[i].result, entries[i].result_size,
                                     JSON_REJECT_DUPLICATES, &error);
        s_check (json_equal (result, json_object_get (item, "result")), "result text");
        json_decref (result);
    }
    json_decref (body);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static bool initialized = false;
    if (!initialized) {
        zsys_init ();
        zsys_set_logstream (NULL);
        initialized = true;
    }
    zmsg_t *zmsg = s_frames (data, size);
    zframe_t *json = zmsg_size (zmsg) > 3 ? zmsg_next (zmsg) : NULL;
    for (int f = 0; json && f < 3; f++) {
        json = zmsg_next (zmsg);
    }
    if (json) {
        s_check_scan ((const char *) zframe_data (json), zframe_size (json));
    }
    gq_msg_t *msg = NULL;
    char why[300] = "";
    int rc = gq_msg_decode (&zmsg, true, &msg, why, sizeof why);
    s_check (zmsg == NULL, "decode kept the zmsg");
    if (rc != GQ_OK) {
        s_check (rc < 0 && why[0], "an error without a reason");
        if (msg) {
            s_error_reply (msg, rc, why);
        }
        gq_msg_destroy (&msg);
        return 0;
    }
    s_check (msg != NULL, "success without a message");
    const char *command = gq_msg_command (msg);
    s_check (command[0] && strlen (command) < GQ_COMMAND_MAX, "command");
    for (const char *p = command; *p; p++) {
        s_check ((*p >= 'A' && *p <= 'Z') || *p == '_', "command characters");
    }
    json_t *body = gq_msg_body (msg);
    s_check (json_is_object (body), "body is an object");
    s_check (gq_json_depth (body) <= GQ_MAX_JSON_DEPTH, "depth");
    s_check (gq_msg_blobs (msg) <= GQ_MAX_BLOBS, "blob count");
    gq_msg_req (msg);
    s_validate (msg, body);
    s_error_reply (msg, GQ_EINVAL, why);
    gq_msg_t *reply = gq_msg_reply (msg, "PING", json_pack ("{s:s}", "version", "0.1.0"));
    s_check (reply != NULL, "reply");
    gq_msg_destroy (&reply);
    gq_msg_destroy (&msg);
    return 0;
}
