/*  exec.c — the worker runtime (backend, device, model cache, handlers) and the execution of one
    job on one slot: the built-in kinds echo, sleep, matmul and mlp, and external handlers. */
#include "exec.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gq_msg.h"
#include "engine.h"
#include "openai.h"
#include "handler.h"
#include "model.h"
#include "tuning.h"

#define S_MAX_HANDLERS GQ_MAX_KINDS
#define S_SEED_B       0x5851f42d4c957f2dULL /* B's stream is the seed's, xor this */

static const char *s_builtin_kinds[] = {"echo", "sleep", "matmul", "mlp"};
#define S_BUILTINS (sizeof s_builtin_kinds / sizeof s_builtin_kinds[0])

/* A kind served by a long-lived server: an engine process or an OpenAI-compatible server (one of
   the two is set). The runtime asks both the same questions, through the s_server_* below. */
typedef struct {
    gq_engine_t *engine;
    gq_openai_t *openai;
} s_server_t;

struct _gq_runtime_t {
    const gq_backend_ops_t *ops;             /* the chosen backend */
    gq_bdev_t *dev;                          /* its device, shared by every slot */
    bool is_gpu;                             /* whether handlers get CUDA_VISIBLE_DEVICES */
    char cuda_devices[64];                   /* the value they get: the device's UUID */
    gq_model_cache_t *cache;                 /* shared by slots; has its own mutex */
    gq_handler_t *handlers[S_MAX_HANDLERS];  /* fixed before the slots start */
    size_t n_handlers;                       /* how many */
    s_server_t servers[S_MAX_HANDLERS];      /* engines and OpenAI servers, fixed before the
                                                slots start */
    size_t n_servers;                        /* how many */
};

struct _gq_exec_t {
    gq_runtime_t *rt; /* the runtime it belongs to */
    int slot;         /* slot number, for logs */
    gq_bctx_t *ctx;   /* this slot's backend context */
};

/* ---- Runtime -------------------------------------------------------------------------------- */

gq_runtime_t *
gq_runtime_new (const gq_runtime_opts_t *opts, char *why, size_t whylen)
{
    const char *want = opts->backend ? opts->backend : "auto";
    if (!streq (want, "auto") && !streq (want, "cuda") && !streq (want, "cpu")) {
        snprintf (why, whylen, "unknown backend '%.32s' (auto, cuda, cpu)", want);
        return NULL;
    }
    if (opts->device < 0) {
        snprintf (why, whylen, "device %d is not valid", opts->device);
        return NULL;
    }
    if (opts->cache_mb < 0 || opts->cache_mb > GQ_MAX_VRAM_MB) {
        snprintf (why, whylen, "cache size %" PRId64 " MiB is not valid", opts->cache_mb);
        return NULL;
    }
    if (opts->models_dir) {
        struct stat st;
        if (stat (opts->models_dir, &st) != 0 || !S_ISDIR (st.st_mode)) {
            snprintf (why, whylen, "models folder %s is not a folder", opts->models_dir);
            return NULL;
        }
    }
    gq_runtime_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    if (!streq (want, "cpu")) {
        const gq_backend_ops_t *cuda = gq_backend_find ("cuda");
        char reason[256] = "this gridq was built without CUDA";
        if (cuda) {
            self->dev = cuda->dev_open (opts->device, reason, sizeof reason);
            self->ops = self->dev ? cuda : NULL;
        }
        if (!self->dev && streq (want, "cuda")) {
            snprintf (why, whylen, "no CUDA device %d: %s", opts->device, reason);
            free (self);
            return NULL;
        }
        if (!self->dev) {
            zsys_info ("worker: no CUDA device (%s); using the CPU backend", reason);
        }
    }
    if (!self->dev) {
        self->ops = gq_backend_find ("cpu");
        self->dev = self->ops->dev_open (opts->device, why, whylen);
        if (!self->dev) {
            free (self);
            return NULL;
        }
    }
    gq_device_info_t info;
    if (self->ops->dev_info (self->dev, &info) != 0) {
        snprintf (why, whylen, "cannot query the %s device", self->ops->name);
        gq_runtime_destroy (&self);
        return NULL;
    }
    self->is_gpu = info.is_gpu;
    if (info.is_gpu) {
        gq_handler_cuda_devices (getenv ("CUDA_VISIBLE_DEVICES"), opts->device, info.uuid,
                                 self->cuda_devices, sizeof self->cuda_devices);
    }
    int64_t cache_mb = opts->cache_mb;
    if (cache_mb == 0) {
        cache_mb = info.is_gpu ? info.vram_free_mb * GQ_MODEL_CACHE_GPU_PERCENT / 100
                               : GQ_MODEL_CACHE_CPU_MB;
    }
    self->cache =
        gq_model_cache_new (self->ops, self->dev, opts->models_dir, cache_mb * 1024 * 1024);
    if (!self->cache) {
        snprintf (why, whylen, "out of memory");
        gq_runtime_destroy (&self);
        return NULL;
    }
    if (info.is_gpu) {
        zsys_info ("worker: cuda device %d (%s): %s, compute %d.%d, %" PRId64 " MiB (%" PRId64
                   " free), %d SMs at %d MHz, %.1f TFLOP/s fp32; model cache %" PRId64
                   " MiB; handlers get CUDA_VISIBLE_DEVICES=%s",
                   opts->device, info.uuid, info.name, info.cc_major, info.cc_minor,
                   info.vram_total_mb, info.vram_free_mb, info.sm_count, info.clock_mhz,
                   info.tflops, cache_mb, self->cuda_devices);
    } else {
        zsys_info ("worker: cpu backend, %d processors; model cache %" PRId64 " MiB",
                   info.sm_count, cache_mb);
    }
    return self;
}

void
gq_runtime_destroy (gq_runtime_t **self_p)
{
    if (self_p && *self_p) {
        gq_runtime_t *self = *self_p;
        gq_model_cache_destroy (&self->cache);
        for (size_t i = 0; i < self->n_handlers; i++) {
            gq_handler_destroy (&self->handlers[i]);
        }
        for (size_t i = 0; i < self->n_servers; i++) {
            gq_engine_destroy (&self->servers[i].engine);
            gq_openai_destroy (&self->servers[i].openai);
        }
        if (self->ops) {
            self->ops->dev_close (&self->dev);
        }
        free (self);
        *self_p = NULL;
    }
}

const char *
gq_runtime_backend_name (gq_runtime_t *self)
{
    return self->ops->name;
}

int
gq_runtime_device (gq_runtime_t *self, gq_device_info_t *info)
{
    return self->ops->dev_info (self->dev, info);
}

bool
gq_runtime_lost (gq_runtime_t *self, char *why, size_t whylen)
{
    return self->ops->dev_lost (self->dev, why, whylen);
}

int64_t
gq_runtime_cache_budget (gq_runtime_t *self)
{
    return gq_model_cache_budget (self->cache);
}

static gq_handler_t *
s_handler_for (gq_runtime_t *self, const char *kind)
{
    for (size_t i = 0; kind && i < self->n_handlers; i++) {
        if (streq (gq_handler_kind (self->handlers[i]), kind)) {
            return self->handlers[i];
        }
    }
    return NULL;
}

static const char *
s_server_kind (const s_server_t *server)
{
    return server->engine ? gq_engine_kind (server->engine) : gq_openai_kind (server->openai);
}

static bool
s_server_down (const s_server_t *server)
{
    return server->engine ? gq_engine_down (server->engine) : gq_openai_down (server->openai);
}

static json_t *
s_server_models (const s_server_t *server)
{
    return server->engine ? gq_engine_models (server->engine) : gq_openai_models (server->openai);
}

static s_server_t *
s_server_for (gq_runtime_t *self, const char *kind)
{
    for (size_t i = 0; kind && i < self->n_servers; i++) {
        if (streq (s_server_kind (&self->servers[i]), kind)) {
            return &self->servers[i];
        }
    }
    return NULL;
}

