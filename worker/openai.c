/*  openai.c — OpenAI-compatible servers as engines: each job of `--openai KIND=URL` is one
    streamed HTTP request (libcurl, on the slot's thread); its SSE chunks are the job's partials
    and, put together, its result. A probe thread watches that the server answers. */
#include "openai.h"

#include <curl/curl.h>
#include <czmq.h>
#include <pthread.h>
#include <time.h>

#include "gq_common.h"
#include "sync.h"
#include "tuning.h"

/* A reason: a URL and libcurl's message (CURL_ERROR_SIZE) fit. */
#define GQ_OPENAI_REASON_BYTES 1024

/* ---- SSE: the part of text/event-stream that the OpenAI API uses ---------------------------- */

/* Where an event's data goes: 0 to go on, else an error that ends the stream. */
typedef int (s_event_fn) (void *arg, const char *data, size_t len);

/* A parser fed bytes as they come, in pieces of any size. Lines end with LF, CRLF or CR; a
   `data:` line adds its value (less one leading space) to the event, joined by LF; a blank line
   ends the event; comments (`:`) and other fields (event, id, retry) are skipped. */
typedef struct {
    zchunk_t *line;  /* the line being read */
    zchunk_t *data;  /* the event's data so far */
    bool has_data;   /* a data line came since the last event */
    bool after_cr;   /* the last byte was CR: an LF now ends nothing more */
    size_t max;      /* bytes of a line, and of an event's data, at most */
} s_sse_t;

static int
s_sse_init (s_sse_t *self, size_t max)
{
    memset (self, 0, sizeof *self);
    self->line = zchunk_new (NULL, 256);
    self->data = zchunk_new (NULL, 256);
    self->max = max;
    return self->line && self->data ? GQ_OK : GQ_ENOMEM;
}

static void
s_sse_fini (s_sse_t *self)
{
    zchunk_destroy (&self->line);
    zchunk_destroy (&self->data);
}

/* The line in self->line is whole: add it to the event, or end the event. */
static int
s_sse_line (s_sse_t *self, s_event_fn *fn, void *arg)
{
    const char *line = (const char *) zchunk_data (self->line);
    size_t len = zchunk_size (self->line);
    int rc = GQ_OK;
    if (len == 0) {
        if (self->has_data) {
            /* NUL-terminated for the callee's convenience; the length leaves it out. */
            zchunk_extend (self->data, "", 1);
            rc = fn (arg, (const char *) zchunk_data (self->data), zchunk_size (self->data) - 1);
        }
        zchunk_set (self->data, NULL, 0);
        self->has_data = false;
    } else if (len >= 5 && memcmp (line, "data:", 5) == 0) {
        size_t skip = len > 5 && line[5] == ' ' ? 6 : 5;
        if (self->has_data) {
            zchunk_extend (self->data, "\n", 1);
        }
        if (zchunk_size (self->data) + len - skip > self->max) {
            rc = GQ_ETOOBIG;
        } else {
            zchunk_extend (self->data, line + skip, len - skip);
            self->has_data = true;
        }
    }
    zchunk_set (self->line, NULL, 0);
    return rc;
}

/* Feeds n bytes. 0, GQ_ETOOBIG (a line or an event above max), or the callback's error. */
static int
s_sse_feed (s_sse_t *self, const char *bytes, size_t n, s_event_fn *fn, void *arg)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        char c = bytes[i];
        if (c != '\n' && c != '\r') {
            self->after_cr = false;
            continue;
        }
        bool skip = c == '\n' && self->after_cr && i == start; /* the LF of a CRLF */
        self->after_cr = c == '\r';
        if (!skip) {
            if (zchunk_size (self->line) + (i - start) > self->max) {
                return GQ_ETOOBIG;
            }
            zchunk_extend (self->line, bytes + start, i - start);
            int rc = s_sse_line (self, fn, arg);
            if (rc) {
                return rc;
            }
        }
        start = i + 1;
    }
    if (zchunk_size (self->line) + (n - start) > self->max) {
        return GQ_ETOOBIG;
    }
    zchunk_extend (self->line, bytes + start, n - start);
    return GQ_OK;
}

/* The stream ended: a last event that was not followed by a blank line still counts (servers
   that close right after their last line are met in the wild). */
static int
s_sse_end (s_sse_t *self, s_event_fn *fn, void *arg)
{
    int rc = zchunk_size (self->line) ? s_sse_line (self, fn, arg) : GQ_OK;
    if (!rc) {
        zchunk_set (self->line, NULL, 0);
        rc = s_sse_line (self, fn, arg); /* a blank line */
    }
    return rc;
}

/* ---- The result, put together from the chunks --------------------------------------------- */

/* One choice: the message (chat) or text (completion) grown by the chunks' deltas. */
typedef struct {
    bool seen;              /* a chunk named this index */
    json_t *role;           /* the delta's role, or NULL */
    zchunk_t *content;      /* chat: delta.content; completion: text */
    bool has_content;       /* some content came (else chat's content is null) */
    zchunk_t *reasoning;    /* delta.reasoning_content (vLLM's and llama.cpp's reasoning) */
    json_t *tool_calls;     /* [{id, type, function: {name, arguments}}] by the deltas' index */
    json_t *logprobs;       /* chat: logprobs.content entries, in order; or NULL */
    json_t *finish_reason;  /* the last non-null one, or NULL */
} s_choice_t;

typedef struct {
    bool chat;                               /* chat.completion, else text_completion */
    json_t *head;                            /* id, created, model, system_fingerprint */
    json_t *usage;                           /* the last non-null usage, or NULL */
    s_choice_t choices[GQ_OPENAI_MAX_CHOICES];
    int n_choices;                           /* 1 + the highest index seen */
} s_assembly_t;

static void
s_assembly_init (s_assembly_t *self, bool chat)
{
    memset (self, 0, sizeof *self);
    self->chat = chat;
    self->head = json_object ();
}

