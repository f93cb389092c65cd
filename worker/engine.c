/*  engine.c — persistent engines: one long-lived process per `--engine KIND=COMMAND`, fed a JSON
    line per job on stdin, answering JSON lines on stdout; an I/O thread per engine reads them,
    logs stderr, and restarts the process with back-off when it dies or breaks the contract. */
#define _GNU_SOURCE /* pipe2 */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gq_json.h"
#include "gq_msg.h"
#include "handler.h"
#include "sync.h"
#include "tuning.h"


typedef enum {
    S_DOWN,     /* no process: restarts at restart_at_us */
    S_STARTING, /* a process, waiting for its ready line: jobs wait */
    S_UP        /* a process that takes jobs */
} s_state_t;

/* A partial on its way from the engine's reader to the job's slot thread. */
typedef struct s_partial {
    struct s_partial *next; /* the next one of the job, or NULL */
    int64_t dropped;        /* partials of the job lost just before this one */
    char *text;             /* its compact JSON (malloc'd) */
} s_partial_t;

/* One job in flight on the engine. A free entry has id 0. */
typedef struct {
    int64_t id;       /* the job's id; 0: free */
    s_partial_t *head, *tail; /* partials not yet taken by the slot thread, oldest first */
    int64_t queued;   /* entries from head to tail */
    bool done;        /* its result or error came (or the engine died) */
    int code;         /* 0 or a gq_err_t, once done */
    json_t *result;   /* the result, once done and ok */
    char error[1024]; /* the reason, once done and failed */
    int64_t partials; /* partial lines seen for it */
} s_call_t;

struct _gq_engine_t {
    char kind[GQ_KIND_MAX];     /* the job kind it serves */
    char *command;              /* the shell command line */
    char *cuda_devices;         /* CUDA_VISIBLE_DEVICES for it, or NULL to inherit */
    int slots;                  /* entries in calls */
    int64_t ready_timeout_ms;   /* wait for a ready line this long */
    pthread_t thread;           /* the I/O thread */
    bool thread_started;        /* whether to join it */
    pthread_mutex_t lock;       /* guards everything below but the I/O thread's own fields */
    pthread_cond_t changed;     /* state, calls or stop changed (CLOCK_MONOTONIC) */
    pthread_mutex_t write_lock; /* held while writing to in_fd; taken before lock */
    s_state_t state;            /* see s_state_t */
    bool stop;                  /* destroy asked the I/O thread to end */
    bool settled;               /* the first start is settled (gq_engine_wait_ready) */
    bool started_once;          /* a process was started before this one */
    bool handshake;             /* it sent a ready line first: later starts wait for one */
    bool first_line;            /* the next stdout line is the first of this process */
    int64_t ready_deadline_us;  /* while S_STARTING: stop waiting for the ready line then */
    int64_t restart_at_us;      /* while S_DOWN: start again then */
    int64_t backoff_ms;         /* the next restart's delay */
    char down_reason[256];      /* why it is down, for the jobs refused meanwhile */
    pid_t pid;                  /* the process (its group), 0 while down */
    int in_fd;                  /* its stdin (a socket: MSG_NOSIGNAL, no SIGPIPE), or -1 */
    json_t *models;             /* names from the last ready line */
    s_call_t *calls;            /* slots entries */
    /* The I/O thread's own. */
    int out_fd;                                /* its stdout, or -1 */
    int err_fd;                                /* its stderr, or -1 */
    char *out_buf;                             /* stdout read and not yet a whole line */
    size_t out_len;                            /* bytes in out_buf */
    char err_buf[GQ_ENGINE_STDERR_LINE_BYTES]; /* stderr not yet logged */
    size_t err_len;                            /* bytes in err_buf */
};

/* ---- Helpers --------------------------------------------------------------------------------- */

static void
s_close (int *fd)
{
    if (*fd >= 0) {
        close (*fd);
        *fd = -1;
    }
}

/* Waits on changed for at most ms (lock held). */
static void
s_wait_ms (gq_engine_t *self, int64_t ms)
{
    gq_cond_wait_ms (&self->changed, &self->lock, ms);
}

static s_call_t *
s_call_find (gq_engine_t *self, int64_t id)
{
    for (int i = 0; id > 0 && i < self->slots; i++) {
        if (self->calls[i].id == id) {
            return &self->calls[i];
        }
    }
    return NULL;
}

/* Takes the oldest queued partial off call (lock held), or NULL. */
static s_partial_t *
s_partial_pop (s_call_t *call)
{
    s_partial_t *partial = call->head;
    if (partial) {
        call->head = partial->next;
        call->tail = call->head ? call->tail : NULL;
        call->queued--;
    }
    return partial;
}

static void
s_call_release (gq_engine_t *self, s_call_t *call)
{
    s_partial_t *partial;
    while ((partial = s_partial_pop (call))) {
        free (partial->text);
        free (partial);
    }
    json_decref (call->result);
    memset (call, 0, sizeof *call);
    pthread_cond_broadcast (&self->changed);
}