/* 0 when a handler or an engine may take kind; else GQ_EINVAL with the reason. */
static int
s_kind_free (gq_runtime_t *self, const char *kind, char *why, size_t whylen)
{
    for (size_t i = 0; i < S_BUILTINS; i++) {
        if (streq (kind, s_builtin_kinds[i])) {
            snprintf (why, whylen,
                      "kind '%s' is built in; a handler or an engine cannot replace it", kind);
            return GQ_EINVAL;
        }
    }
    if (s_handler_for (self, kind) || s_server_for (self, kind)) {
        snprintf (why, whylen, "kind '%s' has a handler or an engine already", kind);
        return GQ_EINVAL;
    }
    if (self->n_handlers + self->n_servers + S_BUILTINS >= S_MAX_HANDLERS) {
        snprintf (why, whylen, "too many kinds (at most %d)", S_MAX_HANDLERS);
        return GQ_EINVAL;
    }
    return GQ_OK;
}

int
gq_runtime_add_handler (gq_runtime_t *self, const char *spec, char *why, size_t whylen)
{
    gq_handler_t *handler = gq_handler_new (spec, why, whylen);
    if (!handler) {
        return GQ_EINVAL;
    }
    const char *kind = gq_handler_kind (handler);
    if (s_kind_free (self, kind, why, whylen)) {
        gq_handler_destroy (&handler);
        return GQ_EINVAL;
    }
    self->handlers[self->n_handlers++] = handler;
    zsys_info ("worker: kind '%s' runs: %s", kind, gq_handler_command (handler));
    return GQ_OK;
}

int
gq_runtime_add_engine (gq_runtime_t *self, const char *spec, int slots, int64_t ready_timeout_ms,
                       char *why, size_t whylen)
{
    /* The kind is checked before the engine (and its process) starts. */
    char kind[GQ_KIND_MAX];
    const char *command;
    if (gq_handler_spec (spec, "engine", kind, sizeof kind, &command, why, whylen) ||
        s_kind_free (self, kind, why, whylen)) {
        return GQ_EINVAL;
    }
    gq_engine_opts_t opts = {.cuda_devices = self->is_gpu ? self->cuda_devices : NULL,
                             .slots = slots,
                             .ready_timeout_ms = ready_timeout_ms};
    gq_engine_t *engine = gq_engine_new (spec, &opts, why, whylen);
    if (!engine) {
        return GQ_EINVAL;
    }
    self->servers[self->n_servers++].engine = engine;
    zsys_info ("worker: kind '%s' runs on an engine (%d in flight at most): %s",
               gq_engine_kind (engine), slots, gq_engine_command (engine));
    return GQ_OK;
}

int
gq_runtime_add_openai (gq_runtime_t *self, const char *spec, int slots, int64_t ready_timeout_ms,
                       char *why, size_t whylen)
{
    const char *eq = spec ? strchr (spec, '=') : NULL;
    char kind[GQ_KIND_MAX];
    snprintf (kind, sizeof kind, "%.*s", eq ? (int) (eq - spec) : 0, spec ? spec : "");
    if (eq && s_kind_free (self, kind, why, whylen)) {
        return GQ_EINVAL;
    }
    gq_openai_t *openai = gq_openai_new (spec, slots, ready_timeout_ms, why, whylen);
    if (!openai) {
        return GQ_EINVAL;
    }
    self->servers[self->n_servers++].openai = openai;
    zsys_info ("worker: kind '%s' goes to the OpenAI server at %s (%d in flight at most)",
               gq_openai_kind (openai), gq_openai_url (openai), slots);
    return GQ_OK;
}

void
gq_runtime_wait_engines (gq_runtime_t *self)
{
    for (size_t i = 0; i < self->n_servers; i++) {
        s_server_t *server = &self->servers[i];
        bool up = server->engine ? gq_engine_wait_ready (server->engine)
                                 : gq_openai_wait_ready (server->openai);
        if (!up) {
            zsys_warning ("worker: %s '%s' is not up yet; its jobs fail until it is",
                          server->engine ? "engine" : "OpenAI server", s_server_kind (server));
        }
    }
}

uint64_t
gq_runtime_engines_down (gq_runtime_t *self)
{
    uint64_t down = 0;
    for (size_t i = 0; i < self->n_servers; i++) {
        down |= s_server_down (&self->servers[i]) ? 1ULL << i : 0;
    }
    return down;
}

json_t *
gq_runtime_engines (gq_runtime_t *self)
{
    json_t *engines = json_array ();
    for (size_t i = 0; i < self->n_servers; i++) {
        s_server_t *server = &self->servers[i];
        bool down = s_server_down (server);
        json_array_append_new (
            engines, json_pack ("{s:s, s:s, s:s}", "kind", s_server_kind (server), "via",
                                server->engine ? "engine" : "openai", "state",
                                !down ? "up" : server->engine ? "restarting" : "unreachable"));
    }
    return engines;
}

json_t *
gq_runtime_kinds (gq_runtime_t *self)
{
    json_t *kinds = json_array ();
    for (size_t i = 0; i < S_BUILTINS; i++) {
        json_array_append_new (kinds, json_string (s_builtin_kinds[i]));
    }
    for (size_t i = 0; i < self->n_handlers; i++) {
        json_array_append_new (kinds, json_string (gq_handler_kind (self->handlers[i])));
    }
    for (size_t i = 0; i < self->n_servers; i++) {
        if (!s_server_down (&self->servers[i])) {
            json_array_append_new (kinds, json_string (s_server_kind (&self->servers[i])));
        }
    }
    return kinds;
}

json_t *
gq_runtime_models (gq_runtime_t *self)
{
    json_t *models = gq_model_cache_json (self->cache);
    /* A server's models are loaded for as long as it runs: available and loaded (load time
       unknown: 0). A server that is down offers none. */
    json_t *available = json_object_get (models, "available");
    json_t *loaded = json_object_get (models, "loaded");
    for (size_t i = 0; models && i < self->n_servers; i++) {
        if (s_server_down (&self->servers[i])) {
            continue;
        }
        json_t *names = s_server_models (&self->servers[i]);
        size_t j;
        json_t *name;
        json_array_foreach (names, j, name) {
            bool listed = false; /* two servers may hold the same model */
            for (size_t k = 0; k < json_array_size (available) && !listed; k++) {
                listed = json_equal (json_array_get (available, k), name);
            }
            if (!listed && json_array_size (available) < GQ_MAX_MODELS) {
                json_array_append (available, name);
                json_array_append_new (loaded, json_pack ("{s:O, s:i, s:i}", "name", name,
                                                          "load_ms", 0, "bytes", 0));
            }
        }
        json_decref (names);
    }
    return models;
}

/* ---- Executor ------------------------------------------------------------------------------- */

gq_exec_t *
gq_exec_new (gq_runtime_t *rt, int slot)
{
    gq_exec_t *self = calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->rt = rt;
    self->slot = slot;
    char why[256];
    self->ctx = rt->ops->ctx_new (rt->dev, why, sizeof why);
    if (!self->ctx) {
        zsys_error ("worker: slot %d: cannot make a %s context: %s", slot, rt->ops->name, why);
        free (self);
        return NULL;
    }
    return self;
}

void
gq_exec_destroy (gq_exec_t **self_p)
{
    if (self_p && *self_p) {
        gq_exec_t *self = *self_p;
        self->rt->ops->ctx_destroy (&self->ctx);
        free (self);
        *self_p = NULL;
    }
}

void
gq_outcome_clear (gq_outcome_t *out)
{
    if (!out) {
        return;
    }
    json_decref (out->result);
    out->result = NULL;
    for (size_t i = 0; i < out->n_blobs; i++) {
        zframe_destroy (&out->blobs[i]);
    }
    out->n_blobs = 0;
}

/* One running job: the executor, the task, where the outcome goes, its deadline. */
typedef struct {
    gq_exec_t *exec;            /* the slot */
    const gq_backend_ops_t *ops; /* its backend */
    gq_bctx_t *ctx;             /* its context */
    const gq_task_t *task;      /* the job */
    gq_outcome_t *out;          /* where results go */
    int64_t deadline_us;        /* from timeout_ms (0: none) */
} s_job_t;

static int
s_fail (s_job_t *job, int code, const char *format, ...) __attribute__ ((format (printf, 3, 4)));

