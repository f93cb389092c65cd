/*  harness.c — integration-test helpers (see harness.h). */
#define _GNU_SOURCE
#include "harness.h"

#include <czmq.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gq_msg.h"

#define H_MAX_PROCS 64

static char s_dir[256];
static char s_bin[512];
static char s_endpoint[64];
static pid_t s_pids[H_MAX_PROCS];
static int s_npids;
static void (*s_undo) (void); /* h_at_cleanup's, run once by h_cleanup */
static const char *s_name = "test";

static void
s_on_alarm (int sig)
{
    (void) sig;
    fprintf (stderr, "%s: deadline passed; failing\n", s_name);
    h_fail ();
}

void
h_init (const char *name, int deadline_s)
{
    s_name = name;
    zsys_init ();
    zsys_set_logstream (stderr);
    snprintf (s_dir, sizeof s_dir, "/tmp/gridq-%s-XXXXXX", name);
    if (!mkdtemp (s_dir)) {
        perror ("mkdtemp");
        exit (1);
    }
    const char *bin = getenv ("GQ_BIN");
    snprintf (s_bin, sizeof s_bin, "%s", bin ? bin : "./bin");
    snprintf (s_endpoint, sizeof s_endpoint, "tcp://127.0.0.1:%d", h_free_port ());
    signal (SIGALRM, s_on_alarm);
    alarm ((unsigned) deadline_s);
}

const char *
h_dir (void)
{
    return s_dir;
}

const char *
h_bin (void)
{
    return s_bin;
}

void
h_require (const char *program)
{
    char path[1024];
    /* A program by absolute path (python3 for a test's server), else one of ours. */
    snprintf (path, sizeof path, "%s%s%s", program[0] == '/' ? "" : s_bin,
              program[0] == '/' ? "" : "/", program);
    if (access (path, X_OK) != 0) {
        printf ("SKIP: %s is not built\n", program);
        h_cleanup ();
        exit (77);
    }
}

const char *
h_endpoint (void)
{
    return s_endpoint;
}

int
h_free_port (void)
{
    int port = gq_loopback_port ();
    if (port < 0) {
        perror ("h_free_port");
        exit (1);
    }
    return port;
}

static pid_t
s_spawn (const char *program, const char *logname, char **argv)
{
    char path[1024], log[512];
    /* A program by absolute path (python3 for a test's server), else one of ours. */
    snprintf (path, sizeof path, "%s%s%s", program[0] == '/' ? "" : s_bin,
              program[0] == '/' ? "" : "/", program);
    snprintf (log, sizeof log, "%s/%s.log", s_dir, logname);
    argv[0] = path;
    pid_t pid = fork ();
    if (pid == 0) {
        int fd = open (log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2 (fd, 1);
            dup2 (fd, 2);
            close (fd);
        }
        execv (path, argv);
        perror (path);
        _exit (127);
    }
    if (pid < 0 || s_npids >= H_MAX_PROCS) {
        fprintf (stderr, "cannot start %s\n", path);
        h_fail ();
    }
    s_pids[s_npids++] = pid;
    return pid;
}

static pid_t
s_start_v (const char *program, const char *logname, const char **fixed, size_t nfixed,
           va_list args)
{
    char *argv[64];
    size_t n = 1;
    for (size_t i = 0; i < nfixed; i++) {
        argv[n++] = (char *) fixed[i];
    }
    const char *arg;
    while ((arg = va_arg (args, const char *)) && n < 63) {
        argv[n++] = (char *) arg;
    }
    argv[n] = NULL;
    return s_spawn (program, logname, argv);
}

pid_t
h_start (const char *program, const char *logname, ...)
{
    va_list args;
    va_start (args, logname);
    pid_t pid = s_start_v (program, logname, NULL, 0, args);
    va_end (args);
    return pid;
}

const char *
h_broker_config (const char *json)
{
    static char path[600];
    snprintf (path, sizeof path, "%s/broker.json", s_dir);
    FILE *file = fopen (path, "w");
    CHECK (file);
    CHECK (fputs (json, file) >= 0);
    fclose (file);
    return path;
}