/* The environment for the process: ours, with GRIDQ_KIND and (when set) CUDA_VISIBLE_DEVICES. */
static char **
s_environment (gq_engine_t *self)
{
    static const char *ours[] = {"GRIDQ_KIND=", "CUDA_VISIBLE_DEVICES="};
    size_t n = 0;
    char **env = gq_handler_env_inherit (ours, self->cuda_devices ? 2 : 1, 2, &n);
    if (env) {
        env[n++] = zsys_sprintf ("GRIDQ_KIND=%s", self->kind);
        if (self->cuda_devices) {
            env[n++] = zsys_sprintf ("CUDA_VISIBLE_DEVICES=%s", self->cuda_devices);
        }
    }
    return env;
}

/* ---- The process ----------------------------------------------------------------------------- */

static void s_down (gq_engine_t *self, const char *reason);
static void s_stop_process (gq_engine_t *self, const char *reason);

/* Starts the process (I/O thread). On failure the engine goes down with the reason. */

static void
s_start (gq_engine_t *self)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    /* stdin is a socket: send (MSG_NOSIGNAL) to an engine that died fails with EPIPE instead of
       raising SIGPIPE in a slot thread. O_CLOEXEC: another child must not hold our ends. */
    if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) || pipe2 (out, O_CLOEXEC) ||
        pipe2 (err, O_CLOEXEC)) {
        char reason[128];
        snprintf (reason, sizeof reason, "cannot make its pipes: %s", strerror (errno));
        int *fds[] = {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1]};
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
            s_close (fds[i]);
        }
        s_down (self, reason);
        s_stop_process (self, reason); /* no process: the back-off grows all the same */
        return;
    }
    char **env = s_environment (self);
    /* Jobs that arrive from here on wait for the process rather than being refused. */
    pthread_mutex_lock (&self->lock);
    self->state = S_STARTING;
    self->first_line = true;
    self->ready_deadline_us = gq_mono_us () + self->ready_timeout_ms * 1000;
    pthread_mutex_unlock (&self->lock);
    pid_t pid = 0;
    int rc = env ? gq_handler_spawn (self->command, env, in[1], out[1], err[1], &pid) : ENOMEM;
    gq_handler_env_free (env);
    s_close (&in[1]);
    s_close (&out[1]);
    s_close (&err[1]);
    if (rc != 0) {
        s_close (&in[0]);
        s_close (&out[0]);
        s_close (&err[0]);
        char reason[128];
        snprintf (reason, sizeof reason, "cannot start /bin/sh: %s", strerror (rc));
        s_down (self, reason);
        s_stop_process (self, reason);
        return;
    }
    self->out_fd = out[0];
    self->err_fd = err[0];
    self->out_len = 0;
    self->err_len = 0;
    fcntl (self->out_fd, F_SETFL, O_NONBLOCK);
    fcntl (self->err_fd, F_SETFL, O_NONBLOCK);
    pthread_mutex_lock (&self->lock);
    self->pid = pid;
    self->in_fd = in[0];
    if (self->started_once && !self->handshake) {
        self->state = S_UP; /* it never sent a ready line: none to wait for */
    }
    self->started_once = true;
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    zsys_info ("engine %s: started pid %d: %s", self->kind, (int) pid, self->command);
}

/* Marks the engine down (I/O thread): no job is written to it from here on; its jobs fail
   with reason once the process is reaped (s_stop_process). */
static void
s_down (gq_engine_t *self, const char *reason)
{
    pthread_mutex_lock (&self->write_lock);
    pthread_mutex_lock (&self->lock);
    s_close (&self->in_fd); /* end of file tells the engine to go */
    self->state = S_DOWN;
    self->settled = true;
    self->restart_at_us = gq_mono_us () + self->backoff_ms * 1000;
    snprintf (self->down_reason, sizeof self->down_reason, "%s", reason);
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    pthread_mutex_unlock (&self->write_lock);
}

/* Ends the process group and reaps the shell (I/O thread, after s_down); fails the jobs that
   were in flight, and schedules the restart. */
