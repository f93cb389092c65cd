/*  test_security.c — "secure by default" against the real binaries on loopback.

    Keys come from gridq-keygen; the broker runs with --cert/--clients-dir/--workers-dir. Checked:
    a legitimate client and worker run a job; an unknown key and a plaintext peer get no answer;
    a client key cannot register a worker and a worker key cannot act as a client (DENIED, and
    nothing is created); each class of malformed message is answered with ERROR or dropped,
    counted in STATS "rejected", and creates no node and no job; a storm of thousands of random
    and malformed messages leaves the broker serving with its state intact. A second broker
    without CURVE (loopback) checks the rate limit: RATE_LIMITED with retry_after_ms, then
    success after that wait; a batch above the burst is taken from a full bucket.
    "integration_security broker" (ctest integration_security_broker) checks what the broker
    itself must do with input that passes validation: a refused SUBMIT batch leaves nothing
    behind and uses up no kinds; a registered worker's extreme numbers cause no undefined
    behaviour. */
#include <czmq.h>

#include "harness.h"

#define S_STORM_MESSAGES 3000 /* random and malformed messages from an allowed client */
#define S_STORM_PLAIN    100  /* plaintext connections that send junk */
#define S_STORM_STRANGER 30   /* connections with a key the broker does not know */

static char s_broker_key[41]; /* broker public key (Z85) */

static const char *
s_path (const char *name)
{
    static char paths[8][512];
    static int next;
    char *path = paths[next++ % 8];
    snprintf (path, 512, "%s/%s", h_dir (), name);
    return path;
}

/* Runs gridq-keygen NAME in the test folder. */
static void
s_keygen (const char *name)
{
    char command[1024];
    snprintf (command, sizeof command, "'%s/gridq-keygen' --dir '%s' %s >/dev/null", h_bin (),
              h_dir (), name);
    CHECK_EQ (h_run (command, NULL), 0);
}

/* A client of the CURVE broker with key NAME (NULL: plaintext). */
static gq_client_t *
s_client (const char *endpoint, const char *name, int timeout_ms)
{
    char cert[512], server[512];
    snprintf (cert, sizeof cert, "%s/%s.secret", h_dir (), name ? name : "");
    snprintf (server, sizeof server, "%s/broker.pub", h_dir ());
    gq_client_opts_t opts = {endpoint, timeout_ms, name ? cert : NULL, name ? server : NULL};
    char why[256];
    gq_client_t *client = gq_client_new (&opts, why, sizeof why);
    if (!client) {
        fprintf (stderr, "client %s: %s\n", name ? name : "(plaintext)", why);
        h_fail ();
    }
    return client;
}

