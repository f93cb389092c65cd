/*  ops_pty.h — runs a program on a pseudo-terminal for the operator-facing tests: what a person
    at a terminal would see (gridq-top's screen, gridq's progress line), keys typed, window
    resized, Ctrl-C pressed; every wait bounded. The child dies with the test (PDEATHSIG). */
#ifndef OPS_PTY_H_INCLUDED
#define OPS_PTY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct _ops_pty_t ops_pty_t;

/* Starts argv[0] (a path) with argv on a new terminal of rows x cols, TERM=xterm, stdin, stdout
   and stderr on the terminal. NULL when the terminal cannot be made. */
ops_pty_t *ops_pty_start (int rows, int cols, char *const argv[]);
/* Kills the child (if it still runs) and frees everything. Safe twice. */
void ops_pty_destroy (ops_pty_t **self_p);
/* Everything the program wrote so far (NUL-terminated, escape sequences included). */
const char *ops_pty_output (ops_pty_t *self);
size_t ops_pty_size (ops_pty_t *self);
/* Reads output until text appears at or after offset, at most timeout_ms. */
bool ops_pty_wait_for (ops_pty_t *self, size_t offset, const char *text, int timeout_ms);
/* Types text (a key, "\003" for Ctrl-C). */
void ops_pty_type (ops_pty_t *self, const char *text);
/* Resizes the terminal (the child gets SIGWINCH). */
void ops_pty_resize (ops_pty_t *self, int rows, int cols);
/* Reads output until the child exits, at most timeout_ms: its exit status (128 + signal when
   killed), or -1 on timeout (the child is then killed). */
int ops_pty_wait_exit (ops_pty_t *self, int timeout_ms);
/* The text with escape sequences and carriage returns removed, for messages (malloc'd). */
char *ops_pty_plain (const char *text);

#endif
