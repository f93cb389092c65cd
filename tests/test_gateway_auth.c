/*  test_gateway_auth.c — gridq-gateway's bearer tokens, roles and limits, end to end: a broker,
    a worker with 8 slots (echo, sleep), and three gateways on one tokens file made with
    --add-token, spoken to with curl.
    (a) --add-token prints a token that works, writes the file 0600, refuses a name twice; a bad
    line refuses to start, naming the line; (b) 401 with WWW-Authenticate: Bearer without a
    token or with a wrong one, on every path but /healthz, the same answer either way; (c) 403
    for a client on /v1/nodes and /v1/stats, 200 for admin; (d) ownership: a client sees, waits
    on, follows, explains and cancels only its own jobs (another's is 404 exactly as an unknown
    id), lists only its own; admin sees and cancels all; idem keys are per token; (e) two
    gateways before one broker: a job submitted through one is seen done through the other, by
    its owner and by admin; (f) --rate: 429 with Retry-After once a token's burst is spent, in
    OpenAI's shape on an OpenAI path; (g) --max-queued: 429 while a token has that many jobs not
    ended, accepted again once one ended; (i) --idle-timeout closes a connection that sent half a request; (j) a header larger than
    the connection's buffer gets 431 (or 413), and the gateway goes on serving. */
#define _GNU_SOURCE
#include <czmq.h>
#include <poll.h>
#include <sys/stat.h>

#include "harness.h"

static char s_tokens[600];                    /* the tokens file */
static char s_alice[128], s_bob[128], s_root[128], s_carol[128], s_dave[128]; /* the tokens */
static char s_a[96], s_b[96], s_c[96];        /* the gateways: http://127.0.0.1:PORT */
static int s_c_port;

/* A file's text (malloc'd), "" when it cannot be read. */
static char *
s_slurp (const char *path)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    FILE *file = fopen (path, "r");
    int c;
    while (file && (c = fgetc (file)) != EOF) {
        fputc (c, out);
    }
    if (file) {
        fclose (file);
    }
    fclose (out);
    return text;
}

/* One request with curl: the status; the body as JSON into *json (NULL when it is not JSON)
   and the response headers into *headers (malloc'd) when asked. token NULL sends none. */
static int
s_http (const char *base, const char *token, const char *method, const char *path,
        const char *data, json_t **json, char **headers)
{
    char command[4096], auth[200] = "", body[2400] = "";
    if (token) {
        snprintf (auth, sizeof auth, "-H 'Authorization: Bearer %s'", token);
    }
    if (data) {
        snprintf (body, sizeof body, "-H 'Content-Type: application/json' --data-binary '%s'",
                  data);
    }
    snprintf (command, sizeof command,
              "curl -s -m 60 -D %s/h.txt -o %s/b.txt -w '%%{http_code}' -X %s %s %s '%s%s'",
              h_dir (), h_dir (), method, auth, body, base, path);
    char *out = NULL;
    CHECK_EQ (h_run (command, &out), 0);
    int status = atoi (out);
    free (out);
    char file[700];
    snprintf (file, sizeof file, "%s/b.txt", h_dir ());
    char *text = s_slurp (file);
    if (json) {
        *json = json_loads (text, 0, NULL);
    }
    free (text);
    if (headers) {
        snprintf (file, sizeof file, "%s/h.txt", h_dir ());
        *headers = s_slurp (file);
    }
    return status;
}

static const char *
s_error (json_t *json, const char *key)
{
    return h_str (json_object_get (json, "error"), key);
}

static bool
s_healthy (void *arg)
{
    char command[200];
    snprintf (command, sizeof command, "curl -s -f -o /dev/null %s/healthz", (const char *) arg);
    return h_run (command, NULL) == 0;
}

/* A gateway on a free port of host, with extra arguments (at most 4, NULL-terminated). */
static void
s_gateway (char base[96], const char *host, int *port_out, const char *a1, const char *a2,
           const char *a3, const char *a4)
{
    int port = h_free_port ();
    char listen[64];
    snprintf (listen, sizeof listen, "%s:%d", host, port);
    snprintf (base, 96, "http://127.0.0.1:%d", port);
    h_start ("gridq-gateway", "gateway", "--broker", h_endpoint (), "--listen", listen,
             "--tokens", s_tokens, a1, a2, a3, a4, NULL);
    CHECK (h_wait_until (s_healthy, base, 20000));
    if (port_out) {
        *port_out = port;
    }
}