/* A raw DEALER to endpoint with key NAME (NULL: plaintext). */
static zsock_t *
s_raw (const char *endpoint, const char *name)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    CHECK (sock);
    zsock_set_linger (sock, 0);
    zsock_set_sndhwm (sock, 100000);
    zsock_set_rcvhwm (sock, 100000);
    if (name) {
        char cert_path[512];
        snprintf (cert_path, sizeof cert_path, "%s/%s.secret", h_dir (), name);
        zcert_t *cert = zcert_load (cert_path);
        CHECK (cert);
        zcert_apply (cert, sock);
        zsock_set_curve_serverkey (sock, s_broker_key);
        zcert_destroy (&cert);
    }
    CHECK_EQ (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

/* Sends text frames (NULL-terminated list). */
static void
s_send (zsock_t *sock, const char *frame, ...) __attribute__ ((sentinel));

static void
s_send (zsock_t *sock, const char *frame, ...)
{
    zmsg_t *zmsg = zmsg_new ();
    va_list args;
    va_start (args, frame);
    for (const char *f = frame; f; f = va_arg (args, const char *)) {
        zmsg_addstr (zmsg, f);
    }
    va_end (args);
    CHECK_EQ (zmsg_send (&zmsg, sock), 0);
}

/* The next message within timeout_ms: its command into command, its JSON body returned (NULL
   on timeout or when the body is not JSON). */
static json_t *
s_recv (zsock_t *sock, int timeout_ms, char command[32])
{
    command[0] = 0;
    zpoller_t *poller = zpoller_new (sock, NULL);
    void *which = zpoller_wait (poller, timeout_ms);
    zpoller_destroy (&poller);
    if (!which) {
        return NULL;
    }
    zmsg_t *zmsg = zmsg_recv (sock);
    CHECK (zmsg && zmsg_size (zmsg) >= 3);
    zframe_t *proto = zmsg_pop (zmsg);
    zframe_t *cmd = zmsg_pop (zmsg);
    zframe_t *json = zmsg_pop (zmsg);
    snprintf (command, 32, "%.*s", (int) zframe_size (cmd), (const char *) zframe_data (cmd));
    json_t *body = json_loadb ((const char *) zframe_data (json), zframe_size (json), 0, NULL);
    zframe_destroy (&proto);
    zframe_destroy (&cmd);
    zframe_destroy (&json);
    zmsg_destroy (&zmsg);
    return body;
}

/* The reply to what was just sent must be ERROR with code; returns its body. */
static json_t *
s_expect_error (zsock_t *sock, const char *code, const char *what)
{
    char command[32];
    json_t *body = s_recv (sock, 10000, command);
    if (!body || strcmp (command, "ERROR") != 0) {
        fprintf (stderr, "%s: expected ERROR %s, got %s\n", what, code,
                 body ? command : "nothing within 10 s");
        h_fail ();
    }
    const char *got = json_string_value (json_object_get (body, "code"));
    if (!got || strcmp (got, code) != 0) {
        fprintf (stderr, "%s: expected ERROR %s, got %s: %s\n", what, code, got ? got : "(none)",
                 json_string_value (json_object_get (body, "message")));
        h_fail ();
    }
    CHECK (json_is_string (json_object_get (body, "message")));
    return body;
}

/* A SUBMIT of one job whose string field is size copies of fill must be refused with code. */
static void
s_long_field (zsock_t *sock, const char *field, char fill, size_t size, const char *code,
              const char *what)
{
    char *text = (char *) malloc (size + 64);
    CHECK (text);
    int n = snprintf (text, 64, "{\"req\":8,\"jobs\":[{\"%s\":\"", field);
    memset (text + n, fill, size);
    strcpy (text + n + size, "\"}]}");
    s_send (sock, "GQC1", "SUBMIT", text, NULL);
    free (text);
    json_decref (s_expect_error (sock, code, what));
}

/* Nothing comes back for what was just sent: a PING sent after it is answered first. */
static void
s_expect_dropped (zsock_t *sock, const char *proto, const char *what)
{
    s_send (sock, proto, "PING", "{\"req\":424242}", NULL);
    char command[32];
    json_t *body = s_recv (sock, 10000, command);
    if (!body || strcmp (command, "PING") != 0 ||
        json_integer_value (json_object_get (body, "req")) != 424242) {
        fprintf (stderr, "%s: expected it dropped and the next PING answered, got %s\n", what,
                 body ? command : "nothing within 10 s");
        h_fail ();
    }
    json_decref (body);
}

/* A message the broker must answer with ERROR. */
typedef struct {
    const char *command;       /* its command frame; NULL ends a list */
    const char *body;          /* its JSON frame; NULL: the message has none */
    const char *code;          /* the ERROR code expected; NULL: BAD_REQUEST */
    const char *what;          /* what it is, for a failure; NULL: the body */
} s_refusal_t;

/* Sends each message of list (ended by a NULL command) as proto on sock and expects its ERROR.
   Returns how many it sent. */
static int
s_expect_refusals (zsock_t *sock, const char *proto, const s_refusal_t *list)
{
    int sent = 0;
    for (const s_refusal_t *r = list; r->command; r++, sent++) {
        s_send (sock, proto, r->command, r->body, NULL);
        json_decref (s_expect_error (sock, r->code ? r->code : "BAD_REQUEST",
                                     r->what ? r->what : r->body));
    }
    return sent;
}

/* Sends each of bodies (ended by NULL) as proto COMMAND on sock and expects BAD_REQUEST.
   Returns how many it sent. */
static int
s_expect_bad_requests (zsock_t *sock, const char *proto, const char *command,
                       const char *const *bodies)
{
    int sent = 0;
    for (const char *const *b = bodies; *b; b++, sent++) {
        s_send (sock, proto, command, *b, NULL);
        json_decref (s_expect_error (sock, "BAD_REQUEST", *b));
    }
    return sent;
}

static int64_t
s_stat (gq_client_t *client, const char *group, const char *field)
{
    json_t *stats = gq_client_call (client, "STATS", NULL);
    if (!stats) {
        fprintf (stderr, "STATS failed: %s\n", gq_client_error (client));
        h_fail ();
    }
    json_t *where = group ? json_object_get (stats, group) : stats;
    int64_t value = (int64_t) json_integer_value (json_object_get (where, field));
    json_decref (stats);
    return value;
}

/* Jobs as STATS counts them (memory), and as JOBS lists them (the store): both must agree
   that a refused message created nothing. */
static int64_t
s_jobs_total (gq_client_t *client)
{
    const char *states[] = {"queued", "running", "done", "failed", "cancelled"};
    int64_t total = 0;
    for (int i = 0; i < 5; i++) {
        total += s_stat (client, "jobs", states[i]);
    }
    json_t *reply = gq_client_call (client, "JOBS", json_pack ("{s:i}", "limit", GQ_MAX_IDS));
    CHECK (reply);
    int64_t stored = (int64_t) json_array_size (json_object_get (reply, "jobs"));
    json_decref (reply);
    if (stored != total) {
        fprintf (stderr, "STATS counts %lld jobs, JOBS lists %lld\n", (long long) total,
                 (long long) stored);
        h_fail ();
    }
    return total;
}

/* The broker's nodes, names joined by ','. */
static void
s_nodes (gq_client_t *client, char *out, size_t size)
{
    json_t *reply = gq_client_call (client, "NODES", NULL);
    CHECK (reply);
    out[0] = 0;
    size_t i;
    json_t *node;
    json_array_foreach (json_object_get (reply, "nodes"), i, node) {
        size_t n = strlen (out);
        snprintf (out + n, size - n, "%s%s", n ? "," : "",
                  json_string_value (json_object_get (node, "name")));
    }
    json_decref (reply);
}

/* The broker's state after input it refused: still no node but gpu1 and jobs_before jobs.
   Returns how many messages it counted as rejected since it counted rejected_before. */
static int64_t
s_check_intact (gq_client_t *client, int64_t jobs_before, int64_t rejected_before)
{
    char nodes[1024];
    s_nodes (client, nodes, sizeof nodes);
    CHECK_STR (nodes, "gpu1");
    CHECK_EQ (s_jobs_total (client), jobs_before);
    return s_stat (client, NULL, "rejected") - rejected_before;
}

/* Submits one echo job and waits for its result. */
static void
s_run_job (gq_client_t *client, int n)
{
    json_t *jobs = json_pack ("[{s:s, s:{s:i}}]", "kind", "echo", "payload", "n", n);
    int64_t id = 0;
    if (gq_client_submit (client, jobs, false, &id) != 0) {
        fprintf (stderr, "submit: %s\n", gq_client_error (client));
        h_fail ();
    }
    json_decref (jobs);
    CHECK (id > 0);
    CHECK_EQ (gq_client_wait (client, &id, 1, 30000, NULL, NULL), 0);
    json_t *reply = gq_client_call (client, "RESULT", json_pack ("{s:I}", "id", (json_int_t) id));
    CHECK (reply);
    json_t *job = json_object_get (reply, "job");
    CHECK_STR (json_string_value (json_object_get (job, "state")), "done");
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (job, "result"), "n")), n);
    json_decref (reply);
}

