/*  gq_common.c — error names and reasons, clocks, time formatting, number, size and duration
    parsing. */
#include "gq_common.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const struct {
    int code;
    const char *name;
    const char *text;
} s_errors[] = {
    {GQ_OK, "OK", "success"},
    {GQ_EINVAL, "BAD_REQUEST", "invalid request"},
    {GQ_ENOMEM, "NO_MEMORY", "out of memory"},
    {GQ_EPROTO, "PROTOCOL", "protocol violation"},
    {GQ_ETOOBIG, "TOO_BIG", "message or field too large"},
    {GQ_ETIMEOUT, "TIMEOUT", "timed out"},
    {GQ_ENOTFOUND, "NOT_FOUND", "not found"},
    {GQ_ESTORE, "STORE", "store failure"},
    {GQ_EBACKEND, "BACKEND", "compute backend failure"},
    {GQ_ERATE, "RATE_LIMITED", "rate limited"},
    {GQ_EDENIED, "DENIED", "not allowed for this role"},
    {GQ_ESTATE, "BAD_STATE", "wrong state for this operation"},
    {GQ_EIO, "IO", "input/output error"},
    {GQ_EMODEL, "BAD_MODEL", "malformed model"},
    {GQ_EUNSUPPORTED, "UNSUPPORTED", "not supported"},
};
#define S_NERRORS (sizeof s_errors / sizeof s_errors[0])

const char *
gq_strerror (int err)
{
    for (size_t i = 0; i < S_NERRORS; i++) {
        if (s_errors[i].code == err) {
            return s_errors[i].text;
        }
    }
    return "unknown error";
}

const char *
gq_errname (int err)
{
    for (size_t i = 0; i < S_NERRORS; i++) {
        if (s_errors[i].code == err) {
            return s_errors[i].name;
        }
    }
    return "PROTOCOL";
}

int
gq_err_from_name (const char *name)
{
    for (size_t i = 0; name && i < S_NERRORS; i++) {
        if (strcmp (s_errors[i].name, name) == 0) {
            return s_errors[i].code;
        }
    }
    return GQ_EPROTO;
}

int
gq_why (char *why, size_t whylen, int code, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (why, whylen, format, args);
    va_end (args);
    return code;
}

int64_t
gq_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
gq_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *
gq_format_time (int64_t ms, char *buf)
{
    if (ms <= 0) {
        buf[0] = 0;
        return buf;
    }
    /* The date and time of day change once a second: keep the last one per thread, since the
       broker formats three timestamps per finished job. */
    static __thread int64_t cached_secs = -1;
    static __thread char cached[24];
    int64_t secs = ms / 1000;
    if (secs != cached_secs) {
        time_t t = (time_t) secs;
        struct tm tm;
        gmtime_r (&t, &tm);
        strftime (cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_secs = secs;
    }
    size_t n = strlen (cached);
    memcpy (buf, cached, n);
    int frac = (int) (ms % 1000);
    buf[n] = '.';
    buf[n + 1] = (char) ('0' + frac / 100);
    buf[n + 2] = (char) ('0' + frac / 10 % 10);
    buf[n + 3] = (char) ('0' + frac % 10);
    buf[n + 4] = 'Z';
    buf[n + 5] = 0;
    return buf;
}

int
gq_parse_int (const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || end == text || *end || value < lo || value > hi) {
        return GQ_EINVAL;
    }
    *out = value;
    return GQ_OK;
}

/* Parses a non-negative decimal number followed by an optional suffix; returns the suffix. */
static const char *
s_parse_number (const char *text, double *value)
{
    if (!text || !*text || !(isdigit ((unsigned char) *text) || *text == '.')) {
        return NULL;
    }
    char *end;
    errno = 0;
    *value = strtod (text, &end);
    if (errno || end == text || !isfinite (*value) || *value < 0) {
        return NULL;
    }
    return end;
}