static void
s_stop_process (gq_engine_t *self, const char *reason)
{
    s_close (&self->out_fd);
    s_close (&self->err_fd);
    pid_t pid = self->pid;
    char status_text[64] = "";
    if (pid > 0) {
        kill (-pid, SIGTERM);
        int status = 0;
        bool reaped = false;
        int64_t until = gq_mono_us () + (int64_t) GQ_HANDLER_GRACE_MS * 1000;
        while (!reaped && gq_mono_us () < until) {
            pid_t rc = waitpid (pid, &status, WNOHANG);
            reaped = rc == pid || (rc < 0 && errno != EINTR);
            if (!reaped) {
                poll (NULL, 0, GQ_ENGINE_TICK_MS);
            }
        }
        kill (-pid, SIGKILL);
        if (!reaped) {
            while (waitpid (pid, &status, 0) < 0 && errno == EINTR) {
            }
        }
        /* The status says something only about a process that ended on its own. */
        bool own = streq (reason, "exited");
        if (own && WIFEXITED (status)) {
            snprintf (status_text, sizeof status_text, " (exit status %d)", WEXITSTATUS (status));
        } else if (own && WIFSIGNALED (status)) {
            snprintf (status_text, sizeof status_text, " (signal %d)", WTERMSIG (status));
        }
    }
    pthread_mutex_lock (&self->lock);
    self->pid = 0;
    int failed = 0;
    for (int i = 0; i < self->slots; i++) {
        s_call_t *call = &self->calls[i];
        if (call->id && !call->done) {
            call->done = true;
            call->code = GQ_EBACKEND;
            snprintf (call->error, sizeof call->error, "engine '%s' %s%s while running the job",
                      self->kind, reason, status_text);
            failed++;
        }
    }
    snprintf (self->down_reason, sizeof self->down_reason, "%s%s", reason, status_text);
    int64_t delay = self->backoff_ms;
    self->restart_at_us = gq_mono_us () + delay * 1000;
    self->backoff_ms = self->backoff_ms * 2 < GQ_ENGINE_BACKOFF_MAX_MS ? self->backoff_ms * 2
                                                                       : GQ_ENGINE_BACKOFF_MAX_MS;
    pthread_cond_broadcast (&self->changed);
    bool stopping = self->stop;
    pthread_mutex_unlock (&self->lock);
    if (!stopping) {
        zsys_warning ("engine %s: pid %d %s%s; %d job%s failed; restarting in %" PRId64 " ms",
                      self->kind, (int) pid, reason, status_text, failed, failed == 1 ? "" : "s",
                      delay);
    }
}

/* ---- Lines from the engine ------------------------------------------------------------------ */

/* Where partials go: queued on the job's call for the slot thread that runs it (gq_engine_run
   hands them to the job's on_partial), so that this thread never waits for a socket. A partial
   above GQ_MAX_PARTIAL_BYTES fails its job (not the engine); when the slot thread falls behind
   by GQ_ENGINE_PARTIALS_COUNT, the oldest queued one drops, counted in the next. Lock held. */