pid_t
h_start_broker (const char *extra, ...)
{
    static char db[300];
    snprintf (db, sizeof db, "%s/gridq.db", s_dir);
    const char *fixed[8] = {"--endpoint", s_endpoint, "--db", db};
    size_t n = 4;
    va_list args;
    va_start (args, extra);
    if (extra) {
        fixed[n++] = extra;
    }
    pid_t pid = s_start_v ("gridq-broker", "broker", fixed, n, args);
    va_end (args);
    return pid;
}

pid_t
h_start_worker (const char *name, int slots, ...)
{
    static char slot_text[16][16];
    static int next;
    char *text = slot_text[next++ % 16];
    snprintf (text, 16, "%d", slots);
    const char *fixed[] = {"--broker", s_endpoint, "--name", name, "--backend", "cpu", "--slots",
                           text};
    va_list args;
    va_start (args, slots);
    pid_t pid = s_start_v ("gridq-worker", name, fixed, 8, args);
    va_end (args);
    return pid;
}

gq_client_t *
h_start_workers (int slots, int timeout_ms, const char *name, ...)
{
    int count = 0;
    va_list names;
    va_start (names, name);
    for (const char *n = name; n; n = va_arg (names, const char *)) {
        h_start_worker (n, slots, NULL);
        count++;
    }
    va_end (names);
    gq_client_t *client = h_client (timeout_ms);
    h_wait_nodes (client, count, 20000);
    return client;
}

bool
h_alive (pid_t pid)
{
    int status;
    return waitpid (pid, &status, WNOHANG) == 0;
}

void
h_kill (pid_t pid, int sig)
{
    kill (pid, sig);
    if (sig == SIGKILL || sig == SIGTERM || sig == SIGINT) {
        int status;
        /* Bounded: a process that ignores SIGTERM for 10 s gets SIGKILL. */
        for (int i = 0; i < 1000 && waitpid (pid, &status, WNOHANG) == 0; i++) {
            usleep (10000);
        }
        if (waitpid (pid, &status, WNOHANG) == 0) {
            kill (pid, SIGKILL);
            waitpid (pid, &status, 0);
        }
        for (int i = 0; i < s_npids; i++) {
            if (s_pids[i] == pid) {
                s_pids[i] = 0;
            }
        }
    }
}

void
h_cleanup (void)
{
    void (*undo) (void) = s_undo;
    s_undo = NULL;
    for (int i = 0; i < s_npids; i++) {
        if (s_pids[i] > 0) {
            kill (s_pids[i], SIGCONT);
            kill (s_pids[i], SIGKILL);
            waitpid (s_pids[i], NULL, 0);
            s_pids[i] = 0;
        }
    }
    if (s_dir[0] && !getenv ("GQ_KEEP")) {
        char command[300];
        snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
        if (system (command) != 0) {
            fprintf (stderr, "could not remove %s\n", s_dir);
        }
    }
    if (undo) {
        undo ();
    }
}

void
h_at_cleanup (void (*undo) (void))
{
    s_undo = undo;
}

void
h_fail (void)
{
    /* Show the logs of the processes: the reason is often there. */
    char command[600];
    snprintf (command, sizeof command,
              "for f in '%s'/*.log; do echo \"--- $f\"; tail -n 30 \"$f\"; done >&2", s_dir);
    if (system (command) != 0) {
        fprintf (stderr, "(no logs)\n");
    }
    h_cleanup ();
    _exit (1);
}

gq_client_t *
h_client (int timeout_ms)
{
    gq_client_opts_t opts = {s_endpoint, timeout_ms, NULL, NULL};
    char why[256];
    gq_client_t *client = gq_client_new (&opts, why, sizeof why);
    if (!client) {
        fprintf (stderr, "client: %s\n", why);
        h_fail ();
    }
    return client;
}