static void
s_assembly_fini (s_assembly_t *self)
{
    for (int i = 0; i < self->n_choices; i++) {
        s_choice_t *choice = &self->choices[i];
        json_decref (choice->role);
        zchunk_destroy (&choice->content);
        zchunk_destroy (&choice->reasoning);
        json_decref (choice->tool_calls);
        json_decref (choice->logprobs);
        json_decref (choice->finish_reason);
    }
    json_decref (self->head);
    json_decref (self->usage);
}

/* Appends a string delta to *text (made on first use). */
static void
s_text_add (zchunk_t **text, json_t *delta)
{
    const char *value = json_string_value (delta);
    if (value) {
        if (!*text) {
            *text = zchunk_new (NULL, 256);
        }
        if (*text) {
            zchunk_extend (*text, value, json_string_length (delta));
        }
    }
}

/* Sets key of object to the string old + add (old: its value now, or ""). */
static void
s_string_add (json_t *object, const char *key, json_t *add)
{
    const char *more = json_string_value (add);
    if (!more) {
        return;
    }
    json_t *old = json_object_get (object, key);
    const char *had = json_string_value (old) ? json_string_value (old) : "";
    size_t a = strlen (had), b = json_string_length (add);
    char *joined = (char *) malloc (a + b + 1);
    if (joined) {
        memcpy (joined, had, a);
        memcpy (joined + a, more, b);
        joined[a + b] = 0;
        json_object_set_new (object, key, json_stringn (joined, a + b));
        free (joined);
    }
}

/* A delta's tool_calls: each names its call by index; id, type and function.name come once,
   function.arguments in pieces. */
static void
s_tool_calls_add (s_choice_t *choice, json_t *deltas)
{
    size_t i;
    json_t *delta;
    json_array_foreach (deltas, i, delta) {
        json_int_t index = json_integer_value (json_object_get (delta, "index"));
        if (index < 0 || index >= GQ_OPENAI_MAX_CHOICES) {
            continue;
        }
        if (!choice->tool_calls) {
            choice->tool_calls = json_array ();
        }
        while ((json_int_t) json_array_size (choice->tool_calls) <= index) {
            json_array_append_new (choice->tool_calls,
                                   json_pack ("{s:s, s:{s:s, s:s}}", "type", "function",
                                              "function", "name", "", "arguments", ""));
        }
        json_t *call = json_array_get (choice->tool_calls, (size_t) index);
        json_t *function = json_object_get (call, "function");
        json_t *id = json_object_get (delta, "id");
        if (json_is_string (id)) {
            json_object_set (call, "id", id);
        }
        if (json_is_string (json_object_get (delta, "type"))) {
            json_object_set (call, "type", json_object_get (delta, "type"));
        }
        json_t *fdelta = json_object_get (delta, "function");
        s_string_add (function, "name", json_object_get (fdelta, "name"));
        s_string_add (function, "arguments", json_object_get (fdelta, "arguments"));
    }
}

/* Adds one chunk. 0, or GQ_EBACKEND with the reason (a choice index out of range). */
static int
s_assembly_add (s_assembly_t *self, json_t *chunk, char *error, size_t errlen)
{
    static const char *const head_keys[] = {"id", "created", "model", "system_fingerprint"};
    for (size_t k = 0; k < sizeof head_keys / sizeof head_keys[0]; k++) {
        json_t *value = json_object_get (chunk, head_keys[k]);
        if (value && !json_is_null (value) && !json_object_get (self->head, head_keys[k])) {
            json_object_set (self->head, head_keys[k], value);
        }
    }
    json_t *usage = json_object_get (chunk, "usage");
    if (json_is_object (usage)) {
        json_decref (self->usage);
        self->usage = json_incref (usage);
    }
    size_t i;
    json_t *part;
    json_array_foreach (json_object_get (chunk, "choices"), i, part) {
        json_t *index_json = json_object_get (part, "index");
        json_int_t index = index_json ? json_integer_value (index_json) : 0;
        if (!json_is_object (part) || (index_json && !json_is_integer (index_json)) ||
            index < 0 || index >= GQ_OPENAI_MAX_CHOICES) {
            snprintf (error, errlen, "a chunk's choice has an index outside 0..%d",
                      GQ_OPENAI_MAX_CHOICES - 1);
            return GQ_EBACKEND;
        }
        s_choice_t *choice = &self->choices[index];
        choice->seen = true;
        self->n_choices = (int) index + 1 > self->n_choices ? (int) index + 1 : self->n_choices;
        json_t *finish = json_object_get (part, "finish_reason");
        if (json_is_string (finish)) {
            json_decref (choice->finish_reason);
            choice->finish_reason = json_incref (finish);
        }
        if (!self->chat) {
            choice->has_content |= json_is_string (json_object_get (part, "text"));
            s_text_add (&choice->content, json_object_get (part, "text"));
            continue;
        }
        json_t *delta = json_object_get (part, "delta");
        json_t *role = json_object_get (delta, "role");
        if (json_is_string (role) && !choice->role) {
            choice->role = json_incref (role);
        }
        choice->has_content |= json_is_string (json_object_get (delta, "content"));
        s_text_add (&choice->content, json_object_get (delta, "content"));
        s_text_add (&choice->reasoning, json_object_get (delta, "reasoning_content"));
        s_tool_calls_add (choice, json_object_get (delta, "tool_calls"));
        json_t *logprobs = json_object_get (json_object_get (part, "logprobs"), "content");
        if (json_is_array (logprobs)) {
            if (!choice->logprobs) {
                choice->logprobs = json_array ();
            }
            json_array_extend (choice->logprobs, logprobs);
        }
    }
    return GQ_OK;
}

static json_t *
s_text_json (zchunk_t *text)
{
    return text ? json_stringn ((const char *) zchunk_data (text), zchunk_size (text))
                : json_string ("");
}