/* ---- (a) --add-token ----------------------------------------------------------------------- */

static void
s_add (const char *name, const char *role, char token[128])
{
    char command[1000], *out = NULL;
    snprintf (command, sizeof command, "%s/gridq-gateway --add-token %s %s --tokens %s 2>/dev/null",
              h_bin (), name, role, s_tokens);
    CHECK_EQ (h_run (command, &out), 0);
    out[strcspn (out, "\n")] = 0;
    CHECK (strlen (out) > 40);
    snprintf (token, 128, "%s", out);
    free (out);
}

static void
s_add_tokens (void)
{
    snprintf (s_tokens, sizeof s_tokens, "%s/tokens", h_dir ());
    s_add ("alice", "client", s_alice);
    s_add ("bob", "client", s_bob);
    s_add ("root", "admin", s_root);
    s_add ("carol", "client", s_carol);
    s_add ("dave", "client", s_dave);
    struct stat info;
    CHECK_EQ (stat (s_tokens, &info), 0);
    CHECK_EQ (info.st_mode & 0777, 0600);
    char *text = s_slurp (s_tokens);
    CHECK (!strstr (text, s_alice)); /* only hashes */
    free (text);
    char command[1200], *out = NULL;
    snprintf (command, sizeof command, "%s/gridq-gateway --add-token alice client --tokens %s 2>&1",
              h_bin (), s_tokens);
    CHECK (h_run (command, &out) != 0);
    CHECK (strstr (out, "already"));
    free (out);
    /* A bad line: the gateway does not start, and names the line. */
    snprintf (command, sizeof command,
              "cp %s %s/bad && echo 'eve superuser 00' >> %s/bad && %s/gridq-gateway --tokens "
              "%s/bad 2>&1",
              s_tokens, h_dir (), h_dir (), h_bin (), h_dir ());
    CHECK_EQ (h_run (command, &out), 2);
    CHECK (strstr (out, "bad:6:"));
    free (out);
    printf ("gateway_auth: --add-token made 5 tokens (file 0600, hashes only); a bad line is "
            "named\n");
}

/* ---- (b) 401, (c) 403 ---------------------------------------------------------------------- */

static void
s_unauthorized (void)
{
    json_t *json, *again;
    char *headers;
    CHECK_EQ (s_http (s_a, NULL, "GET", "/v1/jobs", NULL, &json, &headers), 401);
    CHECK (strcasestr (headers, "WWW-Authenticate: Bearer"));
    free (headers);
    CHECK_EQ (s_http (s_a, "gq_wrong", "GET", "/v1/jobs", NULL, &again, NULL), 401);
    CHECK_STR (s_error (json, "message"), s_error (again, "message"));
    json_decref (again);
    json_decref (json);
    /* Every path, known or not, and what it would be otherwise (a POST, an id). */
    CHECK_EQ (s_http (s_a, "gq_wrong", "GET", "/v1/no-such-thing", NULL, NULL, NULL), 401);
    CHECK_EQ (s_http (s_a, NULL, "GET", "/v1/jobs/1", NULL, NULL, NULL), 401);
    CHECK_EQ (s_http (s_a, NULL, "POST", "/v1/jobs", "{\"kind\": \"echo\"}", NULL, NULL), 401);
    CHECK_EQ (s_http (s_a, NULL, "GET", "/v1/models", NULL, &json, NULL), 401);
    CHECK_STR (s_error (json, "code"), "invalid_api_key");
    CHECK_STR (s_error (json, "type"), "invalid_request_error");
    json_decref (json);
    CHECK_EQ (s_http (s_a, NULL, "GET", "/healthz", NULL, NULL, NULL), 200);

    CHECK_EQ (s_http (s_a, s_alice, "GET", "/v1/nodes", NULL, &json, NULL), 403);
    CHECK_STR (s_error (json, "code"), "forbidden");
    json_decref (json);
    CHECK_EQ (s_http (s_a, s_alice, "GET", "/v1/stats", NULL, NULL, NULL), 403);
    CHECK_EQ (s_http (s_a, s_root, "GET", "/v1/nodes", NULL, NULL, NULL), 200);
    CHECK_EQ (s_http (s_a, s_root, "GET", "/v1/stats", NULL, NULL, NULL), 200);
    CHECK_EQ (s_http (s_a, s_alice, "GET", "/v1/models", NULL, NULL, NULL), 200);
    printf ("gateway_auth: 401 (WWW-Authenticate, one answer), 403 for a client on nodes and "
            "stats\n");
}

