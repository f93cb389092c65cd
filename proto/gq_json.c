/*  gq_json.c — JSON text written straight into a zchunk_t (gq_chunk_*) for hand-built messages. */
#include "gq_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "gq_check.h"

int
gq_chunk_printf (zchunk_t *chunk, const char *format, ...)
{
    char small[256];
    va_list args;
    va_start (args, format);
    int n = vsnprintf (small, sizeof small, format, args);
    va_end (args);
    if (n < 0) {
        return GQ_EINVAL;
    }
    if ((size_t) n < sizeof small) {
        zchunk_extend (chunk, small, (size_t) n);
        return GQ_OK;
    }
    char *large = (char *) malloc ((size_t) n + 1);
    if (!large) {
        return GQ_ENOMEM;
    }
    va_start (args, format);
    vsnprintf (large, (size_t) n + 1, format, args);
    va_end (args);
    zchunk_extend (chunk, large, (size_t) n);
    free (large);
    return GQ_OK;
}

void
gq_chunk_int (zchunk_t *chunk, int64_t value)
{
    char digits[24];
    char *p = digits + sizeof digits;
    uint64_t v = value < 0 ? 0 - (uint64_t) value : (uint64_t) value;
    do {
        *--p = (char) ('0' + v % 10);
        v /= 10;
    } while (v);
    if (value < 0) {
        *--p = '-';
    }
    zchunk_extend (chunk, p, (size_t) (digits + sizeof digits - p));
}

void
gq_chunk_ms (zchunk_t *chunk, double ms)
{
    int64_t us = ms > 0 ? (int64_t) (ms * 1000.0 + 0.5) : 0;
    char decimals[4] = {'.', (char) ('0' + us / 100 % 10), (char) ('0' + us / 10 % 10),
                        (char) ('0' + us % 10)};
    gq_chunk_int (chunk, us / 1000);
    zchunk_extend (chunk, decimals, sizeof decimals);
}

int
gq_chunk_string (zchunk_t *chunk, const char *text)
{
    json_t *string = text ? json_string (text) : NULL;
    int rc = string ? gq_chunk_json (chunk, string) : GQ_EINVAL;
    json_decref (string);
    return rc;
}

void
gq_chunk_quoted (zchunk_t *chunk, const char *text)
{
    if (gq_chunk_string (chunk, text)) {
        gq_chunk_raw (chunk, "null");
    }
}

void
gq_chunk_name (zchunk_t *chunk, const char *key, const char *name)
{
    if (key) {
        gq_chunk_raw (chunk, key);
    }
    if (name) {
        zchunk_extend (chunk, "\"", 1);
        gq_chunk_raw (chunk, name);
        zchunk_extend (chunk, "\"", 1);
    } else {
        zchunk_extend (chunk, "null", 4);
    }
}

void
gq_chunk_time (zchunk_t *chunk, const char *key, int64_t ms)
{
    char buf[GQ_TIME_BUF];
    gq_chunk_name (chunk, key, ms > 0 ? gq_format_time (ms, buf) : NULL);
}

int
gq_chunk_json (zchunk_t *chunk, const json_t *json)
{
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    char small[1024];
    size_t size = json_dumpb (json, small, sizeof small, flags);
    if (size == 0) {
        return GQ_EINVAL;
    }
    if (size <= sizeof small) {
        zchunk_extend (chunk, small, size);
        return GQ_OK;
    }
    char *large = (char *) malloc (size);
    if (!large) {
        return GQ_ENOMEM;
    }
    size_t again = json_dumpb (json, large, size, flags);
    if (again == size) {
        zchunk_extend (chunk, large, size);
    }
    free (large);
    return again == size ? GQ_OK : GQ_EINVAL;
}

/* ---- Selftest ------------------------------------------------------------------------------ */

/* Checks that chunk holds exactly expected, then empties it. */
static void
s_check_text (zchunk_t *chunk, const char *expected)
{
    zchunk_extend (chunk, "", 1);
    GQ_CHECK_STR ((const char *) zchunk_data (chunk), expected);
    zchunk_set (chunk, NULL, 0);
}

