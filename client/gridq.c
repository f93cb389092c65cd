/*  gridq.c — the gridq command-line client: submit jobs, follow them, inspect the fleet.

    One function per command over the client API (proto/gq_client.h); this file parses
    arguments and prints, nothing else. Exit codes, the same for every command:
        0  success
        1  a job failed, was cancelled, is not done (or is unknown)
        2  usage error: bad option, bad value, invalid job (nothing was sent)
        3  the broker is unreachable or did not answer in time
        4  the broker refused the request (an ERROR reply) */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gq_arrayview.h"
#include "gq_client.h"
#include "gq_spec.h"
#include "tuning.h"

#ifndef GQ_VERSION
#define GQ_VERSION "0.1.0"
#endif

enum {
    S_EXIT_OK = 0,      /* success */
    S_EXIT_JOB = 1,     /* a job failed, was cancelled or is not done */
    S_EXIT_USAGE = 2,   /* bad command line; nothing was sent */
    S_EXIT_BROKER = 3,  /* broker unreachable or silent */
    S_EXIT_REFUSED = 4  /* the broker answered ERROR */
};

typedef struct {
    gq_client_opts_t opts;  /* from the global options */
    const char *command;    /* the command being run, for messages */
} s_globals_t;

static s_globals_t s_g;

/* ---- Messages ------------------------------------------------------------------------------ */

static int
s_usage (const char *format, ...) __attribute__ ((format (printf, 1, 2)));

/* A usage error: what is wrong, and where to read more. Returns the exit code. */
static int
s_usage (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    const char *command = s_g.command ? s_g.command : "";
    const char *space = s_g.command ? " " : "";
    fprintf (stderr, "gridq%s%s: ", space, command);
    vfprintf (stderr, format, args);
    va_end (args);
    fprintf (stderr, "\nTry 'gridq%s%s --help'.\n", space, command);
    return S_EXIT_USAGE;
}

static void
s_warn (const char *format, ...) __attribute__ ((format (printf, 1, 2)));

static void
s_warn (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    fprintf (stderr, "gridq: ");
    vfprintf (stderr, format, args);
    va_end (args);
    fputc ('\n', stderr);
}

/* The exit code of a failed call: silence is 3, a refusal is 4. */
static int
s_failed_code (gq_client_t *client)
{
    int code = gq_client_errcode (client);
    return code == GQ_ETIMEOUT || code == GQ_EIO ? S_EXIT_BROKER : S_EXIT_REFUSED;
}

/* Reports a failed call; returns its exit code. */
static int
s_call_failed (gq_client_t *client)
{
    s_warn ("%s", gq_client_error (client));
    return s_failed_code (client);
}

static gq_client_t *
s_connect (int *exit_code)
{
    char why[512];
    gq_client_t *client = gq_client_new (&s_g.opts, why, sizeof why);
    if (!client) {
        s_warn ("%s", why);
        *exit_code = S_EXIT_USAGE;
    }
    return client;
}

/* ---- Values -------------------------------------------------------------------------------- */