/* ---- (d) Ownership ------------------------------------------------------------------------- */

static int64_t
s_submit (const char *base, const char *token, const char *job)
{
    json_t *json;
    CHECK_EQ (s_http (base, token, "POST", "/v1/jobs", job, &json, NULL), 201);
    int64_t id = h_int (json, "id");
    json_decref (json);
    return id;
}

/* Whether a list answer holds the job id. */
static bool
s_listed (const char *base, const char *token, int64_t id)
{
    json_t *json;
    CHECK_EQ (s_http (base, token, "GET", "/v1/jobs?limit=10000", NULL, &json, NULL), 200);
    bool found = false;
    size_t i;
    json_t *job;
    json_array_foreach (json_object_get (json, "jobs"), i, job) {
        found |= h_int (job, "id") == id;
    }
    json_decref (json);
    return found;
}

/* What bob gets for alice's job at path is what anyone gets for an id never handed out. */
static void
s_hidden (const char *method, const char *format, int64_t id)
{
    char path[128], unknown[128], message[64];
    snprintf (path, sizeof path, format, (long long) id);
    snprintf (unknown, sizeof unknown, format, 987654321LL);
    json_t *json, *other;
    CHECK_EQ (s_http (s_a, s_bob, method, path, NULL, &json, NULL), 404);
    CHECK_EQ (s_http (s_a, s_bob, method, unknown, NULL, &other, NULL), 404);
    snprintf (message, sizeof message, "no job %lld", (long long) id);
    CHECK_STR (s_error (json, "message"), message);
    CHECK_STR (s_error (json, "code"), s_error (other, "code"));
    CHECK_EQ (json_object_size (json_object_get (json, "error")),
              json_object_size (json_object_get (other, "error")));
    json_decref (json);
    json_decref (other);
}