static void
s_on_partial (gq_engine_t *self, s_call_t *call, json_t *partial)
{
    call->partials++;
    char *text = json_dumps (partial, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t len = text ? strlen (text) : 0;
    if (!text || len > GQ_MAX_PARTIAL_BYTES) {
        free (text);
        call->done = true;
        call->code = text ? GQ_ETOOBIG : GQ_ENOMEM;
        snprintf (call->error, sizeof call->error,
                  text ? "partial too large (%zu bytes of JSON; at most %d)"
                       : "out of memory for a partial (%zu bytes)",
                  len, GQ_MAX_PARTIAL_BYTES);
        pthread_cond_broadcast (&self->changed);
        return;
    }
    s_partial_t *item = (s_partial_t *) calloc (1, sizeof *item);
    if (!item) {
        free (text);
        if (call->tail) {
            call->tail->dropped++; /* not exact in order, but counted */
        }
        return;
    }
    item->text = text;
    if (call->tail) {
        call->tail->next = item;
    } else {
        call->head = item;
    }
    call->tail = item;
    call->queued++;
    if (call->queued > GQ_ENGINE_PARTIALS_COUNT) {
        s_partial_t *oldest = s_partial_pop (call);
        call->head->dropped += oldest->dropped + 1;
        free (oldest->text);
        free (oldest);
    }
    pthread_cond_broadcast (&self->changed);
}

/* Hands call's queued partials to the job's on_partial, unlocked while it runs (lock held on
   entry and exit). */
static void
s_partials_deliver (gq_engine_t *self, s_call_t *call, const gq_engine_job_t *job)
{
    s_partial_t *partial;
    while ((partial = s_partial_pop (call))) {
        pthread_mutex_unlock (&self->lock);
        if (job->on_partial) {
            job->on_partial (job->partial_arg, job->id, partial->text, partial->dropped);
        } else {
            free (partial->text);
        }
        free (partial);
        pthread_mutex_lock (&self->lock);
    }
}

/* The ready line: {"ready": true, "models": [names]}. Lock held. 0, or -1 with a reason. */
static int
s_on_ready (gq_engine_t *self, json_t *line, char *why, size_t whylen)
{
    json_t *models = json_object_get (line, "models");
    if (!json_is_true (json_object_get (line, "ready")) || (models && !json_is_array (models))) {
        snprintf (why, whylen, "its ready line is not {\"ready\": true, \"models\": [...]}");
        return -1;
    }
    json_t *names = json_array ();
    size_t i;
    json_t *item;
    json_array_foreach (models, i, item)
    {
        const char *name = json_string_value (item);
        if (!name || !gq_valid_name (name, GQ_MODEL_MAX)) {
            json_decref (names);
            snprintf (why, whylen, "its ready line names model %zu, which is not a valid name", i);
            return -1;
        }
        if (json_array_size (names) < GQ_MAX_MODELS) {
            json_array_append_new (names, json_string (name)); /* ours, not the line's */
        }
    }
    json_decref (self->models);
    self->models = names;
    self->handshake = true;
    char *text = json_dumps (names, JSON_COMPACT);
    zsys_info ("engine %s: ready (pid %d), models %s", self->kind, (int) self->pid,
               text ? text : "?");
    free (text);
    return 0;
}

/* One stdout line (I/O thread). 0, or -1 with the reason it breaks the contract. */
static int
s_on_line (gq_engine_t *self, const char *text, size_t len, char *why, size_t whylen)
{
    if (len == 0) {
        return 0; /* blank lines are allowed */
    }
    json_error_t jerr;
    json_t *line = json_loadb (text, len, 0, &jerr);
    if (!json_is_object (line)) {
        json_decref (line);
        snprintf (why, whylen, "wrote a line that is not a JSON object (%.60s)", text);
        return -1;
    }
    int rc = 0;
    pthread_mutex_lock (&self->lock);
    bool first = self->first_line;
    self->first_line = false;
    if (first && json_object_get (line, "ready")) {
        rc = s_on_ready (self, line, why, whylen);
        if (rc == 0 && self->state == S_STARTING) {
            self->state = S_UP;
        }
        self->settled = true;
        pthread_cond_broadcast (&self->changed);
        pthread_mutex_unlock (&self->lock);
        json_decref (line);
        return rc;
    }
    if (first && self->state == S_STARTING) {
        /* Another first line: this engine has no ready handshake. */
        self->state = S_UP;
        self->settled = true;
        pthread_cond_broadcast (&self->changed);
    }
    json_t *id = json_object_get (line, "id");
    json_t *partial = json_object_get (line, "partial");
    json_t *result = json_object_get (line, "result");
    json_t *error = json_object_get (line, "error");
    int answers = (partial ? 1 : 0) + (result ? 1 : 0) + (error ? 1 : 0);
    if (!json_is_integer (id) || json_integer_value (id) <= 0 || answers != 1 ||
        (error && !json_is_string (error))) {
        snprintf (why, whylen,
                  "wrote a line that is not {\"id\", and one of \"partial\", \"result\", "
                  "\"error\" (a string)} (%.60s)",
                  text);
        rc = -1;
    } else {
        s_call_t *call = s_call_find (self, json_integer_value (id));
        if (!call || call->done) {
            zsys_debug ("engine %s: a line for job %" JSON_INTEGER_FORMAT
                        ", which is not running here (cancelled or timed out)",
                        self->kind, json_integer_value (id));
        } else if (partial) {
            s_on_partial (self, call, partial);
        } else {
            call->done = true;
            if (result) {
                /* Taken out of the line here, under the lock: the slot thread that gets it must
                   be its only other holder (jansson's reference counts carry no ordering). */
                call->result = json_incref (result);
                json_object_del (line, "result");
            } else {
                call->code = GQ_EBACKEND;
                snprintf (call->error, sizeof call->error, "%s", json_string_value (error));
            }
            self->backoff_ms = GQ_ENGINE_BACKOFF_MIN_MS; /* it works: the next crash is news */
            pthread_cond_broadcast (&self->changed);
        }
    }
    pthread_mutex_unlock (&self->lock);
    json_decref (line);
    return rc;
}

/* Reads what stdout has and handles its whole lines. 1 at end of file, -1 on a broken
   contract (reason in why), else 0. */
static int
s_read_stdout (gq_engine_t *self, char *why, size_t whylen)
{
    for (;;) {
        /* out_buf holds a whole line of the longest length and its newline, no more. */
        size_t room = GQ_ENGINE_MAX_LINE_BYTES + 1 - self->out_len;
        if (room == 0) {
            snprintf (why, whylen, "wrote a line longer than %d bytes", GQ_ENGINE_MAX_LINE_BYTES);
            return -1;
        }
        ssize_t n = read (self->out_fd, self->out_buf + self->out_len,
                          room < GQ_ENGINE_READ_BYTES ? room : GQ_ENGINE_READ_BYTES);
        if (n == 0) {
            return 1;
        }
        if (n < 0) {
            return errno == EAGAIN || errno == EINTR ? 0 : 1;
        }
        size_t scanned = self->out_len;
        self->out_len += (size_t) n;
        size_t start = 0;
        for (size_t i = scanned; i < self->out_len; i++) {
            if (self->out_buf[i] == '\n') {
                self->out_buf[i] = 0;
                if (s_on_line (self, self->out_buf + start, i - start, why, whylen)) {
                    return -1;
                }
                start = i + 1;
            }
        }
        memmove (self->out_buf, self->out_buf + start, self->out_len - start);
        self->out_len -= start;
    }
}

/* Logs stderr a line at a time (a line longer than the buffer in pieces). */
static void
s_read_stderr (gq_engine_t *self)
{
    for (;;) {
        ssize_t n = read (self->err_fd, self->err_buf + self->err_len,
                          sizeof self->err_buf - 1 - self->err_len);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            s_close (&self->err_fd);
        }
        if (n <= 0) {
            break;
        }
        self->err_len += (size_t) n;
        size_t start = 0;
        for (size_t i = 0; i < self->err_len; i++) {
            bool full = start == 0 && i == sizeof self->err_buf - 2; /* no newline in it all */
            if (self->err_buf[i] == '\n' || full) {
                size_t end = full && self->err_buf[i] != '\n' ? i + 1 : i;
                zsys_info ("engine %s: %.*s", self->kind, (int) (end - start),
                           self->err_buf + start);
                start = i + 1;
            }
        }
        memmove (self->err_buf, self->err_buf + start, self->err_len - start);
        self->err_len -= start;
    }
}