bool
h_wait_until (bool (*fn) (void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = gq_mono_us () + (int64_t) timeout_ms * 1000;
    while (gq_mono_us () < deadline) {
        if (fn (arg)) {
            return true;
        }
        usleep (20000);
    }
    return fn (arg);
}

typedef struct {
    gq_client_t *client;
    int n;
} s_nodes_arg_t;

static bool
s_nodes_online (void *arg)
{
    s_nodes_arg_t *a = (s_nodes_arg_t *) arg;
    json_t *stats = gq_client_call (a->client, "STATS", NULL);
    if (!stats) {
        return false;
    }
    json_t *nodes = json_object_get (stats, "nodes");
    int n = (int) (json_integer_value (json_object_get (nodes, "online")) +
                   json_integer_value (json_object_get (nodes, "busy")));
    json_decref (stats);
    return n >= a->n;
}

void
h_wait_nodes (gq_client_t *client, int n, int timeout_ms)
{
    s_nodes_arg_t arg = {client, n};
    if (!h_wait_until (s_nodes_online, &arg, timeout_ms)) {
        fprintf (stderr, "fewer than %d nodes online after %d ms\n", n, timeout_ms);
        h_fail ();
    }
}

json_t *
h_status (gq_client_t *client, int64_t id)
{
    json_t *reply = gq_client_call (client, "STATUS",
                                    json_pack ("{s:[I]}", "ids", (json_int_t) id));
    json_t *job = reply ? json_incref (json_array_get (json_object_get (reply, "jobs"), 0)) : NULL;
    json_decref (reply);
    return job;
}

int
h_run (const char *command, char **out)
{
    FILE *pipe = popen (command, "r");
    if (!pipe) {
        return -1;
    }
    size_t size = 0, cap = 4096;
    char *buf = (char *) malloc (cap);
    size_t n;
    while (buf && (n = fread (buf + size, 1, cap - size - 1, pipe)) > 0) {
        size += n;
        if (cap - size < 2) {
            cap *= 2;
            buf = (char *) realloc (buf, cap);
        }
    }
    if (buf) {
        buf[size] = 0;
    }
    int status = pclose (pipe);
    if (out) {
        *out = buf;
    } else {
        free (buf);
    }
    return WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status);
}

/* ---- Reliability helpers ------------------------------------------------------------------- */

void
h_wait_broker (gq_client_t *client, int timeout_ms)
{
    int64_t deadline = gq_mono_us () + (int64_t) timeout_ms * 1000;
    while (gq_mono_us () < deadline) {
        json_t *pong = gq_client_call (client, "PING", NULL);
        if (pong) {
            json_decref (pong);
            return;
        }
        usleep (20000);
    }
    fprintf (stderr, "no broker answered PING within %d ms: %s\n", timeout_ms,
             gq_client_error (client));
    h_fail ();
}

typedef struct {
    gq_client_t *client;
    int64_t id;
    const char *state;
} s_state_arg_t;

static bool
s_in_state (void *arg)
{
    s_state_arg_t *a = (s_state_arg_t *) arg;
    json_t *reply = gq_client_call (a->client, "STATUS",
                                    json_pack ("{s:[I]}", "ids", (json_int_t) a->id));
    if (!reply) {
        return false;
    }
    bool match;
    if (strcmp (a->state, "missing") == 0) {
        match = json_array_size (json_object_get (reply, "missing")) == 1;
    } else {
        json_t *job = json_array_get (json_object_get (reply, "jobs"), 0);
        const char *state = json_string_value (json_object_get (job, "state"));
        match = state && strcmp (state, a->state) == 0;
    }
    json_decref (reply);
    return match;
}

bool
h_wait_state (gq_client_t *client, int64_t id, const char *state, int timeout_ms)
{
    s_state_arg_t arg = {client, id, state};
    return h_wait_until (s_in_state, &arg, timeout_ms);
}

json_t *
h_result (gq_client_t *client, int64_t id)
{
    json_t *reply = gq_client_call (client, "RESULT", json_pack ("{s:I}", "id", (json_int_t) id));
    json_t *job = reply ? json_incref (json_object_get (reply, "job")) : NULL;
    json_decref (reply);
    return job;
}

bool
h_running_on (gq_client_t *client, int64_t id, char *node, char *other)
{
    json_t *status = h_status (client, id);
    snprintf (node, GQ_NAME_MAX, "%s", h_str (status, "node"));
    json_decref (status);
    bool first = strcmp (node, "w1") == 0;
    CHECK (first || strcmp (node, "w2") == 0);
    snprintf (other, GQ_NAME_MAX, "%s", first ? "w2" : "w1");
    return first;
}