/* ---- Roles and peers without a key ------------------------------------------------------- */

static void
s_test_roles (gq_client_t *alice)
{
    /* A key the broker does not know, and a peer without CURVE: no answer at all. */
    gq_client_t *mallory = s_client (h_endpoint (), "mallory", 1000);
    CHECK (gq_client_call (mallory, "PING", NULL) == NULL);
    CHECK_EQ (gq_client_errcode (mallory), GQ_ETIMEOUT);
    gq_client_destroy (&mallory);
    gq_client_t *plain = s_client (h_endpoint (), NULL, 1000);
    CHECK (gq_client_call (plain, "PING", NULL) == NULL);
    CHECK_EQ (gq_client_errcode (plain), GQ_ETIMEOUT);
    gq_client_destroy (&plain);

    /* A client key cannot register a worker: DENIED, and no node appears. */
    int64_t rejected = s_stat (alice, NULL, "rejected");
    zsock_t *sock = s_raw (h_endpoint (), "alice");
    s_send (sock, "GQW1", "READY",
            "{\"req\":7,\"spec\":{\"name\":\"evil\",\"vram_total_mb\":81920,\"slots\":8,"
            "\"kinds\":[\"echo\"]}}",
            NULL);
    json_t *body = s_expect_error (sock, "DENIED", "client key sending READY");
    CHECK_EQ (json_integer_value (json_object_get (body, "req")), 7);
    CHECK (strstr (json_string_value (json_object_get (body, "message")),
                   "not allowed to act as a worker"));
    json_decref (body);
    zsock_destroy (&sock);
    char nodes[1024];
    s_nodes (alice, nodes, sizeof nodes);
    CHECK_STR (nodes, "gpu1");
    CHECK (s_stat (alice, NULL, "rejected") >= rejected + 1);

    /* A worker key cannot submit, nor ask for a status. */
    int64_t jobs_before = s_jobs_total (alice);
    gq_client_t *as_client = s_client (h_endpoint (), "gpu1", 3000);
    json_t *jobs = json_pack ("[{s:s}]", "kind", "echo");
    int64_t id = 0;
    CHECK (gq_client_submit (as_client, jobs, false, &id) != 0);
    CHECK_EQ (gq_client_errcode (as_client), GQ_EDENIED);
    CHECK (strstr (gq_client_error (as_client), "not allowed to act as a client"));
    json_decref (jobs);
    CHECK (gq_client_call (as_client, "STATUS", json_pack ("{s:[i]}", "ids", 1)) == NULL);
    CHECK_EQ (gq_client_errcode (as_client), GQ_EDENIED);
    gq_client_destroy (&as_client);
    CHECK_EQ (s_jobs_total (alice), jobs_before);
    printf ("security: unknown key, plaintext and wrong roles refused\n");
}

/* ---- Malformed input, one class at a time ------------------------------------------------ */

