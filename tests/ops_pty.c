/*  ops_pty.c — a program on a pseudo-terminal (see ops_pty.h). */
#define _GNU_SOURCE
#include "ops_pty.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct _ops_pty_t {
    pid_t pid;       /* the child, 0 once reaped */
    int status;      /* its exit status once reaped */
    int fd;          /* the terminal's master side */
    char *buf;       /* all output so far, NUL-terminated */
    size_t size;     /* bytes in buf */
    size_t cap;      /* bytes allocated */
};

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

ops_pty_t *
ops_pty_start (int rows, int cols, char *const argv[])
{
    ops_pty_t *self = (ops_pty_t *) calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->cap = 65536;
    self->buf = (char *) malloc (self->cap);
    if (!self->buf) {
        free (self);
        return NULL;
    }
    self->buf[0] = 0;
    struct winsize size = {(unsigned short) rows, (unsigned short) cols, 0, 0};
    pid_t parent = getpid ();
    self->pid = forkpty (&self->fd, NULL, NULL, &size);
    if (self->pid < 0) {
        perror ("forkpty");
        free (self->buf);
        free (self);
        return NULL;
    }
    if (self->pid == 0) {
        /* Dies with the test, whatever happens to it. */
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent) {
            _exit (127);
        }
        setenv ("TERM", "xterm", 1);
        unsetenv ("LINES");
        unsetenv ("COLUMNS");
        signal (SIGINT, SIG_DFL);
        signal (SIGPIPE, SIG_DFL);
        execv (argv[0], argv);
        fprintf (stderr, "cannot run %s: %s\n", argv[0], strerror (errno));
        _exit (127);
    }
    fcntl (self->fd, F_SETFL, fcntl (self->fd, F_GETFL) | O_NONBLOCK);
    return self;
}

/* Reads what is there, waiting at most timeout_ms for the first byte. false at EOF. */
static bool
s_read (ops_pty_t *self, int timeout_ms)
{
    struct pollfd item = {self->fd, POLLIN, 0};
    if (poll (&item, 1, timeout_ms) <= 0) {
        return true;
    }
    while (true) {
        if (self->cap - self->size < 4096) {
            self->cap *= 2;
            char *bigger = (char *) realloc (self->buf, self->cap);
            if (!bigger) {
                return false;
            }
            self->buf = bigger;
        }
        ssize_t n = read (self->fd, self->buf + self->size, self->cap - self->size - 1);
        if (n > 0) {
            self->size += (size_t) n;
            self->buf[self->size] = 0;
            continue;
        }
        /* EAGAIN: all read; EIO or 0: the child closed the terminal. */
        return n < 0 && errno == EAGAIN;
    }
}

const char *
ops_pty_output (ops_pty_t *self)
{
    return self->buf;
}

size_t
ops_pty_size (ops_pty_t *self)
{
    return self->size;
}

bool
ops_pty_wait_for (ops_pty_t *self, size_t offset, const char *text, int timeout_ms)
{
    int64_t deadline = s_now_ms () + timeout_ms;
    while (true) {
        if (offset <= self->size && strstr (self->buf + offset, text)) {
            return true;
        }
        int64_t left = deadline - s_now_ms ();
        if (left <= 0) {
            return false;
        }
        if (!s_read (self, (int) (left < 100 ? left : 100))) {
            /* EOF: one last look. */
            return offset <= self->size && strstr (self->buf + offset, text);
        }
    }
}

void
ops_pty_type (ops_pty_t *self, const char *text)
{
    size_t len = strlen (text);
    if (write (self->fd, text, len) != (ssize_t) len) {
        perror ("ops_pty_type");
    }
}

void
ops_pty_resize (ops_pty_t *self, int rows, int cols)
{
    struct winsize size = {(unsigned short) rows, (unsigned short) cols, 0, 0};
    /* The kernel sends SIGWINCH to the terminal's foreground process group. */
    ioctl (self->fd, TIOCSWINSZ, &size);
}

int
ops_pty_wait_exit (ops_pty_t *self, int timeout_ms)
{
    int64_t deadline = s_now_ms () + timeout_ms;
    while (self->pid > 0) {
        int status;
        pid_t done = waitpid (self->pid, &status, WNOHANG);
        if (done == self->pid) {
            self->status = WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status);
            self->pid = 0;
            break;
        }
        int64_t left = deadline - s_now_ms ();
        if (left <= 0) {
            kill (self->pid, SIGKILL);
            waitpid (self->pid, &status, 0);
            self->pid = 0;
            return -1;
        }
        if (!s_read (self, (int) (left < 50 ? left : 50))) {
            /* The terminal closed: the child is about to be reaped; don't spin. */
            struct timespec pause = {0, 10 * 1000000};
            nanosleep (&pause, NULL);
        }
    }
    s_read (self, 0);
    return self->status;
}

void
ops_pty_destroy (ops_pty_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    ops_pty_t *self = *self_p;
    if (self->pid > 0) {
        kill (self->pid, SIGKILL);
        waitpid (self->pid, NULL, 0);
    }
    close (self->fd);
    free (self->buf);
    free (self);
    *self_p = NULL;
}

char *
ops_pty_plain (const char *text)
{
    char *plain = strdup (text);
    if (!plain) {
        return NULL;
    }
    size_t out = 0;
    for (size_t i = 0; text[i]; i++) {
        if (text[i] == '\033') {
            /* CSI: ESC [ params final; charset: ESC ( B; others: ESC and one more byte. */
            if (text[i + 1] == '[') {
                i += 2;
                while (text[i] && !(text[i] >= '@' && text[i] <= '~')) {
                    i++;
                }
            } else if ((text[i + 1] == '(' || text[i + 1] == ')') && text[i + 2]) {
                i += 2;
            } else if (text[i + 1]) {
                i++;
            }
            if (!text[i]) {
                break;
            }
            continue;
        }
        if (text[i] != '\r') {
            plain[out++] = text[i];
        }
    }
    plain[out] = 0;
    return plain;
}