int
gq_parse_size_mb (const char *text, int64_t *mb)
{
    double v;
    const char *suffix = s_parse_number (text, &v);
    if (!suffix) {
        return GQ_EINVAL;
    }
    double scale;
    if (!*suffix || strcasecmp (suffix, "M") == 0 || strcasecmp (suffix, "MB") == 0 ||
        strcasecmp (suffix, "MiB") == 0) {
        scale = 1;
    } else if (strcasecmp (suffix, "G") == 0 || strcasecmp (suffix, "GB") == 0 ||
               strcasecmp (suffix, "GiB") == 0) {
        scale = 1024;
    } else if (strcasecmp (suffix, "T") == 0 || strcasecmp (suffix, "TB") == 0 ||
               strcasecmp (suffix, "TiB") == 0) {
        scale = 1024 * 1024;
    } else {
        return GQ_EINVAL;
    }
    double r = v * scale;
    if (r > (double) GQ_MAX_VRAM_MB) {
        return GQ_EINVAL;
    }
    *mb = (int64_t) llround (r);
    return GQ_OK;
}

int
gq_parse_duration_ms (const char *text, int64_t *ms)
{
    double v;
    const char *suffix = s_parse_number (text, &v);
    if (!suffix) {
        return GQ_EINVAL;
    }
    double scale;
    if (strcmp (suffix, "ms") == 0) {
        scale = 1;
    } else if (!*suffix || strcmp (suffix, "s") == 0) {
        scale = 1000;
    } else if (strcmp (suffix, "m") == 0 || strcmp (suffix, "min") == 0) {
        scale = 60000;
    } else if (strcmp (suffix, "h") == 0) {
        scale = 3600000;
    } else if (strcmp (suffix, "d") == 0) {
        scale = 86400000;
    } else {
        return GQ_EINVAL;
    }
    double r = v * scale;
    if (r > 1e15) {
        return GQ_EINVAL;
    }
    *ms = (int64_t) llround (r);
    return GQ_OK;
}

int
gq_loopback_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (fd >= 0 && bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0 &&
        getsockname (fd, (struct sockaddr *) &addr, &len) == 0) {
        port = ntohs (addr.sin_port);
    }
    if (fd >= 0) {
        close (fd);
    }
    return port;
}

int
gq_parse_host_port (const char *text, const char *option, int example_port,
                    struct sockaddr_in *addr, char *why, size_t whylen)
{
    char example[96];
    snprintf (example, sizeof example, "e.g. 127.0.0.1:%d, or 0.0.0.0:%d for every interface",
              example_port, example_port);
    const char *colon = strrchr (text, ':');
    if (!colon || colon == text) {
        return gq_why (why, whylen, GQ_EINVAL, "%s \"%s\" is not HOST:PORT (%s)", option, text,
                       example);
    }
    char host[64];
    size_t hostlen = (size_t) (colon - text);
    if (hostlen >= sizeof host) {
        return gq_why (why, whylen, GQ_EINVAL, "%s \"%s\": the host is too long (%s)", option,
                       text, example);
    }
    memcpy (host, text, hostlen);
    host[hostlen] = 0;
    char *end;
    errno = 0;
    long port = strtol (colon + 1, &end, 10);
    if (colon[1] == 0 || *end || errno || port < 1 || port > 65535) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "%s \"%s\": the port must be a number in 1..65535 (%s)", option, text,
                       example);
    }
    memset (addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons ((uint16_t) port);
    if (strcmp (host, "localhost") == 0) {
        addr->sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    } else if (inet_pton (AF_INET, host, &addr->sin_addr) != 1) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "%s \"%s\": the host must be an IPv4 address or localhost, not a name "
                       "or an IPv6 address (%s)",
                       option, text, example);
    }
    return 0;
}

void
gq_explain_bind (const struct sockaddr_in *addr, const char *host_port, const char *what,
                 char *why, size_t whylen)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    int one = 1;
    const char *reason = "libmicrohttpd could not start";
    if (fd >= 0) {
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind (fd, (const struct sockaddr *) addr, sizeof *addr) < 0) {
            reason = strerror (errno);
        }
        close (fd);
    }
    snprintf (why, whylen, "cannot serve %s on %s: %s%s", what, host_port, reason,
              strstr (reason, "in use") ? " (is another server there?)" : "");
}