static void
s_test_malformed (gq_client_t *alice)
{
    int64_t rejected = s_stat (alice, NULL, "rejected");
    int64_t jobs_before = s_jobs_total (alice);
    int bad = 0;
    zsock_t *c = s_raw (h_endpoint (), "alice");
    zsock_t *w = s_raw (h_endpoint (), "gpu1");

    /* Frames: protocol, command, count, size. */
    s_send (c, "GQX1", "PING", "{\"req\":1}", NULL);
    s_expect_dropped (c, "GQC1", "bad protocol frame");
    bad++;
    static const s_refusal_t frames[] = {
        {"ping!", "{\"req\":2}", "PROTOCOL", "bad command"},
        {"THIS_COMMAND_NAME_IS_FAR_TOO_LONG_FOR_US", "{}", "PROTOCOL", "long command"},
        {"FROBNICATE", "{\"req\":3}", "UNSUPPORTED", "unknown command"},
        {"SUBMIT", NULL, "PROTOCOL", "too few frames"},
        {NULL, NULL, NULL, NULL}};
    bad += s_expect_refusals (c, "GQC1", frames);
    zmsg_t *many = zmsg_new ();
    zmsg_addstr (many, "GQC1");
    zmsg_addstr (many, "SUBMIT");
    zmsg_addstr (many, "{\"req\":4,\"jobs\":[{\"kind\":\"echo\"}]}");
    for (int i = 0; i < GQ_MAX_BLOBS + 5; i++) {
        zmsg_addstr (many, "blob");
    }
    CHECK_EQ (zmsg_send (&many, c), 0);
    json_decref (s_expect_error (c, "TOO_BIG", "too many frames"));
    bad++;
    /* JSON: syntax, type, duplicates, nesting, size. */
    static const s_refusal_t json[] = {
        {"SUBMIT", "{\"req\":5,\"jobs\":[{\"kind\":\"echo\",}]", NULL, "bad JSON"},
        {"STATUS", "[1,2,3]", NULL, "JSON not an object"},
        {"STATUS", "{\"ids\":[1],\"ids\":[2]}", NULL, "duplicate key"},
        {NULL, NULL, NULL, NULL}};
    bad += s_expect_refusals (c, "GQC1", json);
    char deep[512];
    int n = snprintf (deep, sizeof deep, "{\"req\":6,\"jobs\":[{\"payload\":");
    for (int i = 0; i < 60; i++) {
        deep[n++] = '[';
    }
    for (int i = 0; i < 60; i++) {
        deep[n++] = ']';
    }
    snprintf (deep + n, sizeof deep - n, "}]}");
    s_send (c, "GQC1", "SUBMIT", deep, NULL);
    json_decref (s_expect_error (c, "TOO_BIG", "deep nesting"));
    bad++;
    s_long_field (c, "payload", 'x', GQ_MAX_JSON_BYTES + 1024, "TOO_BIG",
                  "JSON frame above 4 MiB");
    bad++;
    /* A long kind and a long idem key. */
    s_long_field (c, "kind", 'k', 100000, "BAD_REQUEST", "100000-byte kind");
    bad++;
    s_long_field (c, "idem", 'i', 5000, "BAD_REQUEST", "5000-byte idem");
    bad++;
    static const s_refusal_t strings[] = {
        {"SUBMIT", "{\"req\":10,\"jobs\":[{\"kind\":\"ec\\u0000ho\"}]}", NULL,
         "NUL in a string"},
        {"SUBMIT", "{\"req\":11,\"jobs\":[{\"kind\":\"\xff\xfe\"}]}", NULL, "invalid UTF-8"},
        {NULL, NULL, NULL, NULL}};
    bad += s_expect_refusals (c, "GQC1", strings);
    /* Job fields out of range; the index names the job. */
    s_send (c, "GQC1", "SUBMIT",
            "{\"req\":12,\"jobs\":[{\"kind\":\"echo\"},{\"kind\":\"echo\",\"priority\":99}]}", NULL);
    json_t *body = s_expect_error (c, "BAD_REQUEST", "priority 99");
    CHECK_EQ (json_integer_value (json_object_get (body, "index")), 1);
    CHECK (strstr (json_string_value (json_object_get (body, "message")), "priority"));
    json_decref (body);
    static const char *const bad_jobs[] = {
        "{\"jobs\":[{\"min_vram_mb\":-1024}]}",      "{\"jobs\":[{\"min_vram\":\"1e400G\"}]}",
        "{\"jobs\":[{\"min_vram\":\"-5G\"}]}",        "{\"jobs\":[{\"max_price\":-1}]}",
        "{\"jobs\":[{\"min_tflops\":1e999}]}",        "{\"jobs\":[{\"min_tflops\":\"NaN\"}]}",
        "{\"jobs\":[{\"max_attempts\":100000}]}",     "{\"jobs\":[{\"timeout_ms\":-1}]}",
        "{\"jobs\":[{\"time_limit\":\"9999999d\"}]}", "{\"jobs\":[{\"model\":\"../../etc\"}]}",
        "{\"jobs\":[{\"blobs\":[-1,2]}]}",            "{\"jobs\":[{\"colour\":\"red\"}]}",
        "{\"jobs\":[]}",                              "{\"jobs\":{}}",
        "{\"jobs\":[1]}",                             "{\"jobs\":[{}],\"watch\":\"yes\"}",
        NULL};
    bad += s_expect_bad_requests (c, "GQC1", "SUBMIT", bad_jobs);
    static const s_refusal_t bad_reads[] = {
        {"STATUS", "{\"ids\":[0]}", NULL, NULL},
        {"STATUS", "{\"ids\":[-5]}", NULL, NULL},
        {"STATUS", "{\"ids\":\"1\"}", NULL, NULL},
        {"WAIT", "{\"ids\":[1.5]}", NULL, NULL},
        {"CANCEL", "{\"ids\":[]}", NULL, NULL},
        {"RESULT", "{\"id\":-1}", NULL, NULL},
        {"EXPLAIN", "{}", NULL, NULL},
        {"JOBS", "{\"limit\":0}", NULL, NULL},
        {"JOBS", "{\"state\":\"exploded\"}", NULL, NULL},
        {"JOBS", "{\"arrays\":\"yes\"}", NULL, NULL},
        {"JOBS", "{\"arrays\":true,\"expand\":-1}", NULL, NULL},
        {"JOBS", "{\"arrays\":true,\"expand\":100000}", NULL, NULL},
        {NULL, NULL, NULL, NULL}};
    bad += s_expect_refusals (c, "GQC1", bad_reads);
    /* Node specs out of range, from a key that may act as a worker: no node appears. */
    static const char *const bad_specs[] = {
        "{\"spec\":{\"name\":\"neg\",\"vram_total_mb\":-1024,\"kinds\":[\"echo\"]}}",
        "{\"spec\":{\"name\":\"nan\",\"tflops\":\"NaN\",\"kinds\":[\"echo\"]}}",
        "{\"spec\":{\"name\":\"inf\",\"tflops\":1e999,\"kinds\":[\"echo\"]}}",
        "{\"spec\":{\"name\":\"price\",\"price_per_hour\":-0.5,\"kinds\":[\"echo\"]}}",
        "{\"spec\":{\"name\":\"slots\",\"slots\":100000,\"kinds\":[\"echo\"]}}",
        "{\"spec\":{\"name\":\"zero\",\"slots\":0,\"kinds\":[\"echo\"]}}",
        "{\"spec\":{\"name\":\"free\",\"vram_total_mb\":10,\"vram_free_mb\":20,\"kinds\":[\"x\"]}}",
        "{\"spec\":{\"name\":\"bad name!\",\"kinds\":[\"echo\"]}}",
        "{\"spec\":{\"name\":\"nokinds\",\"kinds\":[]}}",
        "{\"spec\":{\"name\":\"badkind\",\"kinds\":[\"Echo Kind\"]}}",
        "{\"spec\":{\"name\":\"models\",\"kinds\":[\"echo\"],\"models_loaded\":[\"m\"]}}",
        "{\"spec\":{\"name\":\"running\",\"kinds\":[\"echo\"]},\"running\":5}",
        "{\"spec\":[]}",
        "{}",
        NULL};
    bad += s_expect_bad_requests (w, "GQW1", "READY", bad_specs);
    zsock_destroy (&c);
    zsock_destroy (&w);

    int64_t counted = s_check_intact (alice, jobs_before, rejected);
    if (counted < bad) {
        fprintf (stderr, "%d malformed messages, but \"rejected\" rose by %lld\n", bad,
                 (long long) counted);
        h_fail ();
    }
    printf ("security: %d malformed messages refused and counted, nothing created\n", bad);
}