/* ---- The I/O thread -------------------------------------------------------------------------- */

static void *
s_io_thread (void *arg)
{
    gq_engine_t *self = (gq_engine_t *) arg;
    char why[256];
    for (;;) {
        pthread_mutex_lock (&self->lock);
        if (self->stop) {
            pthread_mutex_unlock (&self->lock);
            break;
        }
        int64_t now = gq_mono_us ();
        if (self->state == S_DOWN) {
            if (now < self->restart_at_us) {
                s_wait_ms (self, (self->restart_at_us - now + 999) / 1000);
                pthread_mutex_unlock (&self->lock);
                continue;
            }
            pthread_mutex_unlock (&self->lock);
            s_start (self);
            continue;
        }
        if (self->state == S_STARTING && self->pid && now >= self->ready_deadline_us) {
            zsys_warning ("engine %s: no ready line within %" PRId64 " ms; taking jobs without one",
                          self->kind, self->ready_timeout_ms);
            self->state = S_UP;
            self->settled = true;
            pthread_cond_broadcast (&self->changed);
        }
        pthread_mutex_unlock (&self->lock);
        struct pollfd fds[2] = {{self->out_fd, POLLIN, 0}, {self->err_fd, POLLIN, 0}};
        if (poll (fds, 2, GQ_ENGINE_TICK_MS) < 0 && errno != EINTR) {
            break;
        }
        if (self->err_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            s_read_stderr (self);
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            int rc = s_read_stdout (self, why, sizeof why);
            if (rc) {
                if (rc > 0) {
                    snprintf (why, sizeof why, "exited");
                }
                if (self->err_fd >= 0) {
                    s_read_stderr (self); /* its last words, before they are lost */
                }
                s_down (self, why);
                s_stop_process (self, why);
            }
        }
    }
    if (self->pid > 0) {
        s_down (self, "stopped with the worker");
        s_stop_process (self, "stopped with the worker");
    }
    return NULL;
}

/* ---- Construction ---------------------------------------------------------------------------- */

gq_engine_t *
gq_engine_new (const char *spec, const gq_engine_opts_t *opts, char *why, size_t whylen)
{
    char kind[GQ_KIND_MAX];
    const char *command;
    if (gq_handler_spec (spec, "engine", kind, sizeof kind, &command, why, whylen)) {
        return NULL;
    }
    if (opts->slots < 1 || opts->slots > GQ_MAX_SLOTS || opts->ready_timeout_ms < 0) {
        snprintf (why, whylen, "engine '%s': slots %d or ready timeout %" PRId64 " not valid", kind,
                  opts->slots, opts->ready_timeout_ms);
        return NULL;
    }
    gq_engine_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    snprintf (self->kind, sizeof self->kind, "%s", kind);
    self->command = strdup (command);
    self->cuda_devices = opts->cuda_devices ? strdup (opts->cuda_devices) : NULL;
    self->slots = opts->slots;
    self->ready_timeout_ms = opts->ready_timeout_ms;
    self->backoff_ms = GQ_ENGINE_BACKOFF_MIN_MS;
    self->state = S_DOWN; /* restart_at_us 0: the thread starts it at once */
    self->in_fd = self->out_fd = self->err_fd = -1;
    self->models = json_array ();
    self->calls = calloc ((size_t) self->slots, sizeof *self->calls);
    self->out_buf = malloc (GQ_ENGINE_MAX_LINE_BYTES + 1);
    pthread_mutex_init (&self->lock, NULL);
    pthread_mutex_init (&self->write_lock, NULL);
    gq_cond_init_monotonic (&self->changed);
    if (!self->command || !self->models || !self->calls || !self->out_buf ||
        (opts->cuda_devices && !self->cuda_devices)) {
        snprintf (why, whylen, "out of memory");
        gq_engine_destroy (&self);
        return NULL;
    }
    if (pthread_create (&self->thread, NULL, s_io_thread, self) != 0) {
        snprintf (why, whylen, "engine '%s': cannot start its thread", kind);
        gq_engine_destroy (&self);
        return NULL;
    }
    self->thread_started = true;
    return self;
}

void
gq_engine_destroy (gq_engine_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_engine_t *self = *self_p;
    if (self->thread_started) {
        gq_thread_stop (self->thread, &self->lock, &self->changed, &self->stop);
    }
    for (int i = 0; self->calls && i < self->slots; i++) {
        s_call_release (self, &self->calls[i]);
    }
    free (self->calls);
    json_decref (self->models);
    free (self->out_buf);
    free (self->command);
    free (self->cuda_devices);
    pthread_cond_destroy (&self->changed);
    pthread_mutex_destroy (&self->lock);
    pthread_mutex_destroy (&self->write_lock);
    free (self);
    *self_p = NULL;
}

