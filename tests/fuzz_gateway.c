/*  fuzz_gateway.c — libFuzzer target for what gridq-gateway does with a client's bytes before
    the broker sees them (gateway/request.c): the bearer token and its rate bucket, the route
    and method, the role, the query's values, the body's content type and JSON, and the owner
    tag of submitted jobs; then what the relay does with a job as reported (gateway/tokens.c:
    gw_owner_is, gw_owner_show).

    Input: an HTTP request in miniature (the seeds in tests/fuzz-corpus-gateway/ use it):
    "METHOD PATH[?QUERY]\n", header lines "Name: value\n", a blank line, then the body. The query
    is split on '&' and '='. Two tokens exist: "gq_fuzz_admin" (admin) and "gq_fuzz_client"
    (client, name "c"); the rate is 1000/s with a burst of 4 on a clock that moves 1 ms a call.

    Besides the sanitizers, the target checks the promises: the check answers a 4xx or posts the
    call (never a 5xx, never both, never neither); an answer is a JSON object with "error"; a
    posted call under tokens names its token, and every job object it submits carries that
    token's owner tag. Built with -DGRIDQ_FUZZ=ON and clang; run by GRIDQ_FUZZ_TARGET=gateway
    tools/fuzz. */
#define _GNU_SOURCE
#include <czmq.h>
#include <nettle/sha2.h>
#include <stdint.h>
#include <string.h>

#include "request.h"

#define S_MAX_LINES 32

typedef struct {
    char *names[S_MAX_LINES];
    char *values[S_MAX_LINES];
    size_t count;
} s_pairs_t;

typedef struct {
    s_pairs_t headers;
    s_pairs_t args;
} s_request_t;

static gw_tokens_t *s_tokens;
static int64_t s_now_us;

static void
s_check (bool ok, const char *what)
{
    if (!ok) {
        fprintf (stderr, "fuzz_gateway: broken promise: %s\n", what);
        abort ();
    }
}

static const char *
s_lookup (s_pairs_t *pairs, const char *name, bool nocase)
{
    for (size_t i = 0; i < pairs->count; i++) {
        if (nocase ? strcasecmp (pairs->names[i], name) == 0 : streq (pairs->names[i], name)) {
            return pairs->values[i];
        }
    }
    return NULL;
}

static const char *
s_header (void *cls, const char *name)
{
    return s_lookup (&((s_request_t *) cls)->headers, name, true);
}

static const char *
s_arg (void *cls, const char *name)
{
    return s_lookup (&((s_request_t *) cls)->args, name, false);
}

static void
s_hash_line (char *out, size_t size, const char *name, const char *role, const char *token)
{
    struct sha256_ctx ctx;
    uint8_t hash[32];
    sha256_init (&ctx);
    sha256_update (&ctx, strlen (token), (const uint8_t *) token);
    sha256_digest (&ctx, sizeof hash, hash);
    int n = snprintf (out, size, "%s %s ", name, role);
    for (size_t i = 0; i < sizeof hash; i++) {
        n += snprintf (out + n, size - (size_t) n, "%02x", hash[i]);
    }
    snprintf (out + n, size - (size_t) n, "\n");
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    zsys_init ();
    zsys_set_logstream (NULL);
    char text[512], line[200];
    s_hash_line (text, sizeof text, "root", "admin", "gq_fuzz_admin");
    s_hash_line (line, sizeof line, "c", "client", "gq_fuzz_client");
    strcat (text, "# a comment\n");
    strcat (text, line);
    char why[256];
    s_tokens = gw_tokens_parse (text, "fuzz", why, sizeof why);
    if (!s_tokens) {
        fprintf (stderr, "fuzz_gateway: %s\n", why);
        abort ();
    }
    gw_tokens_set_rate (s_tokens, 1000, 4);
    return 0;
}

