/*  handler.c — runs external handler commands: spawn in a new session, feed stdin, collect
    stdout and the tail of stderr with poll(), enforce timeout and cancel on the whole group. */
#define _GNU_SOURCE /* pipe2, POSIX_SPAWN_SETSID, nftw */
#include "handler.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gq_msg.h"
#include "tuning.h"

extern char **environ;

struct _gq_handler_t {
    char kind[GQ_KIND_MAX]; /* the job kind it serves */
    char *command;          /* the shell command line */
};

int
gq_handler_spec (const char *spec, const char *what, char *kind, size_t kindlen,
                 const char **command, char *why, size_t whylen)
{
    const char *eq = spec ? strchr (spec, '=') : NULL;
    if (!eq) {
        snprintf (why, whylen, "%s '%.64s' is not KIND=COMMAND", what, spec ? spec : "");
        return GQ_EINVAL;
    }
    size_t kind_len = (size_t) (eq - spec);
    if (kind_len == 0 || kind_len >= kindlen) {
        snprintf (why, whylen, "%s '%.64s': the kind is empty or too long", what, spec);
        return GQ_EINVAL;
    }
    memcpy (kind, spec, kind_len);
    kind[kind_len] = 0;
    if (!gq_valid_kind (kind)) {
        snprintf (why, whylen, "%s kind '%s' is not valid ([a-z0-9_.-], at most %d)", what, kind,
                  GQ_KIND_MAX - 1);
        return GQ_EINVAL;
    }
    *command = eq + 1;
    while (**command == ' ') {
        (*command)++;
    }
    if (!**command) {
        snprintf (why, whylen, "%s '%s' has no command", what, kind);
        return GQ_EINVAL;
    }
    return GQ_OK;
}

gq_handler_t *
gq_handler_new (const char *spec, char *why, size_t whylen)
{
    char kind[GQ_KIND_MAX];
    const char *command;
    if (gq_handler_spec (spec, "handler", kind, sizeof kind, &command, why, whylen)) {
        return NULL;
    }
    gq_handler_t *self = calloc (1, sizeof *self);
    if (self) {
        snprintf (self->kind, sizeof self->kind, "%s", kind);
        self->command = strdup (command);
    }
    if (!self || !self->command) {
        free (self);
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    return self;
}

void
gq_handler_destroy (gq_handler_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->command);
        free (*self_p);
        *self_p = NULL;
    }
}

const char *
gq_handler_kind (gq_handler_t *self)
{
    return self->kind;
}

const char *
gq_handler_command (gq_handler_t *self)
{
    return self->command;
}

/* ---- The device a handler sees -------------------------------------------------------------- */

const char *
gq_handler_cuda_devices (const char *inherited, int device, const char *uuid, char *out,
                         size_t outlen)
{
    /* Entry `device` of the comma-separated list, without the spaces around it. */
    const char *entry = inherited;
    for (int i = 0; entry && i < device; i++) {
        entry = strchr (entry, ',');
        entry = entry ? entry + 1 : NULL;
    }
    size_t len = 0;
    if (entry) {
        entry += strspn (entry, " ");
        len = strcspn (entry, ",");
        while (len > 0 && entry[len - 1] == ' ') {
            len--;
        }
    }
    bool named = len > 4 && (strncmp (entry, "GPU-", 4) == 0 || strncmp (entry, "MIG-", 4) == 0);
    if (named || (len > 0 && !(uuid && *uuid))) {
        snprintf (out, outlen, "%.*s", (int) len, entry);
    } else if (uuid && *uuid) {
        snprintf (out, outlen, "%s", uuid);
    } else {
        snprintf (out, outlen, "%d", device);
    }
    return out;
}

/* ---- Blobs ---------------------------------------------------------------------------------- */

static int
s_remove_entry (const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    if (remove (path) != 0) {
        zsys_warning ("handler: cannot remove %s: %s", path, strerror (errno));
    }
    return 0;
}

/* Removes the blob folder with whatever the command left in it; symbolic links are removed,
   never followed. Nothing to do for "". */