const char *
gq_engine_kind (gq_engine_t *self)
{
    return self->kind;
}

const char *
gq_engine_command (gq_engine_t *self)
{
    return self->command;
}

bool
gq_engine_wait_ready (gq_engine_t *self)
{
    pthread_mutex_lock (&self->lock);
    while (!self->settled && !self->stop) {
        s_wait_ms (self, GQ_ENGINE_TICK_MS * 10);
    }
    bool up = self->state == S_UP;
    pthread_mutex_unlock (&self->lock);
    return up;
}

json_t *
gq_engine_models (gq_engine_t *self)
{
    pthread_mutex_lock (&self->lock);
    json_t *models = json_deep_copy (self->models);
    pthread_mutex_unlock (&self->lock);
    return models;
}

bool
gq_engine_down (gq_engine_t *self)
{
    pthread_mutex_lock (&self->lock);
    bool down = self->state == S_DOWN;
    pthread_mutex_unlock (&self->lock);
    return down;
}

int
gq_engine_pid (gq_engine_t *self)
{
    pthread_mutex_lock (&self->lock);
    int pid = (int) self->pid;
    pthread_mutex_unlock (&self->lock);
    return pid;
}

/* ---- Jobs ------------------------------------------------------------------------------------ */

int
gq_engine_job_stopped (const gq_engine_job_t *job, int64_t deadline_us, char *error,
                       size_t errlen)
{
    if (job->cancel && *job->cancel) {
        snprintf (error, errlen, "cancelled");
        return GQ_ESTATE;
    }
    if (deadline_us && gq_mono_us () >= deadline_us) {
        snprintf (error, errlen, "timed out after %" PRId64 " ms", job->timeout_ms);
        return GQ_ETIMEOUT;
    }
    return GQ_OK;
}

/* Writes one whole line to the process that was running when the job was taken (pid), unless
   it died since. A line is never left half written: cancel is seen only before it starts. */
static int
s_write_line (gq_engine_t *self, pid_t pid, const char *text, size_t len,
              const gq_engine_job_t *job, int64_t deadline_us, char *error, size_t errlen)
{
    int rc = GQ_OK;
    pthread_mutex_lock (&self->write_lock);
    pthread_mutex_lock (&self->lock);
    bool alive = self->pid == pid && self->in_fd >= 0;
    int fd = self->in_fd;
    pthread_mutex_unlock (&self->lock);
    size_t done = 0;
    while (alive && done < len) {
        ssize_t n = send (fd, text + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            done += (size_t) n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (done == 0 && job &&
                (rc = gq_engine_job_stopped (job, deadline_us, error, errlen))) {
                break;
            }
            struct pollfd pfd = {fd, POLLOUT, 0};
            poll (&pfd, 1, GQ_ENGINE_TICK_MS);
        } else {
            alive = false;
        }
    }
    pthread_mutex_unlock (&self->write_lock);
    if (!rc && !alive) {
        snprintf (error, errlen, "engine '%s' stopped before it took the job", self->kind);
        rc = GQ_EBACKEND;
    }
    return rc;
}

int
gq_engine_run (gq_engine_t *self, const gq_engine_job_t *job, json_t **result, char *error,
               size_t errlen)
{
    *result = NULL;
    error[0] = 0;
    int64_t deadline_us = job->timeout_ms > 0 ? gq_mono_us () + job->timeout_ms * 1000 : 0;
    json_t *line = json_pack ("{s:I, s:s, s:s?, s:O?}", "id", (json_int_t) job->id, "kind",
                              job->kind ? job->kind : self->kind, "model", job->model, "payload",
                              job->payload);
    if (line && job->array_id) {
        json_object_set_new (line, "array", json_pack ("{s:I, s:I}", "id",
                                                       (json_int_t) job->array_id, "index",
                                                       (json_int_t) job->array_index));
    }
    char *text = line ? json_dumps (line, JSON_COMPACT) : NULL;
    json_decref (line);
    if (!text) {
        snprintf (error, errlen, "the job cannot be written as JSON for engine '%s'", self->kind);
        return GQ_EINVAL;
    }
    size_t len = strlen (text);
    text[len] = '\n'; /* json_dumps's terminator becomes the line's end: the length stays */

    /* Wait for the engine to be up and for a free place among its slots. */
    pthread_mutex_lock (&self->lock);
    s_call_t *call = NULL;
    int rc = GQ_OK;
    while (!call) {
        if ((rc = gq_engine_job_stopped (job, deadline_us, error, errlen))) {
            break;
        }
        if (self->state == S_DOWN || self->stop) {
            snprintf (error, errlen, "engine '%s' is restarting (it %s); the job was not sent",
                      self->kind, self->down_reason);
            rc = GQ_EBACKEND;
            break;
        }
        if (self->state == S_UP && !s_call_find (self, job->id)) {
            for (int i = 0; i < self->slots && !call; i++) {
                call = self->calls[i].id == 0 ? &self->calls[i] : NULL;
            }
        }
        if (!call) {
            s_wait_ms (self, GQ_ENGINE_TICK_MS);
        }
    }
    pid_t pid = self->pid;
    if (call) {
        memset (call, 0, sizeof *call);
        call->id = job->id;
    }
    pthread_mutex_unlock (&self->lock);
    if (rc) {
        free (text);
        return rc;
    }
    rc = s_write_line (self, pid, text, len + 1, job, deadline_us, error, errlen);
    free (text);
    bool sent = rc == GQ_OK;
    pthread_mutex_lock (&self->lock);
    while (!rc && !call->done && !(rc = gq_engine_job_stopped (job, deadline_us, error, errlen))) {
        if (call->head) {
            s_partials_deliver (self, call, job);
        } else {
            s_wait_ms (self, GQ_ENGINE_TICK_MS);
        }
    }
    if (!rc) {
        s_partials_deliver (self, call, job); /* all of them before the result */
    }
    bool stop_line = sent && (rc == GQ_ESTATE || rc == GQ_ETIMEOUT ||
                              (!rc && call->code == GQ_ETOOBIG));
    if (!rc) {
        rc = call->code;
        *result = call->result;
        call->result = NULL;
        if (rc) {
            snprintf (error, errlen, "%s", call->error);
        }
    }
    s_call_release (self, call);
    pthread_mutex_unlock (&self->lock);
    if (stop_line) {
        char cancel[64];
        int n = snprintf (cancel, sizeof cancel, "{\"id\":%" PRId64 ",\"cancel\":true}\n", job->id);
        /* Bounded: an engine that reads nothing for the grace period does not get it (and will
           be found out by its next jobs), rather than holding this slot. */
        gq_engine_job_t bound = {.id = job->id, .timeout_ms = GQ_HANDLER_GRACE_MS};
        char ignored[128];
        s_write_line (self, pid, cancel, (size_t) n, &bound,
                      gq_mono_us () + (int64_t) GQ_HANDLER_GRACE_MS * 1000, ignored,
                      sizeof ignored);
    }
    return rc;
}