static int
s_fail (s_job_t *job, int code, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (job->out->error, sizeof job->out->error, format, args);
    va_end (args);
    job->out->code = code;
    return code;
}

/* 0 to go on; else the job is failed as cancelled or timed out. */
static int
s_check_stop (s_job_t *job)
{
    if (job->task->cancel && *job->task->cancel) {
        return s_fail (job, GQ_ESTATE, "cancelled");
    }
    if (job->deadline_us && gq_mono_us () >= job->deadline_us) {
        return s_fail (job, GQ_ETIMEOUT, "timed out after %" PRId64 " ms", job->task->timeout_ms);
    }
    return GQ_OK;
}

/* Fails the job for a backend error, or for the cancel/deadline that stopped it. */
static int
s_backend_fail (s_job_t *job, int code, const char *what)
{
    if (code == GQ_ESTATE || code == GQ_ETIMEOUT) {
        int stop = s_check_stop (job);
        if (stop) {
            return stop;
        }
    }
    return s_fail (job, code, "%s: %s", what, job->ops->ctx_error (job->ctx));
}

static json_t *
s_payload_object (s_job_t *job)
{
    json_t *payload = job->task->payload;
    if (!json_is_object (payload)) {
        s_fail (job, GQ_EINVAL, "payload must be a JSON object");
        return NULL;
    }
    return payload;
}

/* ---- Matrices in payloads ------------------------------------------------------------------- */

/* A matrix from a payload field; data is either owned (parsed from JSON) or a blob's bytes. */
typedef struct {
    const float *data; /* rows x cols floats, row-major, any alignment */
    float *owned;      /* what to free, when parsed from JSON */
    int64_t rows;      /* rows */
    int64_t cols;      /* columns */
} s_matrix_t;

static void
s_matrix_free (s_matrix_t *m)
{
    free (m->owned);
    memset (m, 0, sizeof *m);
}

/* Parses [[...], ...] or {"blob": i, "rows": R, "cols": C}. 0 or the job failed. */
static int
s_matrix_parse (s_job_t *job, const char *field, s_matrix_t *m)
{
    memset (m, 0, sizeof *m);
    json_t *value = json_object_get (job->task->payload, field);
    const int64_t max_elements = GQ_MAX_BLOB_BYTES / (int64_t) sizeof (float);
    if (json_is_object (value)) {
        char why[256];
        int64_t blob, rows, cols;
        if (gq_json_int (value, "blob", 0, GQ_MAX_BLOBS - 1, -1, &blob, why, sizeof why) ||
            gq_json_int (value, "rows", 1, max_elements, -1, &rows, why, sizeof why) ||
            gq_json_int (value, "cols", 1, max_elements, -1, &cols, why, sizeof why)) {
            return s_fail (job, GQ_EINVAL, "\"%s\": %s", field, why);
        }
        if (blob < 0 || rows < 0 || cols < 0) {
            return s_fail (job, GQ_EINVAL, "\"%s\" needs \"blob\", \"rows\" and \"cols\"", field);
        }
        if ((size_t) blob >= job->task->n_blobs || !job->task->blobs[blob]) {
            return s_fail (job, GQ_EINVAL, "\"%s\": blob %" PRId64 " was not sent (%zu blobs)",
                           field, blob, job->task->n_blobs);
        }
        zframe_t *frame = job->task->blobs[blob];
        if (rows * cols > max_elements ||
            zframe_size (frame) != (size_t) (rows * cols) * sizeof (float)) {
            return s_fail (job, GQ_EINVAL,
                           "\"%s\": blob %" PRId64 " has %zu bytes, but %" PRId64 " x %" PRId64
                           " float32 take %" PRId64,
                           field, blob, zframe_size (frame), rows, cols,
                           rows * cols * (int64_t) sizeof (float));
        }
        const uint8_t *bytes = zframe_data (frame);
        for (int64_t i = 0; i < rows * cols; i++) {
            float v;
            memcpy (&v, bytes + i * 4, 4);
            if (!isfinite (v)) {
                return s_fail (job, GQ_EINVAL,
                               "\"%s\": element (%" PRId64 ", %" PRId64 ") is not finite", field,
                               i / cols, i % cols);
            }
        }
        m->data = (const float *) bytes;
        m->rows = rows;
        m->cols = cols;
        return GQ_OK;
    }
    if (!json_is_array (value) || json_array_size (value) == 0 ||
        !json_is_array (json_array_get (value, 0)) ||
        json_array_size (json_array_get (value, 0)) == 0) {
        return s_fail (job, GQ_EINVAL,
                       "\"%s\" must be a non-empty array of rows, or {\"blob\", \"rows\", "
                       "\"cols\"}",
                       field);
    }
    m->rows = (int64_t) json_array_size (value);
    m->cols = (int64_t) json_array_size (json_array_get (value, 0));
    if (m->rows * m->cols > max_elements) {
        return s_fail (job, GQ_ETOOBIG, "\"%s\" is too large", field);
    }
    m->owned = malloc ((size_t) (m->rows * m->cols) * sizeof (float));
    if (!m->owned) {
        return s_fail (job, GQ_ENOMEM, "out of memory");
    }
    for (int64_t r = 0; r < m->rows; r++) {
        json_t *row = json_array_get (value, (size_t) r);
        if (!json_is_array (row) || (int64_t) json_array_size (row) != m->cols) {
            s_matrix_free (m);
            return s_fail (job, GQ_EINVAL,
                           "\"%s\": row %" PRId64 " is not an array of %" PRId64 " numbers",
                           field, r, (int64_t) json_array_size (json_array_get (value, 0)));
        }
        for (int64_t c = 0; c < m->cols; c++) {
            json_t *item = json_array_get (row, (size_t) c);
            double v = json_number_value (item);
            if (!json_is_number (item) || !isfinite ((float) v)) {
                s_matrix_free (m);
                return s_fail (job, GQ_EINVAL,
                               "\"%s\": element (%" PRId64 ", %" PRId64
                               ") is not a finite float32 number",
                               field, r, c);
            }
            m->owned[r * m->cols + c] = (float) v;
        }
    }
    m->data = m->owned;
    return GQ_OK;
}

/* Where a result matrix goes: a new output blob, or host memory for JSON. */
typedef struct {
    float *host;      /* rows x cols floats to fill */
    zframe_t *frame;  /* the blob being filled, or NULL for JSON */
} s_output_t;

static int
s_output_new (s_job_t *job, const char *field, int64_t rows, int64_t cols, bool as_blob,
              s_output_t *o)
{
    memset (o, 0, sizeof *o);
    size_t bytes = (size_t) (rows * cols) * sizeof (float);
    if (as_blob) {
        if (bytes > GQ_MAX_BLOB_BYTES) {
            return s_fail (job, GQ_ETOOBIG, "\"%s\" would take %zu bytes, over the blob limit",
                           field, bytes);
        }
        o->frame = zframe_new (NULL, bytes);
        o->host = o->frame ? (float *) zframe_data (o->frame) : NULL;
    } else {
        if (rows * cols > GQ_MATRIX_JSON_MAX_ELEMENTS) {
            return s_fail (job, GQ_ETOOBIG,
                           "\"%s\" has %" PRId64 " elements, too many for JSON (at most %d); "
                           "ask for \"output_blob\": true",
                           field, rows * cols, GQ_MATRIX_JSON_MAX_ELEMENTS);
        }
        o->host = malloc (bytes ? bytes : 1);
    }
    if (!o->host) {
        zframe_destroy (&o->frame);
        return s_fail (job, GQ_ENOMEM, "out of memory");
    }
    return GQ_OK;
}

static void
s_output_free (s_output_t *o)
{
    if (o->frame) {
        zframe_destroy (&o->frame);
    } else {
        free (o->host);
    }
    o->host = NULL;
}

/* The payload's form of the matrix: a blob reference (the frame moves to the outcome), or rows
   of numbers. NULL with the job failed when a value is not finite. */