void
gq_json_test (bool verbose)
{
    zchunk_t *text = zchunk_new (NULL, 16);

    /* Raw and formatted text; formatted text longer than the stack buffer comes whole. */
    gq_chunk_raw (text, "{\"req\":");
    GQ_CHECK_EQ (gq_chunk_printf (text, "%d,\"x\":\"%s\"}", 7, "y"), GQ_OK);
    s_check_text (text, "{\"req\":7,\"x\":\"y\"}");
    char long_text[1000];
    memset (long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = 0;
    GQ_CHECK_EQ (gq_chunk_printf (text, "<%s>", long_text), GQ_OK);
    GQ_CHECK_EQ (zchunk_size (text), sizeof long_text + 1);
    zchunk_set (text, NULL, 0);

    /* Integers at the edges. */
    gq_chunk_int (text, 0);
    gq_chunk_raw (text, " ");
    gq_chunk_int (text, -42);
    gq_chunk_raw (text, " ");
    gq_chunk_int (text, INT64_MIN);
    gq_chunk_raw (text, " ");
    gq_chunk_int (text, INT64_MAX);
    s_check_text (text, "0 -42 -9223372036854775808 9223372036854775807");

    /* Milliseconds with three decimals, rounded to the microsecond; nothing below zero. */
    gq_chunk_ms (text, 0);
    gq_chunk_raw (text, " ");
    gq_chunk_ms (text, 12.5);
    gq_chunk_raw (text, " ");
    gq_chunk_ms (text, 0.0006);
    gq_chunk_raw (text, " ");
    gq_chunk_ms (text, 1500.0);
    gq_chunk_raw (text, " ");
    gq_chunk_ms (text, -3);
    gq_chunk_raw (text, " ");
    gq_chunk_ms (text, NAN);
    s_check_text (text, "0.000 12.500 0.001 1500.000 0.000 0.000");

    /* Strings: escaped by jansson; one that is not UTF-8 (or none) appends nothing, or null. */
    GQ_CHECK_EQ (gq_chunk_string (text, "say \"hi\"\n"), GQ_OK);
    s_check_text (text, "\"say \\\"hi\\\"\\n\"");
    GQ_CHECK_EQ (gq_chunk_string (text, "\xff"), GQ_EINVAL);
    GQ_CHECK_EQ (gq_chunk_string (text, NULL), GQ_EINVAL);
    GQ_CHECK_EQ (zchunk_size (text), 0);
    gq_chunk_quoted (text, "a\tb");
    gq_chunk_quoted (text, NULL);
    gq_chunk_quoted (text, "\xff");
    s_check_text (text, "\"a\\tb\"nullnull");

    /* Names and times, after their key. */
    gq_chunk_name (text, "{\"node\":", "gpu-1.a100");
    gq_chunk_name (text, ",\"model\":", NULL);
    gq_chunk_name (text, NULL, "echo");
    s_check_text (text, "{\"node\":\"gpu-1.a100\",\"model\":null\"echo\"");
    gq_chunk_time (text, "\"at\":", 1764411673123LL);
    gq_chunk_time (text, ",\"then\":", 0);
    s_check_text (text, "\"at\":\"2025-11-29T10:21:13.123Z\",\"then\":null");

    /* JSON values through jansson, small and large, and one jansson cannot write. */
    json_t *small = json_pack ("{s:s, s:[i, b, n]}", "a", "h\u00e9", "b", 1, 1);
    GQ_CHECK_EQ (gq_chunk_json (text, small), GQ_OK);
    s_check_text (text, "{\"a\":\"h\u00e9\",\"b\":[1,true,null]}");
    json_decref (small);
    char *huge = (char *) malloc (5000);
    assert (huge);
    memset (huge, 'x', 4999);
    huge[4999] = 0;
    json_t *large = json_string (huge);
    GQ_CHECK_EQ (gq_chunk_json (text, large), GQ_OK);
    GQ_CHECK_EQ (zchunk_size (text), 5001);
    zchunk_set (text, NULL, 0);
    json_decref (large);
    free (huge);
    json_t *bad = json_stringn_nocheck ("\xff", 1);
    GQ_CHECK_EQ (gq_chunk_json (text, bad), GQ_EINVAL);
    GQ_CHECK_EQ (zchunk_size (text), 0);
    json_decref (bad);

    zchunk_destroy (&text);
    (void) verbose;
}