json_t *
h_node (gq_client_t *client, const char *name)
{
    json_t *reply = gq_client_call (client, "NODES", NULL);
    json_t *found = NULL;
    size_t i;
    json_t *node;
    json_array_foreach (json_object_get (reply, "nodes"), i, node) {
        const char *n = json_string_value (json_object_get (node, "name"));
        if (n && strcmp (n, name) == 0) {
            found = json_incref (node);
            break;
        }
    }
    json_decref (reply);
    return found;
}

void
h_seen_reset (h_seen_t *seen)
{
    json_decref (seen->partials);
    memset (seen, 0, sizeof *seen);
    seen->partials = json_array ();
    seen->at_finish = -1;
}

void
h_on_partial (void *arg, int64_t id, int64_t seq, json_t *partial, int64_t dropped)
{
    h_seen_t *seen = (h_seen_t *) arg;
    (void) id;
    CHECK_EQ (dropped, 0);
    if (seen->n < 64) {
        seen->seqs[seen->n] = seq;
    }
    json_array_append (seen->partials, partial);
    seen->n++;
}

int
h_on_finished (void *arg, json_t *job)
{
    h_seen_t *seen = (h_seen_t *) arg;
    snprintf (seen->state, sizeof seen->state, "%s", h_str (job, "state"));
    seen->at_finish = seen->n;
    return 0;
}

json_t *
h_sse_chunks (char *text)
{
    json_t *chunks = json_array ();
    bool done = false;
    for (char *line = strtok (text, "\n"); line; line = strtok (NULL, "\n")) {
        if (strncmp (line, "data: ", 6) != 0) {
            continue;
        }
        CHECK (!done); /* nothing after [DONE] */
        if (streq (line + 6, "[DONE]")) {
            done = true;
            continue;
        }
        json_t *chunk = json_loads (line + 6, 0, NULL);
        CHECK (chunk);
        CHECK_STR (h_str (chunk, "object"), "chat.completion.chunk");
        json_array_append_new (chunks, chunk);
    }
    CHECK (done);
    return chunks;
}

void
h_sse_text (json_t *chunks, char *out, size_t size)
{
    out[0] = 0;
    size_t i;
    json_t *chunk;
    json_array_foreach (chunks, i, chunk) {
        json_t *choice = json_array_get (json_object_get (chunk, "choices"), 0);
        size_t len = strlen (out);
        snprintf (out + len, size - len, "%s", h_str (json_object_get (choice, "delta"), "content"));
    }
}

void
h_touch (const char *path)
{
    FILE *file = fopen (path, "w");
    CHECK (file);
    fclose (file);
}

zsock_t *
h_fake_broker (void)
{
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    CHECK (router);
    zsock_set_linger (router, 0);
    CHECK (zsock_bind (router, "%s", s_endpoint) >= 0);
    return router;
}

zframe_t *
h_fake_welcome (zsock_t *router, const char *name)
{
    zframe_t *worker = NULL;
    char command[32], welcome[200];
    json_t *body = h_fake_next (router, &worker, command);
    CHECK_STR (command, "READY");
    json_decref (body);
    snprintf (welcome, sizeof welcome,
              "{\"heartbeat_ms\":10000,\"liveness\":3,\"node\":\"%s\"}", name);
    h_fake_send (router, worker, "WELCOME", welcome);
    return worker;
}

json_t *
h_fake_recv (zsock_t *router, zframe_t **from, char *command)
{
    zpoller_t *poller = zpoller_new (router, NULL);
    void *which = zpoller_wait (poller, 10000);
    zpoller_destroy (&poller);
    CHECK (which);
    zmsg_t *zmsg = zmsg_recv (router);
    CHECK (zmsg && zmsg_size (zmsg) >= 4);
    zframe_t *id = zmsg_pop (zmsg);
    if (!*from) {
        *from = id;
    } else {
        zframe_destroy (&id);
    }
    char *protocol = zmsg_popstr (zmsg);
    CHECK_STR (protocol, "GQW1");
    free (protocol);
    char *cmd = zmsg_popstr (zmsg);
    snprintf (command, 32, "%s", cmd);
    free (cmd);
    char *text = zmsg_popstr (zmsg);
    json_t *body = json_loads (text, 0, NULL);
    free (text);
    zmsg_destroy (&zmsg);
    CHECK (body);
    return body;
}