static json_t *
s_output_json (s_job_t *job, s_output_t *o, int64_t rows, int64_t cols)
{
    if (o->frame) {
        gq_outcome_t *out = job->out;
        size_t index = out->n_blobs;
        out->blobs[out->n_blobs++] = o->frame;
        o->frame = NULL;
        o->host = NULL;
        return json_pack ("{s:I, s:I, s:I}", "blob", (json_int_t) index, "rows",
                          (json_int_t) rows, "cols", (json_int_t) cols);
    }
    json_t *matrix = json_array ();
    for (int64_t r = 0; r < rows; r++) {
        json_t *row = json_array ();
        for (int64_t c = 0; c < cols; c++) {
            json_t *v = json_real (o->host[r * cols + c]);
            if (!v) {
                /* jansson refuses NaN and infinity, and so does JSON. */
                json_decref (row);
                json_decref (matrix);
                s_fail (job, GQ_EINVAL,
                        "result element (%" PRId64 ", %" PRId64 ") is not finite (float32 "
                        "overflow)",
                        r, c);
                return NULL;
            }
            json_array_append_new (row, v);
        }
        json_array_append_new (matrix, row);
    }
    return matrix;
}

/* ---- echo and sleep ------------------------------------------------------------------------- */

static int
s_run_echo (s_job_t *job)
{
    const gq_task_t *task = job->task;
    job->out->result = task->payload ? json_deep_copy (task->payload) : json_null ();
    /* Blobs come back too, so a client can test its binary path end to end. */
    for (size_t i = 0; i < task->n_blobs && i < GQ_MAX_BLOBS; i++) {
        job->out->blobs[job->out->n_blobs++] = zframe_dup (task->blobs[i]);
    }
    return GQ_OK;
}

static int
s_run_sleep (s_job_t *job)
{
    json_t *payload = s_payload_object (job);
    if (!payload) {
        return job->out->code;
    }
    char why[256];
    int64_t ms;
    if (!json_object_get (payload, "ms")) {
        return s_fail (job, GQ_EINVAL, "sleep needs \"ms\"");
    }
    if (gq_json_int (payload, "ms", 0, GQ_MAX_TIMEOUT_MS, 0, &ms, why, sizeof why)) {
        return s_fail (job, GQ_EINVAL, "sleep: %s", why);
    }
    int64_t until = gq_mono_us () + ms * 1000;
    for (int64_t now = gq_mono_us (); now < until; now = gq_mono_us ()) {
        if (s_check_stop (job)) {
            return job->out->code;
        }
        int64_t left_ms = (until - now + 999) / 1000;
        zclock_sleep ((int) (left_ms < GQ_EXEC_SLEEP_TICK_MS ? left_ms : GQ_EXEC_SLEEP_TICK_MS));
    }
    job->out->result = json_pack ("{s:I}", "slept_ms", (json_int_t) ms);
    return GQ_OK;
}

/* ---- matmul --------------------------------------------------------------------------------- */

static int
s_parse_mode (s_job_t *job, json_t *payload, bool allow_bf16, gq_gemm_mode_t *mode)
{
    json_t *dtype = json_object_get (payload, "dtype");
    *mode = GQ_GEMM_F32;
    if (!dtype || json_is_null (dtype)) {
        return GQ_OK;
    }
    int parsed = json_is_string (dtype) ? gq_gemm_mode_parse (json_string_value (dtype)) : -1;
    if (parsed < 0 || (!allow_bf16 && parsed == GQ_GEMM_BF16)) {
        return s_fail (job, GQ_EINVAL, "\"dtype\" must be one of %s",
                       allow_bf16 ? "\"f32\", \"tf32\", \"bf16\"" : "\"f32\", \"tf32\"");
    }
    *mode = (gq_gemm_mode_t) parsed;
    return GQ_OK;
}

/* Device operands for one GEMM from host f32 data: uploaded, converted to bf16 if asked. */
static int
s_operand (s_job_t *job, int slot_f32, int slot_bf16, const float *host, size_t count,
           gq_gemm_mode_t mode, const void **device)
{
    const gq_backend_ops_t *ops = job->ops;
    float *f = ops->scratch (job->ctx, slot_f32, count * sizeof (float));
    if (!f) {
        return s_backend_fail (job, GQ_ENOMEM, "matmul");
    }
    int rc = ops->upload (job->ctx, f, host, count * sizeof (float));
    if (rc) {
        return s_backend_fail (job, rc, "matmul upload");
    }
    *device = f;
    if (mode == GQ_GEMM_BF16) {
        void *h = ops->scratch (job->ctx, slot_bf16, count * 2);
        if (!h) {
            return s_backend_fail (job, GQ_ENOMEM, "matmul");
        }
        rc = ops->convert (job->ctx, h, GQ_DTYPE_BF16, f, GQ_DTYPE_F32, count);
        if (rc) {
            return s_backend_fail (job, rc, "matmul convert");
        }
        *device = h;
    }
    return GQ_OK;
}

/* {"a", "b"}: explicit operands, C returned. */
static int
s_matmul_given (s_job_t *job, json_t *payload, gq_gemm_mode_t mode)
{
    const gq_backend_ops_t *ops = job->ops;
    char why[256];
    bool as_blob;
    if (gq_json_bool (payload, "output_blob", false, &as_blob, why, sizeof why)) {
        return s_fail (job, GQ_EINVAL, "matmul: %s", why);
    }
    s_matrix_t a, b;
    if (s_matrix_parse (job, "a", &a)) {
        return job->out->code;
    }
    if (s_matrix_parse (job, "b", &b)) {
        s_matrix_free (&a);
        return job->out->code;
    }
    int rc = GQ_OK;
    s_output_t c = {0};
    if (a.cols != b.rows) {
        rc = s_fail (job, GQ_EINVAL,
                     "a is %" PRId64 " x %" PRId64 " but b is %" PRId64 " x %" PRId64
                     ": inner dimensions differ",
                     a.rows, a.cols, b.rows, b.cols);
    } else if (a.rows > INT32_MAX || b.cols > INT32_MAX || a.cols > INT32_MAX) {
        rc = s_fail (job, GQ_ETOOBIG, "matrices too large");
    }
    const void *da = NULL, *db = NULL;
    if (rc == 0) {
        rc = s_output_new (job, "c", a.rows, b.cols, as_blob, &c);
    }
    if (rc == 0) {
        rc = s_operand (job, 0, 3, a.data, (size_t) (a.rows * a.cols), mode, &da);
    }
    if (rc == 0) {
        rc = s_operand (job, 1, 4, b.data, (size_t) (b.rows * b.cols), mode, &db);
    }
    float *dc = NULL;
    if (rc == 0) {
        dc = ops->scratch (job->ctx, 2, (size_t) (a.rows * b.cols) * sizeof (float));
        rc = dc ? GQ_OK : s_backend_fail (job, GQ_ENOMEM, "matmul");
    }
    if (rc == 0) {
        rc = ops->gemm (job->ctx, mode, (int) a.rows, (int) b.cols, (int) a.cols, da, db, false,
                        dc);
        rc = rc ? s_backend_fail (job, rc, "matmul") : GQ_OK;
    }
    if (rc == 0) {
        rc = ops->download (job->ctx, c.host, dc, (size_t) (a.rows * b.cols) * sizeof (float));
        rc = rc ? s_backend_fail (job, rc, "matmul download") : GQ_OK;
    }
    if (rc == 0) {
        json_t *matrix = s_output_json (job, &c, a.rows, b.cols);
        if (matrix) {
            job->out->result = json_pack ("{s:o}", "c", matrix);
        }
        rc = job->out->code;
    }
    s_output_free (&c);
    s_matrix_free (&a);
    s_matrix_free (&b);
    return rc;
}

