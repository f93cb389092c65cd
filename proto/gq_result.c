/*  gq_result.c — the fixed shape of a worker's RESULT for jobs that succeeded (gq_result.h). */
#include "gq_result.h"
#include "gq_check.h"
#include "gq_json.h"
#include "gq_msg.h"

#include <math.h>

void
gq_result_head (zchunk_t *chunk, int64_t id, int64_t attempt, bool ok, double ms, int64_t at)
{
    gq_chunk_raw (chunk, "{\"id\":");
    gq_chunk_int (chunk, id);
    gq_chunk_raw (chunk, ",\"attempt\":");
    gq_chunk_int (chunk, attempt);
    gq_chunk_raw (chunk, ok ? ",\"ok\":true,\"ms\":" : ",\"ok\":false,\"ms\":");
    gq_chunk_ms (chunk, ms);
    gq_chunk_raw (chunk, ",\"at\":");
    gq_chunk_int (chunk, at);
}

/* ---- The scanner: each step moves *p past what it read, or returns false ------------------ */

typedef struct {
    const char *p;   /* next byte */
    const char *end; /* one past the text */
} s_text_t;

static bool
s_literal (s_text_t *text, const char *literal, size_t size)
{
    if ((size_t) (text->end - text->p) < size || memcmp (text->p, literal, size) != 0) {
        return false;
    }
    text->p += size;
    return true;
}

#define S_LITERAL(text, literal) s_literal (text, literal, sizeof literal - 1)

/* Digits as JSON writes an integer part: 0, or 1-9 then digits; at most 18, so no overflow. */
static bool
s_digits (s_text_t *text, int64_t *value, int *count)
{
    const char *start = text->p;
    int64_t v = 0;
    while (text->p < text->end && *text->p >= '0' && *text->p <= '9' && text->p - start < 18) {
        v = v * 10 + (*text->p++ - '0');
    }
    *count = (int) (text->p - start);
    *value = v;
    bool more = text->p < text->end && *text->p >= '0' && *text->p <= '9';
    return *count > 0 && !more && !(*start == '0' && *count > 1);
}

static bool
s_integer (s_text_t *text, int64_t *value)
{
    bool negative = text->p < text->end && *text->p == '-';
    text->p += negative;
    int count;
    if (!s_digits (text, value, &count)) {
        return false;
    }
    *value = negative ? -*value : *value;
    return true;
}

/* A number with an optional fraction and no exponent (what gq_chunk_ms writes). */
static bool
s_number (s_text_t *text, double *value)
{
    bool negative = text->p < text->end && *text->p == '-';
    text->p += negative;
    int64_t whole, fraction = 0;
    int count, places = 0;
    if (!s_digits (text, &whole, &count)) {
        return false;
    }
    if (text->p < text->end && *text->p == '.') {
        text->p++;
        const char *start = text->p;
        while (text->p < text->end && *text->p >= '0' && *text->p <= '9' && places < 18) {
            fraction = fraction * 10 + (*text->p++ - '0');
            places++;
        }
        if (text->p == start || (text->p < text->end && *text->p >= '0' && *text->p <= '9')) {
            return false;
        }
    }
    *value = ((double) whole + (double) fraction / pow (10, places)) * (negative ? -1 : 1);
    return true;
}

/* R: an object or array, checked by jansson and left as text. */
static bool
s_value (s_text_t *text, int max_depth, const char **value, size_t *size)
{
    if (text->p >= text->end || (*text->p != '{' && *text->p != '[')) {
        return false;
    }
    json_error_t error;
    json_t *tree = json_loadb (text->p, (size_t) (text->end - text->p),
                               JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &error);
    if (!tree) {
        return false;
    }
    bool ok = gq_json_depth (tree) <= max_depth && error.position > 0 &&
              error.position <= text->end - text->p;
    json_decref (tree);
    if (ok) {
        *value = text->p;
        *size = (size_t) error.position; /* with JSON_DISABLE_EOF_CHECK: the bytes it read */
        text->p += error.position;
    }
    return ok;
}