json_t *
h_fake_next (zsock_t *router, zframe_t **from, char *command)
{
    for (;;) {
        json_t *body = h_fake_recv (router, from, command);
        if (strcmp (command, "HEARTBEAT") != 0 || json_object_get (body, "echo") != NULL) {
            return body;
        }
        json_decref (body);
    }
}

void
h_fake_send (zsock_t *router, zframe_t *to, const char *command, const char *body)
{
    zmsg_t *zmsg = zmsg_new ();
    zframe_t *dup = zframe_dup (to);
    zmsg_append (zmsg, &dup);
    zmsg_addstr (zmsg, "GQW1");
    zmsg_addstr (zmsg, command);
    zmsg_addstr (zmsg, body);
    CHECK_EQ (zmsg_send (&zmsg, router), 0);
}

bool
h_node_offers (gq_client_t *client, const char *name, const char *kind)
{
    json_t *node = h_node (client, name);
    bool has = false;
    size_t i;
    json_t *one;
    json_array_foreach (json_object_get (node, "kinds"), i, one) {
        const char *text = json_string_value (one);
        has = has || (text && strcmp (text, kind) == 0);
    }
    json_decref (node);
    return has;
}

typedef struct {
    gq_client_t *client;
    const char *name;
    const char *status;
} s_node_arg_t;

static bool
s_node_in_status (void *arg)
{
    s_node_arg_t *a = (s_node_arg_t *) arg;
    json_t *node = h_node (a->client, a->name);
    const char *status = json_string_value (json_object_get (node, "status"));
    bool match = status && strcmp (status, a->status) == 0;
    json_decref (node);
    return match;
}

bool
h_wait_node_status (gq_client_t *client, const char *name, const char *status, int timeout_ms)
{
    s_node_arg_t arg = {client, name, status};
    return h_wait_until (s_node_in_status, &arg, timeout_ms);
}

int64_t
h_submit (gq_client_t *client, json_t *job)
{
    json_t *jobs = json_pack ("[O]", job);
    int64_t id = 0;
    if (gq_client_submit (client, jobs, false, &id) != 0 || id <= 0) {
        fprintf (stderr, "submit refused: %s\n", gq_client_error (client));
        json_decref (jobs);
        h_fail ();
    }
    json_decref (jobs);
    return id;
}

int64_t
h_submit_payload (gq_client_t *client, const char *kind, const char *model, json_t *payload,
                  int max_attempts)
{
    json_t *job = json_pack ("{s:s, s:o, s:i}", "kind", kind, "payload", payload,
                             "max_attempts", max_attempts);
    if (model) {
        json_object_set_new (job, "model", json_string (model));
    }
    int64_t id = h_submit (client, job);
    json_decref (job);
    return id;
}

int64_t
h_submit_blobs (gq_client_t *client, json_t *job, zframe_t **blobs, size_t n_blobs)
{
    enum { S_REQ = 900001 }; /* our SUBMIT's correlation id, far above the client's own */
    json_t *item = json_deep_copy (job);
    json_object_set_new (item, "blobs", json_pack ("[i, I]", 0, (json_int_t) n_blobs));
    gq_msg_t *msg = gq_msg_new (GQ_ROLE_CLIENT, "SUBMIT",
                                json_pack ("{s:i, s:[o]}", "req", S_REQ, "jobs", item));
    CHECK (msg);
    for (size_t i = 0; i < n_blobs; i++) {
        CHECK_EQ (gq_msg_add_blob (msg, &blobs[i]), 0);
    }
    CHECK_EQ (gq_msg_send (&msg, gq_client_socket (client)), 0);
    char command[32];
    int64_t req = 0;
    json_t *reply = NULL;
    CHECK_EQ (gq_client_recv (client, 5000, command, &req, &reply, NULL), 0);
    CHECK_EQ (req, S_REQ);
    CHECK_STR (command, "SUBMIT");
    int64_t id = (int64_t) json_integer_value (json_array_get (json_object_get (reply, "ids"), 0));
    CHECK (id > 0);
    json_decref (reply);
    return id;
}