/* {"m", "n", "k", "seed"}: operands generated on the device, timed, C summed. */
static int
s_matmul_generated (s_job_t *job, json_t *payload, gq_gemm_mode_t mode)
{
    const gq_backend_ops_t *ops = job->ops;
    char why[256];
    int64_t m, n, k, seed, repeat;
    if (gq_json_int (payload, "m", 1, GQ_MATMUL_MAX_DIM_ELEMENTS, -1, &m, why, sizeof why) ||
        gq_json_int (payload, "n", 1, GQ_MATMUL_MAX_DIM_ELEMENTS, -1, &n, why, sizeof why) ||
        gq_json_int (payload, "k", 1, GQ_MATMUL_MAX_DIM_ELEMENTS, -1, &k, why, sizeof why) ||
        gq_json_int (payload, "seed", 0, INT64_MAX, 0, &seed, why, sizeof why) ||
        gq_json_int (payload, "repeat", 1, GQ_MATMUL_MAX_REPEAT_COUNT, 1, &repeat, why,
                     sizeof why)) {
        return s_fail (job, GQ_EINVAL, "matmul: %s", why);
    }
    if (m < 0 || n < 0 || k < 0) {
        return s_fail (job, GQ_EINVAL, "matmul needs \"m\", \"n\" and \"k\" (or \"a\" and \"b\")");
    }
    size_t elem = mode == GQ_GEMM_BF16 ? 2 : 4;
    int64_t bytes = (m * k + k * n) * (int64_t) elem + m * n * 4;
    int64_t limit = GQ_MATMUL_MAX_BYTES;
    if (!job->exec->rt->is_gpu) {
        /* Host memory is overcommitted: a job too big for RAM would get the worker killed
           instead of failing, so the CPU takes at most a quarter of physical memory. */
        int64_t ram = (int64_t) sysconf (_SC_PHYS_PAGES) * (int64_t) sysconf (_SC_PAGESIZE);
        limit = ram > 0 && ram / 4 < limit ? ram / 4 : limit;
    }
    if (bytes > limit) {
        return s_fail (job, GQ_ETOOBIG,
                       "matmul of %" PRId64 " x %" PRId64 " x %" PRId64 " needs %" PRId64
                       " MiB, over this worker's limit of %" PRId64 " MiB",
                       m, n, k, bytes >> 20, limit >> 20);
    }
    gq_dtype_t dtype = mode == GQ_GEMM_BF16 ? GQ_DTYPE_BF16 : GQ_DTYPE_F32;
    void *a = ops->scratch (job->ctx, 0, (size_t) (m * k) * elem);
    void *b = a ? ops->scratch (job->ctx, 1, (size_t) (k * n) * elem) : NULL;
    float *c = b ? ops->scratch (job->ctx, 2, (size_t) (m * n) * sizeof (float)) : NULL;
    if (!c) {
        return s_backend_fail (job, GQ_ENOMEM, "matmul");
    }
    int rc = ops->fill_random (job->ctx, a, dtype, (size_t) (m * k), (uint64_t) seed);
    if (rc == 0) {
        rc = ops->fill_random (job->ctx, b, dtype, (size_t) (k * n), (uint64_t) seed ^ S_SEED_B);
    }
    if (rc == 0 && repeat > 1) {
        /* One untimed run first: the library's first call picks kernels and warms caches. */
        rc = ops->gemm (job->ctx, mode, (int) m, (int) n, (int) k, a, b, false, c);
    }
    if (rc) {
        return s_backend_fail (job, rc, "matmul");
    }
    double ms = 0;
    rc = ops->timer_start (job->ctx);
    for (int64_t r = 0; rc == 0 && r < repeat; r++) {
        if (s_check_stop (job)) {
            return job->out->code;
        }
        rc = ops->gemm (job->ctx, mode, (int) m, (int) n, (int) k, a, b, false, c);
    }
    if (rc == 0) {
        rc = ops->timer_stop (job->ctx, &ms);
    }
    double checksum = 0;
    if (rc == 0) {
        rc = ops->sum (job->ctx, c, (size_t) (m * n), &checksum);
    }
    if (rc) {
        return s_backend_fail (job, rc, "matmul");
    }
    double per_ms = ms / (double) repeat;
    double gflops = per_ms > 0 ? 2.0 * (double) m * (double) n * (double) k / (per_ms * 1e6) : 0;
    job->out->result = json_pack ("{s:I, s:I, s:I, s:s, s:I, s:f, s:f, s:f}", "m", (json_int_t) m,
                                  "n", (json_int_t) n, "k", (json_int_t) k, "dtype",
                                  gq_gemm_mode_name (mode), "repeat", (json_int_t) repeat,
                                  "checksum", checksum, "ms", per_ms, "gflops", gflops);
    return GQ_OK;
}

static int
s_run_matmul (s_job_t *job)
{
    json_t *payload = s_payload_object (job);
    gq_gemm_mode_t mode;
    if (!payload || s_parse_mode (job, payload, true, &mode)) {
        return job->out->code;
    }
    if (json_object_get (payload, "a") || json_object_get (payload, "b")) {
        return s_matmul_given (job, payload, mode);
    }
    return s_matmul_generated (job, payload, mode);
}

/* ---- mlp ------------------------------------------------------------------------------------ */

static int
s_run_mlp (s_job_t *job)
{
    json_t *payload = s_payload_object (job);
    gq_gemm_mode_t mode;
    if (!payload || s_parse_mode (job, payload, false, &mode)) {
        return job->out->code;
    }
    const char *name = job->task->model;
    if (!name) {
        name = json_string_value (json_object_get (payload, "model"));
    }
    if (!name) {
        return s_fail (job, GQ_EINVAL, "mlp needs a model");
    }
    bool as_blob, softmax;
    char why[512];
    if (gq_json_bool (payload, "output_blob", false, &as_blob, why, sizeof why) ||
        gq_json_bool (payload, "softmax", false, &softmax, why, sizeof why)) {
        return s_fail (job, GQ_EINVAL, "mlp: %s", why);
    }
    s_matrix_t input;
    if (s_matrix_parse (job, "input", &input)) {
        return job->out->code;
    }
    gq_runtime_t *rt = job->exec->rt;
    gq_model_t *model = NULL;
    int rc = gq_model_cache_acquire (rt->cache, name, job->ctx, job->task->cancel, &model, why,
                                     sizeof why);
    if (rc) {
        s_matrix_free (&input);
        return s_fail (job, rc, "%s", why);
    }
    const gq_model_shape_t *shape = gq_model_shape (model);
    int64_t outputs = shape->widths[shape->layers];
    s_output_t out = {0};
    if (input.cols != shape->widths[0]) {
        rc = s_fail (job, GQ_EINVAL,
                     "input rows have %" PRId64 " values but model '%s' takes %" PRId64, input.cols,
                     name, shape->widths[0]);
    } else if (input.rows > INT32_MAX) {
        rc = s_fail (job, GQ_ETOOBIG, "too many input rows");
    } else {
        rc = s_output_new (job, "output", input.rows, outputs, as_blob, &out);
    }
    if (rc == 0) {
        gq_forward_opts_t opts = {.mode = mode,
                                  .softmax = softmax,
                                  .cancel = job->task->cancel,
                                  .deadline_us = job->deadline_us};
        rc = gq_model_forward (model, job->ctx, input.data, input.rows, out.host, &opts, why,
                               sizeof why);
        if (rc == GQ_ESTATE || rc == GQ_ETIMEOUT) {
            rc = s_check_stop (job) ? job->out->code : s_fail (job, rc, "mlp: %s", why);
        } else if (rc) {
            rc = s_fail (job, rc, "mlp: %s", why);
        }
    }
    if (rc == 0) {
        json_t *argmax_json = json_array ();
        for (int64_t r = 0; r < input.rows; r++) {
            const float *row = out.host + r * outputs;
            int64_t best = 0;
            for (int64_t c = 1; c < outputs; c++) {
                best = row[c] > row[best] ? c : best;
            }
            json_array_append_new (argmax_json, json_integer (best));
        }
        json_t *output = s_output_json (job, &out, input.rows, outputs);
        if (output) {
            job->out->result =
                json_pack ("{s:o, s:o}", "output", output, "argmax", argmax_json);
        } else {
            json_decref (argmax_json);
        }
        rc = job->out->code;
    }
    s_output_free (&out);
    s_matrix_free (&input);
    gq_model_cache_release (rt->cache, &model);
    return rc;
}

/* ---- Handlers ------------------------------------------------------------------------------- */