bool
gq_result_scan (const char *text, size_t size, int max_depth, char *node, size_t node_size,
                gq_result_entry_t *entries, size_t max, size_t *count)
{
    s_text_t t = {text, text + size};
    *count = 0;
    /* JSON text has no NUL byte (jansson writes one in a string as \u0000), and jansson reads one
       after a number inside a value as nothing at all: such text is left to the parser, which
       refuses it. */
    if (memchr (text, 0, size) || !S_LITERAL (&t, "{\"node\":\"")) {
        return false;
    }
    const char *name = t.p;
    while (t.p < t.end && *t.p != '"' && (size_t) (t.p - name) < node_size) {
        t.p++;
    }
    size_t name_size = (size_t) (t.p - name);
    if (t.p >= t.end || name_size >= node_size) {
        return false;
    }
    memcpy (node, name, name_size);
    node[name_size] = 0;
    if (strlen (node) != name_size || !gq_valid_name (node, node_size) ||
        !S_LITERAL (&t, "\",\"results\":[")) {
        return false;
    }
    if (S_LITERAL (&t, "]}")) {
        return t.p == t.end;
    }
    do {
        if (*count == max) {
            return false;
        }
        gq_result_entry_t *e = &entries[*count];
        if (!S_LITERAL (&t, "{\"id\":") || !s_integer (&t, &e->id) ||
            !S_LITERAL (&t, ",\"attempt\":") || !s_integer (&t, &e->attempt) ||
            !S_LITERAL (&t, ",\"ok\":true,\"ms\":") || !s_number (&t, &e->ms) ||
            !S_LITERAL (&t, ",\"at\":") || !s_integer (&t, &e->at) ||
            !S_LITERAL (&t, ",\"result\":") ||
            !s_value (&t, max_depth, &e->result, &e->result_size) || !S_LITERAL (&t, "}")) {
            return false;
        }
        (*count)++;
    } while (S_LITERAL (&t, ","));
    return S_LITERAL (&t, "]}") && t.p == t.end;
}

/* ---- Selftest ------------------------------------------------------------------------------ */

static bool
s_scan (const char *text, gq_result_entry_t *entries, size_t max, size_t *count)
{
    char node[GQ_NAME_MAX];
    return gq_result_scan (text, strlen (text), 4, node, sizeof node, entries, max, count);
}