/* The owner tag's promise on a job the check let through. */
static void
s_check_tagged (json_t *job, const char *name)
{
    if (!json_is_object (job) || (json_object_get (job, "idem") &&
                                  !json_is_string (json_object_get (job, "idem")))) {
        return; /* left to the broker, which refuses it */
    }
    s_check (gw_owner_is (job, name), "a submitted job without its token's tag");
    json_t *copy = json_deep_copy (job);
    gw_owner_show (copy);
    s_check (streq (json_string_value (json_object_get (copy, "owner")), name),
             "the owner shown is not the token's");
    json_decref (copy);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *text = (char *) malloc (size + 1);
    memcpy (text, data, size);
    text[size] = 0;
    /* The body is what follows the first blank line, bytes and all (NULs too). */
    char *blank = (char *) memmem (text, size, "\n\n", 2);
    size_t head = blank ? (size_t) (blank - text) : size;
    const char *body = blank ? blank + 2 : NULL;
    size_t body_len = blank ? size - head - 2 : 0;
    text[head] = 0;

    s_request_t request;
    memset (&request, 0, sizeof request);
    char *save = NULL;
    char *first = strtok_r (text, "\n", &save);
    char *method = first ? strtok_r (first, " ", &first) : NULL;
    char *url = first && *first ? first : NULL;
    if (!method || !url) {
        free (text);
        return 0;
    }
    char *query = strchr (url, '?');
    if (query) {
        *query++ = 0;
        char *pair_save = NULL;
        for (char *pair = strtok_r (query, "&", &pair_save);
             pair && request.args.count < S_MAX_LINES; pair = strtok_r (NULL, "&", &pair_save)) {
            char *equals = strchr (pair, '=');
            if (equals) {
                *equals = 0;
            }
            request.args.names[request.args.count] = pair;
            request.args.values[request.args.count++] = equals ? equals + 1 : (char *) "";
        }
    }
    for (char *line = strtok_r (NULL, "\n", &save); line && request.headers.count < S_MAX_LINES;
         line = strtok_r (NULL, "\n", &save)) {
        char *colon = strchr (line, ':');
        if (!colon) {
            continue;
        }
        *colon = 0;
        char *value = colon + 1;
        while (*value == ' ') {
            value++;
        }
        request.headers.names[request.headers.count] = line;
        request.headers.values[request.headers.count++] = value;
    }

    bool tokens = size % 2 == 0; /* half the inputs go to a gateway without --tokens */
    gw_rules_t rules = {tokens ? s_tokens : NULL, 4096, "chat", "completion"};
    gw_request_t gw_request = {method, url, s_header, s_arg, &request};
    gw_call_t *call = gw_call_new (NULL, method, url);
    if (body) {
        call->upload = (char *) malloc (body_len ? body_len : 1);
        memcpy (call->upload, body, body_len);
        call->upload_len = body_len;
        call->too_big = body_len > rules.max_body;
    }
    s_now_us += 1000;
    unsigned status = gw_request_check (&rules, &gw_request, call, s_now_us);
    s_check (status == 0 || (status >= 400 && status < 500), "a check answered other than 4xx");
    s_check ((status != 0) == call->answered, "answered and posted disagree");
    if (status) {
        json_t *answer = json_loadb (call->text, call->len, 0, NULL);
        s_check (json_is_object (json_object_get (answer, "error")), "an error without error");
        json_decref (answer);
    } else {
        s_check (!tokens || call->op == GW_OP_HEALTH || *call->token,
                 "a posted call without its token");
        if (call->op == GW_OP_SUBMIT) {
            s_check (json_is_object (call->body), "a submission without a JSON object");
            if (tokens) {
                if (call->batch) {
                    size_t i;
                    json_t *job;
                    json_array_foreach (json_object_get (call->body, "jobs"), i, job) {
                        s_check_tagged (job, call->token);
                    }
                } else {
                    s_check_tagged (call->body, call->token);
                }
            }
        }
    }
    gw_call_unref (&call);
    free (text);
    return 0;
}