static int
s_run_handler (s_job_t *job, gq_handler_t *handler)
{
    const gq_task_t *task = job->task;
    gq_runtime_t *rt = job->exec->rt;
    gq_handler_job_t hjob = {.id = task->id,
                             .attempt = task->attempt,
                             .array_id = task->array_id,
                             .array_index = task->array_index,
                             .kind = task->kind,
                             .model = task->model,
                             .cuda_devices = rt->is_gpu ? rt->cuda_devices : NULL,
                             .payload = task->payload,
                             .blobs = task->blobs,
                             .n_blobs = task->n_blobs,
                             .timeout_ms = task->timeout_ms,
                             .cancel = task->cancel};
    int rc = gq_handler_run (handler, &hjob, &job->out->result, job->out->error,
                             sizeof job->out->error);
    job->out->code = rc;
    return rc;
}

static int
s_run_server (s_job_t *job, s_server_t *server)
{
    const gq_task_t *task = job->task;
    if (task->n_blobs) {
        return s_fail (job, GQ_EINVAL,
                       "kind '%s' runs on %s, which takes JSON only: this job has %zu binary "
                       "blob%s",
                       s_server_kind (server), server->engine ? "an engine" : "an OpenAI server",
                       task->n_blobs, task->n_blobs == 1 ? "" : "s");
    }
    gq_engine_job_t ejob = {.id = task->id,
                            .array_id = task->array_id,
                            .array_index = task->array_index,
                            .kind = task->kind,
                            .model = task->model,
                            .payload = task->payload,
                            .timeout_ms = task->timeout_ms,
                            .cancel = task->cancel,
                            .on_partial = task->on_partial,
                            .partial_arg = task->partial_arg};
    int rc = server->engine ? gq_engine_run (server->engine, &ejob, &job->out->result,
                                             job->out->error, sizeof job->out->error)
                            : gq_openai_run (server->openai, &ejob, &job->out->result,
                                             job->out->error, sizeof job->out->error);
    job->out->code = rc;
    return rc;
}

/* ---- Dispatch ------------------------------------------------------------------------------- */

int
gq_exec_run (gq_exec_t *self, const gq_task_t *task, gq_outcome_t *out)
{
    memset (out, 0, sizeof *out);
    const gq_backend_ops_t *ops = self->rt->ops;
    s_job_t job = {.exec = self,
                   .ops = ops,
                   .ctx = self->ctx,
                   .task = task,
                   .out = out,
                   .deadline_us =
                       task->timeout_ms > 0 ? gq_mono_us () + task->timeout_ms * 1000 : 0};
    ops->ctx_set_abort (self->ctx, task->cancel, job.deadline_us);
    const char *kind = task->kind ? task->kind : "";
    gq_handler_t *handler = NULL;
    s_server_t *server = NULL;
    if (s_check_stop (&job)) {
        /* Cancelled before it began. */
    } else if (streq (kind, "echo")) {
        s_run_echo (&job);
    } else if (streq (kind, "sleep")) {
        s_run_sleep (&job);
    } else if (streq (kind, "matmul")) {
        s_run_matmul (&job);
    } else if (streq (kind, "mlp")) {
        s_run_mlp (&job);
    } else if ((handler = s_handler_for (self->rt, kind))) {
        s_run_handler (&job, handler);
    } else if ((server = s_server_for (self->rt, kind))) {
        s_run_server (&job, server);
    } else {
        s_fail (&job, GQ_EUNSUPPORTED, "kind '%.32s' is not offered by this worker", kind);
    }
    ops->ctx_set_abort (self->ctx, NULL, 0);
    /* One huge job must not pin device memory for the slot's lifetime. */
    ops->scratch_trim (self->ctx, GQ_EXEC_SCRATCH_KEEP_BYTES);
    if (out->code == 0 && !out->result) {
        s_fail (&job, GQ_ENOMEM, "out of memory building the result");
    }
    if (out->code != 0) {
        gq_outcome_clear (out);
        zsys_debug ("worker: slot %d: job %" PRId64 " (%s) failed: %s", self->slot, task->id, kind,
                    out->error);
    }
    return out->code;
}

/* ---- Selftest ------------------------------------------------------------------------------- */

/* Runs one job from JSON text on exec; returns the outcome code. */
static int
s_try (gq_exec_t *exec, const char *kind, const char *model, const char *payload_text,
       zframe_t **blobs, size_t n_blobs, int64_t timeout_ms, gq_flag_t *cancel,
       gq_outcome_t *out)
{
    json_t *payload = payload_text ? json_loads (payload_text, JSON_DECODE_ANY, NULL) : NULL;
    assert (payload || !payload_text);
    gq_task_t task = {.id = 7,
                      .attempt = 1,
                      .kind = kind,
                      .model = model,
                      .payload = payload,
                      .blobs = blobs,
                      .n_blobs = n_blobs,
                      .timeout_ms = timeout_ms,
                      .cancel = cancel};
    int rc = gq_exec_run (exec, &task, out);
    json_decref (payload);
    return rc;
}