static bool
s_valid_chars (const char *s, size_t max, const char *extra, bool upper)
{
    if (!s || !*s) {
        return false;
    }
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        unsigned char c = (unsigned char) *p;
        if (n + 1 >= max) {
            return false;
        }
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (upper && c >= 'A' && c <= 'Z') ||
            (c && strchr (extra, c))) {
            continue;
        }
        return false;
    }
    return true;
}

bool
gq_valid_kind (const char *s)
{
    return s_valid_chars (s, GQ_KIND_MAX, "_.-", false);
}

bool
gq_valid_name (const char *s, size_t max)
{
    return s_valid_chars (s, max, "_.:@+-", true);
}

/* ---- Selftest ------------------------------------------------------------------------------ */
#include <assert.h>

void
gq_common_test (bool verbose)
{
    int64_t v;
    assert (gq_parse_int ("42", 1, 100, &v) == 0 && v == 42);
    assert (gq_parse_int ("-7", -10, 10, &v) == 0 && v == -7);
    assert (gq_parse_int ("101", 1, 100, &v) == GQ_EINVAL && v == -7);
    assert (gq_parse_int ("4x", 1, 100, &v) == GQ_EINVAL);
    assert (gq_parse_int ("", 1, 100, &v) == GQ_EINVAL);
    assert (gq_parse_int ("99999999999999999999", 0, INT64_MAX, &v) == GQ_EINVAL);
    assert (gq_parse_size_mb ("512M", &v) == 0 && v == 512);
    assert (gq_parse_size_mb ("24G", &v) == 0 && v == 24576);
    assert (gq_parse_size_mb ("1.5G", &v) == 0 && v == 1536);
    assert (gq_parse_size_mb ("100", &v) == 0 && v == 100);
    assert (gq_parse_size_mb ("1T", &v) == 0 && v == 1048576);
    assert (gq_parse_size_mb ("-1G", &v) == GQ_EINVAL);
    assert (gq_parse_size_mb ("12Q", &v) == GQ_EINVAL);
    assert (gq_parse_size_mb ("", &v) == GQ_EINVAL);
    assert (gq_parse_size_mb ("nan", &v) == GQ_EINVAL);
    assert (gq_parse_duration_ms ("30s", &v) == 0 && v == 30000);
    assert (gq_parse_duration_ms ("250ms", &v) == 0 && v == 250);
    assert (gq_parse_duration_ms ("7d", &v) == 0 && v == 604800000);
    assert (gq_parse_duration_ms ("2", &v) == 0 && v == 2000);
    assert (gq_parse_duration_ms ("5m", &v) == 0 && v == 300000);
    assert (gq_parse_duration_ms ("5x", &v) == GQ_EINVAL);
    char why[16];
    assert (gq_why (why, sizeof why, GQ_EMODEL, "layer %d of %s", 3, "a long name") == GQ_EMODEL);
    assert (strcmp (why, "layer 3 of a lo") == 0);
    char buf[GQ_TIME_BUF];
    assert (strcmp (gq_format_time (1764411673123LL, buf), "2025-11-29T10:21:13.123Z") == 0);
    assert (strcmp (gq_format_time (0, buf), "") == 0);
    assert (gq_valid_kind ("echo") && !gq_valid_kind ("Echo") && !gq_valid_kind (""));
    assert (gq_valid_name ("gpu-1.a100", GQ_NAME_MAX) && !gq_valid_name ("a b", GQ_NAME_MAX));
    assert (!gq_valid_name ("../x", GQ_NAME_MAX));
    assert (strcmp (gq_errname (GQ_ERATE), "RATE_LIMITED") == 0);
    assert (gq_err_from_name ("RATE_LIMITED") == GQ_ERATE);
    assert (gq_now_ms () > 1700000000000LL);
    assert (gq_mono_us () > 0);
    int port = gq_loopback_port ();
    assert (port > 0 && port < 65536);
    (void) verbose;
}