/* ---- A storm of random and malformed messages -------------------------------------------- */

static uint64_t s_seed = 0x9e3779b97f4a7c15ULL;

static uint64_t
s_rand (void)
{
    s_seed ^= s_seed << 13;
    s_seed ^= s_seed >> 7;
    s_seed ^= s_seed << 17;
    return s_seed;
}

static void
s_add_random (zmsg_t *zmsg, size_t max)
{
    size_t size = (size_t) (s_rand () % (max + 1));
    byte *data = (byte *) malloc (size + 1);
    for (size_t i = 0; i < size; i++) {
        data[i] = (byte) s_rand ();
    }
    zmsg_addmem (zmsg, data, size);
    free (data);
}

/* One message of the storm: never a valid request that could change state. */
static zmsg_t *
s_storm_message (int i)
{
    static const char *samples[] = {
        "{\"req\":1,\"jobs\":[{\"kind\":\"echo\",\"payload\":{\"n\":1}}]}",
        "{\"spec\":{\"name\":\"storm\",\"vram_total_mb\":1024,\"slots\":4,\"kinds\":[\"echo\"]}}",
        "{\"ids\":[1,2,3],\"req\":5}", "{\"results\":[{\"id\":1,\"ok\":true,\"result\":7}]}"};
    zmsg_t *zmsg = zmsg_new ();
    zmsg_addstr (zmsg, ""); /* replaced below unless the random case keeps it empty */
    zframe_t *placeholder = zmsg_first (zmsg);
    switch (s_rand () % 8) {
    case 0: /* random frames */
        for (int f = (int) (s_rand () % 25); f > 0; f--) {
            s_add_random (zmsg, 64);
        }
        break;
    case 1: /* a random command */
        zmsg_addstr (zmsg, s_rand () % 2 ? "GQC1" : "GQW1");
        s_add_random (zmsg, 40);
        zmsg_addstr (zmsg, samples[s_rand () % 4]);
        break;
    case 2: { /* a real command with its JSON cut and garbled: never valid JSON */
        const char *sample = samples[s_rand () % 4];
        size_t len = strlen (sample);
        char text[256];
        size_t cut = (size_t) (s_rand () % len);
        memcpy (text, sample, cut);
        text[cut] = (char) (s_rand () % 256);
        memcpy (text + cut + 1, "\x01", 2);
        zmsg_addstr (zmsg, "GQC1");
        zmsg_addstr (zmsg, s_rand () % 2 ? "SUBMIT" : "CANCEL");
        zmsg_addmem (zmsg, text, cut + 2);
        break;
    }
    case 3: { /* nesting beyond the limit */
        char text[600];
        int depth = 33 + (int) (s_rand () % 200), n = 0;
        n += snprintf (text, sizeof text, "{\"jobs\":[{\"payload\":");
        for (int d = 0; d < depth; d++) {
            text[n++] = '[';
        }
        for (int d = 0; d < depth; d++) {
            text[n++] = ']';
        }
        snprintf (text + n, sizeof text - n, "}]}");
        zmsg_addstr (zmsg, "GQC1");
        zmsg_addstr (zmsg, "SUBMIT");
        zmsg_addstr (zmsg, text);
        break;
    }
    case 4: /* a valid worker registration from a client key: DENIED */
        zmsg_addstr (zmsg, "GQW1");
        zmsg_addstr (zmsg, "READY");
        zmsg_addstr (zmsg, samples[1]);
        break;
    case 5: { /* jobs with fields out of range */
        char text[200];
        snprintf (text, sizeof text, "{\"jobs\":[{\"kind\":\"echo\",\"priority\":%d}]}",
                  10 + (int) (s_rand () % 100000));
        zmsg_addstr (zmsg, "GQC1");
        zmsg_addstr (zmsg, "SUBMIT");
        zmsg_addstr (zmsg, text);
        break;
    }
    case 6: /* harmless reads of jobs that do not exist */
        zmsg_addstr (zmsg, "GQC1");
        zmsg_addstr (zmsg, s_rand () % 2 ? "STATUS" : "CANCEL");
        zmsg_addstr (zmsg, "{\"ids\":[900000000001,900000000002]}");
        break;
    default: /* too many frames, some large */
        zmsg_addstr (zmsg, "GQC1");
        zmsg_addstr (zmsg, "SUBMIT");
        zmsg_addstr (zmsg, samples[0]);
        for (int f = 0; f < GQ_MAX_BLOBS + 1 + (int) (s_rand () % 10); f++) {
            s_add_random (zmsg, i % 300 == 0 ? 100000 : 100);
        }
        break;
    }
    if (zmsg_size (zmsg) > 1) {
        zmsg_remove (zmsg, placeholder); /* an empty message cannot be sent: keep one frame */
        zframe_destroy (&placeholder);
    }
    return zmsg;
}