static void
s_blobs_remove (const char *dir)
{
    if (*dir) {
        nftw (dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

/* Writes size bytes; 0 or errno. */
static int
s_write_all (int fd, const byte *data, size_t size)
{
    for (size_t done = 0; done < size;) {
        ssize_t n = write (fd, data + done, size - done);
        if (n < 0 && errno != EINTR) {
            return errno;
        }
        done += n > 0 ? (size_t) n : 0;
    }
    return 0;
}

/* Writes the job's blobs to files 0, 1, ... in a new folder whose path goes to dir (dirlen at
   least PATH_MAX). 0, or GQ_EIO with the reason in error and nothing left behind. */
static int
s_blobs_write (const gq_handler_job_t *job, char *dir, size_t dirlen, char *error, size_t errlen)
{
    const char *tmp = getenv ("TMPDIR");
    snprintf (dir, dirlen, "%s/gridq-job-%" PRId64 "-XXXXXX", tmp && *tmp ? tmp : "/tmp",
              job->id);
    if (!mkdtemp (dir)) {
        snprintf (error, errlen, "cannot make a folder for the job's blobs (%s): %s", dir,
                  strerror (errno));
        dir[0] = 0;
        return GQ_EIO;
    }
    for (size_t i = 0; i < job->n_blobs; i++) {
        char path[PATH_MAX];
        snprintf (path, sizeof path, "%s/%zu", dir, i);
        int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int e = fd < 0 ? errno
                       : s_write_all (fd, zframe_data (job->blobs[i]), zframe_size (job->blobs[i]));
        if (fd >= 0 && close (fd) != 0 && e == 0) {
            e = errno;
        }
        if (e) {
            snprintf (error, errlen, "cannot write blob %zu for the handler to %s: %s", i, path,
                      strerror (e));
            s_blobs_remove (dir);
            dir[0] = 0;
            return GQ_EIO;
        }
    }
    return GQ_OK;
}

/* ---- One run -------------------------------------------------------------------------------- */

/* What one run is doing; the parent's ends of the pipes are -1 once closed. */
typedef struct {
    pid_t pid;            /* the shell; also the process group and session id */
    int in_fd;            /* child's stdin (we write) */
    int out_fd;           /* child's stdout (we read) */
    int err_fd;           /* child's stderr (we read) */
    const char *input;    /* the payload text */
    size_t input_len;     /* its length */
    size_t input_done;    /* bytes written so far */
    char *out;            /* stdout collected */
    size_t out_len;       /* its length */
    size_t out_cap;       /* its allocation */
    bool out_overflow;    /* stdout passed the limit */
    char err[2 * GQ_HANDLER_STDERR_TAIL_BYTES]; /* stderr tail: the last bytes are kept */
    size_t err_len;       /* bytes in err */
    bool exited;          /* the shell has been reaped */
    int status;           /* its wait status once exited */
} s_run_t;

static void
s_close (int *fd)
{
    if (*fd >= 0) {
        close (*fd);
        *fd = -1;
    }
}

char **
gq_handler_env_inherit (const char *const *drop, size_t n_drop, size_t n_more, size_t *n_p)
{
    size_t inherited = 0;
    while (environ && environ[inherited]) {
        inherited++;
    }
    char **env = calloc (inherited + n_more + 1, sizeof (char *));
    if (!env) {
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < inherited; i++) {
        bool dropped = false;
        for (size_t j = 0; j < n_drop; j++) {
            dropped = dropped || strncmp (environ[i], drop[j], strlen (drop[j])) == 0;
        }
        if (!dropped) {
            env[n++] = strdup (environ[i]);
        }
    }
    *n_p = n;
    return env;
}

/* The environment for the child: ours, with the job's variables replacing any inherited.
   blob_dir is the folder of the job's blobs, or "". */
static char **
s_environment (const gq_handler_job_t *job, const char *kind, const char *blob_dir)
{
    /* CUDA_VISIBLE_DEVICES last: it alone stays as inherited when the job sets no device. */
    static const char *ours[] = {"GRIDQ_JOB_ID=",   "GRIDQ_ATTEMPT=",     "GRIDQ_KIND=",
                                 "GRIDQ_MODEL=",    "GRIDQ_BLOB_DIR=",    "GRIDQ_BLOBS=",
                                 "GRIDQ_ARRAY_ID=", "GRIDQ_ARRAY_INDEX=", "CUDA_VISIBLE_DEVICES="};
    const size_t n_ours = sizeof ours / sizeof ours[0];
    size_t n = 0;
    char **env =
        gq_handler_env_inherit (ours, job->cuda_devices ? n_ours : n_ours - 1, n_ours, &n);
    if (!env) {
        return NULL;
    }
    env[n++] = zsys_sprintf ("GRIDQ_JOB_ID=%" PRId64, job->id);
    env[n++] = zsys_sprintf ("GRIDQ_ATTEMPT=%d", job->attempt);
    env[n++] = zsys_sprintf ("GRIDQ_KIND=%s", job->kind ? job->kind : kind);
    if (job->model) {
        env[n++] = zsys_sprintf ("GRIDQ_MODEL=%s", job->model);
    }
    if (job->array_id) {
        env[n++] = zsys_sprintf ("GRIDQ_ARRAY_ID=%" PRId64, job->array_id);
        env[n++] = zsys_sprintf ("GRIDQ_ARRAY_INDEX=%" PRId64, job->array_index);
    }
    if (*blob_dir) {
        env[n++] = zsys_sprintf ("GRIDQ_BLOB_DIR=%s", blob_dir);
        env[n++] = zsys_sprintf ("GRIDQ_BLOBS=%zu", job->n_blobs);
    }
    if (job->cuda_devices) {
        env[n++] = zsys_sprintf ("CUDA_VISIBLE_DEVICES=%s", job->cuda_devices);
    }
    env[n] = NULL;
    return env;
}

void
gq_handler_env_free (char **env)
{
    for (size_t i = 0; env && env[i]; i++) {
        free (env[i]);
    }
    free (env);
}

int
gq_handler_spawn (const char *command, char **env, int in_fd, int out_fd, int err_fd, pid_t *pid)
{
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init (&actions);
    posix_spawn_file_actions_adddup2 (&actions, in_fd, 0);
    posix_spawn_file_actions_adddup2 (&actions, out_fd, 1);
    posix_spawn_file_actions_adddup2 (&actions, err_fd, 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init (&attr);
    /* A session of its own makes it a process group leader we can signal as a whole; default
       dispositions and an empty mask undo whatever the worker set for itself. */
    sigset_t none, all;
    sigemptyset (&none);
    sigfillset (&all);
    posix_spawnattr_setsigmask (&attr, &none);
    posix_spawnattr_setsigdefault (&attr, &all);
    posix_spawnattr_setflags (&attr,
                              POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"sh", "-c", (char *) command, NULL};
    int rc = posix_spawn (pid, "/bin/sh", &actions, &attr, argv, env);
    posix_spawn_file_actions_destroy (&actions);
    posix_spawnattr_destroy (&attr);
    return rc;
}

/* Starts /bin/sh -c command in a new session with the three pipes. 0 or errno. */
static int
s_spawn (s_run_t *run, const char *command, char **env)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    /* O_CLOEXEC: a handler spawned by another slot at the same moment must not inherit our
       ends, or our child would never see end of file. */
    if (pipe2 (in, O_CLOEXEC) || pipe2 (out, O_CLOEXEC) || pipe2 (err, O_CLOEXEC)) {
        int e = errno;
        int *fds[] = {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1]};
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
            s_close (fds[i]);
        }
        return e;
    }
    int rc = gq_handler_spawn (command, env, in[0], out[1], err[1], &run->pid);
    s_close (&in[0]);
    s_close (&out[1]);
    s_close (&err[1]);
    if (rc != 0) {
        s_close (&in[1]);
        s_close (&out[0]);
        s_close (&err[0]);
        return rc;
    }
    run->in_fd = in[1];
    run->out_fd = out[0];
    run->err_fd = err[0];
    fcntl (run->in_fd, F_SETFL, O_NONBLOCK);
    fcntl (run->out_fd, F_SETFL, O_NONBLOCK);
    fcntl (run->err_fd, F_SETFL, O_NONBLOCK);
    if (run->input_len == 0) {
        s_close (&run->in_fd);
    }
    return 0;
}

/* Writes what the pipe takes; closes stdin when done or when the child stopped reading. */
static void
s_feed (s_run_t *run)
{
    while (run->in_fd >= 0 && run->input_done < run->input_len) {
        ssize_t n = write (run->in_fd, run->input + run->input_done,
                           run->input_len - run->input_done);
        if (n > 0) {
            run->input_done += (size_t) n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else {
            s_close (&run->in_fd); /* EPIPE: it does not want its input; that is its business */
            return;
        }
    }
    s_close (&run->in_fd);
}

/* Reads what is there from stdout and stderr; closes each at end of file. */
static void
s_drain (s_run_t *run)
{
    char chunk[16384];
    while (run->out_fd >= 0) {
        ssize_t n = read (run->out_fd, chunk, sizeof chunk);
        if (n > 0) {
            if (run->out_len + (size_t) n > GQ_HANDLER_MAX_OUTPUT_BYTES) {
                run->out_overflow = true;
                s_close (&run->out_fd);
                break;
            }
            if (run->out_len + (size_t) n + 1 > run->out_cap) {
                size_t cap = (run->out_cap ? run->out_cap * 2 : 65536);
                while (cap < run->out_len + (size_t) n + 1) {
                    cap *= 2;
                }
                char *grown = realloc (run->out, cap);
                if (!grown) {
                    run->out_overflow = true;
                    s_close (&run->out_fd);
                    break;
                }
                run->out = grown;
                run->out_cap = cap;
            }
            memcpy (run->out + run->out_len, chunk, (size_t) n);
            run->out_len += (size_t) n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            break;
        } else {
            s_close (&run->out_fd);
        }
    }
    while (run->err_fd >= 0) {
        ssize_t n = read (run->err_fd, chunk, sizeof chunk);
        if (n > 0) {
            /* Keep only the tail: once the buffer fills, slide its last half down. */
            const char *from = chunk;
            if ((size_t) n > GQ_HANDLER_STDERR_TAIL_BYTES) {
                from += (size_t) n - GQ_HANDLER_STDERR_TAIL_BYTES;
                n = GQ_HANDLER_STDERR_TAIL_BYTES;
            }
            if (run->err_len + (size_t) n > sizeof run->err) {
                size_t keep = GQ_HANDLER_STDERR_TAIL_BYTES - (size_t) n;
                keep = keep < run->err_len ? keep : run->err_len;
                memmove (run->err, run->err + run->err_len - keep, keep);
                run->err_len = keep;
            }
            memcpy (run->err + run->err_len, from, (size_t) n);
            run->err_len += (size_t) n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            break;
        } else {
            s_close (&run->err_fd);
        }
    }
}

/* Waits up to timeout_ms for pipe activity, feeding and draining. */
static void
s_pump (s_run_t *run, int timeout_ms)
{
    struct pollfd fds[3];
    nfds_t n = 0;
    if (run->in_fd >= 0) {
        fds[n++] = (struct pollfd){.fd = run->in_fd, .events = POLLOUT};
    }
    if (run->out_fd >= 0) {
        fds[n++] = (struct pollfd){.fd = run->out_fd, .events = POLLIN};
    }
    if (run->err_fd >= 0) {
        fds[n++] = (struct pollfd){.fd = run->err_fd, .events = POLLIN};
    }
    if (poll (fds, n, timeout_ms) > 0) {
        s_feed (run);
        s_drain (run);
    }
}

static void
s_reap (s_run_t *run, int flags)
{
    if (!run->exited) {
        pid_t rc;
        do {
            rc = waitpid (run->pid, &run->status, flags);
        } while (rc < 0 && errno == EINTR);
        if (rc == run->pid || (rc < 0 && errno == ECHILD)) {
            run->exited = true;
        }
    }
}

/* SIGTERM to the group, SIGKILL after the grace period, then reap the shell. */
static void
s_terminate (s_run_t *run)
{
    kill (-run->pid, SIGTERM);
    /* Nobody reads the pipes from here on: a child blocked writing gets EPIPE and moves on. */
    s_close (&run->in_fd);
    s_close (&run->out_fd);
    s_close (&run->err_fd);
    int64_t until = gq_mono_us () + (int64_t) GQ_HANDLER_GRACE_MS * 1000;
    while (!run->exited && gq_mono_us () < until) {
        s_reap (run, WNOHANG);
        if (!run->exited) {
            poll (NULL, 0, GQ_HANDLER_TICK_MS);
        }
    }
    kill (-run->pid, SIGKILL);
    s_reap (run, 0);
}

/* The tail of stderr as one trimmed line of text for an error message. */
static const char *
s_stderr_tail (s_run_t *run)
{
    size_t len = run->err_len;
    size_t start = len > GQ_HANDLER_STDERR_TAIL_BYTES ? len - GQ_HANDLER_STDERR_TAIL_BYTES : 0;
    while (len > start && strchr (" \t\r\n", run->err[len - 1])) {
        len--;
    }
    run->err[len] = 0; /* err is sized twice the tail, so there is room */
    return run->err + start;
}

/* Appends ": " and as much of the end of stderr as fits: the last lines say why. */
static void
s_append_tail (s_run_t *run, char *error, size_t errlen)
{
    const char *tail = s_stderr_tail (run);
    size_t used = strlen (error);
    if (!*tail || used + 3 >= errlen) {
        return;
    }
    size_t room = errlen - used - 3; /* ": " and the NUL */
    size_t len = strlen (tail);
    if (len > room) {
        /* Cut at a line start where one is near, and mark the cut. */
        tail += len - room + 4;
        const char *line = strchr (tail, '\n');
        tail = line && line - tail < 200 ? line + 1 : tail;
        snprintf (error + used, errlen - used, ": ...%s", tail);
    } else {
        snprintf (error + used, errlen - used, ": %s", tail);
    }
}

int
gq_handler_run (gq_handler_t *self, const gq_handler_job_t *job, json_t **result, char *error,
                size_t errlen)
{
    *result = NULL;
    s_run_t run = {.pid = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1};
    char blob_dir[PATH_MAX] = "";
    if (job->n_blobs) {
        int rc = s_blobs_write (job, blob_dir, sizeof blob_dir, error, errlen);
        if (rc) {
            return rc;
        }
    }
    char *input = json_dumps (job->payload ? job->payload : json_null (),
                              JSON_COMPACT | JSON_ENCODE_ANY);
    char **env = s_environment (job, self->kind, blob_dir);
    if (!input || !env) {
        free (input);
        gq_handler_env_free (env);
        s_blobs_remove (blob_dir);
        snprintf (error, errlen, "out of memory");
        return GQ_ENOMEM;
    }
    run.input = input;
    run.input_len = strlen (input);

    /* Writing to a pipe whose reader is gone raises SIGPIPE, which would kill the worker: keep
       it blocked in this thread and swallow any we caused before unblocking. */
    sigset_t pipe_set, old_set;
    sigemptyset (&pipe_set);
    sigaddset (&pipe_set, SIGPIPE);
    pthread_sigmask (SIG_BLOCK, &pipe_set, &old_set);

    int64_t start = gq_mono_us ();
    int rc = s_spawn (&run, self->command, env);
    gq_handler_env_free (env);
    if (rc != 0) {
        snprintf (error, errlen, "cannot start handler '%s': %s", self->kind, strerror (rc));
        rc = GQ_EIO;
        goto done;
    }
    zsys_debug ("handler: job %" PRId64 " (%s) runs as process group %d", job->id, self->kind,
                (int) run.pid);
    int64_t deadline = job->timeout_ms > 0 ? start + job->timeout_ms * 1000 : 0;
    int64_t exited_at = 0;
    rc = GQ_OK;
    while (true) {
        s_feed (&run);
        s_drain (&run);
        if (run.out_overflow) {
            s_terminate (&run);
            snprintf (error, errlen, "handler output exceeds %d bytes",
                      GQ_HANDLER_MAX_OUTPUT_BYTES);
            rc = GQ_ETOOBIG;
            break;
        }
        if (job->cancel && *job->cancel) {
            s_terminate (&run);
            snprintf (error, errlen, "cancelled");
            rc = GQ_ESTATE;
            break;
        }
        if (deadline && gq_mono_us () >= deadline) {
            s_terminate (&run);
            snprintf (error, errlen, "timed out after %" PRId64 " ms", job->timeout_ms);
            rc = GQ_ETIMEOUT;
            break;
        }
        s_reap (&run, WNOHANG);
        if (run.exited && exited_at == 0) {
            /* The shell is done; whatever it left in its group goes with it. The pipes may
               still hold its last output, which the next turns read. */
            exited_at = gq_mono_us ();
            kill (-run.pid, SIGKILL);
        }
        if (run.exited && run.out_fd < 0 && run.err_fd < 0) {
            break;
        }
        if (exited_at && gq_mono_us () - exited_at > (int64_t) GQ_HANDLER_LINGER_MS * 1000) {
            /* Something outside the group holds the pipes open: stop waiting for it. */
            zsys_warning ("handler: job %" PRId64 ": output pipes still open after the command "
                          "exited; ignoring the rest",
                          job->id);
            break;
        }
        s_pump (&run, GQ_HANDLER_TICK_MS);
    }
    s_close (&run.in_fd);
    s_close (&run.out_fd);
    s_close (&run.err_fd);
    if (rc != GQ_OK) {
        goto done;
    }
    if (WIFSIGNALED (run.status)) {
        int sig = WTERMSIG (run.status);
        snprintf (error, errlen, "handler killed by signal %d (%s)", sig, strsignal (sig));
        s_append_tail (&run, error, errlen);
        rc = GQ_EBACKEND;
        goto done;
    }
    if (WEXITSTATUS (run.status) != 0) {
        snprintf (error, errlen, "handler exited with status %d", WEXITSTATUS (run.status));
        s_append_tail (&run, error, errlen);
        rc = GQ_EBACKEND;
        goto done;
    }
    /* The result: JSON when stdout parses, else its text. */
    json_error_t jerr;
    *result = json_loadb (run.out ? run.out : "", run.out_len, JSON_DECODE_ANY, &jerr);
    if (!*result) {
        size_t len = run.out_len;
        while (len > 0 && (run.out[len - 1] == '\n' || run.out[len - 1] == '\r')) {
            len--;
        }
        *result = json_stringn (run.out ? run.out : "", len);
        if (!*result) {
            snprintf (error, errlen, "handler output is neither JSON nor UTF-8 text");
            rc = GQ_EINVAL;
        }
    } else if (gq_json_depth (*result) > GQ_MAX_JSON_DEPTH) {
        json_decref (*result);
        *result = NULL;
        snprintf (error, errlen, "handler output nests deeper than %d levels", GQ_MAX_JSON_DEPTH);
        rc = GQ_ETOOBIG;
    }

done:
    if (run.input_done < run.input_len || rc != GQ_OK) {
        /* Swallow a SIGPIPE our writes may have raised, before it can be delivered. */
        struct timespec zero = {0, 0};
        while (sigtimedwait (&pipe_set, NULL, &zero) == SIGPIPE) {
        }
    }
    pthread_sigmask (SIG_SETMASK, &old_set, NULL);
    /* The command and its process group are gone: its input files can go too. */
    s_blobs_remove (blob_dir);
    free (input);
    free (run.out);
    return rc;
}

/* ---- Selftest ------------------------------------------------------------------------------- */

#define S_UUID "GPU-3f2a9b01-c45d-6e7f-8091-a2b3c4d5e6f7" /* a device UUID, as CUDA reports it */

/* True when pid names a live process (a zombie is dead: only its exit status remains). */
static bool
s_alive (pid_t pid)
{
    if (kill (pid, 0) != 0) {
        return false;
    }
    char path[64], text[512] = "";
    snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *f = fopen (path, "r");
    if (!f) {
        return false;
    }
    size_t n = fread (text, 1, sizeof text - 1, f);
    fclose (f);
    text[n] = 0;
    const char *paren = strrchr (text, ')'); /* the command name may hold spaces */
    return paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

/* Waits (bounded) until pid is gone; true when it is. */
static bool
s_gone_within (pid_t pid, int ms)
{
    for (int waited = 0; waited <= ms; waited += 10) {
        if (!s_alive (pid)) {
            return true;
        }
        zclock_sleep (10);
    }
    return false;
}

/* Runs spec for job 42, attempt 2, device 3 with these blobs. */
static int
s_run_blobs (const char *spec, zframe_t **blobs, size_t n_blobs, json_t **result, char *error,
             size_t errlen)
{
    char why[256];
    gq_handler_t *handler = gq_handler_new (spec, why, sizeof why);
    assert (handler);
    gq_handler_job_t job = {.id = 42, .attempt = 2, .cuda_devices = "3", .blobs = blobs,
                            .n_blobs = n_blobs, .timeout_ms = 5000};
    int rc = gq_handler_run (handler, &job, result, error, errlen);
    gq_handler_destroy (&handler);
    return rc;
}

static int
s_run_spec (const char *spec, json_t *payload, int64_t timeout_ms, gq_flag_t *cancel,
            json_t **result, char *error, size_t errlen)
{
    char why[256];
    gq_handler_t *handler = gq_handler_new (spec, why, sizeof why);
    assert (handler);
    gq_handler_job_t job = {.id = 42, .attempt = 2, .cuda_devices = "3", .payload = payload,
                            .timeout_ms = timeout_ms, .cancel = cancel};
    int rc = gq_handler_run (handler, &job, result, error, errlen);
    gq_handler_destroy (&handler);
    return rc;
}

static void
s_expect (const char *label, int rc, int want_rc, const char *error, const char *needle,
          bool verbose)
{
    if (rc != want_rc || (needle && !strstr (error, needle))) {
        fprintf (stderr, "\n%s: expected %d with '%s', got %d '%s'\n", label, want_rc,
                 needle ? needle : "", rc, error);
        assert (false);
    }
    if (verbose && rc) {
        printf ("\n  %s: %s", label, error);
    }
}

typedef struct {
    const char *spec;     /* the handler */
    gq_flag_t *cancel; /* its cancel flag */
    int rc;               /* what the run returned */
    char error[1024];     /* and why */
} s_async_t;

static void *
s_async_run (void *arg)
{
    s_async_t *a = arg;
    json_t *result = NULL;
    a->rc = s_run_spec (a->spec, NULL, 0, a->cancel, &result, a->error, sizeof a->error);
    json_decref (result);
    return NULL;
}

/* Reads whitespace-separated pids from path once it holds `want` of them; bounded wait. */
static int
s_read_pids (const char *path, pid_t *pids, int want)
{
    for (int tries = 0; tries < 1000; tries++) {
        FILE *f = fopen (path, "r");
        int got = 0;
        if (f) {
            int v;
            while (got < want && fscanf (f, "%d", &v) == 1) {
                pids[got++] = (pid_t) v;
            }
            fclose (f);
        }
        if (got == want) {
            return got;
        }
        zclock_sleep (5);
    }
    return 0;
}

void
gq_handler_test (bool verbose)
{
    char why[256];
    /* Specs. */
    gq_handler_t *handler = gq_handler_new ("resize=convert -resize 50% - -", why, sizeof why);
    assert (handler);
    assert (streq (gq_handler_kind (handler), "resize"));
    assert (streq (gq_handler_command (handler), "convert -resize 50% - -"));
    gq_handler_destroy (&handler);
    gq_handler_destroy (&handler);
    assert (!gq_handler_new ("nocommand", why, sizeof why));
    assert (!gq_handler_new ("=cat", why, sizeof why));
    assert (!gq_handler_new ("k=", why, sizeof why) && strstr (why, "no command"));
    assert (!gq_handler_new ("Bad Kind=cat", why, sizeof why) && strstr (why, "not valid"));
    assert (!gq_handler_new (NULL, why, sizeof why));

    /* The device a handler sees: by UUID whatever the worker inherited, unless the inherited
       entry is a UUID already (MIG instances); by index only where no UUID is known. */
    static const struct {
        const char *inherited, *uuid, *want;
        int device;
    } visible[] = {
        {NULL, S_UUID, S_UUID, 0},
        {"2,3", S_UUID, S_UUID, 1},
        {"2,3", "", "3", 1},
        {" 2 , 3 ", NULL, "3", 1},
        {"2,3", "", "2", 0},
        {NULL, "", "1", 1},
        {"GPU-aaaa,MIG-bbbb-1", S_UUID, "MIG-bbbb-1", 1},
        {"GPU-aaaa,MIG-bbbb-1", "", "GPU-aaaa", 0},
        {"0", "", "1", 1}, /* no such entry: the index */
    };
    for (size_t i = 0; i < sizeof visible / sizeof visible[0]; i++) {
        char out[64];
        gq_handler_cuda_devices (visible[i].inherited, visible[i].device, visible[i].uuid, out,
                                 sizeof out);
        if (!streq (out, visible[i].want)) {
            fprintf (stderr, "\ncuda devices '%s', device %d, uuid '%s': expected %s, got %s\n",
                     visible[i].inherited ? visible[i].inherited : "(unset)", visible[i].device,
                     visible[i].uuid ? visible[i].uuid : "(none)", visible[i].want, out);
            assert (false);
        }
    }

    json_t *result = NULL;
    char error[1024];
    /* Success: JSON in, JSON out. */
    json_t *payload = json_pack ("{s:i, s:[s]}", "x", 1, "y", "z");
    int rc = s_run_spec ("t=cat", payload, 5000, NULL, &result, error, sizeof error);
    s_expect ("cat", rc, 0, error, NULL, verbose);
    assert (json_equal (result, payload));
    json_decref (result);
    json_decref (payload);

    /* The environment, and text output as a string. */
    rc = s_run_spec ("t=printf '%s %s %s %s\\n' \"$GRIDQ_JOB_ID\" \"$GRIDQ_ATTEMPT\" "
                     "\"$CUDA_VISIBLE_DEVICES\" \"$GRIDQ_KIND\"",
                     NULL, 5000, NULL, &result, error, sizeof error);
    s_expect ("env", rc, 0, error, NULL, verbose);
    assert (json_is_string (result) && streq (json_string_value (result), "42 2 3 t"));
    json_decref (result);
    rc = s_run_spec ("t=true", NULL, 5000, NULL, &result, error, sizeof error);
    assert (rc == 0 && json_is_string (result) && streq (json_string_value (result), ""));
    json_decref (result);

    /* Blobs: files 0, 1 under GRIDQ_BLOB_DIR, their count in GRIDQ_BLOBS; the folder goes when
       the run ends, with what the command left there, without following its links. */
    char dir[] = "/tmp/gq-handler-XXXXXX";
    assert (mkdtemp (dir));
    char spec[512], pidfile[300], keep[300];
    snprintf (keep, sizeof keep, "%s/keep", dir);
    FILE *kept = fopen (keep, "w");
    assert (kept && fclose (kept) == 0);
    snprintf (spec, sizeof spec,
              "t=echo $GRIDQ_BLOBS $GRIDQ_BLOB_DIR $(cat $GRIDQ_BLOB_DIR/0) "
              "$(wc -c < $GRIDQ_BLOB_DIR/1); mkdir $GRIDQ_BLOB_DIR/made; "
              "touch $GRIDQ_BLOB_DIR/made/file; ln -s %s $GRIDQ_BLOB_DIR/link",
              dir);
    zframe_t *blobs[2] = {zframe_new ("abc", 3), zframe_new ("de\0f", 4)};
    rc = s_run_blobs (spec, blobs, 2, &result, error, sizeof error);
    s_expect ("blobs", rc, 0, error, NULL, verbose);
    char blob_dir[300] = "", first[16] = "";
    int count = 0, second = 0;
    assert (sscanf (json_string_value (result), "%d %299s %15s %d", &count, blob_dir, first,
                    &second) == 4);
    if (count != 2 || !streq (first, "abc") || second != 4 ||
        strncmp (blob_dir, "/tmp/gridq-job-42-", 18) != 0) {
        fprintf (stderr, "\nblobs: the handler saw '%s'\n", json_string_value (result));
        assert (false);
    }
    json_decref (result);
    assert (access (blob_dir, F_OK) != 0 && access (keep, F_OK) == 0);
    /* Without blobs, neither variable reaches the command, whatever the worker inherited. */
    setenv ("GRIDQ_BLOB_DIR", "/inherited", 1);
    rc = s_run_blobs ("t=printf 'x%s%sx' \"$GRIDQ_BLOB_DIR\" \"$GRIDQ_BLOBS\"", NULL, 0, &result,
                      error, sizeof error);
    unsetenv ("GRIDQ_BLOB_DIR");
    assert (rc == 0 && json_is_string (result) && streq (json_string_value (result), "xx"));
    json_decref (result);
    /* Where the files cannot be written, the job fails before the command starts. */
    const char *tmpdir = getenv ("TMPDIR");
    char *saved = tmpdir ? strdup (tmpdir) : NULL;
    setenv ("TMPDIR", "/nonexistent/gridq", 1);
    rc = s_run_blobs ("t=true", blobs, 2, &result, error, sizeof error);
    s_expect ("blobs, no folder", rc, GQ_EIO, error,
              "cannot make a folder for the job's blobs (/nonexistent/gridq/gridq-job-42-",
              verbose);
    if (saved) {
        setenv ("TMPDIR", saved, 1);
        free (saved);
    } else {
        unsetenv ("TMPDIR");
    }
    zframe_destroy (&blobs[0]);
    zframe_destroy (&blobs[1]);
    unlink (keep);

    /* Failures: exit status with stderr, a signal, a long stderr keeps its tail. */
    rc = s_run_spec ("t=echo starting; echo 'model file missing' >&2; exit 3", NULL, 5000, NULL,
                     &result, error, sizeof error);
    s_expect ("exit 3", rc, GQ_EBACKEND, error,
              "handler exited with status 3: model file missing", verbose);
    assert (!result);
    rc = s_run_spec ("t=kill -9 $$", NULL, 5000, NULL, &result, error, sizeof error);
    s_expect ("signal", rc, GQ_EBACKEND, error, "killed by signal 9", verbose);
    rc = s_run_spec ("t=i=0; while [ $i -lt 500 ]; do echo \"noise line $i\" >&2; i=$((i+1)); "
                     "done; echo 'the real reason' >&2; exit 1",
                     NULL, 10000, NULL, &result, error, sizeof error);
    s_expect ("long stderr", rc, GQ_EBACKEND, error, "noise line 499\nthe real reason", false);
    assert (!strstr (error, "noise line 1\n") &&
            strlen (error) < GQ_HANDLER_STDERR_TAIL_BYTES + 64);

    /* Output that cannot be a result. */
    rc = s_run_spec ("t=head -c 5000000 /dev/zero | tr '\\0' a", NULL, 10000, NULL, &result,
                     error, sizeof error);
    s_expect ("too much output", rc, GQ_ETOOBIG, error, "exceeds", verbose);
    rc = s_run_spec ("t=printf '\\377\\376'", NULL, 5000, NULL, &result, error, sizeof error);
    s_expect ("not utf-8", rc, GQ_EINVAL, error, "neither JSON nor UTF-8", verbose);

    /* A command that never reads its (large) input must not take the worker down (SIGPIPE). */
    char *big = malloc (1 << 20);
    memset (big, 'a', (1 << 20) - 1);
    big[(1 << 20) - 1] = 0;
    payload = json_string (big);
    free (big);
    rc = s_run_spec ("t=exit 0", payload, 5000, NULL, &result, error, sizeof error);
    s_expect ("unread input", rc, 0, error, NULL, verbose);
    json_decref (result);
    /* And one that reads it all gets it all. */
    rc = s_run_spec ("t=wc -c", payload, 5000, NULL, &result, error, sizeof error);
    s_expect ("wc", rc, 0, error, NULL, verbose);
    assert (json_integer_value (result) == (1 << 20) - 1 + 2); /* the quotes */
    json_decref (result);
    json_decref (payload);

    /* A background process left behind does not hold the job, and is killed. */
    snprintf (pidfile, sizeof pidfile, "%s/pids", dir);
    snprintf (spec, sizeof spec, "t=sleep 30 & echo $! > %s; echo done", pidfile);
    int64_t start = gq_mono_us ();
    rc = s_run_spec (spec, NULL, 20000, NULL, &result, error, sizeof error);
    s_expect ("straggler", rc, 0, error, NULL, verbose);
    assert (streq (json_string_value (result), "done"));
    assert (gq_mono_us () - start < 5000000);
    json_decref (result);
    pid_t pids[2];
    assert (s_read_pids (pidfile, pids, 1) == 1);
    assert (s_gone_within (pids[0], 2000));
    unlink (pidfile);

    /* Timeout: SIGTERM reaches the group; one that ignores it gets SIGKILL after the grace. */
    start = gq_mono_us ();
    rc = s_run_spec ("t=sleep 30", NULL, 200, NULL, &result, error, sizeof error);
    s_expect ("timeout", rc, GQ_ETIMEOUT, error, "timed out after 200 ms", verbose);
    assert (gq_mono_us () - start < 2000000);
    snprintf (spec, sizeof spec, "t=trap '' TERM; echo $$ > %s; while :; do sleep 1; done",
              pidfile);
    start = gq_mono_us ();
    rc = s_run_spec (spec, NULL, 300, NULL, &result, error, sizeof error);
    s_expect ("timeout, TERM ignored", rc, GQ_ETIMEOUT, error, "timed out after 300 ms", verbose);
    int64_t took = gq_mono_us () - start;
    assert (took >= (int64_t) GQ_HANDLER_GRACE_MS * 1000 && took < 8000000);
    assert (s_read_pids (pidfile, pids, 1) == 1);
    assert (s_gone_within (pids[0], 2000));
    unlink (pidfile);

    /* Cancel from another thread: the whole process group is gone afterwards. */
    snprintf (spec, sizeof spec, "t=sleep 30 & echo $$ $! > %s; wait", pidfile);
    gq_flag_t cancel = 0;
    s_async_t async = {.spec = spec, .cancel = &cancel};
    pthread_t thread;
    assert (pthread_create (&thread, NULL, s_async_run, &async) == 0);
    assert (s_read_pids (pidfile, pids, 2) == 2);
    assert (s_alive (pids[0]) && s_alive (pids[1]));
    cancel = 1;
    pthread_join (thread, NULL);
    s_expect ("cancel", async.rc, GQ_ESTATE, async.error, "cancelled", verbose);
    assert (!s_alive (pids[0])); /* the shell was reaped by the run */
    assert (s_gone_within (pids[1], 2000)); /* the background sleep, killed with its group */
    unlink (pidfile);
    rmdir (dir);
    if (verbose) {
        printf ("\n  ");
    }
}
