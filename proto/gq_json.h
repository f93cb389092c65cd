/*  gq_json.h — JSON text written straight into a zchunk_t, for the messages gridq builds by hand
    on its hot paths (JOB, RESULT, FINISHED; see gq_msg_new_raw) instead of building a json_t tree
    and dumping it. The caller lays out the fixed shape ("{\"id\":", ",\"state\":", "}") and these
    functions write the values. jansson stays the parser, and writes what needs escaping.

    The prefix is gq_chunk_, not the module's gq_json_: these are appends to a zchunk_t, named by
    what they append (gq_chunk_int, gq_chunk_time), and the names are the ones the broker and the
    worker already call; gq_json_ is taken by gq_msg's validated readers (gq_json_int ...). Each
    gq_chunk_WHAT (chunk, ...) appends to chunk, which the caller owns, and borrows the rest. A
    function that can fail returns 0 or a negative gq_err_t and then appends nothing; the others
    have nothing to report (zchunk_extend grows the chunk and reports no error either). */
#ifndef GQ_JSON_H_INCLUDED
#define GQ_JSON_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <string.h>

#include "gq_common.h"

/* Appends text as it is: the shape around values, or JSON text the caller vouches for (a stored
   payload or result). Inline so that the length of a literal is a constant. */
static inline void
gq_chunk_raw (zchunk_t *chunk, const char *text)
{
    zchunk_extend (chunk, text, strlen (text));
}

/* Appends printf-formatted text, all of it however long. 0, GQ_EINVAL when the format fails, or
   GQ_ENOMEM. */
int gq_chunk_printf (zchunk_t *chunk, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

/* Appends value in decimal. */
void gq_chunk_int (zchunk_t *chunk, int64_t value);

/* Appends a duration in milliseconds as a JSON number with three decimals (microseconds: what
   the clock gives), rounded; a negative duration or NaN is written 0.000. */
void gq_chunk_ms (zchunk_t *chunk, double ms);

/* Appends text as a JSON string, escaped by jansson. 0, or GQ_EINVAL when text is NULL or not
   UTF-8, or GQ_ENOMEM. */
int gq_chunk_string (zchunk_t *chunk, const char *text);

/* Appends text as a JSON string, escaped, or null when text is NULL or cannot be written (not
   UTF-8). */
void gq_chunk_quoted (zchunk_t *chunk, const char *text);

/* Appends key (the text before the value, e.g. ",\"node\":"; NULL for none), then name in quotes
   or null when name is NULL. Not escaped: for names checked on entry (gq_valid_name,
   gq_valid_kind), which hold nothing that needs it. */
void gq_chunk_name (zchunk_t *chunk, const char *key, const char *name);

/* Appends key (as for gq_chunk_name), then the wall-clock time ms (milliseconds since the Unix
   epoch) as an RFC 3339 UTC string with milliseconds, "2026-11-29T10:21:13.123Z" (gq_format_time),
   or null when ms <= 0 (not set). */
void gq_chunk_time (zchunk_t *chunk, const char *key, int64_t ms);

/* Appends json (any value) as compact text, through jansson's json_dumpb. 0, GQ_EINVAL when json
   cannot be written (a string that is not UTF-8), or GQ_ENOMEM. */
int gq_chunk_json (zchunk_t *chunk, const json_t *json);

void gq_json_test (bool verbose);

#endif