static void
s_expect_result (gq_exec_t *exec, const char *kind, const char *payload, const char *want,
                 bool verbose)
{
    gq_outcome_t out;
    int rc = s_try (exec, kind, NULL, payload, NULL, 0, 0, NULL, &out);
    char *got = out.result ? json_dumps (out.result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (rc != 0 || !got || !streq (got, want)) {
        fprintf (stderr, "\n%s %s: expected %s, got rc=%d %s (%s)\n", kind, payload, want, rc,
                 got ? got : "null", out.error);
        assert (false);
    }
    free (got);
    gq_outcome_clear (&out);
}

static void
s_expect_error (gq_exec_t *exec, const char *kind, const char *model, const char *payload,
                zframe_t **blobs, size_t n_blobs, int code, const char *needle, bool verbose)
{
    gq_outcome_t out;
    int rc = s_try (exec, kind, model, payload, blobs, n_blobs, 0, NULL, &out);
    if (rc != code || out.code != code || out.result || out.n_blobs ||
        !strstr (out.error, needle)) {
        fprintf (stderr, "\n%s %s: expected %d '%s', got %d '%s'\n", kind, payload, code, needle,
                 rc, out.error);
        assert (false);
    }
    if (verbose) {
        printf ("\n  %s: %s", kind, out.error);
    }
}

typedef struct {
    gq_exec_t *exec;      /* the slot to run on */
    const char *kind;     /* the job */
    const char *payload;  /* its payload text */
    gq_flag_t *cancel; /* its cancel flag */
    gq_flag_t started; /* set once the job is about to run */
    gq_outcome_t out;     /* its outcome */
} s_bg_t;

static void *
s_bg_run (void *arg)
{
    s_bg_t *bg = arg;
    bg->started = 1;
    s_try (bg->exec, bg->kind, NULL, bg->payload, NULL, 0, 0, bg->cancel, &bg->out);
    return NULL;
}

void
gq_exec_test (bool verbose)
{
    char why[512];
    char dir[] = "/tmp/gq-exec-XXXXXX";
    assert (mkdtemp (dir));

    /* Runtime errors first. */
    gq_runtime_opts_t opts = {.backend = "gpu"};
    assert (!gq_runtime_new (&opts, why, sizeof why) && strstr (why, "unknown backend"));
    opts = (gq_runtime_opts_t){.backend = "cpu", .models_dir = "/nonexistent/models"};
    assert (!gq_runtime_new (&opts, why, sizeof why) && strstr (why, "not a folder"));
    /* "cuda" fails cleanly without a device (or without CUDA in this build). */
    opts = (gq_runtime_opts_t){.backend = "cuda", .device = 99};
    gq_runtime_t *rt = gq_runtime_new (&opts, why, sizeof why);
    assert (!rt && strstr (why, "no CUDA device 99"));
    if (verbose) {
        printf ("\n  cuda: %s", why);
    }

    opts = (gq_runtime_opts_t){.backend = "cpu", .models_dir = dir, .cache_mb = 64};
    rt = gq_runtime_new (&opts, why, sizeof why);
    assert (rt);
    assert (streq (gq_runtime_backend_name (rt), "cpu"));
    assert (gq_runtime_cache_budget (rt) == 64LL << 20);
    gq_device_info_t info;
    assert (gq_runtime_device (rt, &info) == 0 && streq (info.name, "cpu") && !info.is_gpu);
    assert (!gq_runtime_lost (rt, why, sizeof why) && info.uuid[0] == 0);
    assert (gq_runtime_add_handler (rt, "upper=tr a-z A-Z", why, sizeof why) == 0);
    assert (gq_runtime_add_handler (rt, "fail=echo broken >&2; exit 4", why, sizeof why) == 0);
    assert (gq_runtime_add_handler (rt, "upper=cat", why, sizeof why) == GQ_EINVAL);
    assert (gq_runtime_add_handler (rt, "echo=cat", why, sizeof why) == GQ_EINVAL);
    assert (strstr (why, "built in"));
    assert (gq_runtime_add_handler (rt, "nonsense", why, sizeof why) == GQ_EINVAL);
    /* An engine with no ready line (a timeout of 0 waits for none) that answers every job. */
    assert (gq_runtime_add_engine (rt, "upper=cat", 1, 0, why, sizeof why) == GQ_EINVAL);
    assert (gq_runtime_add_engine (rt, "mlp=cat", 1, 0, why, sizeof why) == GQ_EINVAL);
    assert (gq_runtime_add_engine (rt,
                                   "eng=while read l; do echo '{\"id\":7,\"result\":\"ok\"}'; done",
                                   1, 0, why, sizeof why) == 0);
    gq_runtime_wait_engines (rt);
    assert (gq_runtime_add_handler (rt, "eng=cat", why, sizeof why) == GQ_EINVAL);
    json_t *kinds = gq_runtime_kinds (rt);
    char *text = json_dumps (kinds, JSON_COMPACT);
    assert (streq (text,
                   "[\"echo\",\"sleep\",\"matmul\",\"mlp\",\"upper\",\"fail\",\"eng\"]"));
    free (text);
    json_decref (kinds);

    gq_exec_t *exec = gq_exec_new (rt, 0);
    assert (exec);

    /* echo, with blobs back. */
    s_expect_result (exec, "echo", "{\"a\":[1,2],\"b\":\"x\"}", "{\"a\":[1,2],\"b\":\"x\"}",
                     verbose);
    zframe_t *blob = zframe_new ("abc", 3);
    gq_outcome_t out;
    assert (s_try (exec, "echo", NULL, "{}", &blob, 1, 0, NULL, &out) == 0);
    assert (out.n_blobs == 1 && zframe_eq (out.blobs[0], blob));
    gq_outcome_clear (&out);
    gq_outcome_clear (&out);
    zframe_destroy (&blob);
    s_expect_error (exec, "nope", NULL, "{}", NULL, 0, GQ_EUNSUPPORTED, "kind 'nope' is not",
                    verbose);

    /* sleep: done, bad input, timeout, cancel from another thread. */
    s_expect_result (exec, "sleep", "{\"ms\":3}", "{\"slept_ms\":3}", verbose);
    s_expect_result (exec, "sleep", "{\"ms\":0}", "{\"slept_ms\":0}", verbose);
    s_expect_error (exec, "sleep", NULL, "{\"ms\":-1}", NULL, 0, GQ_EINVAL, "ms", verbose);
    s_expect_error (exec, "sleep", NULL, "{}", NULL, 0, GQ_EINVAL, "needs \"ms\"", verbose);
    s_expect_error (exec, "sleep", NULL, "[1]", NULL, 0, GQ_EINVAL, "JSON object", verbose);
    int64_t start = gq_mono_us ();
    assert (s_try (exec, "sleep", NULL, "{\"ms\":60000}", NULL, 0, 50, NULL, &out) ==
            GQ_ETIMEOUT);
    assert (streq (out.error, "timed out after 50 ms") && !out.result);
    assert (gq_mono_us () - start < 2000000);
    gq_flag_t cancel = 0;
    gq_exec_t *exec2 = gq_exec_new (rt, 1);
    assert (exec2);
    s_bg_t bg = {.exec = exec2, .kind = "sleep", .payload = "{\"ms\":60000}", .cancel = &cancel};
    pthread_t thread;
    start = gq_mono_us ();
    assert (pthread_create (&thread, NULL, s_bg_run, &bg) == 0);
    while (!bg.started) {
        zclock_sleep (1);
    }
    cancel = 1;
    pthread_join (thread, NULL);
    assert (bg.out.code == GQ_ESTATE && streq (bg.out.error, "cancelled"));
    assert (gq_mono_us () - start < 2000000);
    /* Already cancelled: nothing runs. */
    assert (s_try (exec, "echo", NULL, "{}", NULL, 0, 0, &cancel, &out) == GQ_ESTATE);
    cancel = 0;

    /* matmul, given operands. */
    s_expect_result (exec, "matmul", "{\"a\":[[1,2],[3,4]],\"b\":[[5,6],[7,8]]}",
                     "{\"c\":[[19.0,22.0],[43.0,50.0]]}", verbose);
    s_expect_result (exec, "matmul", "{\"a\":[[1,2,3]],\"b\":[[1],[0.5],[-1]],\"dtype\":\"bf16\"}",
                     "{\"c\":[[-1.0]]}", verbose);
    s_expect_result (exec, "matmul", "{\"a\":[[2]],\"b\":[[3]],\"dtype\":\"tf32\"}",
                     "{\"c\":[[6.0]]}", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"a\":[[1,2]],\"b\":[[1,2]]}", NULL, 0, GQ_EINVAL,
                    "a is 1 x 2 but b is 1 x 2: inner dimensions differ", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"a\":[[1,2],[3]],\"b\":[[1],[2]]}", NULL, 0,
                    GQ_EINVAL, "row 1 is not an array of 2", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"a\":[[1,\"x\"]],\"b\":[[1],[2]]}", NULL, 0,
                    GQ_EINVAL, "element (0, 1) is not a finite", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"a\":[[1e39]],\"b\":[[1]]}", NULL, 0, GQ_EINVAL,
                    "not a finite float32", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"a\":[],\"b\":[[1]]}", NULL, 0, GQ_EINVAL,
                    "non-empty array", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"a\":[[1]],\"b\":[[1]],\"dtype\":\"fp8\"}", NULL, 0,
                    GQ_EINVAL, "\"dtype\" must be", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"a\":[[3e38]],\"b\":[[10]]}", NULL, 0, GQ_EINVAL,
                    "not finite (float32 overflow)", verbose);

    /* matmul, blob operands and a blob result. */
    float av[6] = {1, 2, 3, 4, 5, 6}, bv[6] = {1, 0, 0, 1, 1, 1};
    zframe_t *blobs[2] = {zframe_new (av, sizeof av), zframe_new (bv, sizeof bv)};
    assert (s_try (exec, "matmul", NULL,
                   "{\"a\":{\"blob\":0,\"rows\":2,\"cols\":3},"
                   "\"b\":{\"blob\":1,\"rows\":3,\"cols\":2},\"output_blob\":true}",
                   blobs, 2, 0, NULL, &out) == 0);
    assert (out.n_blobs == 1 && zframe_size (out.blobs[0]) == 4 * sizeof (float));
    float cv[4];
    memcpy (cv, zframe_data (out.blobs[0]), sizeof cv);
    assert (cv[0] == 4 && cv[1] == 5 && cv[2] == 10 && cv[3] == 11);
    text = json_dumps (out.result, JSON_COMPACT);
    assert (streq (text, "{\"c\":{\"blob\":0,\"rows\":2,\"cols\":2}}"));
    free (text);
    gq_outcome_clear (&out);
    s_expect_error (exec, "matmul", NULL,
                    "{\"a\":{\"blob\":0,\"rows\":3,\"cols\":3},\"b\":[[1]]}", blobs, 2, GQ_EINVAL,
                    "blob 0 has 24 bytes, but 3 x 3 float32 take 36", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"a\":{\"blob\":5,\"rows\":1,\"cols\":1},\"b\":[[1]]}",
                    blobs, 2, GQ_EINVAL, "blob 5 was not sent", verbose);
    av[4] = NAN;
    zframe_reset (blobs[0], av, sizeof av);
    s_expect_error (exec, "matmul", NULL, "{\"a\":{\"blob\":0,\"rows\":2,\"cols\":3},\"b\":[[1]]}",
                    blobs, 2, GQ_EINVAL, "element (1, 1) is not finite", verbose);
    zframe_destroy (&blobs[0]);
    zframe_destroy (&blobs[1]);

    /* matmul, generated operands: the checksum is the sum of C from the shared generator. */
    const int gm = 37, gn = 29, gk = 53;
    double want = 0;
    for (int i = 0; i < gm; i++) {
        for (int j = 0; j < gn; j++) {
            double acc = 0;
            for (int p = 0; p < gk; p++) {
                acc += (double) gq_rand_uniform (9, (uint64_t) (i * gk + p)) *
                       gq_rand_uniform (9 ^ S_SEED_B, (uint64_t) (p * gn + j));
            }
            want += acc;
        }
    }
    assert (s_try (exec, "matmul", NULL,
                   "{\"m\":37,\"n\":29,\"k\":53,\"seed\":9,\"repeat\":3}", NULL, 0, 0, NULL,
                   &out) == 0);
    double got = json_real_value (json_object_get (out.result, "checksum"));
    if (fabs (got - want) > 1e-3) {
        fprintf (stderr, "checksum: expected %.9g, got %.9g\n", want, got);
        assert (false);
    }
    assert (json_integer_value (json_object_get (out.result, "repeat")) == 3);
    assert (streq (json_string_value (json_object_get (out.result, "dtype")), "f32"));
    assert (json_real_value (json_object_get (out.result, "gflops")) >= 0);
    gq_outcome_clear (&out);
    assert (s_try (exec, "matmul", NULL, "{\"m\":64,\"n\":64,\"k\":64,\"dtype\":\"bf16\"}", NULL,
                   0, 0, NULL, &out) == 0);
    assert (streq (json_string_value (json_object_get (out.result, "dtype")), "bf16"));
    gq_outcome_clear (&out);
    s_expect_error (exec, "matmul", NULL, "{\"m\":0,\"n\":1,\"k\":1}", NULL, 0, GQ_EINVAL, "m",
                    verbose);
    s_expect_error (exec, "matmul", NULL, "{\"n\":1,\"k\":1}", NULL, 0, GQ_EINVAL,
                    "needs \"m\"", verbose);
    s_expect_error (exec, "matmul", NULL, "{\"m\":65536,\"n\":65536,\"k\":65536}", NULL, 0,
                    GQ_ETOOBIG, "over this worker's limit", verbose);
    /* A long CPU GEMM stops at its deadline. */
    start = gq_mono_us ();
    assert (s_try (exec, "matmul", NULL, "{\"m\":4096,\"n\":4096,\"k\":4096}", NULL, 0, 100,
                   NULL, &out) == GQ_ETIMEOUT);
    assert (streq (out.error, "timed out after 100 ms"));
    assert (gq_mono_us () - start < 3000000);

    /* mlp: JSON in and out, blob in and out, softmax, errors. */
    char path[300];
    snprintf (path, sizeof path, "%s/net.safetensors", dir);
    int64_t widths[] = {3, 8, 4};
    assert (gq_model_make (path, widths, 3, 77, GQ_DTYPE_F16, why, sizeof why) == 0);
    assert (s_try (exec, "mlp", "net", "{\"input\":[[1,2,3],[0,0,0],[-1,0.5,2]]}", NULL, 0, 0,
                   NULL, &out) == 0);
    json_t *output = json_object_get (out.result, "output");
    json_t *argmax = json_object_get (out.result, "argmax");
    assert (json_array_size (output) == 3 && json_array_size (json_array_get (output, 0)) == 4);
    assert (json_array_size (argmax) == 3);
    float rows_json[3][4];
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 4; c++) {
            rows_json[r][c] =
                (float) json_real_value (json_array_get (json_array_get (output, r), c));
        }
    }
    gq_outcome_clear (&out);
    float in[9] = {1, 2, 3, 0, 0, 0, -1, 0.5f, 2};
    zframe_t *input = zframe_new (in, sizeof in);
    assert (s_try (exec, "mlp", "net",
                   "{\"input\":{\"blob\":0,\"rows\":3,\"cols\":3},\"output_blob\":true}", &input,
                   1, 0, NULL, &out) == 0);
    assert (out.n_blobs == 1 && zframe_size (out.blobs[0]) == 12 * sizeof (float));
    float rows_blob[12];
    memcpy (rows_blob, zframe_data (out.blobs[0]), sizeof rows_blob);
    assert (memcmp (rows_blob, rows_json, sizeof rows_blob) == 0);
    gq_outcome_clear (&out);
    assert (s_try (exec, "mlp", NULL, "{\"model\":\"net\",\"input\":[[1,2,3]],\"softmax\":true}",
                   NULL, 0, 0, NULL, &out) == 0);
    double total = 0;
    for (int c = 0; c < 4; c++) {
        total += json_real_value (
            json_array_get (json_array_get (json_object_get (out.result, "output"), 0), c));
    }
    assert (fabs (total - 1) < 1e-5);
    gq_outcome_clear (&out);
    s_expect_error (exec, "mlp", "net", "{\"input\":[[1,2]]}", NULL, 0, GQ_EINVAL,
                    "input rows have 2 values but model 'net' takes 3", verbose);
    s_expect_error (exec, "mlp", "gone", "{\"input\":[[1,2,3]]}", NULL, 0, GQ_ENOTFOUND,
                    "model 'gone' not found", verbose);
    s_expect_error (exec, "mlp", NULL, "{\"input\":[[1,2,3]]}", NULL, 0, GQ_EINVAL,
                    "needs a model", verbose);
    s_expect_error (exec, "mlp", "net", "{\"input\":[[1,2,3]],\"dtype\":\"bf16\"}", NULL, 0,
                    GQ_EINVAL, "\"dtype\" must be", verbose);
    snprintf (path, sizeof path, "%s/liar.safetensors", dir);
    FILE *f = fopen (path, "wb");
    assert (f);
    fwrite ("\xff\xff\xff\xff\x00\x00\x00\x00{}", 1, 10, f);
    fclose (f);
    s_expect_error (exec, "mlp", "liar", "{\"input\":[[1]]}", NULL, 0, GQ_EMODEL,
                    "header length 4294967295", verbose);
    json_t *models = gq_runtime_models (rt);
    text = json_dumps (json_object_get (models, "available"), JSON_COMPACT);
    assert (streq (text, "[\"liar\",\"net\"]"));
    free (text);
    json_t *loaded = json_object_get (models, "loaded");
    assert (json_array_size (loaded) == 1);
    assert (streq (json_string_value (json_object_get (json_array_get (loaded, 0), "name")),
                   "net"));
    assert (json_real_value (json_object_get (json_array_get (loaded, 0), "load_ms")) > 0);
    json_decref (models);
    unlink (path);

    /* Handlers and engines through the runtime. */
    s_expect_result (exec, "upper", "\"hello\"", "\"HELLO\"", verbose);
    s_expect_result (exec, "eng", "{}", "\"ok\"", verbose);
    blob = zframe_new ("abc", 3);
    s_expect_error (exec, "eng", NULL, "{}", &blob, 1, GQ_EINVAL, "takes JSON only", verbose);
    zframe_destroy (&blob);
    s_expect_error (exec, "fail", NULL, "{}", NULL, 0, GQ_EBACKEND,
                    "handler exited with status 4: broken", verbose);

    gq_exec_destroy (&exec);
    gq_exec_destroy (&exec);
    gq_exec_destroy (&exec2);
    zframe_destroy (&input);
    gq_runtime_destroy (&rt);
    gq_runtime_destroy (&rt);

    /* "auto" always finds a backend. */
    opts = (gq_runtime_opts_t){.backend = "auto"};
    rt = gq_runtime_new (&opts, why, sizeof why);
    assert (rt);
    assert (gq_runtime_cache_budget (rt) > 0);
    gq_runtime_destroy (&rt);

    snprintf (path, sizeof path, "%s/net.safetensors", dir);
    unlink (path);
    rmdir (dir);
    if (verbose) {
        printf ("\n  ");
    }
}
