/*  tool.h — how the tools (gridq-keygen, gridq-model, gridq-top) report a failure: one message
    on stderr that starts with the program's name. */
#ifndef GQ_TOOL_H_INCLUDED
#define GQ_TOOL_H_INCLUDED

/* The name messages start with ("gridq-keygen"); set once in main, before any message. The
   string is borrowed and must outlive the program's messages. */
void tool_set_name (const char *name);
/* "NAME: MESSAGE" on stderr; returns 1, the exit code of a failure. */
int tool_fail (const char *format, ...) __attribute__ ((format (printf, 1, 2)));
/* "NAME: MESSAGE" and "Try 'NAME --help'." on stderr; returns 2, the exit code of a usage
   error. */
int tool_usage (const char *format, ...) __attribute__ ((format (printf, 1, 2)));

#endif