static void
s_test_storm (gq_client_t *alice)
{
    int64_t jobs_before = s_jobs_total (alice);
    int64_t done_before = s_stat (alice, "jobs", "done");
    int64_t rejected = s_stat (alice, NULL, "rejected");
    int64_t t0 = gq_mono_us ();

    /* Connections the broker must refuse at the handshake, each sending junk. */
    zsock_t *refused[S_STORM_PLAIN + S_STORM_STRANGER];
    for (int i = 0; i < S_STORM_PLAIN + S_STORM_STRANGER; i++) {
        refused[i] = s_raw (h_endpoint (), i < S_STORM_PLAIN ? NULL : "mallory");
        /* A refused handshake drops the connection's pipe, and a DEALER with none blocks in
           send: what cannot be queued within a moment is not sent (it would be refused). */
        zsock_set_sndtimeo (refused[i], 100);
        zmsg_t *zmsg = s_storm_message (i);
        if (zmsg_send (&zmsg, refused[i])) {
            zmsg_destroy (&zmsg);
        }
    }
    /* An allowed client sends thousands of random and malformed messages. */
    zsock_t *sock = s_raw (h_endpoint (), "alice");
    for (int i = 0; i < S_STORM_MESSAGES; i++) {
        zmsg_t *zmsg = s_storm_message (i);
        CHECK_EQ (zmsg_send (&zmsg, sock), 0);
    }
    /* It is still there, answering in order: the PING after the storm comes back. */
    s_send (sock, "GQC1", "PING", "{\"req\":777}", NULL);
    int64_t deadline = gq_mono_us () + 60000000;
    bool pong = false;
    while (!pong && gq_mono_us () < deadline) {
        char command[32];
        json_t *body = s_recv (sock, 1000, command);
        pong = body && strcmp (command, "PING") == 0 &&
               json_integer_value (json_object_get (body, "req")) == 777;
        json_decref (body);
    }
    CHECK (pong);
    for (int i = 0; i < S_STORM_PLAIN + S_STORM_STRANGER; i++) {
        zsock_destroy (&refused[i]);
    }
    zsock_destroy (&sock);

    /* State intact: no job and no node came from the storm, and it was counted. */
    int64_t counted = s_check_intact (alice, jobs_before, rejected);
    CHECK (counted >= S_STORM_MESSAGES / 2);
    /* And an honest client is served as before. */
    s_run_job (alice, 4242);
    CHECK_EQ (s_stat (alice, "jobs", "done"), done_before + 1);
    printf ("security: storm of %d messages (+%d refused connections) in %.1f s; %lld counted as "
            "rejected; broker intact\n",
            S_STORM_MESSAGES, S_STORM_PLAIN + S_STORM_STRANGER,
            (double) (gq_mono_us () - t0) / 1e6, (long long) counted);
}

/* ---- Rate limit (a broker without CURVE on loopback: buckets per connection) -------------- */

/* Sends count SUBMITs of one job each (req 1000 + i), then reads the count replies. Returns how
   many were accepted; *retry_after_ms gets the hint of the last RATE_LIMITED. */
static int
s_burst (zsock_t *sock, int count, int64_t *retry_after_ms)
{
    for (int i = 0; i < count; i++) {
        char text[100];
        snprintf (text, sizeof text, "{\"req\":%d,\"jobs\":[{\"kind\":\"echo\"}]}", 1000 + i);
        s_send (sock, "GQC1", "SUBMIT", text, NULL);
    }
    int accepted = 0;
    *retry_after_ms = 0;
    for (int i = 0; i < count; i++) {
        char command[32];
        json_t *body = s_recv (sock, 10000, command);
        CHECK (body);
        if (strcmp (command, "SUBMIT") == 0) {
            accepted++;
        } else {
            CHECK_STR (command, "ERROR");
            CHECK_STR (json_string_value (json_object_get (body, "code")), "RATE_LIMITED");
            json_t *hint = json_object_get (body, "retry_after_ms");
            CHECK (json_is_integer (hint) && json_integer_value (hint) >= 1);
            *retry_after_ms = (int64_t) json_integer_value (hint);
        }
        json_decref (body);
    }
    return accepted;
}