static void
s_ownership (gq_client_t *client)
{
    int64_t echo = s_submit (s_a, s_alice, "{\"kind\": \"echo\", \"payload\": {\"x\": 1}}");
    int64_t sleep = s_submit (s_a, s_alice, "{\"kind\": \"sleep\", \"payload\": {\"ms\": 60000}}");
    char path[128];
    json_t *json;
    snprintf (path, sizeof path, "/v1/jobs/%lld?wait=30s", (long long) echo);
    CHECK_EQ (s_http (s_a, s_alice, "GET", path, NULL, &json, NULL), 200);
    CHECK_STR (h_str (json, "state"), "done");
    CHECK_STR (h_str (json, "owner"), "alice");
    CHECK (!json_object_get (json, "idem")); /* the gateway's own key is not shown */
    json_decref (json);
    CHECK (h_wait_state (client, sleep, "running", 20000));

    s_hidden ("GET", "/v1/jobs/%lld", echo);
    s_hidden ("GET", "/v1/jobs/%lld?wait=1s", sleep);
    s_hidden ("GET", "/v1/jobs/%lld/events", echo);
    s_hidden ("GET", "/v1/jobs/%lld/explain", echo);
    s_hidden ("DELETE", "/v1/jobs/%lld", sleep);
    json_t *status = h_status (client, sleep);
    CHECK_STR (h_str (status, "state"), "running"); /* bob's DELETE did nothing */
    json_decref (status);
    CHECK (s_listed (s_a, s_alice, echo) && s_listed (s_a, s_alice, sleep));
    CHECK (!s_listed (s_a, s_bob, echo) && !s_listed (s_a, s_bob, sleep));
    CHECK (s_listed (s_a, s_root, echo));

    /* Admin sees and cancels another's job; a client cancels its own. */
    snprintf (path, sizeof path, "/v1/jobs/%lld", (long long) echo);
    CHECK_EQ (s_http (s_a, s_root, "GET", path, NULL, &json, NULL), 200);
    CHECK_STR (h_str (json, "owner"), "alice");
    json_decref (json);
    snprintf (path, sizeof path, "/v1/jobs/%lld", (long long) sleep);
    CHECK_EQ (s_http (s_a, s_root, "DELETE", path, NULL, &json, NULL), 200);
    CHECK_STR (h_str (json, "state"), "cancelled");
    json_decref (json);
    int64_t own = s_submit (s_a, s_bob, "{\"kind\": \"sleep\", \"payload\": {\"ms\": 60000}}");
    snprintf (path, sizeof path, "/v1/jobs/%lld", (long long) own);
    CHECK_EQ (s_http (s_a, s_bob, "DELETE", path, NULL, &json, NULL), 200);
    CHECK_STR (h_str (json, "state"), "cancelled");
    json_decref (json);

    /* Idempotency keys are per token: bob's "k1" is not alice's. */
    const char *keyed = "{\"kind\": \"echo\", \"idem\": \"k1\"}";
    int64_t first = s_submit (s_a, s_alice, keyed);
    CHECK (s_submit (s_a, s_bob, keyed) != first);
    CHECK_EQ (s_submit (s_a, s_alice, keyed), first);
    snprintf (path, sizeof path, "/v1/jobs/%lld", (long long) first);
    CHECK_EQ (s_http (s_a, s_alice, "GET", path, NULL, &json, NULL), 200);
    CHECK_STR (h_str (json, "idem"), "k1");
    json_decref (json);
    printf ("gateway_auth: a client sees and cancels only its own jobs (another's is 404 as an "
            "unknown id), admin all; idem keys are per token\n");
}

/* ---- (e) Two gateways ---------------------------------------------------------------------- */

static void
s_two_gateways (void)
{
    int64_t id = s_submit (s_a, s_alice, "{\"kind\": \"echo\", \"payload\": {\"y\": 2}}");
    char path[128];
    json_t *json;
    snprintf (path, sizeof path, "/v1/jobs/%lld?wait=30s", (long long) id);
    CHECK_EQ (s_http (s_b, s_root, "GET", path, NULL, &json, NULL), 200);
    CHECK_STR (h_str (json, "state"), "done");
    CHECK_STR (h_str (json, "owner"), "alice");
    CHECK_EQ (h_int (json_object_get (json, "result"), "y"), 2);
    json_decref (json);
    CHECK_EQ (s_http (s_b, s_alice, "GET", path, NULL, NULL, NULL), 200);
    CHECK_EQ (s_http (s_b, s_bob, "GET", path, NULL, NULL, NULL), 404);
    printf ("gateway_auth: a job submitted through one gateway was seen done through another\n");
}

/* ---- (f) --rate, (g) --max-queued ---------------------------------------------------------- */

static void
s_rate (void)
{
    /* Gateway B: --rate 0.01/s --burst 3, so that no refill comes within the test. */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ (s_http (s_b, s_carol, "GET", "/v1/jobs", NULL, NULL, NULL), 200);
    }
    json_t *json;
    char *headers;
    CHECK_EQ (s_http (s_b, s_carol, "GET", "/v1/jobs", NULL, &json, &headers), 429);
    CHECK (strcasestr (headers, "Retry-After: "));
    CHECK_STR (s_error (json, "code"), "RATE_LIMITED");
    free (headers);
    json_decref (json);
    CHECK_EQ (s_http (s_b, s_carol, "GET", "/v1/models", NULL, &json, NULL), 429);
    CHECK_STR (s_error (json, "code"), "rate_limit_exceeded");
    CHECK_STR (s_error (json, "type"), "rate_limit_error");
    json_decref (json);
    CHECK_EQ (s_http (s_b, s_bob, "GET", "/v1/jobs", NULL, NULL, NULL), 200); /* its own bucket */
    printf ("gateway_auth: --rate: 429 with Retry-After once the burst was spent\n");
}