static bool
s_parse_int (const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll (text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

static bool
s_parse_double (const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod (text, &end);
    if (errno || end == text || *end || !isfinite (v)) {
        return false;
    }
    *out = v;
    return true;
}

/* Job ids from the positional arguments; every one must be a positive integer. */
static int
s_parse_ids (int argc, char **argv, int64_t **ids, size_t *count)
{
    *count = 0;
    *ids = NULL;
    if (argc <= 0) {
        return s_usage ("missing job id");
    }
    *ids = (int64_t *) malloc ((size_t) argc * sizeof **ids);
    if (!*ids) {
        return s_usage ("out of memory");
    }
    for (int i = 0; i < argc; i++) {
        if (!s_parse_int (argv[i], 1, INT64_MAX, &(*ids)[i])) {
            free (*ids);
            *ids = NULL;
            return s_usage ("\"%s\" is not a job id (a positive integer)", argv[i]);
        }
    }
    *count = (size_t) argc;
    return S_EXIT_OK;
}

static const char *
s_str (json_t *obj, const char *key, const char *dflt)
{
    const char *value = json_string_value (json_object_get (obj, key));
    return value && *value ? value : dflt;
}

static int64_t
s_int (json_t *obj, const char *key, int64_t dflt)
{
    json_t *value = json_object_get (obj, key);
    if (json_is_integer (value)) {
        return (int64_t) json_integer_value (value);
    }
    return json_is_real (value) ? (int64_t) json_real_value (value) : dflt;
}

/* RFC 3339 UTC with milliseconds -> ms since the epoch; 0 when absent or unreadable. */
static int64_t
s_parse_time (const char *text)
{
    struct tm tm = {0};
    int ms = 0;
    if (!text || sscanf (text, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                         &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6) {
        return 0;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t) timegm (&tm) * 1000 + ms;
}

/* "2026-11-29 10:21:13" from an RFC 3339 timestamp (UTC, to the second), or "-". */
static const char *
s_short_time (json_t *obj, const char *key, char *buf, size_t size)
{
    const char *text = s_str (obj, key, NULL);
    if (!text || strlen (text) < 19) {
        return "-";
    }
    snprintf (buf, size, "%.10s %.8s", text, text + 11);
    return buf;
}

static const char *
s_format_duration (int64_t ms, char *buf, size_t size)
{
    if (ms < 0) {
        snprintf (buf, size, "-");
    } else if (ms < 1000) {
        snprintf (buf, size, "%lldms", (long long) ms);
    } else if (ms < 60000) {
        snprintf (buf, size, "%.1fs", ms / 1000.0);
    } else if (ms < 3600000) {
        snprintf (buf, size, "%lldm%02llds", (long long) (ms / 60000),
                  (long long) (ms / 1000 % 60));
    } else {
        snprintf (buf, size, "%lldh%02lldm", (long long) (ms / 3600000),
                  (long long) (ms / 60000 % 60));
    }
    return buf;
}

static const char *
s_format_mb (int64_t mb, char *buf, size_t size)
{
    if (mb < 1024) {
        snprintf (buf, size, "%lldM", (long long) mb);
    } else if (mb % 1024 == 0) {
        snprintf (buf, size, "%lldG", (long long) (mb / 1024));
    } else {
        snprintf (buf, size, "%.1fG", mb / 1024.0);
    }
    return buf;
}

/* Run time of a job: finished - started, or now - started while it runs. */
static const char *
s_runtime (json_t *job, char *buf, size_t size)
{
    int64_t started = s_parse_time (s_str (job, "started_at", NULL));
    int64_t finished = s_parse_time (s_str (job, "finished_at", NULL));
    if (!started) {
        return "-";
    }
    return s_format_duration ((finished ? finished : gq_now_ms ()) - started, buf, size);
}

/* One JSON value on a line of its own, compact; scalars too (a result may be a number). */
static void
s_print_json (FILE *out, json_t *value)
{
    if (!value) {
        fputs ("null\n", out);
        return;
    }
    json_dumpf (value, out, JSON_COMPACT | JSON_ENCODE_ANY);
    fputc ('\n', out);
}

/* ---- Tables: cells are collected, then printed with each column as wide as its widest. ---- */

typedef struct {
    size_t cols;    /* cells per row */
    size_t cells;   /* cells added, the header included */
    size_t cap;     /* allocated entries of text */
    char **text;    /* cell texts, row after row, malloc'd */
} s_table_t;

static void
s_table_cell (s_table_t *table, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static void
s_table_cell (s_table_t *table, const char *format, ...)
{
    if (table->cells == table->cap) {
        table->cap = table->cap ? table->cap * 2 : 64;
        table->text = (char **) realloc (table->text, table->cap * sizeof *table->text);
        assert (table->text);
    }
    va_list args;
    va_start (args, format);
    char first[128];
    int len = vsnprintf (first, sizeof first, format, args);
    va_end (args);
    char *text = (char *) malloc (len < 0 ? 1 : (size_t) len + 1);
    assert (text);
    if (len < 0) {
        text[0] = 0;
    } else if ((size_t) len < sizeof first) {
        memcpy (text, first, (size_t) len + 1);
    } else {
        va_start (args, format);
        vsnprintf (text, (size_t) len + 1, format, args);
        va_end (args);
    }
    table->text[table->cells++] = text;
}

/* A table whose first row is the cols texts of head. */
static s_table_t
s_table_new (const char *const *head, size_t cols)
{
    s_table_t table = {.cols = cols};
    for (size_t i = 0; i < cols; i++) {
        s_table_cell (&table, "%s", head[i]);
    }
    return table;
}

static void
s_table_print (s_table_t *table, FILE *out)
{
    size_t width[32] = {0};
    assert (table->cols <= 32);
    for (size_t i = 0; i < table->cells; i++) {
        size_t len = table->text[i] ? strlen (table->text[i]) : 0;
        if (len > width[i % table->cols]) {
            width[i % table->cols] = len;
        }
    }
    for (size_t i = 0; i < table->cells; i++) {
        size_t col = i % table->cols;
        const char *text = table->text[i] ? table->text[i] : "";
        if (col + 2 == table->cols && i + 1 < table->cells &&
            !(table->text[i + 1] && *table->text[i + 1])) {
            fprintf (out, "%s\n", text); /* an empty last cell: the row ends here */
            i++;
        } else if (col + 1 == table->cols || i + 1 == table->cells) {
            fprintf (out, "%s\n", text); /* the last column is not padded */
        } else {
            fprintf (out, "%-*s  ", (int) width[col], text);
        }
    }
}

static void
s_table_destroy (s_table_t *table)
{
    for (size_t i = 0; i < table->cells; i++) {
        free (table->text[i]);
    }
    free (table->text);
    table->text = NULL;
    table->cells = table->cap = 0;
}

/* ---- Option parsing ------------------------------------------------------------------------ */

/* Long options get values above any character, so switch cases read as names. */
enum {
    O_HELP = 'h',
    O_KIND = 256,
    O_MODEL,
    O_MIN_VRAM,
    O_PRIORITY,
    O_PAYLOAD,
    O_GPU,
    O_MAX_PRICE,
    O_MIN_TFLOPS,
    O_TIME_LIMIT,
    O_MAX_ATTEMPTS,
    O_IDEM,
    O_AFFINITY,
    O_AFTER_OK,
    O_AFTER_ANY,
    O_AFTER_FAIL,
    O_WAIT,
    O_STREAM,
    O_JSON,
    O_FILE,
    O_OUT,
    O_MAX_WAIT,
    O_RATE_RETRIES,
    O_ARRAY,
    O_EXPAND,
    O_QUIET,
    O_STATE,
    O_LIMIT,
    O_BROKER,
    O_TIMEOUT,
    O_CERT,
    O_SERVER_CERT,
    O_VERSION
};

/* Runs getopt_long over a command's arguments; returns the option, -1 at the end, or '?' after
   printing a usage error (the caller returns S_EXIT_USAGE). */
static int
s_getopt (int argc, char **argv, const struct option *options)
{
    int option = getopt_long (argc, argv, ":h", options, NULL);
    if (option == '?') {
        const char *bad = argv[optind - 1];
        bool global = strncmp (bad, "--broker", 8) == 0 || strncmp (bad, "--timeout", 9) == 0 ||
                      strncmp (bad, "--cert", 6) == 0 || strncmp (bad, "--server-cert", 13) == 0;
        s_usage ("unknown option %s%s", bad,
                 global ? " (global options come before the command: gridq --timeout 2s ping)"
                        : "");
    } else if (option == ':') {
        s_usage ("option %s needs a value", argv[optind - 1]);
        option = '?';
    }
    return option;
}

static void
s_help (const char *text)
{
    fputs (text, stdout);
}

/* ---- submit -------------------------------------------------------------------------------- */

#define S_TEXT_(x) #x
#define S_TEXT(x)  S_TEXT_ (x) /* a number macro as text, for help strings */

static const char *s_submit_help =
    "Usage: gridq submit [JOB OPTIONS] [--wait|--stream [--json] [--max-wait DURATION]]\n"
    "       gridq submit --file JOBS.jsonl [JOB OPTIONS] [--wait [--out RESULTS.jsonl]]\n"
    "\n"
    "Submits jobs and prints each job id on a line of its own, in input order, first.\n"
    "\n"
    "Job options (with --file: defaults for lines that do not set the field):\n"
    "  --kind K            what the worker runs: echo, sleep, matmul, mlp, ... (default echo)\n"
    "  --model M           model the job needs; only nodes that have it are eligible\n"
    "  --min-vram SIZE     VRAM the job needs: 512M, 24G or a number of MiB\n"
    "  --priority N        0..9, 9 runs first (default 5)\n"
    "  --payload JSON      handed to the worker; @FILE reads it from a file, @- from stdin\n"
    "  --gpu PATTERN       'A100|H100': '|'-separated, case-insensitive substrings of the GPU\n"
    "  --max-price X       highest hourly price of the node\n"
    "  --min-tflops X      lowest TFLOPS of the node\n"
    "  --time-limit DUR    per-attempt time limit: 250ms, 30s, 5m, 2h\n"
    "  --max-attempts N    attempts before the job fails for good, 1..100 (default 3)\n"
    "  --idem KEY          idempotency key: submitting it again returns the first job's id\n"
    "  --affinity KEY      cache-affinity key: jobs of one key prefer the node that ran the\n"
    "                      last of them (an LLM conversation keeps its KV cache warm)\n"
    "  --after-ok ID[,ID...]    start only once every one of these jobs is done (Slurm's\n"
    "                      --dependency=afterok); if one fails or is cancelled, the job ends\n"
    "                      cancelled (\"dependency ID failed\"), and so do its own dependents\n"
    "  --after-any ID[,ID...]   start once every one of them ended, whatever the outcome\n"
    "  --after-fail ID[,ID...]  start once they all ended and one failed or was cancelled\n"
    "                      (Slurm's afternotok); if all succeed, the job ends cancelled\n"
    "                      (an ID may be an array's: all its elements)\n"
    "  --array SPEC        an array of jobs, as Slurm's --array: 0-999, 1,3,5, 0-99:5, with\n"
    "                      %K for at most K elements running at once (0-999%16); each\n"
    "                      element's payload gets \"array_index\". Prints the array's id,\n"
    "                      then each element's id\n"
    "  --quiet             with --array, print the array's id alone\n"
    "                      Until then the job is \"waiting\" (gridq explain ID names what for)\n"
    "\n"
    "Other options:\n"
    "  --file JOBS.jsonl   one job object per line (fields as in docs/PROTOCOL.md); every line\n"
    "                      is checked before anything is sent ('-' reads stdin)\n"
    "  --wait              wait for the jobs (an array: its elements); exit 0 only if every\n"
    "                      one is done. A single job then prints its result JSON (the whole\n"
    "                      job with --json)\n"
    "  --stream            a single job: as --wait, and first print each partial result its\n"
    "                      engine streams, one JSON line each as it arrives (a slow reader may\n"
    "                      miss some; the final line always comes). Ctrl-C cancels the job\n"
    "  --json              with --wait, print the whole job as JSON, not just its result\n"
    "  --out FILE          with --file --wait: write each finished job (JSON, with payload and\n"
    "                      result) to FILE, one per line, as it finishes ('-' is stdout); an\n"
    "                      array's line gives a line per element, with \"array\": {\"id\",\n"
    "                      \"index\"}\n"
    "  --max-wait DUR      stop waiting after DUR (default: wait as long as it takes)\n"
    "  --rate-retries N    jobs the broker refuses for its rate limit or per-client cap\n"
    "                      (RATE_LIMITED) are sent again after the wait it names; give up\n"
    "                      after N refusals in a row with nothing accepted meanwhile (default\n"
    "                      " S_TEXT (GQ_CLI_RATE_RETRIES) "; 0: only within --timeout)\n"
    "\n"
    "A line of --file may have \"name\" and name earlier lines in \"after_ok\" (\"after_any\",\n"
    "\"after_fail\"), and \"inputs\": \"after\" to get their results in its payload: a pipeline\n"
    "in one file, checked whole (unknown names, names used before their line, cycles) before\n"
    "anything is sent, and sent as one request. gridq retry runs its failed part again.\n"
    "\n"
    "With --file --wait, progress is shown on stderr when it is a terminal, and a one-line\n"
    "summary ends the run. When the broker refuses part of a file (RATE_LIMITED past the\n"
    "retries, STORE), gridq still waits for the jobs it accepted, then names the lines it\n"
    "refused, and exits 4.\n"
    "\n"
    "Examples:\n"
    "  gridq submit --kind echo --payload '{\"x\": 1}' --wait\n"
    "  gridq submit --kind mlp --model mnist --min-vram 2G --payload @input.json\n"
    "  gridq submit --file jobs.jsonl --wait --out results.jsonl\n"
    "  a=$(gridq submit --kind prep); gridq submit --kind embed --after-ok $a\n";

typedef struct {
    json_t *defaults;       /* job fields given on the command line */
    const char *file;       /* --file, or NULL */
    const char *out;        /* --out, or NULL */
    bool wait;              /* --wait (or --stream) */
    bool stream;            /* --stream */
    bool json;              /* --json */
    int64_t max_wait_ms;    /* --max-wait, or -1 for no limit */
    int64_t rate_retries;   /* --rate-retries */
    bool quiet;             /* --quiet */
} s_submit_args_t;

/* Reads --payload: inline JSON text, @FILE or @- (stdin). */
static json_t *
s_load_payload (const char *text)
{
    json_error_t error;
    json_t *payload;
    size_t flags = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES;
    if (text[0] == '@') {
        const char *path = text + 1;
        if (streq (path, "-")) {
            payload = json_loadf (stdin, flags, &error);
        } else {
            payload = json_load_file (path, flags, &error);
        }
        if (!payload) {
            s_usage ("--payload %s: %s (line %d, column %d)", text, error.text, error.line,
                     error.column);
        }
        return payload;
    }
    payload = json_loads (text, flags, &error);
    if (!payload) {
        s_usage ("--payload is not JSON: %s (column %d); quote it for the shell, e.g. "
                 "--payload '{\"x\": 1}'",
                 error.text, error.column);
    }
    return payload;
}

/* --after-ok ID[,ID...] (and its kin): the ids join the job's field (an option given twice
   adds to it). 0, or S_EXIT_USAGE after saying what is wrong. */
static int
s_after_parse (const char *text, const char *option, const char *field, json_t *job)
{
    json_t *ids = json_object_get (job, field);
    if (!ids) {
        ids = json_array ();
        json_object_set_new (job, field, ids);
    }
    const char *start = text;
    while (true) {
        const char *comma = strchr (start, ',');
        size_t len = comma ? (size_t) (comma - start) : strlen (start);
        char one[32];
        int64_t id;
        snprintf (one, sizeof one, "%.*s", (int) (len < sizeof one ? len : sizeof one - 1),
                  start);
        if (len == 0 || len >= sizeof one || !s_parse_int (one, 1, INT64_MAX, &id)) {
            return s_usage ("--%s \"%s\": \"%.*s\" is not a job id (a positive integer)",
                            option, text, (int) len, start);
        }
        json_array_append_new (ids, json_integer (id));
        if (!comma) {
            return 0;
        }
        start = comma + 1;
    }
}

static int
s_submit_parse (int argc, char **argv, s_submit_args_t *args)
{
    static const struct option options[] = {
        {"kind", required_argument, NULL, O_KIND},
        {"model", required_argument, NULL, O_MODEL},
        {"min-vram", required_argument, NULL, O_MIN_VRAM},
        {"priority", required_argument, NULL, O_PRIORITY},
        {"payload", required_argument, NULL, O_PAYLOAD},
        {"gpu", required_argument, NULL, O_GPU},
        {"max-price", required_argument, NULL, O_MAX_PRICE},
        {"min-tflops", required_argument, NULL, O_MIN_TFLOPS},
        {"time-limit", required_argument, NULL, O_TIME_LIMIT},
        {"max-attempts", required_argument, NULL, O_MAX_ATTEMPTS},
        {"idem", required_argument, NULL, O_IDEM},
        {"affinity", required_argument, NULL, O_AFFINITY},
        {"after-ok", required_argument, NULL, O_AFTER_OK},
        {"after-any", required_argument, NULL, O_AFTER_ANY},
        {"after-fail", required_argument, NULL, O_AFTER_FAIL},
        {"wait", no_argument, NULL, O_WAIT},
        {"stream", no_argument, NULL, O_STREAM},
        {"json", no_argument, NULL, O_JSON},
        {"file", required_argument, NULL, O_FILE},
        {"out", required_argument, NULL, O_OUT},
        {"max-wait", required_argument, NULL, O_MAX_WAIT},
        {"rate-retries", required_argument, NULL, O_RATE_RETRIES},
        {"array", required_argument, NULL, O_ARRAY},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0}};
    json_t *job = args->defaults;
    int option;
    while ((option = s_getopt (argc, argv, options)) != -1) {
        int64_t n;
        double x;
        switch (option) {
        case O_HELP:
            s_help (s_submit_help);
            return -1;
        case O_KIND:
            json_object_set_new (job, "kind", json_string (optarg));
            break;
        case O_MODEL:
            json_object_set_new (job, "model", json_string (optarg));
            break;
        case O_GPU:
            json_object_set_new (job, "gpu", json_string (optarg));
            break;
        case O_AFFINITY:
            json_object_set_new (job, "affinity", json_string (optarg));
            break;
        case O_IDEM:
            json_object_set_new (job, "idem", json_string (optarg));
            break;
        case O_AFTER_OK:
        case O_AFTER_ANY:
        case O_AFTER_FAIL: {
            int k = option == O_AFTER_OK ? 0 : option == O_AFTER_ANY ? 1 : 2;
            static const char *const names[] = {"after-ok", "after-any", "after-fail"};
            if (s_after_parse (optarg, names[k], gq_dep_fields[k], job)) {
                return S_EXIT_USAGE;
            }
            break;
        }
        case O_MIN_VRAM:
            if (gq_parse_size_mb (optarg, &n)) {
                return s_usage ("--min-vram \"%s\" is not a size like 512M or 24G", optarg);
            }
            json_object_set_new (job, "min_vram_mb", json_integer (n));
            break;
        case O_PRIORITY:
            /* Any integer here: the job check below names the allowed range. */
            if (!s_parse_int (optarg, INT32_MIN, INT32_MAX, &n)) {
                return s_usage ("--priority \"%s\" is not an integer (0..9, 9 first)", optarg);
            }
            json_object_set_new (job, "priority", json_integer (n));
            break;
        case O_MAX_ATTEMPTS:
            if (!s_parse_int (optarg, INT32_MIN, INT32_MAX, &n)) {
                return s_usage ("--max-attempts \"%s\" is not an integer (1..%d)", optarg,
                                GQ_MAX_ATTEMPTS_LIMIT);
            }
            json_object_set_new (job, "max_attempts", json_integer (n));
            break;
        case O_MAX_PRICE:
        case O_MIN_TFLOPS:
            if (!s_parse_double (optarg, &x)) {
                return s_usage ("%s \"%s\" is not a number",
                                option == O_MAX_PRICE ? "--max-price" : "--min-tflops", optarg);
            }
            json_object_set_new (job, option == O_MAX_PRICE ? "max_price" : "min_tflops",
                                 json_real (x));
            break;
        case O_TIME_LIMIT:
            if (gq_parse_duration_ms (optarg, &n) || n > GQ_MAX_TIMEOUT_MS) {
                return s_usage ("--time-limit \"%s\" is not a duration like 30s or 5m", optarg);
            }
            json_object_set_new (job, "timeout_ms", json_integer (n));
            break;
        case O_PAYLOAD: {
            json_t *payload = s_load_payload (optarg);
            if (!payload) {
                return S_EXIT_USAGE;
            }
            json_object_set_new (job, "payload", payload);
            break;
        }
        case O_WAIT:
            args->wait = true;
            break;
        case O_STREAM:
            args->stream = args->wait = true;
            break;
        case O_JSON:
            args->json = true;
            break;
        case O_FILE:
            args->file = optarg;
            break;
        case O_OUT:
            args->out = optarg;
            break;
        case O_MAX_WAIT:
            if (gq_parse_duration_ms (optarg, &args->max_wait_ms)) {
                return s_usage ("--max-wait \"%s\" is not a duration like 30s or 5m", optarg);
            }
            break;
        case O_ARRAY:
            json_object_set_new (job, "array", json_string (optarg));
            break;
        case O_QUIET:
            args->quiet = true;
            break;
        case O_RATE_RETRIES:
            if (!s_parse_int (optarg, 0, INT32_MAX, &args->rate_retries)) {
                return s_usage ("--rate-retries \"%s\" is not a number of retries", optarg);
            }
            break;
        default:
            return S_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        return s_usage ("unexpected argument \"%s\" (job fields are options, e.g. --kind echo)",
                        argv[optind]);
    }
    if (args->out && !(args->file && args->wait)) {
        return s_usage ("--out needs --file and --wait");
    }
    if (args->file && args->json) {
        return s_usage ("--json is for a single job; with --file, --out writes JSON lines");
    }
    if (args->file && json_object_get (job, "idem")) {
        return s_usage ("--idem names one job; put \"idem\" on each line of %s", args->file);
    }
    if (args->max_wait_ms >= 0 && !args->wait) {
        return s_usage ("--max-wait needs --wait");
    }
    if (json_object_get (job, "array") && (args->file || args->stream || args->json)) {
        return s_usage ("--array makes an array of one job's options: not with --file, "
                        "--stream or --json (put \"array\" on a line of the file instead)");
    }
    if (args->quiet && !json_object_get (job, "array")) {
        return s_usage ("--quiet is for --array");
    }
    if (args->stream && args->file) {
        return s_usage ("--stream is for a single job, not --file");
    }
    return S_EXIT_OK;
}

/* gq_client_partial_fn of --stream and watch: one JSON line per partial, at once. */
static void
s_on_partial (void *arg, int64_t id, int64_t seq, json_t *partial, int64_t dropped)
{
    (void) arg;
    (void) seq;
    if (dropped > 0) {
        fprintf (stderr, "gridq: job %lld: %lld partial%s dropped (the worker fell behind)\n",
                 (long long) id, (long long) dropped, dropped == 1 ? "" : "s");
    }
    s_print_json (stdout, partial);
    fflush (stdout);
}

/* SIGINT while streaming: the wait returns (interrupted), and the job is cancelled. */
static void
s_on_sigint (int sig)
{
    (void) sig;
    zsys_interrupted = 1;
}

static void
s_catch_sigint (void)
{
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_sigint; /* no SA_RESTART: the socket's wait must end */
    sigemptyset (&action.sa_mask);
    sigaction (SIGINT, &action, NULL);
}

/* After Ctrl-C: cancels job id, says so, and returns the exit status. */
static int
s_cancel_interrupted (gq_client_t *client, int64_t id)
{
    zsys_interrupted = 0;
    signal (SIGINT, SIG_DFL); /* a second Ctrl-C ends gridq at once */
    json_t *reply =
        gq_client_call (client, "CANCEL", json_pack ("{s:[I]}", "ids", (json_int_t) id));
    if (!reply) {
        return s_call_failed (client);
    }
    json_decref (reply);
    s_warn ("interrupted: job %lld cancelled", (long long) id);
    return S_EXIT_JOB;
}

/* What a single job's wait found. */
typedef struct {
    json_t *job;            /* the finished job (a reference), or NULL */
} s_single_t;

static int
s_on_single (void *arg, json_t *job)
{
    s_single_t *single = (s_single_t *) arg;
    single->job = json_incref (job);
    return 0;
}

/* Fetches the whole job (payload, result, attempts_detail) with RESULT. NULL on failure. */
static json_t *
s_fetch_job (gq_client_t *client, int64_t id)
{
    json_t *reply = gq_client_call (client, "RESULT", json_pack ("{s:I}", "id", (json_int_t) id));
    json_t *job = reply ? json_incref (json_object_get (reply, "job")) : NULL;
    json_decref (reply);
    return job;
}

/* Every attempt of a job (its attempts_detail) on a line of its own: node, outcome, reason and
   how long it ran. */
static void
s_print_attempts (FILE *out, json_t *job)
{
    size_t i;
    json_t *attempt;
    json_array_foreach (json_object_get (job, "attempts_detail"), i, attempt) {
        char buf[32];
        int64_t started = s_parse_time (s_str (attempt, "started_at", NULL));
        int64_t finished = s_parse_time (s_str (attempt, "finished_at", NULL));
        fprintf (out, "  attempt %lld on %s: %s%s%s (%s)\n",
                 (long long) s_int (attempt, "attempt", (int64_t) i + 1),
                 s_str (attempt, "node", "-"), s_str (attempt, "outcome", "?"),
                 s_str (attempt, "reason", NULL) ? ": " : "", s_str (attempt, "reason", ""),
                 started && finished ? s_format_duration (finished - started, buf, sizeof buf)
                                     : "-");
    }
}

/* Prints why a job did not end done: its error and every attempt's reason, to stderr. */
static void
s_explain_failure (json_t *job)
{
    int64_t id = s_int (job, "id", 0);
    const char *state = s_str (job, "state", "?");
    const char *error = s_str (job, "error", NULL);
    if (streq (state, "failed")) {
        fprintf (stderr, "gridq: job %lld failed: %s\n", (long long) id,
                 error ? error : "(no error recorded)");
    } else if (streq (state, "cancelled")) {
        fprintf (stderr, "gridq: job %lld was cancelled\n", (long long) id);
    } else if (streq (state, "missing")) {
        fprintf (stderr, "gridq: job %lld is unknown to the broker\n", (long long) id);
    } else {
        fprintf (stderr, "gridq: job %lld is %s, not done yet; wait for it with: gridq wait %lld\n",
                 (long long) id, state, (long long) id);
    }
    s_print_attempts (stderr, job);
}

/* Prints a finished job as asked: the whole job with json, else a done job's result; a job that
   is not done is explained on stderr. S_EXIT_OK when it is done, else S_EXIT_JOB. */
static int
s_print_outcome (json_t *job, bool json)
{
    bool done = streq (s_str (job, "state", ""), "done");
    if (json) {
        s_print_json (stdout, job);
    } else if (done) {
        s_print_json (stdout, json_object_get (job, "result"));
    }
    if (!done) {
        s_explain_failure (job);
    }
    return done ? S_EXIT_OK : S_EXIT_JOB;
}

/* What gq_jobspec_parse leaves to the sender: blobs (which a command line cannot attach) and
   the size of one job, which must fit a SUBMIT frame. text_bytes is the length of the JSON text
   the job was read from (with what was added to it), or 0 when unknown: the job is written out
   to be measured only when that text is long enough to matter (a compact dump is at most 8
   times the text it was parsed from: 0.1 becomes 0.10000000000000001). Sets why when the job
   cannot be sent. */
static void
s_check_job_extra (json_t *job, const gq_jobspec_t *spec, int64_t text_bytes, char *why,
                   size_t whylen)
{
    int64_t bytes = text_bytes && text_bytes < GQ_CLIENT_SUBMIT_BYTES / 8
                        ? 0
                        : gq_client_job_bytes (job);
    if (spec->blob_count > 0) {
        snprintf (why, whylen, "\"blobs\" cannot be sent from the command line (use the client "
                               "API)");
    } else if (bytes >= GQ_CLIENT_SUBMIT_BYTES) {
        snprintf (why, whylen, "the job is %lld bytes of JSON; at most %d fit a request",
                  (long long) bytes, GQ_CLIENT_SUBMIT_BYTES - 1);
    }
}

static int s_follow_one (gq_client_t *client, int64_t id, bool json, int64_t max_wait_ms,
                         bool cancel);
static int s_wait_array (gq_client_t *client, int64_t id, int64_t count, int64_t max_wait_ms);

static int
s_submit_one (gq_client_t *client, s_submit_args_t *args)
{
    char why[256];
    gq_jobspec_t spec;
    why[0] = 0;
    if (gq_jobspec_parse (args->defaults, &spec, why, sizeof why) == GQ_OK) {
        s_check_job_extra (args->defaults, &spec, 0, why, sizeof why);
    }
    if (why[0]) {
        return s_usage ("invalid job: %s", why);
    }
    json_t *jobs = json_pack ("[O]", args->defaults);
    int64_t id;
    if (args->stream) {
        gq_client_set_partial_fn (client, s_on_partial, NULL);
        s_catch_sigint ();
    }
    int rc = gq_client_submit (client, jobs, args->wait, &id);
    json_decref (jobs);
    if (rc) {
        return s_call_failed (client);
    }
    printf ("%lld\n", (long long) id);
    if (spec.array) {
        /* The elements' ids follow the array's, in index order. */
        for (int64_t k = 1; k <= spec.array_count && !args->quiet; k++) {
            printf ("%lld\n", (long long) (id + k));
        }
        fflush (stdout);
        return args->wait ? s_wait_array (client, id, spec.array_count, args->max_wait_ms)
                          : S_EXIT_OK;
    }
    fflush (stdout);
    if (!args->wait) {
        return S_EXIT_OK;
    }
    return s_follow_one (client, id, args->json, args->max_wait_ms, args->stream);
}

/* Waits for one job (its partials printed as they come when a partial callback is set) and
   prints its outcome as --wait does; with cancel, Ctrl-C cancels the job. The exit status. */
static int
s_follow_one (gq_client_t *client, int64_t id, bool json, int64_t max_wait_ms, bool cancel)
{
    s_single_t single = {NULL};
    int rc = gq_client_wait (client, &id, 1, max_wait_ms, s_on_single, &single);
    if (rc == GQ_EIO && cancel && zsys_interrupted) {
        return s_cancel_interrupted (client, id);
    }
    if (rc == GQ_ETIMEOUT) {
        s_warn ("job %lld not finished after %g s; follow it with: gridq wait %lld",
                (long long) id, max_wait_ms / 1000.0, (long long) id);
        return S_EXIT_JOB;
    }
    if (rc) {
        return s_call_failed (client);
    }
    json_t *job = single.job;
    if (json || !streq (s_str (job, "state", ""), "done")) {
        /* FINISHED may leave out the payload; attempts_detail explains a failure. */
        json_t *whole = s_fetch_job (client, id);
        if (whole) {
            json_decref (job);
            job = whole;
        }
    }
    rc = s_print_outcome (job, json);
    json_decref (job);
    return rc;
}

/* Jobs read from a JSONL file, with the line each came from. */
typedef struct {
    json_t *jobs;           /* array of job objects */
    size_t *lines;          /* line number of each job */
    bool pipeline;          /* lines name each other ("name", names in "after_ok"...): the file
                               goes as one SUBMIT, whose names the broker resolves */
} s_jobfile_t;

/* The name a job depends on as its k-th dependency field's i-th item, or NULL (an id). */
static const char *
s_dep_name (json_t *job, int k, size_t i)
{
    return json_string_value (json_array_get (json_object_get (job, gq_dep_fields[k]), i));
}

/* A pipeline file's names: each given once, each named dependency given by a line before the
   one that names it; a cycle is named as one. Reports on stderr as FILE:LINE: reason. The number
   of problems. */
static size_t
s_check_names (const char *path, s_jobfile_t *file)
{
    size_t count = json_array_size (file->jobs), bad = 0;
    json_t *index = json_object (); /* name -> the first job that gives it */
    for (size_t j = 0; j < count; j++) {
        const char *name = json_string_value (json_object_get (json_array_get (file->jobs, j),
                                                               "name"));
        json_t *first = name ? json_object_get (index, name) : NULL;
        if (first) {
            fprintf (stderr, "%s:%zu: name \"%s\" is given twice (line %zu first)\n", path,
                     file->lines[j], name, file->lines[json_integer_value (first)]);
            bad++;
        } else if (name) {
            json_object_set_new (index, name, json_integer ((json_int_t) j));
            file->pipeline = true;
        }
    }
    /* The named edges, job -> the jobs it names (by index), as lists in one array. */
    size_t *first = (size_t *) calloc (count + 1, sizeof *first);
    size_t n_edges = 0, cap = 64;
    size_t *to = (size_t *) malloc (cap * sizeof *to);
    assert (first && to);
    for (size_t j = 0; j < count; j++) {
        json_t *job = json_array_get (file->jobs, j);
        first[j] = n_edges;
        for (int k = 0; k < GQ_DEP_KINDS; k++) {
            for (size_t i = 0; i < json_array_size (json_object_get (job, gq_dep_fields[k]));
                 i++) {
                const char *name = s_dep_name (job, k, i);
                if (!name) {
                    continue;
                }
                file->pipeline = true;
                json_t *at = json_object_get (index, name);
                if (!at) {
                    fprintf (stderr, "%s:%zu: \"%s\" names \"%s\", which no line of the file "
                             "gives as its \"name\"\n",
                             path, file->lines[j], gq_dep_fields[k], name);
                    bad++;
                    continue;
                }
                if (n_edges == cap) {
                    cap *= 2;
                    to = (size_t *) realloc (to, cap * sizeof *to);
                    assert (to);
                }
                to[n_edges++] = (size_t) json_integer_value (at);
            }
        }
    }
    first[count] = n_edges;
    /* A cycle, by depth-first search (iterative: a file may hold 10,000 lines in a chain):
       reaching a job that is on the path closes one. */
    uint8_t *colour = (uint8_t *) calloc (count ? count : 1, 1); /* 0, 1 on the path, 2 done */
    size_t *path_jobs = (size_t *) malloc ((count ? count : 1) * sizeof *path_jobs);
    size_t *next = (size_t *) malloc ((count ? count : 1) * sizeof *next);
    assert (colour && path_jobs && next);
    bool cycle = false;
    for (size_t root = 0; root < count && !cycle; root++) {
        if (colour[root]) {
            continue;
        }
        size_t depth = 0;
        path_jobs[depth] = root;
        next[depth++] = first[root];
        colour[root] = 1;
        while (depth && !cycle) {
            size_t v = path_jobs[depth - 1];
            if (next[depth - 1] == first[v + 1]) {
                colour[v] = 2;
                depth--;
                continue;
            }
            size_t u = to[next[depth - 1]++];
            if (colour[u] == 1) {
                char text[600] = "";
                size_t len = 0, d = depth;
                while (d > 0 && path_jobs[d - 1] != u) {
                    d--;
                }
                for (size_t p = d - 1; p < depth && len < sizeof text; p++) {
                    const char *name = json_string_value (
                        json_object_get (json_array_get (file->jobs, path_jobs[p]), "name"));
                    len += (size_t) snprintf (text + len, sizeof text - len,
                                              "%s (line %zu) needs ", name ? name : "?",
                                              file->lines[path_jobs[p]]);
                }
                fprintf (stderr, "%s: a cycle: %s%s\n", path, text,
                         json_string_value (json_object_get (json_array_get (file->jobs, u),
                                                             "name")));
                bad++;
                cycle = true;
            } else if (colour[u] == 0) {
                colour[u] = 1;
                path_jobs[depth] = u;
                next[depth++] = first[u];
            }
        }
    }
    /* Without a cycle, a job named before the line that gives it. */
    for (size_t j = 0; j < count && !cycle; j++) {
        for (size_t e = first[j]; e < first[j + 1]; e++) {
            if (to[e] >= j) {
                fprintf (stderr, "%s:%zu: names \"%s\", given later (line %zu): a line may "
                         "depend only on lines before it\n",
                         path, file->lines[j],
                         json_string_value (json_object_get (json_array_get (file->jobs, to[e]),
                                                             "name")),
                         file->lines[to[e]]);
                bad++;
            }
        }
    }
    free (colour);
    free (path_jobs);
    free (next);
    free (first);
    free (to);
    json_decref (index);
    return bad;
}

/* Reads and checks every line; reports each bad one as FILE:LINE: reason. */
static int
s_read_jobfile (const char *path, json_t *defaults, s_jobfile_t *file)
{
    FILE *in = streq (path, "-") ? stdin : fopen (path, "r");
    if (!in) {
        return s_usage ("cannot open %s: %s", path, strerror (errno));
    }
    file->jobs = json_array ();
    /* What the defaults may add to a line, at most. */
    int64_t defaults_bytes = gq_client_job_bytes (defaults);
    size_t cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    size_t lineno = 0, bad = 0;
    while ((len = getline (&line, &line_cap, in)) >= 0) {
        lineno++;
        if (strspn (line, " \t\r\n") == (size_t) len) {
            continue; /* blank lines separate nothing but are harmless */
        }
        json_error_t error;
        json_t *job = json_loadb (line, (size_t) len, JSON_REJECT_DUPLICATES, &error);
        char why[256] = "";
        gq_jobspec_t spec;
        if (!job) {
            snprintf (why, sizeof why, "not JSON: %s (column %d)", error.text, error.column);
        } else {
            const char *key;
            json_t *value;
            json_t *constraints = json_object_get (job, "constraints");
            json_object_foreach (defaults, key, value) {
                /* The line's own field wins. A line with a "constraints" object keeps its
                   constraints there, so a default constraint goes there too. */
                json_t *target = job;
                if (json_is_object (constraints) &&
                    (streq (key, "gpu") || streq (key, "max_price") || streq (key, "min_tflops"))) {
                    target = constraints;
                }
                bool alias = (streq (key, "min_vram_mb") && json_object_get (job, "min_vram")) ||
                             (streq (key, "timeout_ms") && json_object_get (job, "time_limit"));
                if (json_is_object (target) && !json_object_get (target, key) && !alias) {
                    json_object_set (target, key, value);
                }
            }
            if (gq_jobspec_parse (job, &spec, why, sizeof why) == GQ_OK) {
                s_check_job_extra (job, &spec, len + defaults_bytes, why, sizeof why);
            }
        }
        if (*why) {
            if (bad++ < GQ_CLI_MAX_LINE_ERRORS) {
                fprintf (stderr, "%s:%zu: %s\n", path, lineno, why);
            }
            json_decref (job);
            continue;
        }
        size_t n = json_array_size (file->jobs);
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            file->lines = (size_t *) realloc (file->lines, cap * sizeof *file->lines);
            assert (file->lines);
        }
        file->lines[n] = lineno;
        json_array_append_new (file->jobs, job);
    }
    bool read_error = ferror (in);
    free (line);
    if (in != stdin) {
        fclose (in);
    }
    if (read_error) {
        return s_usage ("cannot read %s: %s", path, strerror (errno));
    }
    if (bad) {
        return s_usage ("%zu invalid line%s in %s; nothing was sent", bad, bad == 1 ? "" : "s",
                        path);
    }
    if (json_array_size (file->jobs) == 0) {
        return s_usage ("%s holds no jobs", path);
    }
    size_t problems = s_check_names (path, file);
    if (problems) {
        return s_usage ("%zu problem%s with the names in %s; nothing was sent", problems,
                        problems == 1 ? "" : "s", path);
    }
    if (file->pipeline) {
        /* One SUBMIT: the broker resolves the names within it, all or nothing. */
        int64_t bytes = 0;
        size_t i;
        json_t *job;
        json_array_foreach (file->jobs, i, job) {
            bytes += gq_client_job_bytes (job) + 1;
        }
        if (json_array_size (file->jobs) > GQ_MAX_BATCH_JOBS || bytes >= GQ_CLIENT_SUBMIT_BYTES) {
            return s_usage ("%s: a pipeline (lines that name each other) goes as one request: "
                            "at most %d lines and %d bytes of JSON; nothing was sent",
                            path, GQ_MAX_BATCH_JOBS, GQ_CLIENT_SUBMIT_BYTES);
        }
    }
    return S_EXIT_OK;
}

/* Lines of a JSONL file, as ranges "12-40, 52" (the first GQ_CLI_MAX_LINE_RANGES of them). */
typedef struct {
    char text[256];         /* the ranges */
    size_t ranges;          /* ranges added */
    size_t jobs;            /* jobs in them */
} s_lines_t;

/* Adds the lines of the jobs in [first, end) that the broker did not accept (id 0). */
static void
s_lines_unaccepted (s_lines_t *lines, const s_jobfile_t *file, const int64_t *ids, size_t first,
                    size_t end)
{
    for (size_t i = first; i < end; i++) {
        if (ids[i]) {
            continue;
        }
        size_t last = i;
        while (last + 1 < end && !ids[last + 1]) {
            last++;
        }
        lines->jobs += last - i + 1;
        size_t used = strlen (lines->text);
        const char *comma = used ? ", " : "";
        if (lines->ranges < GQ_CLI_MAX_LINE_RANGES) {
            if (last > i) {
                snprintf (lines->text + used, sizeof lines->text - used, "%s%zu-%zu", comma,
                          file->lines[i], file->lines[last]);
            } else {
                snprintf (lines->text + used, sizeof lines->text - used, "%s%zu", comma,
                          file->lines[i]);
            }
        } else if (lines->ranges == GQ_CLI_MAX_LINE_RANGES) {
            snprintf (lines->text + used, sizeof lines->text - used, ", ...");
        }
        lines->ranges++;
        i = last;
    }
}

/* Why and where the broker refused part of a file, noted when it answered: the client's error
   text changes with every later call. */
typedef struct {
    char reason[1200];      /* "CODE: message", after "FILE:LINE: " when it named a job */
    s_lines_t refused;      /* the lines of the chunk it refused (none: it refused no chunk) */
    s_lines_t rest;         /* the other lines not accepted: refused as well, or not sent */
} s_refusal_t;

static void
s_refusal_note (gq_client_t *client, const char *path, const s_jobfile_t *file,
                const int64_t *ids, s_refusal_t *refusal)
{
    size_t count = json_array_size (file->jobs);
    int64_t at = gq_client_error_index (client);
    if (at >= 0 && (size_t) at < count) {
        snprintf (refusal->reason, sizeof refusal->reason, "%s:%zu: %s", path, file->lines[at],
                  gq_client_error (client));
    } else {
        snprintf (refusal->reason, sizeof refusal->reason, "%s", gq_client_error (client));
    }
    size_t first = 0, n = 0;
    gq_client_refused (client, &first, &n);
    s_lines_unaccepted (&refusal->refused, file, ids, first, first + n);
    s_lines_unaccepted (&refusal->rest, file, ids, 0, first);
    s_lines_unaccepted (&refusal->rest, file, ids, first + n, count);
}

static void
s_refusal_print (const s_refusal_t *refusal)
{
    const s_lines_t *refused = &refusal->refused, *rest = &refusal->rest;
    if (refused->jobs) {
        s_warn ("%s %s %s refused by the broker (%s); %s not submitted",
                refused->jobs == 1 ? "line" : "lines", refused->text,
                refused->jobs == 1 ? "was" : "were", refusal->reason,
                refused->jobs == 1 ? "its job was" : "their jobs were");
        if (rest->jobs) {
            s_warn ("%s %s %s not submitted either", rest->jobs == 1 ? "line" : "lines",
                    rest->text, rest->jobs == 1 ? "was" : "were");
        }
    } else if (rest->jobs) {
        s_warn ("%s %s %s not submitted (%s)", rest->jobs == 1 ? "line" : "lines", rest->text,
                rest->jobs == 1 ? "was" : "were", refusal->reason);
    } else {
        s_warn ("%s", refusal->reason);
    }
}

/* Keeps the jobs that the broker accepted (a non-zero id), in order; returns how many. */
static size_t
s_jobfile_keep_accepted (s_jobfile_t *file, int64_t *ids)
{
    json_t *kept = json_array ();
    size_t n = 0;
    for (size_t i = 0; i < json_array_size (file->jobs); i++) {
        if (ids[i]) {
            json_array_append (kept, json_array_get (file->jobs, i));
            file->lines[n] = file->lines[i];
            ids[n++] = ids[i];
        }
    }
    json_decref (file->jobs);
    file->jobs = kept;
    return n;
}

/* Progress of a --file --wait run. */
typedef struct {
    gq_client_t *client;    /* for RESULT when a payload must be fetched */
    s_jobfile_t *file;      /* the input */
    const int64_t *ids;     /* one per input job (an array's line: the array's id) */
    gq_arrayspec_t **specs; /* per input job: its array's spec (malloc'd), NULL for one job */
    int64_t *order;         /* input indexes sorted by id, for the payload lookup */
    size_t total;           /* distinct jobs */
    size_t finished;        /* of which finished (any state) */
    size_t done, failed, cancelled, missing;
    FILE *out;              /* --out, or NULL */
    bool tty;               /* stderr is a terminal: draw progress */
    int64_t start_us;       /* submission began */
    int64_t wait_us;        /* waiting began (the rate counts from here) */
    int64_t drawn_us;       /* progress last drawn, --out last flushed */
} s_batch_t;

static const int64_t *s_sort_ids; /* for s_cmp_by_id: qsort has no context argument */

static int
s_cmp_by_id (const void *a, const void *b)
{
    int64_t x = s_sort_ids[*(const int64_t *) a], y = s_sort_ids[*(const int64_t *) b];
    return x < y ? -1 : x > y;
}

/* The input index of a job id, or -1: the line with the largest id at or below it, which is the
   job's own line or the array it is an element of. *element gets its place in that array (0
   for its first element), -1 for a line that is no array. */
static int64_t
s_batch_index (s_batch_t *batch, int64_t id, int64_t *element)
{
    size_t lo = 0, hi = json_array_size (batch->file->jobs);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (batch->ids[batch->order[mid]] <= id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *element = -1;
    int64_t at = lo ? batch->order[lo - 1] : -1;
    const gq_arrayspec_t *spec = at >= 0 ? batch->specs[at] : NULL;
    if (spec && id > batch->ids[at] && id <= batch->ids[at] + spec->count) {
        *element = id - batch->ids[at] - 1;
        return at;
    }
    return at >= 0 && !spec && batch->ids[at] == id ? at : -1;
}

/* An array element's --out object: the job as FINISHED gave it, its payload (when FINISHED left
   it out: the line's, with "array_index" first, as the broker made it) and "array": {"id",
   "index"}. A new reference. */
static json_t *
s_element_json (json_t *job, json_t *line, const gq_arrayspec_t *spec, int64_t array_id,
                int64_t element)
{
    json_t *whole = json_copy (job);
    json_int_t index = (json_int_t) gq_arrayspec_index (spec, element);
    if (!json_object_get (whole, "payload")) {
        json_t *payload = json_pack ("{s:I}", "array_index", index);
        json_object_update (payload, json_object_get (line, "payload"));
        json_object_set_new (whole, "payload", payload);
    }
    json_object_set_new (whole, "array",
                         json_pack ("{s:I, s:I}", "id", (json_int_t) array_id, "index", index));
    return whole;
}

static void
s_batch_progress (s_batch_t *batch, bool force)
{
    int64_t now = gq_mono_us ();
    if (!force && now - batch->drawn_us < GQ_CLI_PROGRESS_EVERY_US) {
        return;
    }
    batch->drawn_us = now;
    if (batch->out) {
        fflush (batch->out);
    }
    if (!batch->tty) {
        return;
    }
    double secs = (now - batch->wait_us) / 1e6;
    double rate = secs > 0 ? batch->finished / secs : 0;
    char eta[32] = "-:--:--";
    if (rate > 0) {
        long left = (long) ((batch->total - batch->finished) / rate + 0.5);
        snprintf (eta, sizeof eta, "%ld:%02ld:%02ld", left / 3600, left / 60 % 60, left % 60);
    }
    fprintf (stderr, "\r%zu/%zu %d%% %.0f jobs/s ETA %s\033[K", batch->finished, batch->total,
             (int) (100.0 * batch->finished / batch->total), rate, eta);
    fflush (stderr);
}

static int
s_on_batch (void *arg, json_t *job)
{
    s_batch_t *batch = (s_batch_t *) arg;
    const char *state = s_str (job, "state", "");
    batch->finished++;
    if (streq (state, "done")) {
        batch->done++;
    } else if (streq (state, "failed")) {
        batch->failed++;
    } else if (streq (state, "cancelled")) {
        batch->cancelled++;
    } else {
        batch->missing++;
    }
    if (batch->out && !streq (state, "missing")) {
        json_t *whole = NULL;
        int64_t element;
        int64_t at = s_batch_index (batch, s_int (job, "id", 0), &element);
        json_t *input = at >= 0 ? json_array_get (batch->file->jobs, (size_t) at) : NULL;
        if (element >= 0) {
            whole = s_element_json (job, input, batch->specs[at], batch->ids[at], element);
        } else if (!json_object_get (job, "payload")) {
            /* The payload is what we sent, unless an idem key made this another line's job:
               then the broker's copy is the truth. */
            if (input && !json_object_get (input, "idem")) {
                whole = json_copy (job);
                json_t *payload = json_object_get (input, "payload");
                json_object_set_new (whole, "payload", payload ? json_incref (payload)
                                                               : json_object ());
            } else {
                whole = s_fetch_job (batch->client, s_int (job, "id", 0));
            }
        }
        s_print_json (batch->out, whole ? whole : job);
        json_decref (whole);
    }
    s_batch_progress (batch, false);
    return 0;
}

static void
s_batch_free (s_batch_t *batch, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free (batch->specs[i]);
    }
    free (batch->specs);
    free (batch->order);
}

static int
s_submit_file (gq_client_t *client, s_submit_args_t *args)
{
    s_jobfile_t file = {NULL, NULL, false};
    int rc = s_read_jobfile (args->file, args->defaults, &file);
    if (rc) {
        json_decref (file.jobs);
        free (file.lines);
        return rc;
    }
    size_t count = json_array_size (file.jobs);
    int64_t *ids = (int64_t *) calloc (count, sizeof *ids);
    FILE *out = NULL;
    if (args->out) {
        out = streq (args->out, "-") ? stdout : fopen (args->out, "w");
        if (!out) {
            rc = s_usage ("cannot write %s: %s", args->out, strerror (errno));
            goto done;
        }
    }
    int64_t start_us = gq_mono_us ();
    gq_client_set_submit_window (client, file.pipeline ? GQ_MAX_BATCH_JOBS : GQ_CLI_FILE_CHUNK_JOBS,
                                 GQ_CLI_FILE_WINDOW_SUBMITS);
    /* With watch, the broker reports each job as it finishes, whatever the order in which our
       chunks were acknowledged: no job can finish between our SUBMIT and our WAIT unseen. */
    bool partial = gq_client_submit (client, file.jobs, args->wait, ids) != GQ_OK;
    size_t accepted = 0;
    for (size_t i = 0; i < count; i++) {
        if (ids[i]) {
            printf ("%lld\n", (long long) ids[i]);
            accepted++;
        }
    }
    fflush (stdout);
    s_refusal_t refusal;
    memset (&refusal, 0, sizeof refusal);
    if (partial) {
        /* A refusal of some chunks leaves others accepted: those run, and with --wait we see
           them through before saying which lines did not go in. Silence ends it all. */
        rc = s_failed_code (client);
        s_refusal_note (client, args->file, &file, ids, &refusal);
        if (rc != S_EXIT_REFUSED || !args->wait || accepted == 0) {
            s_refusal_print (&refusal);
            if (accepted) {
                s_warn ("%zu of %zu jobs were accepted (their ids are above)", accepted, count);
            }
            goto done;
        }
        count = s_jobfile_keep_accepted (&file, ids);
    }
    if (!args->wait) {
        double secs = (gq_mono_us () - start_us) / 1e6;
        fprintf (stderr, "%zu jobs submitted in %.1f s\n", count, secs);
        goto done;
    }
    s_batch_t batch = {.client = client, .file = &file, .ids = ids, .out = out,
                       .tty = isatty (STDERR_FILENO), .start_us = start_us};
    batch.order = (int64_t *) malloc (count * sizeof *batch.order);
    batch.specs = (gq_arrayspec_t **) calloc (count, sizeof *batch.specs);
    assert (batch.order && batch.specs);
    for (size_t i = 0; i < count; i++) {
        batch.order[i] = (int64_t) i;
    }
    s_sort_ids = ids;
    qsort (batch.order, count, sizeof *batch.order, s_cmp_by_id);
    /* What is waited for: each line's job, or each element of an array's line (its ids follow
       the array's), each id once. */
    size_t n_wait = 0;
    for (size_t i = 0; i < count; i++) {
        const char *array = json_string_value (json_object_get (json_array_get (file.jobs, i),
                                                                "array"));
        char why[128];
        if (array) {
            batch.specs[i] = (gq_arrayspec_t *) malloc (sizeof **batch.specs);
            assert (batch.specs[i]);
            gq_arrayspec_parse (array, batch.specs[i], why, sizeof why); /* checked on read */
        }
        n_wait += array ? (size_t) batch.specs[i]->count : 1;
    }
    int64_t *waited_ids = (int64_t *) malloc (n_wait * sizeof *waited_ids);
    assert (waited_ids);
    for (size_t i = 0; i < count; i++) {
        int64_t line = batch.order[i];
        for (int64_t k = 1; batch.specs[line] && k <= batch.specs[line]->count; k++) {
            waited_ids[batch.total++] = ids[line] + k;
        }
        if (!batch.specs[line] && (i == 0 || ids[line] != ids[batch.order[i - 1]])) {
            waited_ids[batch.total++] = ids[line];
        }
    }
    batch.wait_us = batch.drawn_us = gq_mono_us ();
    int waited = gq_client_wait (client, waited_ids, batch.total, args->max_wait_ms, s_on_batch,
                                 &batch);
    free (waited_ids);
    s_batch_progress (&batch, true);
    if (batch.tty) {
        fprintf (stderr, "\r\033[K");
    }
    if (waited && waited != GQ_ETIMEOUT) {
        rc = s_call_failed (client);
        if (partial) {
            s_refusal_print (&refusal);
        }
        s_batch_free (&batch, count);
        goto done;
    }
    fprintf (stderr, "%zu jobs: %zu done, %zu failed", batch.total, batch.done, batch.failed);
    if (batch.cancelled) {
        fprintf (stderr, ", %zu cancelled", batch.cancelled);
    }
    if (batch.missing) {
        fprintf (stderr, ", %zu unknown to the broker", batch.missing);
    }
    if (batch.finished < batch.total) {
        fprintf (stderr, ", %zu not finished", batch.total - batch.finished);
    }
    fprintf (stderr, " in %.1f s\n", (gq_mono_us () - start_us) / 1e6);
    rc = batch.done == batch.total ? S_EXIT_OK : S_EXIT_JOB;
    if (partial) {
        s_refusal_print (&refusal);
        rc = S_EXIT_REFUSED;
    }
    s_batch_free (&batch, count);
done:
    if (out && out != stdout) {
        if (fclose (out) != 0) {
            s_warn ("cannot write %s: %s", args->out, strerror (errno));
            rc = rc ? rc : S_EXIT_JOB;
        }
    } else if (out) {
        fflush (out);
    }
    free (ids);
    free (file.lines);
    json_decref (file.jobs);
    return rc;
}

static int
s_cmd_submit (int argc, char **argv)
{
    s_submit_args_t args = {.defaults = json_object (), .max_wait_ms = -1,
                            .rate_retries = GQ_CLI_RATE_RETRIES};
    int rc = s_submit_parse (argc, argv, &args);
    if (rc == 0) {
        gq_client_t *client = s_connect (&rc);
        if (client) {
            gq_client_set_rate_retries (client, (size_t) args.rate_retries);
            rc = args.file ? s_submit_file (client, &args) : s_submit_one (client, &args);
            gq_client_destroy (&client);
        }
    } else if (rc < 0) {
        rc = S_EXIT_OK; /* --help */
    }
    json_decref (args.defaults);
    return rc;
}

/* ---- Commands that take job ids ------------------------------------------------------------ */

typedef struct {
    bool json;              /* --json */
    int64_t max_wait_ms;    /* --max-wait, -1 for none */
    int64_t *ids;           /* positional ids */
    size_t count;           /* entries of ids */
} s_ids_args_t;

/* What a command on ids takes besides the ids. */
enum {
    S_IDS_JSON = 1,         /* --json */
    S_IDS_MAX_WAIT = 2,     /* --max-wait DURATION */
    S_IDS_ONE = 4           /* exactly one id */
};

/* The start of every command on ids: parses "[--json] [--max-wait DUR] ID..." (as takes allows)
   into args, then connects. Returns the client, with args->ids for the caller to free; or NULL,
   with nothing to free and *rc the exit code (S_EXIT_OK after --help). */
static gq_client_t *
s_ids_start (int argc, char **argv, const char *help, int takes, s_ids_args_t *args, int *rc)
{
    static const struct option options[] = {{"json", no_argument, NULL, O_JSON},
                                            {"max-wait", required_argument, NULL, O_MAX_WAIT},
                                            {"help", no_argument, NULL, O_HELP},
                                            {NULL, 0, NULL, 0}};
    args->max_wait_ms = -1;
    *rc = S_EXIT_OK;
    int option;
    while (*rc == S_EXIT_OK && (option = s_getopt (argc, argv, options)) != -1) {
        if (option == O_HELP) {
            s_help (help);
            return NULL;
        } else if (option == O_JSON && (takes & S_IDS_JSON)) {
            args->json = true;
        } else if (option == O_MAX_WAIT && (takes & S_IDS_MAX_WAIT)) {
            if (gq_parse_duration_ms (optarg, &args->max_wait_ms)) {
                *rc = s_usage ("--max-wait \"%s\" is not a duration like 30s or 5m", optarg);
            }
        } else if (option == '?') {
            *rc = S_EXIT_USAGE;
        } else {
            *rc = s_usage ("unknown option %s", argv[optind - 1]);
        }
    }
    if (*rc == S_EXIT_OK) {
        *rc = s_parse_ids (argc - optind, argv + optind, &args->ids, &args->count);
    }
    if (*rc == S_EXIT_OK && (takes & S_IDS_ONE) && args->count != 1) {
        *rc = s_usage ("takes one job id, got %zu", args->count);
    }
    gq_client_t *client = *rc == S_EXIT_OK ? s_connect (rc) : NULL;
    if (!client) {
        free (args->ids);
        args->ids = NULL;
    }
    return client;
}

/* Sends command (STATUS or CANCEL) for many ids, in requests of at most GQ_MAX_IDS: returns an
   object mapping "id" -> job as the replies give it, and the ids the broker does not know in
   *missing (an array). NULL with the error set on the client. */
static json_t *
s_ids_call (gq_client_t *client, const char *command, const int64_t *ids, size_t count,
            json_t **missing)
{
    json_t *map = json_object ();
    *missing = json_array ();
    for (size_t first = 0; first < count; first += GQ_MAX_IDS) {
        json_t *chunk = json_array ();
        for (size_t i = first; i < count && i < first + GQ_MAX_IDS; i++) {
            json_array_append_new (chunk, json_integer (ids[i]));
        }
        /* A full reply names in "more" the ids it could not hold: they are asked again. */
        while (chunk) {
            json_t *reply = gq_client_call (client, command, json_pack ("{s:o}", "ids", chunk));
            if (!reply) {
                json_decref (map);
                json_decref (*missing);
                *missing = NULL;
                return NULL;
            }
            size_t i;
            json_t *job;
            json_array_foreach (json_object_get (reply, "jobs"), i, job) {
                char key[24];
                snprintf (key, sizeof key, "%lld", (long long) s_int (job, "id", 0));
                json_object_set (map, key, job);
            }
            json_array_extend (*missing, json_object_get (reply, "missing"));
            json_t *more = json_object_get (reply, "more");
            chunk = json_array_size (more) ? json_incref (more) : NULL;
            json_decref (reply);
        }
    }
    return map;
}

static json_t *
s_map_get (json_t *map, int64_t id)
{
    char key[24];
    snprintf (key, sizeof key, "%lld", (long long) id);
    return json_object_get (map, key);
}

/* Says which ids the broker does not know: S_EXIT_JOB when there are any, else S_EXIT_OK. */
static int
s_report_missing (json_t *missing)
{
    size_t i;
    json_t *id;
    json_array_foreach (missing, i, id) {
        s_warn ("no job %lld", (long long) json_integer_value (id));
    }
    return json_array_size (missing) ? S_EXIT_JOB : S_EXIT_OK;
}

static const char *s_status_help =
    "Usage: gridq status ID... [--json]\n"
    "\n"
    "Shows jobs as a table: ID STATE KIND MODEL PRI NODE ATTEMPTS SUBMITTED RUNTIME; a failed\n"
    "job is followed by its error and every attempt's outcome and reason. An array's id shows\n"
    "one line: its spec, its elements' ids and how many are in each state.\n"
    "  --json   one job object per line, in the order given (failed jobs carry\n"
    "           attempts_detail)\n"
    "Exit status: 0 when every job exists, 1 when some id is unknown.\n"
    "\n"
    "Example:\n"
    "  gridq status 41 42 43\n";

/* A job's row; indent goes before its id (an element under its array's row). */
static void
s_job_row (s_table_t *table, json_t *job, const char *indent)
{
    char submitted[32], runtime[32];
    s_table_cell (table, "%s%lld", indent, (long long) s_int (job, "id", 0));
    s_table_cell (table, "%s", s_str (job, "state", "?"));
    s_table_cell (table, "%s", s_str (job, "kind", "-"));
    s_table_cell (table, "%s", s_str (job, "model", "-"));
    s_table_cell (table, "%lld", (long long) s_int (job, "priority", 5));
    s_table_cell (table, "%s", s_str (job, "node", "-"));
    if (json_object_get (job, "max_attempts")) {
        s_table_cell (table, "%lld/%lld", (long long) s_int (job, "attempts", 0),
                      (long long) s_int (job, "max_attempts", 0));
    } else {
        s_table_cell (table, "%lld", (long long) s_int (job, "attempts", 0));
    }
    s_table_cell (table, "%s", s_short_time (job, "submitted_at", submitted, sizeof submitted));
    s_table_cell (table, "%s", s_runtime (job, runtime, sizeof runtime));
}

/* The jobs' table; with progress, a last column for the arrays' progress. */
static s_table_t
s_job_table (bool progress)
{
    static const char *const head[] = {"ID",      "STATE",    "KIND",            "MODEL",
                                       "PRI",     "NODE",     "ATTEMPTS", "SUBMITTED (UTC)",
                                       "RUNTIME", "PROGRESS"};
    return s_table_new (head, progress ? 10 : 9);
}

/* An array as STATUS summarises it: "array 41 (0-199%3): 200 elements, 42..241: 150 done, ...". */
static void
s_array_line (FILE *out, json_t *array)
{
    static const char *const states[] = {"done", "running", "queued", "waiting", "failed",
                                         "cancelled"};
    int64_t first = s_int (array, "first", 0), count = s_int (array, "count", 0);
    fprintf (out, "array %lld (%s): %lld elements, %lld..%lld:", (long long) s_int (array, "id", 0),
             s_str (array, "spec", "?"), (long long) count, (long long) first,
             (long long) (first + count - 1));
    json_t *counts = json_object_get (array, "counts");
    const char *sep = " ";
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        int64_t n = s_int (counts, states[i], 0);
        if (n) {
            fprintf (out, "%s%lld %s", sep, (long long) n, states[i]);
            sep = ", ";
        }
    }
    fprintf (out, "\n");
}

static int
s_cmd_status (int argc, char **argv)
{
    s_ids_args_t args = {0};
    int rc;
    gq_client_t *client = s_ids_start (argc, argv, s_status_help, S_IDS_JSON, &args, &rc);
    if (!client) {
        return rc;
    }
    json_t *missing;
    json_t *map = s_ids_call (client, "STATUS", args.ids, args.count, &missing);
    if (!map) {
        rc = s_call_failed (client);
        goto done;
    }
    /* Failed jobs: RESULT adds each attempt's reason, the post-mortem users come here for. */
    json_t *details = json_object ();
    const char *key;
    json_t *job;
    json_object_foreach (map, key, job) {
        if (streq (s_str (job, "state", ""), "failed")) {
            json_t *whole = s_fetch_job (client, s_int (job, "id", 0));
            if (whole) {
                json_object_set_new (details, key, whole);
            }
        }
    }
    json_t *shown = json_object ();
    s_table_t table = s_job_table (false);
    for (size_t i = 0; i < args.count; i++) {
        job = s_map_get (map, args.ids[i]);
        char id[24];
        snprintf (id, sizeof id, "%lld", (long long) args.ids[i]);
        if (!job || json_object_get (shown, id)) {
            continue; /* missing ones are reported below; each job once */
        }
        json_object_set_new (shown, id, json_true ());
        json_t *detail = json_object_get (details, id);
        json_t *array = json_object_get (job, "array");
        if (array && !args.json) {
            s_array_line (stdout, array);
            continue;
        }
        if (args.json) {
            json_t *line = json_copy (job);
            if (detail) {
                json_object_set (line, "attempts_detail",
                                 json_object_get (detail, "attempts_detail"));
            }
            s_print_json (stdout, line);
            json_decref (line);
        } else {
            s_job_row (&table, job, "");
        }
    }
    if (!args.json && table.cells > table.cols) {
        s_table_print (&table, stdout);
        json_object_foreach (details, key, job) {
            printf ("\njob %s failed: %s\n", key, s_str (job, "error", "(no error recorded)"));
            s_print_attempts (stdout, job);
        }
    }
    rc = s_report_missing (missing);
    s_table_destroy (&table);
    json_decref (shown);
    json_decref (details);
    json_decref (map);
    json_decref (missing);
done:
    gq_client_destroy (&client);
    free (args.ids);
    return rc;
}

/* ---- wait ---------------------------------------------------------------------------------- */

static const char *s_wait_help =
    "Usage: gridq wait ID... [--json] [--max-wait DURATION]\n"
    "\n"
    "Waits for jobs to finish and prints each one's id and state as it finishes (with the\n"
    "error of a failed job). Rides through a broker restart. An array's id waits for every\n"
    "one of its elements.\n"
    "  --json          print each finished job as a JSON object, one per line\n"
    "  --max-wait DUR  stop waiting after DUR (default: as long as it takes)\n"
    "Exit status: 0 when every job is done; 1 when one failed, was cancelled, is unknown or\n"
    "did not finish in time.\n"
    "\n"
    "Example:\n"
    "  id=$(gridq submit --kind sleep --payload '{\"ms\": 500}') && gridq wait $id\n";

typedef struct {
    bool json;              /* print jobs as JSON */
    size_t done;            /* jobs that ended done */
    size_t finished;        /* jobs that ended in any state */
} s_waiting_t;

static int
s_on_wait (void *arg, json_t *job)
{
    s_waiting_t *waiting = (s_waiting_t *) arg;
    const char *state = s_str (job, "state", "?");
    waiting->finished++;
    waiting->done += streq (state, "done");
    if (waiting->json) {
        s_print_json (stdout, job);
    } else if (s_str (job, "error", NULL)) {
        printf ("%lld %s: %s\n", (long long) s_int (job, "id", 0), state, s_str (job, "error", ""));
    } else {
        printf ("%lld %s\n", (long long) s_int (job, "id", 0), state);
    }
    fflush (stdout);
    return 0;
}

static int
s_cmd_wait (int argc, char **argv)
{
    s_ids_args_t args = {0};
    int rc;
    gq_client_t *client =
        s_ids_start (argc, argv, s_wait_help, S_IDS_JSON | S_IDS_MAX_WAIT, &args, &rc);
    if (!client) {
        return rc;
    }
    /* STATUS first: WAIT has no reply while jobs run, so only this tells a dead broker (exit 3)
       from jobs that take their time. Unknown ids are reported by WAIT itself. */
    json_t *missing;
    json_t *map = s_ids_call (client, "STATUS", args.ids, args.count, &missing);
    if (!map) {
        rc = s_call_failed (client);
        goto done;
    }
    /* An array's id stands for its elements (its summary says which). */
    size_t count = 0, size = args.count;
    int64_t *ids = (int64_t *) malloc (size * sizeof *ids);
    for (size_t i = 0; ids && i < args.count; i++) {
        json_t *array = json_object_get (s_map_get (map, args.ids[i]), "array");
        int64_t first = array ? s_int (array, "first", 0) : args.ids[i];
        int64_t n = array ? s_int (array, "count", 0) : 1;
        if (count + (size_t) n > size) {
            size = count + (size_t) n + size;
            int64_t *grown = (int64_t *) realloc (ids, size * sizeof *ids);
            if (!grown) {
                free (ids);
                ids = NULL;
                break;
            }
            ids = grown;
        }
        for (int64_t k = 0; k < n; k++) {
            ids[count++] = first + k;
        }
    }
    json_decref (map);
    json_decref (missing);
    if (!ids) {
        s_warn ("out of memory");
        rc = S_EXIT_JOB;
        goto done;
    }
    s_waiting_t waiting = {.json = args.json};
    int waited = gq_client_wait (client, ids, count, args.max_wait_ms, s_on_wait, &waiting);
    free (ids);
    if (waited == GQ_ETIMEOUT) {
        s_warn ("%s", gq_client_error (client));
        rc = S_EXIT_JOB;
    } else if (waited) {
        rc = s_call_failed (client);
    } else {
        /* Distinct ids: the callback ran once per job. */
        rc = waiting.done == waiting.finished ? S_EXIT_OK : S_EXIT_JOB;
    }
done:
    gq_client_destroy (&client);
    free (args.ids);
    return rc;
}

/* submit --array --wait: waits for the elements (ids id + 1 .. id + count) as gridq wait does. */
static int
s_wait_array (gq_client_t *client, int64_t id, int64_t count, int64_t max_wait_ms)
{
    int64_t *ids = (int64_t *) malloc ((size_t) count * sizeof *ids);
    if (!ids) {
        s_warn ("out of memory");
        return S_EXIT_JOB;
    }
    for (int64_t k = 0; k < count; k++) {
        ids[k] = id + 1 + k;
    }
    s_waiting_t waiting = {.json = false};
    int waited = gq_client_wait (client, ids, (size_t) count, max_wait_ms, s_on_wait, &waiting);
    free (ids);
    if (waited == GQ_ETIMEOUT) {
        s_warn ("%s", gq_client_error (client));
        return S_EXIT_JOB;
    }
    if (waited) {
        return s_call_failed (client);
    }
    return waiting.done == waiting.finished ? S_EXIT_OK : S_EXIT_JOB;
}

/* ---- watch --------------------------------------------------------------------------------- */

static const char *s_watch_help =
    "Usage: gridq watch ID [--json] [--max-wait DURATION]\n"
    "\n"
    "Follows one job: prints each partial result its engine streams from now on, one JSON line\n"
    "each as it arrives (partials sent before are not kept: they are never stored), then the\n"
    "final line as 'gridq submit --wait' does: the result JSON of a done job, or the whole job\n"
    "with --json. A slow reader may miss partials; the final line always comes.\n"
    "Exit status: 0 when the job is done, 1 when it failed or was cancelled (or --max-wait\n"
    "passed). Ctrl-C stops watching; the job goes on.\n"
    "\n"
    "Example:\n"
    "  gridq watch 42\n";

static int
s_cmd_watch (int argc, char **argv)
{
    s_ids_args_t args = {0};
    int rc;
    gq_client_t *client = s_ids_start (argc, argv, s_watch_help,
                                       S_IDS_JSON | S_IDS_MAX_WAIT | S_IDS_ONE, &args, &rc);
    if (!client) {
        return rc;
    }
    gq_client_set_partial_fn (client, s_on_partial, NULL);
    rc = s_follow_one (client, args.ids[0], args.json, args.max_wait_ms, false);
    gq_client_destroy (&client);
    free (args.ids);
    return rc;
}

/* ---- result -------------------------------------------------------------------------------- */

static const char *s_result_help =
    "Usage: gridq result ID [--json]\n"
    "\n"
    "Prints a done job's result JSON on one line.\n"
    "  --json   print the whole job instead: payload, result, error and attempts_detail\n"
    "Exit status: 0 when the job is done; 1 when it is not (its state and error go to stderr).\n"
    "\n"
    "Example:\n"
    "  gridq result 42 | jq .output\n";

static int
s_cmd_result (int argc, char **argv)
{
    s_ids_args_t args = {0};
    int rc;
    gq_client_t *client =
        s_ids_start (argc, argv, s_result_help, S_IDS_JSON | S_IDS_ONE, &args, &rc);
    if (!client) {
        return rc;
    }
    json_t *reply =
        gq_client_call (client, "RESULT", json_pack ("{s:I}", "id", (json_int_t) args.ids[0]));
    if (!reply) {
        rc = s_call_failed (client);
    } else {
        rc = s_print_outcome (json_object_get (reply, "job"), args.json);
    }
    json_decref (reply);
    gq_client_destroy (&client);
    free (args.ids);
    return rc;
}

/* ---- cancel -------------------------------------------------------------------------------- */

static const char *s_cancel_help =
    "Usage: gridq cancel ID...\n"
    "\n"
    "Cancels queued or running jobs and prints, per job, \"ID cancelled\" or the final state it\n"
    "had already (\"ID already done\", \"ID already failed\"). An array's id cancels every\n"
    "element not ended yet (\"ID array: N elements cancelled\").\n"
    "Exit status: 0 when every job is now final; 1 when some id is unknown.\n"
    "\n"
    "Example:\n"
    "  gridq cancel 41 42\n";

static int
s_cmd_cancel (int argc, char **argv)
{
    s_ids_args_t args = {0};
    int rc;
    gq_client_t *client = s_ids_start (argc, argv, s_cancel_help, 0, &args, &rc);
    if (!client) {
        return rc;
    }
    json_t *missing;
    json_t *jobs = s_ids_call (client, "CANCEL", args.ids, args.count, &missing);
    if (!jobs) {
        rc = s_call_failed (client);
    } else {
        for (size_t i = 0; i < args.count; i++) {
            char key[24];
            snprintf (key, sizeof key, "%lld", (long long) args.ids[i]);
            const char *state = json_string_value (json_object_get (json_object_get (jobs, key),
                                                                    "state"));
            if (!state) {
                continue;
            }
            json_t *entry = json_object_get (jobs, key);
            if (json_object_get (entry, "cancelled")) {
                printf ("%s array: %lld elements cancelled\n", key,
                        (long long) s_int (entry, "cancelled", 0));
            } else if (streq (state, "cancelled")) {
                printf ("%s cancelled\n", key);
            } else if (streq (state, "done") || streq (state, "failed")) {
                printf ("%s already %s\n", key, state);
            } else {
                printf ("%s %s\n", key, state); /* a broker that could not cancel says so */
            }
            json_object_del (jobs, key); /* each once, even when named twice */
        }
        rc = s_report_missing (missing);
    }
    json_decref (jobs);
    json_decref (missing);
    gq_client_destroy (&client);
    free (args.ids);
    return rc;
}

/* ---- retry --------------------------------------------------------------------------------- */

static const char *s_retry_help =
    "Usage: gridq retry ID...\n"
    "\n"
    "Runs failed and cancelled jobs again, as new attempts of the same jobs (the same ids, a new\n"
    "budget of --max-attempts), keeping what succeeded: HTCondor DAGMan's rescue DAG. An array's\n"
    "id retries its failed and cancelled elements. The jobs that a failure cancelled\n"
    "(\"dependency N failed\") run again too, after it, down the chain. Prints \"ID queued again\"\n"
    "for each job that runs again, then, for an ID with nothing to retry, its state.\n"
    "Exit status: 0 when every id exists; 1 when some id is unknown.\n"
    "\n"
    "Example:\n"
    "  gridq submit --file pipeline.jsonl --wait || gridq retry 43   # c failed; c and d again\n";

static int
s_cmd_retry (int argc, char **argv)
{
    s_ids_args_t args = {0};
    int rc;
    gq_client_t *client = s_ids_start (argc, argv, s_retry_help, 0, &args, &rc);
    if (!client) {
        return rc;
    }
    json_t *ids = json_array ();
    for (size_t i = 0; i < args.count; i++) {
        json_array_append_new (ids, json_integer (args.ids[i]));
    }
    json_t *reply = gq_client_call (client, "RETRY", json_pack ("{s:o}", "ids", ids));
    if (!reply) {
        rc = s_call_failed (client);
    } else {
        size_t i;
        json_t *item;
        json_array_foreach (json_object_get (reply, "retried"), i, item) {
            printf ("%lld queued again\n", (long long) json_integer_value (item));
        }
        json_array_foreach (json_object_get (reply, "jobs"), i, item) {
            if (s_int (item, "retried", 0) == 0) {
                printf ("%lld is %s: nothing to retry\n", (long long) s_int (item, "id", 0),
                        s_str (item, "state", "?"));
            }
        }
        if (s_str (reply, "error", NULL)) {
            s_warn ("the broker stopped part way: %s", s_str (reply, "error", ""));
        }
        rc = s_report_missing (json_object_get (reply, "missing"));
        if (rc == S_EXIT_OK && s_str (reply, "error", NULL)) {
            rc = S_EXIT_JOB;
        }
    }
    json_decref (reply);
    gq_client_destroy (&client);
    free (args.ids);
    return rc;
}

/* ---- Commands without ids ------------------------------------------------------------------ */

/* Parses "[--json]" and nothing else. 0, -1 after --help, or an exit code. */
static int
s_json_only (int argc, char **argv, const char *help, bool *json)
{
    static const struct option options[] = {{"json", no_argument, NULL, O_JSON},
                                            {"help", no_argument, NULL, O_HELP},
                                            {NULL, 0, NULL, 0}};
    int option;
    while ((option = s_getopt (argc, argv, options)) != -1) {
        if (option == O_HELP) {
            s_help (help);
            return -1;
        }
        if (option == O_JSON && json) {
            *json = true;
        } else if (option == '?') {
            return S_EXIT_USAGE;
        } else {
            return s_usage ("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        return s_usage ("unexpected argument \"%s\"", argv[optind]);
    }
    return S_EXIT_OK;
}

/* One request, one reply, for commands without ids. NULL after reporting; *rc is set. */
static json_t *
s_simple_call (const char *command, json_t *body, int *rc)
{
    gq_client_t *client = s_connect (rc);
    if (!client) {
        json_decref (body);
        return NULL;
    }
    json_t *reply = gq_client_call (client, command, body);
    *rc = reply ? S_EXIT_OK : s_call_failed (client);
    gq_client_destroy (&client);
    return reply;
}

/* The start of a command that takes only [--json] (nodes, stats): parses it into *json, then
   asks command. The reply (caller owns), or NULL with *rc the exit code (S_EXIT_OK after
   --help). */
static json_t *
s_json_only_call (int argc, char **argv, const char *help, const char *command, bool *json,
                  int *rc)
{
    *rc = s_json_only (argc, argv, help, json);
    if (*rc) {
        *rc = *rc < 0 ? S_EXIT_OK : *rc;
        return NULL;
    }
    return s_simple_call (command, NULL, rc);
}

/* jobs --array: the array's summary line, then its elements (in state, when not NULL) in index
   order, at most limit of them, asked by STATUS in requests of GQ_MAX_IDS. The exit code. */
static int
s_array_jobs (int64_t id, const char *state, int64_t limit, bool json)
{
    int rc = S_EXIT_OK;
    gq_client_t *client = s_connect (&rc);
    if (!client) {
        return rc;
    }
    json_t *missing;
    json_t *map = s_ids_call (client, "STATUS", &id, 1, &missing);
    json_t *summary = map ? json_object_get (s_map_get (map, id), "array") : NULL;
    json_t *jobs = json_array ();
    if (!map) {
        rc = s_call_failed (client);
    } else if (!summary) {
        s_warn ("%lld is not an array", (long long) id);
        rc = S_EXIT_JOB;
    }
    int64_t first = s_int (summary, "first", 0), count = s_int (summary, "count", 0);
    int64_t *ids = (int64_t *) malloc (GQ_MAX_IDS * sizeof *ids);
    for (int64_t at = 0; summary && ids && at < count && (int64_t) json_array_size (jobs) < limit;
         at += GQ_MAX_IDS) {
        size_t n = 0;
        for (; n < GQ_MAX_IDS && at + (int64_t) n < count; n++) {
            ids[n] = first + at + (int64_t) n;
        }
        json_t *lost;
        json_t *chunk = s_ids_call (client, "STATUS", ids, n, &lost);
        json_decref (lost);
        if (!chunk) {
            rc = s_call_failed (client);
            break;
        }
        for (size_t i = 0; i < n && (int64_t) json_array_size (jobs) < limit; i++) {
            json_t *job = s_map_get (chunk, ids[i]);
            if (job && (!state || streq (s_str (job, "state", ""), state))) {
                json_array_append (jobs, job);
            }
        }
        json_decref (chunk);
    }
    if (rc == S_EXIT_OK && json) {
        s_print_json (stdout, jobs);
    } else if (rc == S_EXIT_OK) {
        s_array_line (stdout, summary);
        s_table_t table = s_job_table (false);
        size_t i;
        json_t *job;
        json_array_foreach (jobs, i, job) {
            s_job_row (&table, job, "");
        }
        if (json_array_size (jobs)) {
            s_table_print (&table, stdout);
        }
        s_table_destroy (&table);
    }
    free (ids);
    json_decref (jobs);
    json_decref (map);
    json_decref (missing);
    gq_client_destroy (&client);
    return rc;
}

static const char *s_jobs_help =
    "Usage: gridq jobs [--state S] [--limit N] [--expand] [--array ID] [--json]\n"
    "\n"
    "Lists jobs, newest first, as a table. An array is one row, as squeue shows one: its id\n"
    "and spec (41_[0-999%16]), the state of its liveliest elements (running, else queued, else\n"
    "waiting, else its own), and in a last column, PROGRESS, a bar of 20 cells, then its\n"
    "elements ended of all and its elements by state:\n"
    "  [############!!>>>>--] 7/10: 6 done, 1 failed, 2 running, 1 queued\n"
    "Each state has its share of the cells (one at least when it has an element):\n"
    "  # done   ! failed   x cancelled   > running   - queued   . waiting (held by the\n"
    "  array's limit, or by dependencies)\n"
    "  --expand    every array's elements under its row, in the listing's order (they count\n"
    "              against --limit)\n"
    "  --array ID  the elements of array ID instead, in index order, after a line that counts\n"
    "              them per state (with --state: the elements in that state)\n"
    "  --state S   only jobs in state S: waiting (for dependencies; oldest first), queued (in\n"
    "              dispatch order), running, done, failed or cancelled; an array has a row\n"
    "              when one of its elements is in S (its counts are the whole array's)\n"
    "  --limit N   at most N rows, 1..10000 (default 100)\n"
    "  --json      one JSON array: job objects, and for an array {\"id\", \"state\", \"array\":\n"
    "              {its summary, as gridq status --json gives it}}, with --expand its\n"
    "              \"elements\": [job objects]\n"
    "\n"
    "Examples:\n"
    "  gridq jobs --state failed --limit 10\n"
    "  gridq jobs --state failed --expand\n";

/* An array's row: squeue's label, the state of its liveliest elements, what its elements share,
   and its progress. */
static void
s_array_row (s_table_t *table, json_t *summary)
{
    char label[64], submitted[32], bar[GQ_CLI_ARRAY_BAR_CELLS + 3], counts[256];
    s_table_cell (table, "%s", gq_arrayview_label (summary, label, sizeof label));
    s_table_cell (table, "%s", gq_arrayview_state (summary));
    s_table_cell (table, "%s", s_str (summary, "kind", "-"));
    s_table_cell (table, "%s", s_str (summary, "model", "-"));
    s_table_cell (table, "%lld", (long long) s_int (summary, "priority", 5));
    s_table_cell (table, "-");
    s_table_cell (table, "-");
    s_table_cell (table, "%s", s_short_time (summary, "submitted_at", submitted, sizeof submitted));
    s_table_cell (table, "-");
    s_table_cell (table, "%s %s",
                  gq_arrayview_bar (summary, GQ_CLI_ARRAY_BAR_CELLS, bar, sizeof bar),
                  gq_arrayview_counts (summary, counts, sizeof counts));
}

/* The listing as a table: a job a row, an array a row with its elements (--expand) under it;
   the PROGRESS column only when there is an array. */
static void
s_jobs_print (json_t *jobs)
{
    bool arrays = false;
    size_t i, e;
    json_t *job, *element;
    json_array_foreach (jobs, i, job) {
        arrays = arrays || json_object_get (job, "array");
    }
    s_table_t table = s_job_table (arrays);
    json_array_foreach (jobs, i, job) {
        json_t *summary = json_object_get (job, "array");
        if (!summary) {
            s_job_row (&table, job, "");
        } else {
            s_array_row (&table, summary);
        }
        if (arrays && !summary) {
            s_table_cell (&table, "%s", "");
        }
        json_array_foreach (json_object_get (job, "elements"), e, element) {
            s_job_row (&table, element, "  ");
            s_table_cell (&table, "%s", "");
        }
    }
    s_table_print (&table, stdout);
    s_table_destroy (&table);
}

static int
s_cmd_jobs (int argc, char **argv)
{
    static const struct option options[] = {{"state", required_argument, NULL, O_STATE},
                                            {"limit", required_argument, NULL, O_LIMIT},
                                            {"expand", no_argument, NULL, O_EXPAND},
                                            {"array", required_argument, NULL, O_ARRAY},
                                            {"json", no_argument, NULL, O_JSON},
                                            {"help", no_argument, NULL, O_HELP},
                                            {NULL, 0, NULL, 0}};
    static const char *states[] = {"waiting", "queued", "running", "done", "failed", "cancelled",
                                   NULL};
    /* An array is one row (an entry of its own in JOBS's answer). */
    json_t *body = json_pack ("{s:b}", "arrays", true);
    bool json = false, expand = false;
    int64_t array = 0;
    int option;
    int rc = S_EXIT_OK;
    while (rc == S_EXIT_OK && (option = s_getopt (argc, argv, options)) != -1) {
        int64_t n;
        bool known = false;
        switch (option) {
        case O_HELP:
            s_help (s_jobs_help);
            json_decref (body);
            return S_EXIT_OK;
        case O_STATE:
            for (const char **s = states; *s; s++) {
                known = known || streq (*s, optarg);
            }
            if (!known) {
                rc = s_usage ("--state \"%s\" is not one of waiting, queued, running, done, "
                              "failed, cancelled",
                              optarg);
            }
            json_object_set_new (body, "state", json_string (optarg));
            break;
        case O_LIMIT:
            if (!s_parse_int (optarg, 1, GQ_MAX_IDS, &n)) {
                rc = s_usage ("--limit \"%s\" is not a number in 1..%d", optarg, GQ_MAX_IDS);
                break;
            }
            json_object_set_new (body, "limit", json_integer (n));
            break;
        case O_JSON:
            json = true;
            break;
        case O_EXPAND:
            expand = true;
            break;
        case O_ARRAY:
            if (!s_parse_int (optarg, 1, INT64_MAX, &array)) {
                rc = s_usage ("--array \"%s\" is not an array id", optarg);
            }
            break;
        default:
            rc = S_EXIT_USAGE;
        }
    }
    if (rc == S_EXIT_OK && optind < argc) {
        rc = s_usage ("unexpected argument \"%s\"", argv[optind]);
    }
    if (rc) {
        json_decref (body);
        return rc;
    }
    if (array) {
        rc = s_array_jobs (array, s_str (body, "state", NULL), s_int (body, "limit", 100), json);
        json_decref (body);
        return rc;
    }
    if (expand) {
        /* As many of each array's elements as the listing may hold. */
        json_object_set_new (body, "expand", json_integer (s_int (body, "limit", 100)));
    }
    json_t *reply = s_simple_call ("JOBS", body, &rc);
    if (!reply) {
        return rc;
    }
    json_t *jobs = json_object_get (reply, "jobs");
    if (json) {
        s_print_json (stdout, jobs ? jobs : json_array ());
    } else {
        s_jobs_print (jobs);
    }
    json_decref (reply);
    return S_EXIT_OK;
}

static const char *s_nodes_help =
    "Usage: gridq nodes [--json]\n"
    "\n"
    "Lists the fleet as a table: NAME GPU VRAM(free/total) TFLOPS PRICE SLOTS(running/slots)\n"
    "RTT STATUS MODELS (SLOTS shows +N when the node may hold N prefetched jobs beyond its\n"
    "slots; a loaded model is marked *; a failing node that is backed off shows\n"
    "\"backoff until HH:MM:SS\" in STATUS; an engine that is down \"engine KIND restarting\",\n"
    "an OpenAI server that does not answer \"server KIND unreachable\").\n"
    "  --json   one JSON array of node objects\n"
    "\n"
    "Example:\n"
    "  gridq nodes\n";

static int
s_cmd_nodes (int argc, char **argv)
{
    bool json = false;
    int rc;
    json_t *reply = s_json_only_call (argc, argv, s_nodes_help, "NODES", &json, &rc);
    if (!reply) {
        return rc;
    }
    json_t *nodes = json_object_get (reply, "nodes");
    if (json) {
        s_print_json (stdout, nodes ? nodes : json_array ());
        json_decref (reply);
        return S_EXIT_OK;
    }
    static const char *const head[] = {"NAME", "GPU", "VRAM(free/total)", "TFLOPS", "PRICE",
                                       "SLOTS(running/slots)", "RTT", "STATUS", "MODELS"};
    s_table_t table = s_table_new (head, 9);
    size_t i;
    json_t *node;
    json_array_foreach (nodes, i, node) {
        char free_mb[32], total_mb[32];
        int64_t total = s_int (node, "vram_total_mb", 0);
        s_table_cell (&table, "%s", s_str (node, "name", "?"));
        s_table_cell (&table, "%s", s_str (node, "gpu_model", "-"));
        if (total > 0) {
            s_table_cell (&table, "%s/%s",
                          s_format_mb (s_int (node, "vram_free_mb", 0), free_mb, sizeof free_mb),
                          s_format_mb (total, total_mb, sizeof total_mb));
        } else {
            s_table_cell (&table, "-");
        }
        s_table_cell (&table, "%.1f", json_number_value (json_object_get (node, "tflops")));
        s_table_cell (&table, "%.2f", json_number_value (json_object_get (node, "price_per_hour")));
        if (s_int (node, "prefetch", 0) > 0) {
            s_table_cell (&table, "%lld/%lld+%lld", (long long) s_int (node, "running", 0),
                          (long long) s_int (node, "slots", 0),
                          (long long) s_int (node, "prefetch", 0));
        } else {
            s_table_cell (&table, "%lld/%lld", (long long) s_int (node, "running", 0),
                          (long long) s_int (node, "slots", 0));
        }
        json_t *rtt = json_object_get (node, "rtt_ms");
        if (json_is_number (rtt)) {
            s_table_cell (&table, "%.1fms", json_number_value (rtt));
        } else {
            s_table_cell (&table, "-");
        }
        /* A failing node the broker backs off shows until when (UTC, to the second); an
           engine or a server that is not up, its kind and state. */
        char status[256];
        const char *backoff = s_str (node, "backoff_until", NULL);
        int n = snprintf (status, sizeof status, "%s", s_str (node, "status", "?"));
        if (backoff && strlen (backoff) >= 19) {
            n += snprintf (status + n, sizeof status - (size_t) n, " (backoff until %.8s)",
                           backoff + 11);
        }
        size_t e;
        json_t *engine;
        json_array_foreach (json_object_get (node, "engines"), e, engine) {
            const char *state = s_str (engine, "state", "up");
            if (!streq (state, "up") && n < (int) sizeof status) {
                n += snprintf (status + n, sizeof status - (size_t) n, " (%s %.32s %.16s)",
                               streq (s_str (engine, "via", ""), "openai") ? "server" : "engine",
                               s_str (engine, "kind", "?"), state);
            }
        }
        s_table_cell (&table, "%s", status);
        /* Available models, a loaded one marked with '*'. */
        char models[512] = "";
        size_t len = 0, m;
        json_t *model;
        json_array_foreach (json_object_get (node, "models_available"), m, model) {
            const char *name = json_string_value (model);
            bool loaded = false;
            size_t l;
            json_t *entry;
            json_array_foreach (json_object_get (node, "models_loaded"), l, entry) {
                loaded = loaded || (name && streq (s_str (entry, "name", ""), name));
            }
            if (name && len < sizeof models) {
                len += (size_t) snprintf (models + len, sizeof models - len, "%s%s%s",
                                          len ? "," : "", name, loaded ? "*" : "");
            }
        }
        s_table_cell (&table, "%s", len ? models : "-");
    }
    s_table_print (&table, stdout);
    s_table_destroy (&table);
    json_decref (reply);
    return S_EXIT_OK;
}

static const char *s_explain_help =
    "Usage: gridq explain ID [--json]\n"
    "\n"
    "Shows how the matcher sees a job: the job, every node with its verdict (the reason it was\n"
    "filtered out, or its score terms: fit, compute, cost, warm, load, latency, reliability),\n"
    "the node chosen, and a hint when no node fits. A job waiting for its dependencies names\n"
    "each one, its condition (after_ok, after_any, after_fail) and its state. A job with an\n"
    "affinity key names the node that ran the last job of its key, which gets the AFFINITY\n"
    "bonus (when it has a free slot).\n"
    "  --json   the broker's EXPLAIN reply as one JSON object\n"
    "\n"
    "Example:\n"
    "  gridq explain 42\n";

static int
s_cmd_explain (int argc, char **argv)
{
    s_ids_args_t args = {0};
    int rc;
    gq_client_t *client =
        s_ids_start (argc, argv, s_explain_help, S_IDS_JSON | S_IDS_ONE, &args, &rc);
    if (!client) {
        return rc;
    }
    int64_t id = args.ids[0];
    free (args.ids);
    json_t *reply = gq_client_call (client, "EXPLAIN", json_pack ("{s:I}", "id", (json_int_t) id));
    if (!reply) {
        rc = s_call_failed (client);
        gq_client_destroy (&client);
        return rc;
    }
    if (args.json) {
        s_print_json (stdout, reply);
        json_decref (reply);
        gq_client_destroy (&client);
        return S_EXIT_OK;
    }
    /* The job line: from the reply if the broker sends it, else from STATUS. */
    json_t *job = json_incref (json_object_get (reply, "job"));
    if (!job) {
        json_t *status = gq_client_call (
            client, "STATUS", json_pack ("{s:[I]}", "ids", (json_int_t) id));
        job = status ? json_incref (json_array_get (json_object_get (status, "jobs"), 0)) : NULL;
        json_decref (status);
    }
    char vram[32], limit[32];
    printf ("job %lld: %s", (long long) id, s_str (reply, "state", s_str (job, "state", "?")));
    if (job) {
        int64_t min_vram = s_int (job, "min_vram_mb", 0);
        printf (", kind %s, model %s, min vram %s, priority %lld", s_str (job, "kind", "-"),
                s_str (job, "model", "-"),
                min_vram > 0 ? s_format_mb (min_vram, vram, sizeof vram) : "-",
                (long long) s_int (job, "priority", 5));
        json_t *constraints = json_object_get (job, "constraints");
        if (s_str (constraints, "gpu", NULL)) {
            printf (", gpu %s", s_str (constraints, "gpu", ""));
        }
        if (json_is_number (json_object_get (constraints, "max_price"))) {
            printf (", max price %.2f", json_number_value (json_object_get (constraints,
                                                                            "max_price")));
        }
        if (json_is_number (json_object_get (constraints, "min_tflops"))) {
            printf (", min tflops %.1f",
                    json_number_value (json_object_get (constraints, "min_tflops")));
        }
        if (s_int (job, "timeout_ms", 0) > 0) {
            printf (", time limit %s",
                    s_format_duration (s_int (job, "timeout_ms", 0), limit, sizeof limit));
        }
        printf (", attempts %lld/%lld", (long long) s_int (job, "attempts", 0),
                (long long) s_int (job, "max_attempts", GQ_MAX_ATTEMPTS));
    }
    json_t *affinity = json_object_get (reply, "affinity");
    if (affinity) {
        printf ("\naffinity %s: %s", s_str (affinity, "key", "?"),
                s_str (affinity, "node", NULL) ? "prefers the node that ran its last job, "
                                               : "no job of this key has run yet");
        if (s_str (affinity, "node", NULL)) {
            printf ("%s (+%.2f when it has a free slot)", s_str (affinity, "node", "?"),
                    json_number_value (json_object_get (affinity, "bonus")));
        }
    }
    json_t *prefetched = json_object_get (reply, "prefetched");
    if (prefetched) {
        printf ("\nprefetched on %s: it waits there for a slot, %lld job%s ahead of it",
                s_str (prefetched, "node", "?"), (long long) s_int (prefetched, "ahead", 0),
                s_int (prefetched, "ahead", 0) == 1 ? "" : "s");
    }
    json_t *array = json_object_get (reply, "array");
    if (array) {
        printf ("\nelement %lld of array %lld", (long long) s_int (array, "index", 0),
                (long long) s_int (array, "id", 0));
        if (json_is_true (json_object_get (array, "held"))) {
            printf (": held by the array's limit (%lld of at most %lld queued or running)",
                    (long long) s_int (array, "active", 0), (long long) s_int (array, "limit", 0));
        }
    }
    json_t *waiting_for = json_object_get (reply, "waiting_for");
    if (json_array_size (waiting_for)) {
        printf ("\nwaiting for:");
        size_t w;
        json_t *dep;
        json_array_foreach (waiting_for, w, dep) {
            printf ("%s job %lld (%s, now %s)", w ? "," : "", (long long) s_int (dep, "id", 0),
                    s_str (dep, "condition", "?"), s_str (dep, "state", "?"));
        }
    }
    printf ("\n\n");
    json_decref (job);

    static const char *const head[] = {"NODE",    "VERDICT",     "TOTAL",    "FIT",
                                       "COMPUTE", "COST",        "WARM",     "LOAD",
                                       "LATENCY", "RELIABILITY", "AFFINITY", "REASON"};
    const char *terms[] = {"total", "fit",     "compute",     "cost",    "warm",
                           "load",  "latency", "reliability", "affinity"};
    s_table_t table = s_table_new (head, 12);
    const char *chosen = s_str (reply, "node", NULL);
    size_t i;
    json_t *node;
    json_array_foreach (json_object_get (reply, "nodes"), i, node) {
        const char *name = s_str (node, "node", s_str (node, "name", "?"));
        s_table_cell (&table, "%s%s", name, chosen && streq (chosen, name) ? " *" : "");
        s_table_cell (&table, "%s", s_str (node, "verdict", "?"));
        json_t *score = json_object_get (node, "score");
        for (size_t t = 0; t < sizeof terms / sizeof terms[0]; t++) {
            json_t *term = json_object_get (score, terms[t]);
            if (json_is_number (term)) {
                s_table_cell (&table, "%.3f", json_number_value (term));
            } else {
                s_table_cell (&table, "-");
            }
        }
        s_table_cell (&table, "%s", s_str (node, "reason", ""));
    }
    s_table_print (&table, stdout);
    s_table_destroy (&table);
    printf ("\nchosen: %s\n", chosen ? chosen : "none");
    if (s_str (reply, "hint", NULL)) {
        printf ("hint: %s\n", s_str (reply, "hint", ""));
    }
    json_decref (reply);
    gq_client_destroy (&client);
    return S_EXIT_OK;
}

static const char *s_stats_help =
    "Usage: gridq stats [--json]\n"
    "\n"
    "Shows the broker's counters: jobs per state, nodes per status, the queue by priority and\n"
    "its oldest wait, rejected messages, uptime, and whether the store commits.\n"
    "  --json   the STATS reply as one JSON object: {\"jobs\": {\"waiting\", \"queued\",\n"
    "           \"running\", \"done\", \"failed\", \"cancelled\"}, \"nodes\": {\"online\", \"busy\",\n"
    "           \"draining\", \"offline\"},\n"
    "           \"queue\": {...}, \"rejected\", \"uptime_ms\", \"store\": {\"ok\", \"error\", \"since\",\n"
    "           \"failures\", \"writes_waiting\"}}\n"
    "\n"
    "Example:\n"
    "  gridq stats --json | jq .jobs.queued\n";

static int
s_cmd_stats (int argc, char **argv)
{
    bool json = false;
    int rc;
    json_t *reply = s_json_only_call (argc, argv, s_stats_help, "STATS", &json, &rc);
    if (!reply) {
        return rc;
    }
    if (json) {
        s_print_json (stdout, reply);
        json_decref (reply);
        return S_EXIT_OK;
    }
    json_t *jobs = json_object_get (reply, "jobs");
    json_t *nodes = json_object_get (reply, "nodes");
    json_t *queue = json_object_get (reply, "queue");
    printf ("jobs      waiting %lld, queued %lld, running %lld, done %lld, failed %lld, "
            "cancelled %lld\n",
            (long long) s_int (jobs, "waiting", 0), (long long) s_int (jobs, "queued", 0),
            (long long) s_int (jobs, "running", 0),
            (long long) s_int (jobs, "done", 0), (long long) s_int (jobs, "failed", 0),
            (long long) s_int (jobs, "cancelled", 0));
    printf ("nodes     online %lld, busy %lld, draining %lld, offline %lld\n",
            (long long) s_int (nodes, "online", 0), (long long) s_int (nodes, "busy", 0),
            (long long) s_int (nodes, "draining", 0), (long long) s_int (nodes, "offline", 0));
    char buf[32];
    printf ("queue     oldest wait %s; by priority",
            s_format_duration (s_int (queue, "oldest_wait_ms", 0), buf, sizeof buf));
    json_t *by = json_object_get (queue, "by_priority");
    bool any = false;
    for (size_t p = json_array_size (by); p-- > 0;) {
        json_int_t n = json_integer_value (json_array_get (by, p));
        if (n) {
            printf (" %zu:%lld", p, (long long) n);
            any = true;
        }
    }
    printf ("%s\n", any ? "" : " (empty)");
    printf ("rejected  %lld bad messages\n", (long long) s_int (reply, "rejected", 0));
    printf ("uptime    %s\n",
            s_format_duration (s_int (reply, "uptime_ms", 0), buf, sizeof buf));
    json_t *store = json_object_get (reply, "store");
    if (store && json_is_true (json_object_get (store, "ok"))) {
        printf ("store     commits (%lld failures since start)\n",
                (long long) s_int (store, "failures", 0));
    } else if (store) {
        printf ("store     CANNOT COMMIT since %s: %s; %lld writes waiting; new work paused, "
                "submissions refused\n",
                json_string_value (json_object_get (store, "since")) ?: "?",
                json_string_value (json_object_get (store, "error")) ?: "?",
                (long long) s_int (store, "writes_waiting", 0));
    }
    json_decref (reply);
    return S_EXIT_OK;
}

static const char *s_ping_help =
    "Usage: gridq ping\n"
    "\n"
    "Asks the broker for a sign of life and prints the round trip.\n"
    "Exit status: 0 when it answers, 3 when it does not within --timeout.\n"
    "\n"
    "Example:\n"
    "  gridq --broker tcp://10.0.0.5:5555 --timeout 2s ping\n";

static int
s_cmd_ping (int argc, char **argv)
{
    int rc = s_json_only (argc, argv, s_ping_help, NULL);
    if (rc) {
        return rc < 0 ? S_EXIT_OK : rc;
    }
    gq_client_t *client = s_connect (&rc);
    if (!client) {
        return rc;
    }
    int64_t t0 = gq_mono_us ();
    json_t *reply = gq_client_call (client, "PING", NULL);
    if (reply) {
        printf ("pong from %s in %.2f ms (broker %s)\n", gq_client_endpoint (client),
                (gq_mono_us () - t0) / 1000.0, s_str (reply, "version", "?"));
        rc = S_EXIT_OK;
    } else {
        rc = s_call_failed (client);
    }
    json_decref (reply);
    gq_client_destroy (&client);
    return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

typedef struct {
    const char *name;                 /* command word */
    int (*run) (int argc, char **argv); /* argv[0] is the command word */
    const char *summary;              /* one line for gridq --help */
    const char **help;                /* full --help text */
} s_command_t;

static const s_command_t s_commands[] = {
    {"submit", s_cmd_submit, "submit a job, or a JSONL file of jobs; prints the ids",
     &s_submit_help},
    {"status", s_cmd_status, "show jobs (state, node, attempts; why a job failed)",
     &s_status_help},
    {"wait", s_cmd_wait, "wait for jobs to finish", &s_wait_help},
    {"watch", s_cmd_watch, "follow a job: its partial results, then its final line",
     &s_watch_help},
    {"result", s_cmd_result, "print a done job's result", &s_result_help},
    {"cancel", s_cmd_cancel, "cancel jobs", &s_cancel_help},
    {"retry", s_cmd_retry, "run failed and cancelled jobs again (the same ids)", &s_retry_help},
    {"jobs", s_cmd_jobs, "list recent jobs", &s_jobs_help},
    {"nodes", s_cmd_nodes, "list the fleet", &s_nodes_help},
    {"explain", s_cmd_explain, "show how the matcher placed (or could not place) a job",
     &s_explain_help},
    {"stats", s_cmd_stats, "broker counters", &s_stats_help},
    {"ping", s_cmd_ping, "check that the broker answers", &s_ping_help},
};
#define S_NCOMMANDS (sizeof s_commands / sizeof s_commands[0])

static void
s_main_help (FILE *out)
{
    fprintf (out,
             "Usage: gridq [GLOBAL OPTIONS] COMMAND [OPTIONS] [ARGS]\n"
             "\n"
             "The gridq client: submits jobs to a gridq broker and follows them.\n"
             "\n"
             "Global options (before the command):\n"
             "  --broker EP          broker endpoint (default $GRIDQ_BROKER or %s)\n"
             "  --timeout DURATION   how long to wait for the broker to answer (default 5s)\n"
             "  --cert FILE          client secret certificate for CURVE (or $GRIDQ_CERT)\n"
             "  --server-cert FILE   the broker's public certificate (or $GRIDQ_SERVER_CERT)\n"
             "  --help, --version\n"
             "\n"
             "Commands:\n",
             GQ_DEFAULT_ENDPOINT);
    for (size_t i = 0; i < S_NCOMMANDS; i++) {
        fprintf (out, "  %-9s %s\n", s_commands[i].name, s_commands[i].summary);
    }
    fprintf (out,
             "\n"
             "'gridq COMMAND --help' shows a command's options and an example.\n"
             "Exit status: 0 success; 1 a job failed, was cancelled or is not done; 2 usage\n"
             "error; 3 broker unreachable or silent; 4 the broker refused the request.\n"
             "\n"
             "Example:\n"
             "  gridq submit --kind echo --payload '{\"hello\": \"world\"}' --wait\n");
}

int
main (int argc, char **argv)
{
    /* A CLI has nothing to clean up on Ctrl-C: keep the default signal behaviour rather than
       czmq's handler, which would turn SIGINT into a flag nobody polls during a file read. */
    zsys_handler_set (NULL);
    static const struct option options[] = {
        {"broker", required_argument, NULL, O_BROKER},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"cert", required_argument, NULL, O_CERT},
        {"server-cert", required_argument, NULL, O_SERVER_CERT},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0}};
    opterr = 0;
    int option;
    /* '+': stop at the command word; its options belong to it. */
    while ((option = getopt_long (argc, argv, "+:h", options, NULL)) != -1) {
        int64_t ms;
        switch (option) {
        case O_HELP:
            s_main_help (stdout);
            return S_EXIT_OK;
        case O_VERSION:
            printf ("gridq %s\n", GQ_VERSION);
            return S_EXIT_OK;
        case O_BROKER:
            s_g.opts.endpoint = optarg;
            break;
        case O_TIMEOUT:
            if (gq_parse_duration_ms (optarg, &ms) || ms <= 0 || ms > INT_MAX) {
                return s_usage ("--timeout \"%s\" is not a duration like 5s or 500ms", optarg);
            }
            s_g.opts.timeout_ms = (int) ms;
            break;
        case O_CERT:
            s_g.opts.cert_path = optarg;
            break;
        case O_SERVER_CERT:
            s_g.opts.server_cert_path = optarg;
            break;
        case ':':
            return s_usage ("option %s needs a value", argv[optind - 1]);
        default:
            return s_usage ("unknown option %s (command options come after the command)",
                            argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        s_main_help (stderr);
        return S_EXIT_USAGE;
    }
    const char *name = argv[optind];
    /* "gridq help submit" is "gridq submit --help". */
    if (streq (name, "help")) {
        if (optind + 1 >= argc) {
            s_main_help (stdout);
            return S_EXIT_OK;
        }
        name = argv[optind + 1];
        for (size_t i = 0; i < S_NCOMMANDS; i++) {
            if (streq (s_commands[i].name, name)) {
                s_help (*s_commands[i].help);
                return S_EXIT_OK;
            }
        }
        return s_usage ("no command \"%s\"", name);
    }
    for (size_t i = 0; i < S_NCOMMANDS; i++) {
        if (streq (s_commands[i].name, name)) {
            s_g.command = name;
            int first = optind;
            optind = 0; /* glibc: 0 restarts getopt from scratch for the command's arguments */
            return s_commands[i].run (argc - first, argv + first);
        }
    }
    return s_usage ("unknown command \"%s\"", name);
}