static void
s_test_rate (void)
{
    char endpoint[64], db[600];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", h_free_port ());
    snprintf (db, sizeof db, "%s/rate.db", h_dir ());
    h_start ("gridq-broker", "broker-rate", "--endpoint", endpoint, "--db", db, "--rate", "50/s",
             "--burst", "20", "--durability", "normal", NULL);
    gq_client_t *client = s_client (endpoint, NULL, 10000);
    json_t *pong = gq_client_call (client, "PING", NULL);
    CHECK (pong);
    json_decref (pong);

    /* A burst of 60 single-job submissions: the first 20 (and what 50/s refills meanwhile) go,
       the rest are told when to come back. */
    zsock_t *sock = s_raw (endpoint, NULL);
    int64_t t0 = gq_mono_us ();
    int64_t retry = 0;
    int accepted = s_burst (sock, 60, &retry);
    double elapsed_s = (double) (gq_mono_us () - t0) / 1e6;
    if (accepted < 20 || accepted > 20 + (int) (elapsed_s * 50) + 1 || retry < 1 ||
        retry > 1000) {
        fprintf (stderr, "rate: %d of 60 accepted in %.3f s, retry_after_ms %lld\n", accepted,
                 elapsed_s, (long long) retry);
        h_fail ();
    }
    /* Waiting the hinted time is enough (the test of the hint itself, not a guess). */
    zclock_sleep ((int) retry);
    int64_t again = 0;
    CHECK_EQ (s_burst (sock, 1, &again), 1);

    /* A batch above the burst is taken from a full bucket and leaves it in debt: 30 jobs from
       20 tokens leave -10, so one more job waits for 11 tokens (220 ms at 50/s). */
    zclock_sleep (20 * 1000 / 50 + 50);
    int64_t t1 = gq_mono_us ();
    s_send (sock, "GQC1", "SUBMIT",
            "{\"req\":5,\"jobs\":[{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},"
            "{},{},{},{},{},{},{},{},{},{}]}",
            NULL);
    char command[32];
    json_t *body = s_recv (sock, 10000, command);
    CHECK (body);
    CHECK_STR (command, "SUBMIT");
    CHECK_EQ (json_array_size (json_object_get (body, "ids")), 30);
    json_decref (body);
    CHECK_EQ (s_burst (sock, 1, &again), 0);
    int64_t between_ms = (gq_mono_us () - t1) / 1000;
    if (again > 221 || again < 220 - between_ms - 1) {
        fprintf (stderr, "rate: after a batch of 30, retry_after_ms %lld (%lld ms later)\n",
                 (long long) again, (long long) between_ms);
        h_fail ();
    }
    zsock_destroy (&sock);

    /* Another connection has its own bucket, and the client API retries RATE_LIMITED by itself
       within its timeout. */
    int64_t ids[40];
    for (int i = 0; i < 40; i++) {
        json_t *jobs = json_pack ("[{s:s}]", "kind", "echo");
        if (gq_client_submit (client, jobs, false, &ids[i]) != 0) {
            fprintf (stderr, "rate: submit %d: %s\n", i, gq_client_error (client));
            h_fail ();
        }
        json_decref (jobs);
    }
    CHECK (s_stat (client, NULL, "rejected") >= 60 - accepted);

    /* Ids that do not exist count against the rate too: a connection that asked about 200 of
       them is told to wait before its next submission. */
    zsock_t *poller = s_raw (endpoint, NULL);
    json_t *unknown = json_array ();
    for (int i = 0; i < 200; i++) {
        json_array_append_new (unknown, json_integer (900000000000LL + i));
    }
    json_t *ask = json_pack ("{s:i, s:o}", "req", 9, "ids", unknown);
    char *text = json_dumps (ask, JSON_COMPACT);
    s_send (poller, "GQC1", "STATUS", text, NULL);
    free (text);
    json_decref (ask);
    body = s_recv (poller, 10000, command);
    CHECK_STR (command, "STATUS");
    CHECK_EQ (json_array_size (json_object_get (body, "missing")), 200);
    json_decref (body);
    CHECK_EQ (s_burst (poller, 1, &again), 0);
    CHECK (again > 1000); /* 200 tokens of debt at 50/s: seconds, not the refill of one */
    zsock_destroy (&poller);
    gq_client_destroy (&client);
    printf ("security: rate 50/s burst 20: %d of 60 accepted in %.3f s, retry_after_ms %lld\n",
            accepted, elapsed_s, (long long) retry);
}

/* ---- A SUBMIT batch is all or nothing, and one client cannot spoil it for others --------- */

