/*  tool.c — how the tools report a failure (see tool.h). */
#include "tool.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static const char *s_name = "gridq"; /* set by tool_set_name */

void
tool_set_name (const char *name)
{
    s_name = name;
}

/* "NAME: MESSAGE" on stderr, and where to read more when help. */
static void
s_say (bool help, const char *format, va_list args)
{
    fprintf (stderr, "%s: ", s_name);
    vfprintf (stderr, format, args);
    fputc ('\n', stderr);
    if (help) {
        fprintf (stderr, "Try '%s --help'.\n", s_name);
    }
}

int
tool_fail (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_say (false, format, args);
    va_end (args);
    return 1;
}

int
tool_usage (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_say (true, format, args);
    va_end (args);
    return 2;
}