/* ---- Selftest -------------------------------------------------------------------------------- */

/* A shell engine: a ready line with model m1, then per job by its payload's word: "crash"
   exits 3, "bad" writes a line that is not JSON, "hang" answers nothing, "fail" answers an
   error; anything else a partial and a result with its pid and kind. A cancel line leaves a file
   cancel-ID in the folder given as $1. */
#define S_TEST_ENGINE                                                                              \
    "echo '{\"ready\":true,\"models\":[\"m1\"]}'; "                                                \
    "while IFS= read -r l; do id=${l#\\{\\\"id\\\":}; id=${id%%,*}; case \"$l\" in "               \
    "*'\"cancel\":true'*) echo x > \"$D/cancel-$id\";; *crash*) echo dying >&2; exit 3;; "         \
    "*bad*) echo 'not json';; *hang*) ;; *fail*) echo \"{\\\"id\\\":$id,\\\"error\\\":\\\"no "     \
    "luck\\\"}\";; *) echo \"{\\\"id\\\":$id,\\\"partial\\\":1}\"; "                               \
    "echo "                                                                                        \
    "\"{\\\"id\\\":$id,\\\"result\\\":{\\\"pid\\\":$$,\\\"kind\\\":\\\"$GRIDQ_KIND\\\"}}\";; "     \
    "esac; done"

static int
s_test_run (gq_engine_t *engine, int64_t id, const char *word, int64_t timeout_ms,
            gq_flag_t *cancel, json_t **result, char *error, size_t errlen)
{
    json_t *payload = json_string (word);
    gq_engine_job_t job = {
        .id = id, .payload = payload, .timeout_ms = timeout_ms, .cancel = cancel};
    int rc = gq_engine_run (engine, &job, result, error, errlen);
    json_decref (payload);
    return rc;
}

static bool
s_test_exists (const char *path)
{
    return access (path, F_OK) == 0;
}

/* Polls until fn says yes, at most 10 s: awaiting a condition, not a sleep. */
static bool
s_test_await_pid_change (gq_engine_t *engine, int old)
{
    for (int i = 0; i < 1000; i++) {
        int pid = gq_engine_pid (engine);
        if (pid && pid != old) {
            return true;
        }
        zclock_sleep (10);
    }
    return false;
}