/* The whole response, as the server would have answered without "stream": a new reference. */
static json_t *
s_assembly_result (s_assembly_t *self)
{
    /* In the order OpenAI writes them: id, object, created, model, system_fingerprint. */
    json_t *result = json_object ();
    json_object_set (result, "id", json_object_get (self->head, "id"));
    json_object_set_new (result, "object",
                         json_string (self->chat ? "chat.completion" : "text_completion"));
    static const char *const rest[] = {"created", "model", "system_fingerprint"};
    for (size_t k = 0; k < sizeof rest / sizeof rest[0]; k++) {
        json_object_set (result, rest[k], json_object_get (self->head, rest[k]));
    }
    json_t *choices = json_array ();
    for (int i = 0; i < self->n_choices; i++) {
        s_choice_t *choice = &self->choices[i];
        if (!choice->seen) {
            continue;
        }
        json_t *out = json_pack ("{s:i}", "index", i);
        if (!self->chat) {
            json_object_set_new (out, "text", s_text_json (choice->content));
            json_object_set_new (out, "logprobs", json_null ());
        } else {
            json_t *message = json_object ();
            json_object_set_new (message, "role", choice->role ? json_incref (choice->role)
                                                               : json_string ("assistant"));
            json_object_set_new (message, "content",
                                 choice->has_content ? s_text_json (choice->content)
                                                     : json_null ());
            if (choice->reasoning) {
                json_object_set_new (message, "reasoning_content",
                                     s_text_json (choice->reasoning));
            }
            if (choice->tool_calls) {
                json_object_set (message, "tool_calls", choice->tool_calls);
            }
            json_object_set_new (out, "message", message);
            json_object_set_new (out, "logprobs",
                                 choice->logprobs ? json_pack ("{s:O}", "content",
                                                               choice->logprobs)
                                                  : json_null ());
        }
        json_object_set (out, "finish_reason",
                         choice->finish_reason ? choice->finish_reason : json_null ());
        json_array_append_new (choices, out);
    }
    json_object_set_new (result, "choices", choices);
    if (self->usage) {
        json_object_set (result, "usage", self->usage);
    }
    return result;
}

/* ---- The server ------------------------------------------------------------------------------ */

typedef enum {
    S_WAITING, /* never answered yet */
    S_UP,      /* answered its last probe, and no job found it gone since */
    S_DOWN     /* did not: probed again at probe_at_us */
} s_state_t;

struct _gq_openai_t {
    char kind[GQ_KIND_MAX];   /* the job kind it serves */
    char *url;                /* the API's base, no trailing slash */
    char *endpoint;           /* URL/chat/completions or URL/completions */
    char *models_url;         /* URL/models */
    bool chat;                /* the chat endpoint */
    char *auth;               /* "Authorization: Bearer KEY" (OPENAI_API_KEY), or NULL */
    int slots;                /* jobs in flight at most */
    int64_t ready_timeout_ms; /* gq_openai_wait_ready waits this long */
    int64_t created_us;       /* when it was made (the ready deadline counts from it) */
    pthread_t thread;         /* the probe thread */
    bool thread_started;      /* whether to join it */
    pthread_mutex_t lock;     /* guards what follows */
    pthread_cond_t changed;   /* state, in_flight, stop or probe_now changed (CLOCK_MONOTONIC) */
    s_state_t state;          /* see s_state_t */
    bool stop;                /* destroy asked the probe thread to end */
    bool probe_now;           /* a job met a failure of the server: probe at once */
    int in_flight;            /* jobs on it now */
    char down_reason[GQ_OPENAI_REASON_BYTES]; /* why it is down */
    json_t *models;           /* the ids of the last answer to GET URL/models */
};

static pthread_once_t s_curl_once = PTHREAD_ONCE_INIT;

static void
s_curl_init (void)
{
    curl_global_init (CURL_GLOBAL_DEFAULT);
}

/* Waits on changed for at most ms (lock held). */
static void
s_wait_ms (gq_openai_t *self, int64_t ms)
{
    gq_cond_wait_ms (&self->changed, &self->lock, ms);
}

/* A body kept whole, up to GQ_OPENAI_MAX_BODY_BYTES (the rest is dropped). */
static size_t
s_on_body (char *bytes, size_t size, size_t n, void *arg)
{
    zchunk_t *body = (zchunk_t *) arg;
    size_t len = size * n;
    size_t room = GQ_OPENAI_MAX_BODY_BYTES - zchunk_size (body);
    zchunk_extend (body, bytes, len < room ? len : room);
    return len;
}

/* The message of an error body: OpenAI's {"error": {"message"}}, vLLM's older {"message"},
   or the body's start. */
static void
s_error_text (zchunk_t *body, char *out, size_t outlen)
{
    json_t *json = json_loadb ((const char *) zchunk_data (body), zchunk_size (body), 0, NULL);
    json_t *error = json_object_get (json, "error");
    const char *message = json_string_value (json_object_get (error, "message"));
    message = message ? message : json_string_value (error);
    message = message ? message : json_string_value (json_object_get (json, "message"));
    if (message) {
        snprintf (out, outlen, "%s", message);
    } else {
        int n = zchunk_size (body) > 200 ? 200 : (int) zchunk_size (body);
        snprintf (out, outlen, "%.*s", n, (const char *) zchunk_data (body));
    }
    json_decref (json);
}