const char *
h_cancel (gq_client_t *client, int64_t id)
{
    static char state[32];
    json_t *reply =
        gq_client_call (client, "CANCEL", json_pack ("{s:[I]}", "ids", (json_int_t) id));
    CHECK (reply);
    json_t *job = json_array_get (json_object_get (reply, "jobs"), 0);
    CHECK_EQ (h_int (job, "id"), id);
    snprintf (state, sizeof state, "%s", h_str (job, "state"));
    json_decref (reply);
    return state;
}

int64_t
h_submit_sleep (gq_client_t *client, int ms)
{
    json_t *job = json_pack ("{s:s, s:{s:i}}", "kind", "sleep", "payload", "ms", ms);
    int64_t id = h_submit (client, job);
    json_decref (job);
    return id;
}

json_t *
h_echo_jobs (int n)
{
    json_t *jobs = json_array ();
    for (int i = 0; i < n; i++) {
        json_array_append_new (jobs, json_pack ("{s:s, s:{s:i}}", "kind", "echo", "payload", "i",
                                                i));
    }
    return jobs;
}

int64_t
h_sql_int (const char *db, const char *sql)
{
    char path[300], command[1200];
    if (!db) {
        snprintf (path, sizeof path, "%s/gridq.db", s_dir);
        db = path;
    }
    snprintf (command, sizeof command, "sqlite3 -batch -cmd '.timeout 5000' '%s' \"%s\"", db,
              sql);
    char *out = NULL;
    int rc = h_run (command, &out);
    char *end = NULL;
    long long value = out ? strtoll (out, &end, 10) : 0;
    bool ok = rc == 0 && out && end != out;
    if (!ok) {
        fprintf (stderr, "sqlite3 failed (%d) for: %s\n", rc, command);
    }
    free (out);
    return ok ? (int64_t) value : -1;
}

int64_t
h_sql_settled (const char *db, const char *sql, int64_t want, int timeout_ms)
{
    int64_t deadline = gq_mono_us () + (int64_t) timeout_ms * 1000;
    int64_t value = h_sql_int (db, sql);
    while (value != want && gq_mono_us () < deadline) {
        usleep (20000);
        value = h_sql_int (db, sql);
    }
    return value;
}

void
h_sql_all_done (int64_t jobs, int64_t edges, int timeout_ms)
{
    int64_t done = h_sql_settled (NULL, "select count(*) from jobs where state = 2", jobs,
                                  timeout_ms);
    CHECK_EQ (done, jobs);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), jobs);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from deps"), edges);
}

const char *
h_str (json_t *object, const char *key)
{
    const char *text = json_string_value (json_object_get (object, key));
    return text ? text : "";
}

int64_t
h_int (json_t *object, const char *key)
{
    return (int64_t) json_integer_value (json_object_get (object, key));
}

/* ---- The OpenAI test server (tests/openai_server.py) ---- */

/* The port a server wrote to its --port-file, once it is there (0 before). */
static int
s_port (const char *path)
{
    FILE *file = fopen (path, "r");
    int port = 0;
    if (file) {
        if (fscanf (file, "%d", &port) != 1) {
            port = 0;
        }
        fclose (file);
    }
    return port;
}

static bool
s_port_ready (void *arg)
{
    return s_port ((const char *) arg) > 0;
}

pid_t
h_start_openai_server (const char *script, const char *name, const char *style,
                       const char *model, int *port)
{
    char port_file[600], log[600], port_arg[16];
    snprintf (port_file, sizeof port_file, "%s/%s.port", h_dir (), name);
    snprintf (log, sizeof log, "%s/%s.events", h_dir (), name);
    snprintf (port_arg, sizeof port_arg, "%d", *port);
    unlink (port_file);
    pid_t pid = h_start ("/usr/bin/env", name, "python3", script, "--port", port_arg,
                         "--port-file", port_file, "--style", style, "--model", model, "--log",
                         log, NULL);
    CHECK (h_wait_until (s_port_ready, port_file, 20000));
    *port = s_port (port_file);
    return pid;
}