void
gq_engine_test (bool verbose)
{
    char why[512], error[1024];
    gq_engine_opts_t opts = {.slots = 2, .ready_timeout_ms = 10000};
    assert (!gq_engine_new ("nonsense", &opts, why, sizeof why) && strstr (why, "KIND=COMMAND"));
    assert (!gq_engine_new ("Bad Kind=cat", &opts, why, sizeof why) && strstr (why, "not valid"));
    assert (!gq_engine_new ("k=  ", &opts, why, sizeof why) && strstr (why, "no command"));

    char dir[] = "/tmp/gq-engine-XXXXXX";
    assert (mkdtemp (dir));
    setenv ("D", dir, 1);
    gq_engine_t *engine = gq_engine_new ("tiny=" S_TEST_ENGINE, &opts, why, sizeof why);
    assert (engine);
    assert (streq (gq_engine_kind (engine), "tiny"));
    assert (gq_engine_wait_ready (engine));
    json_t *models = gq_engine_models (engine);
    char *text = json_dumps (models, JSON_COMPACT);
    assert (streq (text, "[\"m1\"]"));
    free (text);
    json_decref (models);
    int pid = gq_engine_pid (engine);
    assert (pid > 0);

    /* Many jobs, one process. */
    json_t *result = NULL;
    for (int i = 1; i <= 5; i++) {
        int rc = s_test_run (engine, i, "hello", 0, NULL, &result, error, sizeof error);
        if (rc != 0) {
            fprintf (stderr, "job %d: %d %s\n", i, rc, error);
        }
        assert (rc == 0);
        assert (json_integer_value (json_object_get (result, "pid")) == pid);
        assert (streq (json_string_value (json_object_get (result, "kind")), "tiny"));
        json_decref (result);
    }
    assert (s_test_run (engine, 6, "fail", 0, NULL, &result, error, sizeof error) == GQ_EBACKEND);
    assert (!result && streq (error, "no luck"));

    /* Cancelled before it starts: nothing is sent. Timed out: the engine gets the cancel line. */
    gq_flag_t cancel = 1;
    assert (s_test_run (engine, 7, "hello", 0, &cancel, &result, error, sizeof error) == GQ_ESTATE);
    assert (streq (error, "cancelled"));
    assert (s_test_run (engine, 8, "hang", 30, NULL, &result, error, sizeof error) == GQ_ETIMEOUT);
    assert (streq (error, "timed out after 30 ms"));
    char path[300];
    snprintf (path, sizeof path, "%s/cancel-8", dir);
    bool seen = false;
    for (int i = 0; i < 1000 && !(seen = s_test_exists (path)); i++) {
        zclock_sleep (10);
    }
    assert (seen);
    unlink (path);
    assert (gq_engine_pid (engine) == pid);

    /* A crash fails the job, and the engine comes back as a new process. */
    assert (s_test_run (engine, 9, "crash", 0, NULL, &result, error, sizeof error) == GQ_EBACKEND);
    if (verbose) {
        printf ("\n  crash: %s", error);
    }
    assert (strstr (error, "engine 'tiny' exited (exit status 3) while running the job"));
    assert (s_test_await_pid_change (engine, pid));
    int pid2 = gq_engine_pid (engine);
    assert (s_test_run (engine, 10, "hello", 0, NULL, &result, error, sizeof error) == 0);
    assert (json_integer_value (json_object_get (result, "pid")) == pid2);
    json_decref (result);

    /* A line outside the contract counts as a crash. */
    assert (s_test_run (engine, 11, "bad", 0, NULL, &result, error, sizeof error) == GQ_EBACKEND);
    if (verbose) {
        printf ("\n  bad line: %s", error);
    }
    assert (strstr (error, "not a JSON object"));
    assert (s_test_await_pid_change (engine, pid2));
    assert (s_test_run (engine, 12, "hello", 0, NULL, &result, error, sizeof error) == 0);
    json_decref (result);
    gq_engine_destroy (&engine);
    gq_engine_destroy (&engine);

    /* No ready line: the first answer is the first line. */
    opts.ready_timeout_ms = 50;
    engine = gq_engine_new ("plain=while read l; do echo '{\"id\":1,\"result\":2}'; done", &opts,
                            why, sizeof why);
    assert (engine);
    assert (gq_engine_wait_ready (engine));
    models = gq_engine_models (engine);
    assert (json_array_size (models) == 0);
    json_decref (models);
    assert (s_test_run (engine, 1, "x", 0, NULL, &result, error, sizeof error) == 0);
    assert (json_integer_value (result) == 2);
    json_decref (result);
    gq_engine_destroy (&engine);

    /* A command that cannot run: the engine is not up; its jobs are refused, not hung. */
    opts.ready_timeout_ms = 10000;
    engine = gq_engine_new ("gone=exec /nonexistent/engine", &opts, why, sizeof why);
    assert (engine);
    assert (!gq_engine_wait_ready (engine));
    int rc = s_test_run (engine, 1, "x", 0, NULL, &result, error, sizeof error);
    if (verbose) {
        printf ("\n  gone: %s", error);
    }
    assert (rc == GQ_EBACKEND && strstr (error, "is restarting"));
    gq_engine_destroy (&engine);

    /* A line over the limit breaks the contract, however it is cut into reads. */
    engine = gq_engine_new ("long=head -c 4300000 /dev/zero | tr '\\0' a; echo; exec cat", &opts,
                            why, sizeof why);
    assert (engine);
    assert (!gq_engine_wait_ready (engine));
    rc = s_test_run (engine, 1, "x", 0, NULL, &result, error, sizeof error);
    if (verbose) {
        printf ("\n  long: %.120s", error);
    }
    assert (rc == GQ_EBACKEND && strstr (error, "wrote a line longer than"));
    gq_engine_destroy (&engine);

    unsetenv ("D");
    rmdir (dir);
    if (verbose) {
        printf ("\n  ");
    }
}