void
gq_result_test (bool verbose)
{
    (void) verbose;
    /* What the worker writes scans, and gives back what it wrote. */
    zchunk_t *chunk = zchunk_new (NULL, 256);
    gq_chunk_raw (chunk, "{\"node\":\"gpu-7\",\"results\":[");
    gq_result_head (chunk, 42, 1, true, 12.5, 1765000000123);
    gq_chunk_raw (chunk, ",\"result\":{\"x\":[1,2,{\"y\":\"\\u00e9\\\"}\"}],\"z\":\"\xc3\xa9\"}},");
    gq_result_head (chunk, 9007199254740993, 3, true, 0.0004, 0);
    gq_chunk_raw (chunk, ",\"result\":[]}]}");
    char node[GQ_NAME_MAX];
    gq_result_entry_t entries[4];
    size_t count;
    GQ_CHECK_EQ (gq_result_scan ((const char *) zchunk_data (chunk), zchunk_size (chunk), 4, node,
                                 sizeof node, entries, 4, &count),
                 true);
    GQ_CHECK_STR (node, "gpu-7");
    GQ_CHECK_EQ (count, 2);
    GQ_CHECK_EQ (entries[0].id, 42);
    GQ_CHECK_EQ (entries[0].attempt, 1);
    GQ_CHECK_EQ (entries[0].ms * 1000, 12500);
    GQ_CHECK_EQ (entries[0].at, 1765000000123);
    /* R is the bytes it came as, multi-byte characters and escapes included. */
    const char *first = "{\"x\":[1,2,{\"y\":\"\\u00e9\\\"}\"}],\"z\":\"\xc3\xa9\"}";
    GQ_CHECK_EQ (entries[0].result_size, strlen (first));
    GQ_CHECK_EQ (memcmp (entries[0].result, first, strlen (first)), 0);
    GQ_CHECK_EQ (entries[1].id, 9007199254740993);
    GQ_CHECK_EQ (entries[1].attempt, 3);
    GQ_CHECK_EQ (round (entries[1].ms * 1000), 0);
    GQ_CHECK_EQ (entries[1].result_size, 2);
    GQ_CHECK_EQ (memcmp (entries[1].result, "[]", 2), 0);
    /* Every prefix of it is not the shape (a message cut anywhere falls back, and is refused by
       the parser then). */
    for (size_t cut = 0; cut < zchunk_size (chunk); cut++) {
        GQ_CHECK_EQ (gq_result_scan ((const char *) zchunk_data (chunk), cut, 4, node,
                                     sizeof node, entries, 4, &count),
                     false);
    }
    /* More entries than room: not scanned. */
    GQ_CHECK_EQ (gq_result_scan ((const char *) zchunk_data (chunk), zchunk_size (chunk), 4, node,
                                 sizeof node, entries, 1, &count),
                 false);
    zchunk_destroy (&chunk);

    GQ_CHECK_EQ (s_scan ("{\"node\":\"w\",\"results\":[]}", entries, 4, &count), true);
    GQ_CHECK_EQ (count, 0);
    const char *ok_entry = "{\"id\":1,\"attempt\":1,\"ok\":true,\"ms\":1,\"at\":5,\"result\":{}}";
    char text[512];
    snprintf (text, sizeof text, "{\"node\":\"w\",\"results\":[%s]}", ok_entry);
    GQ_CHECK_EQ (s_scan (text, entries, 4, &count), true);
    GQ_CHECK_EQ (entries[0].ms, 1);
    /* Any other shape is left to the parser: valid JSON all of it, but not this shape. */
    const char *others[] = {
        "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":false,\"ms\":1,\"at\":5,"
        "\"error\":\"boom\"}]}",
        "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":true,\"ms\":1,\"at\":5,"
        "\"result\":7}]}",
        "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":true,\"ms\":1,\"at\":5,"
        "\"result\":{},\"blobs\":[0,1]}]}",
        "{\"node\":\"w\",\"results\":[{\"attempt\":1,\"id\":1,\"ok\":true,\"ms\":1,\"at\":5,"
        "\"result\":{}}]}",
        "{\"node\":\"w\", \"results\":[]}",
        "{\"results\":[],\"node\":\"w\"}",
        "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":true,\"ms\":1e3,\"at\":5,"
        "\"result\":{}}]}",
        "{\"node\":\"w\",\"results\":[{\"id\":01,\"attempt\":1,\"ok\":true,\"ms\":1,\"at\":5,"
        "\"result\":{}}]}",
        "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":true,\"ms\":1.,\"at\":5,"
        "\"result\":{}}]}",
        "{\"node\":\"w\",\"results\":[{\"id\":1234567890123456789,\"attempt\":1,\"ok\":true,"
        "\"ms\":1,\"at\":5,\"result\":{}}]}",
        /* Too deep for max_depth 4; a duplicate key; not UTF-8; a bad name; trailing bytes. */
        "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":true,\"ms\":1,\"at\":5,"
        "\"result\":[[[[[1]]]]]}]}",
        "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":true,\"ms\":1,\"at\":5,"
        "\"result\":{\"a\":1,\"a\":2}}]}",
        "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":true,\"ms\":1,\"at\":5,"
        "\"result\":{\"a\":\"\xff\"}}]}",
        "{\"node\":\"a b\",\"results\":[]}",
        "{\"node\":\"w\",\"results\":[]} ",
    };
    /* A NUL byte anywhere: in the name, or after a number in R. */
    const char nul_name[] = "{\"node\":\"w1\0x\",\"results\":[]}";
    GQ_CHECK_EQ (gq_result_scan (nul_name, sizeof nul_name - 1, 4, node, sizeof node, entries, 4,
                                 &count),
                 false);
    const char nul_value[] = "{\"node\":\"w\",\"results\":[{\"id\":1,\"attempt\":1,\"ok\":true,"
                             "\"ms\":1,\"at\":5,\"result\":{\"a\":1\0}}]}";
    GQ_CHECK_EQ (gq_result_scan (nul_value, sizeof nul_value - 1, 4, node, sizeof node, entries,
                                 4, &count),
                 false);
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        if (s_scan (others[i], entries, 4, &count)) {
            fprintf (stderr, "scanned, but should not: %s\n", others[i]);
            abort ();
        }
    }
}