static void
s_test_batch (void)
{
    h_start_broker (NULL, NULL);
    gq_client_t *client = h_client (5000);
    json_t *pong = gq_client_call (client, "PING", NULL);
    CHECK (pong);
    json_decref (pong);
    zsock_t *sock = s_raw (h_endpoint (), NULL);
    int64_t rejected = s_stat (client, NULL, "rejected");

    /* The second job names a blob the message does not carry: the batch is refused whole. */
    s_send (sock, "GQC1", "SUBMIT",
            "{\"req\":1,\"jobs\":[{\"kind\":\"echo\"},{\"kind\":\"echo\",\"blobs\":[0,1]}]}",
            NULL);
    json_decref (s_expect_error (sock, "BAD_REQUEST", "a job naming a missing blob"));
    CHECK_EQ (s_jobs_total (client), 0);
    CHECK (s_stat (client, NULL, "rejected") >= rejected + 1);

    /* A batch of more distinct kinds than the broker holds is refused whole, and leaves the
       kinds of other clients alone. */
    json_t *jobs = json_array ();
    for (int i = 0; i < GQ_MAX_KINDS + 6; i++) {
        char kind[32];
        snprintf (kind, sizeof kind, "k%d", i);
        json_array_append_new (jobs, json_pack ("{s:s}", "kind", kind));
    }
    json_t *batch = json_pack ("{s:i, s:o}", "req", 2, "jobs", jobs);
    char *text = json_dumps (batch, JSON_COMPACT);
    json_decref (batch);
    s_send (sock, "GQC1", "SUBMIT", text, NULL);
    free (text);
    json_decref (s_expect_error (sock, "BAD_REQUEST", "too many distinct kinds"));
    CHECK_EQ (s_jobs_total (client), 0);
    s_send (sock, "GQC1", "SUBMIT", "{\"req\":3,\"jobs\":[{\"kind\":\"matmul\"}]}", NULL);
    char command[32];
    json_t *body = s_recv (sock, 10000, command);
    if (!body || strcmp (command, "SUBMIT") != 0) {
        fprintf (stderr, "after another client's refused batch of %d kinds, a job of kind matmul "
                         "got %s: %s\n",
                 GQ_MAX_KINDS + 6, body ? command : "nothing",
                 body ? json_string_value (json_object_get (body, "message")) : "");
        h_fail ();
    }
    json_decref (body);
    CHECK_EQ (s_jobs_total (client), 1);
    zsock_destroy (&sock);

    /* A registered worker's extreme values are refused or clamped, never undefined behaviour
       (this matters under -DGRIDQ_SANITIZE=ON, where UBSan stops the broker). */
    zsock_t *worker = s_raw (h_endpoint (), NULL);
    s_send (worker, "GQW1", "READY",
            "{\"spec\":{\"name\":\"extreme\",\"vram_total_mb\":1024,\"kinds\":[\"nothing\"]}}",
            NULL);
    body = s_recv (worker, 10000, command);
    CHECK (body);
    CHECK_STR (command, "WELCOME");
    json_decref (body);
    s_send (worker, "GQW1", "HEARTBEAT",
            "{\"echo\":-9223372036854775808,\"vram_free_mb\":-5,\"models_loaded\":[[[]]]}",
            NULL);
    s_send (worker, "GQW1", "HEARTBEAT", "{\"echo\":9223372036854775807}", NULL);
    s_send (worker, "GQW1", "RESULT",
            "{\"results\":[{\"id\":\"x\"},5,null,{\"id\":9000000000001,\"ok\":true}]}", NULL);
    s_send (worker, "GQW1", "BYE", "{}", NULL);
    zsock_destroy (&worker);
    pong = gq_client_call (client, "PING", NULL);
    CHECK (pong);
    json_decref (pong);
    gq_client_destroy (&client);
    printf ("security: refused batches leave no job behind and no kind used up; extreme worker "
            "values survived\n");
}

int
main (int argc, char **argv)
{
    if (argc > 1 && strcmp (argv[1], "broker") == 0) {
        h_init ("security-broker", 60);
        s_test_batch ();
        h_cleanup ();
        printf ("security broker: OK\n");
        return 0;
    }
    h_init ("security", 220);
    unsetenv ("GRIDQ_CERT");
    unsetenv ("GRIDQ_SERVER_CERT");
    if (!zsys_has_curve ()) {
        printf ("security: this libzmq has no CURVE: skipped\n");
        h_cleanup ();
        return 77;
    }
    s_keygen ("broker");
    s_keygen ("alice");
    s_keygen ("gpu1");
    s_keygen ("mallory");
    char command[1024];
    snprintf (command, sizeof command,
              "cd '%s' && mkdir clients workers && cp alice.pub clients/ && cp gpu1.pub workers/",
              h_dir ());
    CHECK_EQ (h_run (command, NULL), 0);
    zcert_t *broker = zcert_load (s_path ("broker.pub"));
    CHECK (broker);
    snprintf (s_broker_key, sizeof s_broker_key, "%s", zcert_public_txt (broker));
    zcert_destroy (&broker);

    h_start_broker ("--cert", s_path ("broker.secret"), "--clients-dir", s_path ("clients"),
                    "--workers-dir", s_path ("workers"), NULL);
    h_start_worker ("gpu1", 2, "--cert", s_path ("gpu1.secret"), "--server-cert",
                    s_path ("broker.pub"), NULL);
    /* A worker without CURVE never registers. */
    h_start_worker ("plainw", 1, NULL);
    gq_client_t *alice = s_client (h_endpoint (), "alice", 5000);
    h_wait_nodes (alice, 1, 30000);
    s_run_job (alice, 1);
    printf ("security: a job ran between a CURVE client and a CURVE worker\n");

    s_test_roles (alice);
    s_test_malformed (alice);
    s_test_storm (alice);
    s_test_rate ();

    char nodes[1024];
    s_nodes (alice, nodes, sizeof nodes);
    CHECK_STR (nodes, "gpu1"); /* the plaintext worker never got in */
    gq_client_destroy (&alice);
    h_cleanup ();
    printf ("security: OK\n");
    return 0;
}