static bool
s_dave_submits (void *arg)
{
    (void) arg;
    return s_http (s_c, s_dave, "POST", "/v1/jobs", "{\"kind\": \"echo\"}", NULL, NULL) == 201;
}

static void
s_max_queued (gq_client_t *client)
{
    /* Gateway C: --max-queued 2. */
    const char *sleep = "{\"kind\": \"sleep\", \"payload\": {\"ms\": 60000}}";
    int64_t first = s_submit (s_c, s_dave, sleep);
    s_submit (s_c, s_dave, sleep);
    json_t *json;
    char *headers;
    CHECK_EQ (s_http (s_c, s_dave, "POST", "/v1/jobs", sleep, &json, &headers), 429);
    CHECK (strcasestr (headers, "Retry-After: "));
    CHECK (strstr (s_error (json, "message"), "--max-queued"));
    free (headers);
    json_decref (json);
    CHECK_STR (h_cancel (client, first), "cancelled");
    CHECK (h_wait_until (s_dave_submits, NULL, 20000));
    printf ("gateway_auth: --max-queued: 429 at the cap, accepted again once a job ended\n");
}

/* ---- (i) Idle timeout, (j) big headers ----------------------------------------------------- */

static void
s_idle (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    CHECK (fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons ((uint16_t) s_c_port)};
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    CHECK_EQ (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    const char *half = "GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthori";
    CHECK_EQ (send (fd, half, strlen (half), 0), (ssize_t) strlen (half));
    /* The gateway closes it (--idle-timeout 1s): end of file, within a bound far above. */
    struct pollfd item = {fd, POLLIN, 0};
    CHECK_EQ (poll (&item, 1, 30000), 1);
    char byte;
    ssize_t n = recv (fd, &byte, 1, 0);
    CHECK (n <= 0);
    close (fd);
    printf ("gateway_auth: --idle-timeout closed a connection that sent half a request\n");
}

static void
s_big_header (void)
{
    char command[1200];
    snprintf (command, sizeof command,
              "printf 'X-Big: ' > %s/big.h && head -c 100000 /dev/zero | tr '\\0' a >> %s/big.h",
              h_dir (), h_dir ());
    CHECK_EQ (h_run (command, NULL), 0);
    snprintf (command, sizeof command,
              "curl -s -m 60 -o /dev/null -w '%%{http_code}' -H @%s/big.h %s/v1/jobs", h_dir (),
              s_a);
    char *out = NULL;
    CHECK_EQ (h_run (command, &out), 0);
    int status = atoi (out);
    free (out);
    CHECK (status == 431 || status == 413);
    CHECK_EQ (s_http (s_a, NULL, "GET", "/healthz", NULL, NULL, NULL), 200);
    printf ("gateway_auth: a 100 KB header got %d; the gateway goes on\n", status);
}

int
main (void)
{
    h_init ("gateway_auth", 110);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    h_require ("gridq-gateway");
    if (h_run ("curl --version >/dev/null 2>&1", NULL)) {
        printf ("SKIP: curl missing\n");
        h_cleanup ();
        return 77;
    }
    s_add_tokens ();
    h_start_broker (NULL, NULL);
    h_start_worker ("w1", 8, NULL);
    gq_client_t *client = h_client (5000);
    h_wait_nodes (client, 1, 30000);
    s_gateway (s_a, "127.0.0.1", NULL, NULL, NULL, NULL, NULL);
    s_gateway (s_b, "127.0.0.1", NULL, "--rate", "0.01/s", "--burst", "3");
    /* (h) is not run: tests listen on loopback only, and binding every interface, even for
       a few seconds, is not ours to do here. The rule is one line (main.c: any --listen with
       --tokens, loopback only without), and step 1's test checks the refusal. */
    s_gateway (s_c, "127.0.0.1", &s_c_port, "--max-queued", "2", "--idle-timeout", "1s");

    s_unauthorized ();
    s_ownership (client);
    s_two_gateways ();
    s_rate ();
    s_max_queued (client);
    s_idle ();
    s_big_header ();
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