/* An easy handle with what every request of ours sets. */
static CURL *
s_easy (const char *url, struct curl_slist *headers, char *errbuf)
{
    CURL *easy = curl_easy_init ();
    if (easy) {
        curl_easy_setopt (easy, CURLOPT_URL, url);
        curl_easy_setopt (easy, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for timeouts */
        curl_easy_setopt (easy, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt (easy, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt (easy, CURLOPT_CONNECTTIMEOUT_MS, (long) GQ_OPENAI_CONNECT_TIMEOUT_MS);
        curl_easy_setopt (easy, CURLOPT_PROTOCOLS_STR, "http,https");
        errbuf[0] = 0;
    }
    return easy;
}

/* GET URL/models: 0 with *models (a new array of ids), or an error with the reason. */
static int
s_probe (gq_openai_t *self, json_t **models, char *why, size_t whylen)
{
    *models = NULL;
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *headers = self->auth ? curl_slist_append (NULL, self->auth) : NULL;
    zchunk_t *body = zchunk_new (NULL, 1024);
    CURL *easy = body ? s_easy (self->models_url, headers, errbuf) : NULL;
    if (!easy) {
        zchunk_destroy (&body);
        curl_slist_free_all (headers);
        snprintf (why, whylen, "out of memory");
        return GQ_ENOMEM;
    }
    curl_easy_setopt (easy, CURLOPT_TIMEOUT_MS, (long) GQ_OPENAI_PROBE_TIMEOUT_MS);
    curl_easy_setopt (easy, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt (easy, CURLOPT_WRITEDATA, body);
    CURLcode res = curl_easy_perform (easy);
    long status = 0;
    curl_easy_getinfo (easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup (easy);
    curl_slist_free_all (headers);
    int rc = GQ_EBACKEND;
    if (res != CURLE_OK) {
        snprintf (why, whylen, "GET %s: %s", self->models_url,
                  errbuf[0] ? errbuf : curl_easy_strerror (res));
    } else if (status != 200) {
        char message[200];
        s_error_text (body, message, sizeof message);
        snprintf (why, whylen, "GET %s answered HTTP %ld: %s", self->models_url, status, message);
    } else {
        json_t *json =
            json_loadb ((const char *) zchunk_data (body), zchunk_size (body), 0, NULL);
        json_t *data = json_object_get (json, "data");
        if (!json_is_array (data)) {
            snprintf (why, whylen, "GET %s did not answer a model list ({\"data\": [...]})",
                      self->models_url);
        } else {
            *models = json_array ();
            size_t i;
            json_t *model;
            json_array_foreach (data, i, model) {
                const char *id = json_string_value (json_object_get (model, "id"));
                if (id && *id && strlen (id) < GQ_MODEL_MAX &&
                    json_array_size (*models) < GQ_MAX_MODELS) {
                    json_array_append_new (*models, json_string (id));
                }
            }
            rc = GQ_OK;
        }
        json_decref (json);
    }
    zchunk_destroy (&body);
    return rc;
}

/* Probes now and then: every GQ_OPENAI_PROBE_MS while the server answers, with back-off while it
   does not, and at once when a job found it gone. */
static void *
s_probe_thread (void *arg)
{
    gq_openai_t *self = (gq_openai_t *) arg;
    int64_t backoff_ms = GQ_ENGINE_BACKOFF_MIN_MS;
    int64_t next_us = 0; /* the next probe */
    pthread_mutex_lock (&self->lock);
    while (!self->stop) {
        int64_t now_us = gq_mono_us ();
        if (!self->probe_now && now_us < next_us) {
            s_wait_ms (self, (next_us - now_us) / 1000 + 1);
            continue;
        }
        self->probe_now = false;
        pthread_mutex_unlock (&self->lock);
        json_t *models = NULL;
        char why[GQ_OPENAI_REASON_BYTES];
        int rc = s_probe (self, &models, why, sizeof why);
        pthread_mutex_lock (&self->lock);
        if (rc == GQ_OK) {
            if (self->state != S_UP) {
                char *names = json_dumps (models, JSON_COMPACT);
                zsys_info ("openai %s: %s answers; models %s", self->kind, self->url,
                           names ? names : "?");
                free (names);
            }
            json_decref (self->models);
            self->models = models;
            self->state = S_UP;
            backoff_ms = GQ_ENGINE_BACKOFF_MIN_MS;
            next_us = gq_mono_us () + (int64_t) GQ_OPENAI_PROBE_MS * 1000;
        } else {
            if (self->state != S_DOWN) {
                zsys_warning ("openai %s: %s is unreachable (%s); kind '%s' is not offered until "
                              "it answers",
                              self->kind, self->url, why, self->kind);
            }
            snprintf (self->down_reason, sizeof self->down_reason, "%s", why);
            self->state = S_DOWN;
            next_us = gq_mono_us () + backoff_ms * 1000;
            backoff_ms = backoff_ms * 2 > GQ_ENGINE_BACKOFF_MAX_MS ? GQ_ENGINE_BACKOFF_MAX_MS
                                                                   : backoff_ms * 2;
        }
        pthread_cond_broadcast (&self->changed);
    }
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

gq_openai_t *
gq_openai_new (const char *spec, int slots, int64_t ready_timeout_ms, char *why, size_t whylen)
{
    const char *eq = spec ? strchr (spec, '=') : NULL;
    size_t kind_len = eq ? (size_t) (eq - spec) : 0;
    if (!eq || kind_len == 0 || kind_len >= GQ_KIND_MAX) {
        snprintf (why, whylen, "--openai '%s' must be KIND=URL (KIND 1..%d characters)",
                  spec ? spec : "", GQ_KIND_MAX - 1);
        return NULL;
    }
    const char *url = eq + 1;
    if (strncmp (url, "http://", 7) != 0 && strncmp (url, "https://", 8) != 0) {
        snprintf (why, whylen,
                  "--openai '%s': the URL must start with http:// or https:// (e.g. "
                  "chat=http://127.0.0.1:8000/v1)",
                  spec);
        return NULL;
    }
    pthread_once (&s_curl_once, s_curl_init);
    gq_openai_t *self = (gq_openai_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    memcpy (self->kind, spec, kind_len);
    self->url = strdup (url);
    size_t len = self->url ? strlen (self->url) : 0;
    while (len > 0 && self->url[len - 1] == '/') {
        self->url[--len] = 0;
    }
    self->chat = !streq (self->kind, "completion");
    self->endpoint = self->url ? zsys_sprintf ("%s/%s", self->url,
                                               self->chat ? "chat/completions" : "completions")
                               : NULL;
    self->models_url = self->url ? zsys_sprintf ("%s/models", self->url) : NULL;
    const char *key = getenv ("OPENAI_API_KEY");
    self->auth = key && *key ? zsys_sprintf ("Authorization: Bearer %s", key) : NULL;
    self->slots = slots > 0 ? slots : 1;
    self->ready_timeout_ms = ready_timeout_ms;
    self->created_us = gq_mono_us ();
    self->models = json_array ();
    snprintf (self->down_reason, sizeof self->down_reason, "it has not answered yet");
    gq_cond_init_monotonic (&self->changed);
    pthread_mutex_init (&self->lock, NULL);
    if (!self->endpoint || !self->models_url || (key && *key && !self->auth)) {
        snprintf (why, whylen, "out of memory");
        gq_openai_destroy (&self);
        return NULL;
    }
    if (pthread_create (&self->thread, NULL, s_probe_thread, self) != 0) {
        snprintf (why, whylen, "cannot start the probe thread of '%s'", self->kind);
        gq_openai_destroy (&self);
        return NULL;
    }
    self->thread_started = true;
    return self;
}

void
gq_openai_destroy (gq_openai_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_openai_t *self = *self_p;
    if (self->thread_started) {
        gq_thread_stop (self->thread, &self->lock, &self->changed, &self->stop);
    }
    pthread_mutex_destroy (&self->lock);
    pthread_cond_destroy (&self->changed);
    json_decref (self->models);
    free (self->url);
    zstr_free (&self->endpoint);
    zstr_free (&self->models_url);
    zstr_free (&self->auth);
    free (self);
    *self_p = NULL;
}

const char *
gq_openai_kind (gq_openai_t *self)
{
    return self->kind;
}

const char *
gq_openai_url (gq_openai_t *self)
{
    return self->url;
}

bool
gq_openai_wait_ready (gq_openai_t *self)
{
    int64_t deadline_us = self->created_us + self->ready_timeout_ms * 1000;
    pthread_mutex_lock (&self->lock);
    while (self->state != S_UP && gq_mono_us () < deadline_us) {
        s_wait_ms (self, (deadline_us - gq_mono_us ()) / 1000 + 1);
    }
    bool up = self->state == S_UP;
    pthread_mutex_unlock (&self->lock);
    return up;
}

json_t *
gq_openai_models (gq_openai_t *self)
{
    pthread_mutex_lock (&self->lock);
    json_t *models = json_deep_copy (self->models);
    pthread_mutex_unlock (&self->lock);
    return models;
}

bool
gq_openai_down (gq_openai_t *self)
{
    pthread_mutex_lock (&self->lock);
    bool down = self->state != S_UP;
    pthread_mutex_unlock (&self->lock);
    return down;
}

/* ---- A job: one streamed request ------------------------------------------------------------ */

typedef struct {
    gq_openai_t *server;
    const gq_engine_job_t *job;
    CURL *easy;
    long status;           /* the HTTP status, once the headers came; 0 before */
    bool stream;           /* the answer is text/event-stream (else a whole JSON body) */
    s_sse_t sse;           /* the stream's parser */
    s_assembly_t assembly; /* the result so far */
    zchunk_t *body;        /* an answer that is not a stream (an HTTP error, or a server that
                              ignored "stream"), kept whole */
    bool done;             /* `data: [DONE]` came */
    int rc;                /* an error found in a callback, or 0 */
    char error[512];       /* its reason */
} s_call_t;

/* One SSE event of the stream: a chunk (a partial, then part of the result) or [DONE]. */
static int
s_on_event (void *arg, const char *data, size_t len)
{
    s_call_t *call = (s_call_t *) arg;
    if (call->done) {
        return GQ_OK; /* nothing counts after [DONE] */
    }
    if (len == 6 && memcmp (data, "[DONE]", 6) == 0) {
        call->done = true;
        return GQ_OK;
    }
    json_error_t jerr;
    json_t *chunk = json_loadb (data, len, 0, &jerr);
    if (!json_is_object (chunk)) {
        json_decref (chunk);
        snprintf (call->error, sizeof call->error,
                  "openai '%s': the server sent a chunk that is not a JSON object (%.60s)",
                  call->server->kind, data);
        return GQ_EBACKEND;
    }
    json_t *failure = json_object_get (chunk, "error");
    if (failure && !json_is_null (failure)) {
        const char *message = json_string_value (json_object_get (failure, "message"));
        snprintf (call->error, sizeof call->error, "openai '%s': the server failed: %s",
                  call->server->kind,
                  message ? message : json_string_value (failure) ? json_string_value (failure)
                                                                  : "(no message)");
        json_decref (chunk);
        return GQ_EBACKEND;
    }
    int rc = GQ_OK;
    if (call->job->on_partial) {
        char *text = json_dumps (chunk, JSON_COMPACT);
        if (!text) {
            rc = GQ_ENOMEM;
            snprintf (call->error, sizeof call->error, "out of memory");
        } else if (strlen (text) > GQ_MAX_PARTIAL_BYTES) {
            snprintf (call->error, sizeof call->error,
                      "partial too large (%zu bytes; at most %d)", strlen (text),
                      GQ_MAX_PARTIAL_BYTES);
            free (text);
            rc = GQ_ETOOBIG;
        } else {
            call->job->on_partial (call->job->partial_arg, call->job->id, text, 0);
        }
    }
    if (!rc) {
        rc = s_assembly_add (&call->assembly, chunk, call->error, sizeof call->error);
    }
    json_decref (chunk);
    return rc;
}

static size_t
s_on_write (char *bytes, size_t size, size_t n, void *arg)
{
    s_call_t *call = (s_call_t *) arg;
    size_t len = size * n;
    if (!call->status) {
        curl_easy_getinfo (call->easy, CURLINFO_RESPONSE_CODE, &call->status);
        const char *type = NULL;
        curl_easy_getinfo (call->easy, CURLINFO_CONTENT_TYPE, &type);
        call->stream = call->status == 200 && type && strncmp (type, "text/event-stream", 17) == 0;
    }
    if (!call->stream) {
        return s_on_body (bytes, size, n, call->body);
    }
    int rc = s_sse_feed (&call->sse, bytes, len, s_on_event, call);
    if (rc) {
        call->rc = rc;
        if (rc == GQ_ETOOBIG && !call->error[0]) {
            snprintf (call->error, sizeof call->error,
                      "openai '%s': a line or an event of the stream is above %zu bytes",
                      call->server->kind, call->sse.max);
        }
        return 0; /* ends the transfer (CURLE_WRITE_ERROR): the connection closes */
    }
    return len;
}

/* The body to send: the payload with stream on, usage asked for and a model, as compact JSON;
   NULL with the reason. */
static char *
s_request_body (gq_openai_t *self, const gq_engine_job_t *job, char *error, size_t errlen)
{
    if (!json_is_object (job->payload)) {
        snprintf (error, errlen,
                  "kind '%s' goes to an OpenAI server: the payload must be a JSON object (the "
                  "request body, e.g. {\"messages\": [...]})",
                  self->kind);
        return NULL;
    }
    json_t *body = json_copy (job->payload);
    json_object_set_new (body, "stream", json_true ());
    if (!json_object_get (body, "stream_options")) {
        json_object_set_new (body, "stream_options", json_pack ("{s:b}", "include_usage", 1));
    }
    if (!json_object_get (body, "model")) {
        if (job->model) {
            json_object_set_new (body, "model", json_string (job->model));
        } else {
            pthread_mutex_lock (&self->lock);
            json_t *first = json_array_get (self->models, 0);
            if (first) {
                json_object_set (body, "model", first);
            }
            pthread_mutex_unlock (&self->lock);
        }
    }
    char *text = json_dumps (body, JSON_COMPACT);
    json_decref (body);
    if (!text) {
        snprintf (error, errlen, "out of memory");
    }
    return text;
}

/* Waits for the server to be up and for a free place (lock held). 0, or the job's stop, or
   GQ_EBACKEND when it is down. */
static int
s_take_place (gq_openai_t *self, const gq_engine_job_t *job, int64_t deadline_us, char *error,
              size_t errlen)
{
    for (;;) {
        int rc = gq_engine_job_stopped (job, deadline_us, error, errlen);
        if (rc) {
            return rc;
        }
        if (self->state == S_DOWN || self->stop) {
            snprintf (error, errlen,
                      "openai '%s': %s is unreachable (%s); the job was not sent", self->kind,
                      self->url, self->down_reason);
            return GQ_EBACKEND;
        }
        if (self->state == S_UP && self->in_flight < self->slots) {
            self->in_flight++;
            return GQ_OK;
        }
        s_wait_ms (self, GQ_ENGINE_TICK_MS);
    }
}

/* Runs the transfer on this thread until it ends or the job stops; the result in call. */
static int
s_transfer (s_call_t *call, int64_t deadline_us, CURLcode *res)
{
    const gq_engine_job_t *job = call->job;
    CURLM *multi = curl_multi_init ();
    if (!multi || curl_multi_add_handle (multi, call->easy) != CURLM_OK) {
        curl_multi_cleanup (multi);
        snprintf (call->error, sizeof call->error, "out of memory");
        return GQ_ENOMEM;
    }
    int rc = GQ_OK;
    int running = 1;
    *res = CURLE_OK;
    while (running) {
        if (curl_multi_perform (multi, &running) != CURLM_OK) {
            snprintf (call->error, sizeof call->error, "libcurl failed");
            rc = GQ_EBACKEND;
            break;
        }
        if (!running) {
            break;
        }
        if ((rc = gq_engine_job_stopped (job, deadline_us, call->error, sizeof call->error))) {
            break;
        }
        curl_multi_poll (multi, NULL, 0, GQ_ENGINE_TICK_MS, NULL);
    }
    int left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read (multi, &left))) {
        if (msg->msg == CURLMSG_DONE) {
            *res = msg->data.result;
        }
    }
    /* Cancel and time-out end here: removing the handle and cleaning the multi up closes the
       connection, which is how the server learns to stop. */
    curl_multi_remove_handle (multi, call->easy);
    curl_multi_cleanup (multi);
    return rc;
}

/* What a finished transfer means for the job: 0 with *result, or an error in call->error.
   *gone: the server is not there (no connection, or it broke the stream off). */
static int
s_outcome (s_call_t *call, CURLcode res, const char *errbuf, json_t **result, bool *gone)
{
    gq_openai_t *self = call->server;
    *gone = false;
    if (call->rc) {
        return call->rc;
    }
    if (res != CURLE_OK) {
        *gone = true;
        snprintf (call->error, sizeof call->error, "openai '%s': POST %s: %s", self->kind,
                  self->endpoint, errbuf[0] ? errbuf : curl_easy_strerror (res));
        return GQ_EBACKEND;
    }
    if (call->status != 200) {
        char message[300];
        s_error_text (call->body, message, sizeof message);
        snprintf (call->error, sizeof call->error, "openai '%s': the server answered HTTP %ld: %s",
                  self->kind, call->status, message);
        return GQ_EBACKEND;
    }
    if (!call->stream) {
        /* A server that does not stream answers the whole object at once. */
        *result = json_loadb ((const char *) zchunk_data (call->body), zchunk_size (call->body), 0,
                              NULL);
        if (!json_is_object (*result)) {
            json_decref (*result);
            *result = NULL;
            snprintf (call->error, sizeof call->error,
                      "openai '%s': the server answered neither a stream nor a JSON object",
                      self->kind);
            return GQ_EBACKEND;
        }
        return GQ_OK;
    }
    int rc = s_sse_end (&call->sse, s_on_event, call);
    if (rc) {
        return rc;
    }
    if (!call->done) {
        *gone = true;
        snprintf (call->error, sizeof call->error,
                  "openai '%s': the stream ended before data: [DONE]", self->kind);
        return GQ_EBACKEND;
    }
    *result = s_assembly_result (&call->assembly);
    if (!*result) {
        snprintf (call->error, sizeof call->error, "out of memory");
        return GQ_ENOMEM;
    }
    return GQ_OK;
}

int
gq_openai_run (gq_openai_t *self, const gq_engine_job_t *job, json_t **result, char *error,
               size_t errlen)
{
    *result = NULL;
    error[0] = 0;
    int64_t deadline_us = job->timeout_ms > 0 ? gq_mono_us () + job->timeout_ms * 1000 : 0;
    char *body = s_request_body (self, job, error, errlen);
    if (!body) {
        return json_is_object (job->payload) ? GQ_ENOMEM : GQ_EINVAL;
    }
    pthread_mutex_lock (&self->lock);
    int rc = s_take_place (self, job, deadline_us, error, errlen);
    pthread_mutex_unlock (&self->lock);
    if (rc) {
        free (body);
        return rc;
    }
    s_call_t call = {.server = self, .job = job};
    s_assembly_init (&call.assembly, self->chat);
    call.body = zchunk_new (NULL, 1024);
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *headers = curl_slist_append (NULL, "Content-Type: application/json");
    headers = headers ? curl_slist_append (headers, "Accept: text/event-stream") : NULL;
    headers = headers && self->auth ? curl_slist_append (headers, self->auth) : headers;
    call.easy = headers ? s_easy (self->endpoint, headers, errbuf) : NULL;
    bool gone = false;
    if (!call.easy || !call.body || s_sse_init (&call.sse, GQ_ENGINE_MAX_LINE_BYTES)) {
        snprintf (error, errlen, "out of memory");
        rc = GQ_ENOMEM;
    } else {
        curl_easy_setopt (call.easy, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt (call.easy, CURLOPT_WRITEFUNCTION, s_on_write);
        curl_easy_setopt (call.easy, CURLOPT_WRITEDATA, &call);
        CURLcode res;
        rc = s_transfer (&call, deadline_us, &res);
        if (!rc) {
            rc = s_outcome (&call, res, errbuf, result, &gone);
        }
        if (rc) {
            snprintf (error, errlen, "%s", call.error[0] ? call.error : gq_strerror (rc));
        }
    }
    curl_easy_cleanup (call.easy);
    curl_slist_free_all (headers);
    s_sse_fini (&call.sse);
    s_assembly_fini (&call.assembly);
    zchunk_destroy (&call.body);
    free (body);
    pthread_mutex_lock (&self->lock);
    self->in_flight--;
    if (gone && self->state == S_UP) {
        /* Probe at once: until it answers again, the worker should not offer the kind. */
        self->probe_now = true;
    }
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    return rc;
}

/* ---- Selftest -------------------------------------------------------------------------------- */

/* Collects events as a JSON array of strings. */
static int
s_test_collect (void *arg, const char *data, size_t len)
{
    assert (data[len] == 0);
    json_array_append_new ((json_t *) arg, json_stringn (data, len));
    return GQ_OK;
}

/* Feeds text in two pieces split at cut (or a byte at a time when cut is -1) and returns the
   events, as compact JSON. */
static char *
s_test_events (const char *text, long cut)
{
    s_sse_t sse;
    assert (s_sse_init (&sse, 1024) == 0);
    json_t *events = json_array ();
    size_t n = strlen (text);
    if (cut < 0) {
        for (size_t i = 0; i < n; i++) {
            assert (s_sse_feed (&sse, text + i, 1, s_test_collect, events) == 0);
        }
    } else {
        assert (s_sse_feed (&sse, text, (size_t) cut, s_test_collect, events) == 0);
        assert (s_sse_feed (&sse, text + cut, n - (size_t) cut, s_test_collect, events) == 0);
    }
    assert (s_sse_end (&sse, s_test_collect, events) == 0);
    s_sse_fini (&sse);
    char *out = json_dumps (events, JSON_COMPACT);
    json_decref (events);
    return out;
}

/* Assembles chunks (a JSON array text) and checks the result against want (JSON text). */
static void
s_test_assemble (bool chat, const char *chunks, const char *want)
{
    json_t *list = json_loads (chunks, 0, NULL);
    assert (list);
    s_assembly_t assembly;
    s_assembly_init (&assembly, chat);
    size_t i;
    json_t *chunk;
    char error[256];
    json_array_foreach (list, i, chunk) {
        assert (s_assembly_add (&assembly, chunk, error, sizeof error) == 0);
    }
    json_t *result = s_assembly_result (&assembly);
    json_t *expected = json_loads (want, 0, NULL);
    assert (expected);
    if (!json_equal (result, expected)) {
        char *text = json_dumps (result, JSON_COMPACT | JSON_SORT_KEYS);
        fprintf (stderr, "assembled %s\n", text);
        free (text);
        assert (false);
    }
    json_decref (expected);
    json_decref (result);
    s_assembly_fini (&assembly);
    json_decref (list);
}

void
gq_openai_test (bool verbose)
{
    /* SSE: LF, CRLF and CR line ends, a comment, two data lines joined by LF, an event field,
       a blank line with no data (no event), a field-less "data" line, and [DONE]; the same
       events whatever the pieces the bytes come in. */
    const char *stream = ": keep-alive\n\n"
                         "data: {\"a\":1}\n\n"
                         "event: message\r\ndata: {\"b\":\r\ndata:2}\r\n\r\n"
                         "id: 7\rdata:  x\r\r"
                         "data\n\n"
                         "data: [DONE]\n\n";
    const char *want = "[\"{\\\"a\\\":1}\",\"{\\\"b\\\":\\n2}\",\" x\",\"[DONE]\"]";
    for (long cut = -1; cut <= (long) strlen (stream); cut++) {
        char *events = s_test_events (stream, cut);
        if (!streq (events, want)) {
            fprintf (stderr, "cut %ld: %s\n", cut, events);
        }
        assert (streq (events, want));
        free (events);
    }
    /* Joined: several events in one piece, and a last one the server did not end. */
    char *events = s_test_events ("data: 1\n\ndata: 2\n\ndata: 3", (long) 0);
    assert (streq (events, "[\"1\",\"2\",\"3\"]"));
    free (events);
    /* A line above the limit is refused, whole or in pieces. */
    s_sse_t sse;
    assert (s_sse_init (&sse, 8) == 0);
    json_t *sink = json_array ();
    assert (s_sse_feed (&sse, "data: 12", 8, s_test_collect, sink) == 0);
    assert (s_sse_feed (&sse, "345\n", 4, s_test_collect, sink) == GQ_ETOOBIG);
    s_sse_fini (&sse);
    json_decref (sink);

    /* Chat as vLLM streams it: a role chunk, content deltas, a tool call in pieces, the finish
       chunk, and the usage chunk with no choices. */
    s_test_assemble (
        true,
        "[{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"logprobs\":null,\"finish_reason\":null}]},"
        "{\"id\":\"c1\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,"
        "\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]},"
        "{\"id\":\"c1\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,"
        "\"delta\":{\"content\":\"lo\",\"reasoning_content\":\"hm\"}}]},"
        "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
        "\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"get\","
        "\"arguments\":\"{\\\"a\"}}]}}]},"
        "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
        "\"function\":{\"arguments\":\"\\\":1}\"}}]}}]},"
        "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]},"
        "{\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
        "\"total_tokens\":5}}]",
        "{\"id\":\"c1\",\"object\":\"chat.completion\",\"created\":5,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello\","
        "\"reasoning_content\":\"hm\",\"tool_calls\":[{\"id\":\"t1\",\"type\":\"function\","
        "\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\":1}\"}}]},\"logprobs\":null,"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
        "\"total_tokens\":5}}");
    /* Two choices (n = 2) interleaved, no role, no content, logprobs; no usage. */
    s_test_assemble (
        true,
        "[{\"id\":\"c2\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"},"
        "\"logprobs\":{\"content\":[{\"token\":\"b\",\"logprob\":-1}]}}]},"
        "{\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"},"
        "{\"index\":1,\"delta\":{\"content\":\"c\"},\"finish_reason\":\"stop\","
        "\"logprobs\":{\"content\":[{\"token\":\"c\",\"logprob\":-2}]}}]}]",
        "{\"id\":\"c2\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":null},\"logprobs\":null,"
        "\"finish_reason\":\"length\"},{\"index\":1,\"message\":{\"role\":\"assistant\","
        "\"content\":\"bc\"},\"logprobs\":{\"content\":[{\"token\":\"b\",\"logprob\":-1},"
        "{\"token\":\"c\",\"logprob\":-2}]},\"finish_reason\":\"stop\"}]}");
    /* Completions as llama.cpp streams them. */
    s_test_assemble (false,
                     "[{\"id\":\"p\",\"object\":\"text_completion\",\"created\":9,\"model\":\"m\","
                     "\"system_fingerprint\":\"b1\",\"choices\":[{\"index\":0,\"text\":\"Once\","
                     "\"finish_reason\":null}]},{\"id\":\"p\",\"choices\":[{\"index\":0,\"text\":"
                     "\" upon\",\"finish_reason\":\"length\"}],\"usage\":{\"total_tokens\":4}}]",
                     "{\"id\":\"p\",\"object\":\"text_completion\",\"created\":9,\"model\":\"m\","
                     "\"system_fingerprint\":\"b1\",\"choices\":[{\"index\":0,\"text\":"
                     "\"Once upon\",\"logprobs\":null,\"finish_reason\":\"length\"}],"
                     "\"usage\":{\"total_tokens\":4}}");
    /* A choice index out of range is the server's error. */
    s_assembly_t assembly;
    s_assembly_init (&assembly, true);
    char error[256];
    json_t *bad = json_loads ("{\"choices\":[{\"index\":64,\"delta\":{}}]}", 0, NULL);
    assert (s_assembly_add (&assembly, bad, error, sizeof error) == GQ_EBACKEND);
    assert (strstr (error, "index"));
    json_decref (bad);
    s_assembly_fini (&assembly);

    /* Specs. */
    char why[512];
    assert (!gq_openai_new ("nonsense", 1, 0, why, sizeof why) && strstr (why, "KIND=URL"));
    assert (!gq_openai_new ("chat=127.0.0.1:8000/v1", 1, 0, why, sizeof why) &&
            strstr (why, "http://"));
    /* A server that is not there: down after its first probe; its jobs are not sent. Port 1
       on loopback refuses at once. */
    gq_openai_t *server = gq_openai_new ("chat=http://127.0.0.1:1/v1/", 2, 300, why, sizeof why);
    assert (server);
    assert (streq (gq_openai_kind (server), "chat"));
    assert (streq (gq_openai_url (server), "http://127.0.0.1:1/v1"));
    assert (!gq_openai_wait_ready (server));
    assert (gq_openai_down (server));
    json_t *payload = json_pack ("{s:[]}", "messages");
    gq_engine_job_t job = {.id = 1, .payload = payload};
    json_t *result = NULL;
    int rc = gq_openai_run (server, &job, &result, error, sizeof error);
    if (verbose) {
        printf ("  down: %s\n", error);
    }
    assert (rc == GQ_EBACKEND && strstr (error, "unreachable") && strstr (error, "not sent"));
    json_decref (payload);
    /* A payload that is not an object is refused before anything is sent. */
    payload = json_string ("hello");
    job.payload = payload;
    assert (gq_openai_run (server, &job, &result, error, sizeof error) == GQ_EINVAL);
    assert (strstr (error, "JSON object"));
    json_decref (payload);
    gq_openai_destroy (&server);
    assert (!server);
    printf ("openai: OK\n");
}
