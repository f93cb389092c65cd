/*  model.c — MLP models: checking, loading, running, making; and the shared model cache. */
#include "model.h"

#include <czmq.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tuning.h"

#define S_TENSOR_ALIGN 256 /* device offset alignment of each tensor */
#define S_NAME_BUF     64  /* "layers.255.weight" and some */

struct _gq_model_t {
    char name[GQ_MODEL_MAX];     /* the model's name (the file stem) */
    const gq_backend_ops_t *ops; /* the backend the weights live on */
    gq_bdev_t *dev;              /* the device holding the weights */
    void *block;                 /* one device allocation holding every tensor */
    float **weights;             /* per layer: [out, in] inside block */
    float **biases;              /* per layer: [out] inside block */
    gq_model_shape_t shape;      /* widths and sizes */
    double load_ms;              /* time the load took */
};

/* ---- Checking ------------------------------------------------------------------------------- */

static size_t
s_aligned (size_t bytes)
{
    return (bytes + S_TENSOR_ALIGN - 1) / S_TENSOR_ALIGN * S_TENSOR_ALIGN;
}

int
gq_model_check (gq_safetensors_t *file, gq_model_shape_t *shape, char *why, size_t whylen)
{
    memset (shape, 0, sizeof *shape);
    char name[S_NAME_BUF], text[128];
    size_t layer = 0;
    for (;; layer++) {
        snprintf (name, sizeof name, "layers.%zu.weight", layer);
        const gq_st_tensor_t *w = gq_safetensors_find (file, name);
        if (!w) {
            break;
        }
        if (layer == GQ_MODEL_MAX_LAYERS) {
            return gq_why (why, whylen, GQ_EMODEL, "more than %d layers", GQ_MODEL_MAX_LAYERS);
        }
        if (w->ndim != 2) {
            return gq_why (why, whylen, GQ_EMODEL, "tensor '%s': shape %s is not [out, in]", name,
                           gq_st_shape_text (w, text, sizeof text));
        }
        if (w->shape[0] < 1 || w->shape[1] < 1 || w->shape[0] > GQ_MODEL_MAX_WIDTH ||
            w->shape[1] > GQ_MODEL_MAX_WIDTH) {
            return gq_why (why, whylen, GQ_EMODEL,
                           "tensor '%s': shape %s is empty or wider than %d", name,
                           gq_st_shape_text (w, text, sizeof text), GQ_MODEL_MAX_WIDTH);
        }
        if (layer == 0) {
            shape->widths[0] = w->shape[1];
            shape->dtype = w->dtype;
        } else if (w->shape[1] != shape->widths[layer]) {
            return gq_why (why, whylen, GQ_EMODEL,
                           "tensor '%s': shape %s does not chain: layer %zu gives %" PRId64
                           " outputs",
                           name, gq_st_shape_text (w, text, sizeof text), layer - 1,
                           shape->widths[layer]);
        }
        shape->widths[layer + 1] = w->shape[0];
        snprintf (name, sizeof name, "layers.%zu.bias", layer);
        const gq_st_tensor_t *b = gq_safetensors_find (file, name);
        if (!b) {
            return gq_why (why, whylen, GQ_EMODEL, "layer %zu has no tensor '%s'", layer, name);
        }
        if (b->ndim != 1 || b->shape[0] != w->shape[0]) {
            return gq_why (why, whylen, GQ_EMODEL, "tensor '%s': shape %s should be [%" PRId64 "]",
                           name, gq_st_shape_text (b, text, sizeof text), w->shape[0]);
        }
        shape->params += (size_t) (w->shape[0] * w->shape[1] + b->shape[0]);
        shape->bytes += s_aligned ((size_t) (w->shape[0] * w->shape[1]) * sizeof (float)) +
                        s_aligned ((size_t) b->shape[0] * sizeof (float));
    }
    if (layer == 0) {
        return gq_why (why, whylen, GQ_EMODEL,
                       "no tensor 'layers.0.weight': not an MLP in gridq's layout");
    }
    shape->layers = layer;
    /* A stray layer tensor means the file is not what its author thinks: say so. */
    for (size_t i = 0; i < gq_safetensors_count (file); i++) {
        const char *tname = gq_safetensors_tensor (file, i)->name;
        if (strncmp (tname, "layers.", 7) != 0) {
            continue;
        }
        char *end = NULL;
        unsigned long index = strtoul (tname + 7, &end, 10);
        bool ours = end != tname + 7 && index < layer &&
                    (streq (end, ".weight") || streq (end, ".bias"));
        if (!ours) {
            return gq_why (why, whylen, GQ_EMODEL,
                           "tensor '%s' is not part of the chain of layers 0..%zu", tname,
                           layer - 1);
        }
    }
    return GQ_OK;
}

/* ---- Loading -------------------------------------------------------------------------------- */

/* Widens a tensor's (unaligned) data into f32. */
static void
s_widen (const gq_st_tensor_t *t, float *out)
{
    size_t count = t->bytes / gq_dtype_size (t->dtype);
    if (t->dtype == GQ_DTYPE_F32) {
        memcpy (out, t->data, t->bytes);
        return;
    }
    const uint8_t *bytes = t->data;
    for (size_t i = 0; i < count; i++) {
        uint16_t h;
        memcpy (&h, bytes + 2 * i, 2);
        out[i] = t->dtype == GQ_DTYPE_BF16 ? gq_bf16_to_f32 (h) : gq_f16_to_f32 (h);
    }
}

gq_model_t *
gq_model_load (const gq_backend_ops_t *ops, gq_bdev_t *dev, gq_bctx_t *ctx, const char *path,
               const char *name, int *err, char *why, size_t whylen)
{
    int64_t start = gq_mono_us ();
    gq_safetensors_t *file = gq_safetensors_open (path, err, why, whylen);
    if (!file) {
        return NULL;
    }
    gq_model_t *self = calloc (1, sizeof *self);
    float *host = NULL;
    if (!self) {
        *err = GQ_ENOMEM;
        snprintf (why, whylen, "out of memory");
        goto failed;
    }
    snprintf (self->name, sizeof self->name, "%s", name);
    self->ops = ops;
    self->dev = dev;
    *err = gq_model_check (file, &self->shape, why, whylen);
    if (*err) {
        goto failed;
    }
    size_t layers = self->shape.layers;
    self->weights = calloc (layers, sizeof (float *));
    self->biases = calloc (layers, sizeof (float *));
    size_t widest = 0; /* the largest tensor, in elements, for one host staging buffer */
    for (size_t i = 0; i < layers; i++) {
        size_t n = (size_t) (self->shape.widths[i] * self->shape.widths[i + 1]);
        widest = n > widest ? n : widest;
    }
    host = malloc (widest * sizeof (float));
    if (!self->weights || !self->biases || !host) {
        *err = GQ_ENOMEM;
        snprintf (why, whylen, "out of host memory loading %s", name);
        goto failed;
    }
    *err = ops->alloc (dev, self->shape.bytes, &self->block, why, whylen);
    if (*err) {
        goto failed;
    }
    uint8_t *at = self->block;
    for (size_t i = 0; i < layers; i++) {
        for (int part = 0; part < 2; part++) {
            char tname[S_NAME_BUF];
            snprintf (tname, sizeof tname, "layers.%zu.%s", i, part ? "bias" : "weight");
            const gq_st_tensor_t *t = gq_safetensors_find (file, tname);
            size_t bytes = (size_t) gq_st_elements (t) * sizeof (float);
            s_widen (t, host);
            *err = ops->upload (ctx, at, host, bytes);
            if (*err) {
                snprintf (why, whylen, "uploading %s: %s", tname, ops->ctx_error (ctx));
                goto failed;
            }
            if (part) {
                self->biases[i] = (float *) at;
            } else {
                self->weights[i] = (float *) at;
            }
            at += s_aligned (bytes);
        }
    }
    free (host);
    gq_safetensors_destroy (&file);
    self->load_ms = (double) (gq_mono_us () - start) / 1000.0;
    *err = GQ_OK;
    return self;

failed:
    free (host);
    gq_safetensors_destroy (&file);
    gq_model_destroy (&self);
    return NULL;
}

void
gq_model_destroy (gq_model_t **self_p)
{
    if (self_p && *self_p) {
        gq_model_t *self = *self_p;
        if (self->block) {
            self->ops->free (self->dev, self->block);
        }
        free (self->weights);
        free (self->biases);
        free (self);
        *self_p = NULL;
    }
}

const char *
gq_model_name (gq_model_t *self)
{
    return self->name;
}

const gq_model_shape_t *
gq_model_shape (gq_model_t *self)
{
    return &self->shape;
}

double
gq_model_load_ms (gq_model_t *self)
{
    return self->load_ms;
}

/* ---- Running -------------------------------------------------------------------------------- */

static int
s_stopped (const gq_forward_opts_t *opts, char *why, size_t whylen)
{
    if (opts->cancel && *opts->cancel) {
        snprintf (why, whylen, "cancelled");
        return GQ_ESTATE;
    }
    if (opts->deadline_us && gq_mono_us () >= opts->deadline_us) {
        snprintf (why, whylen, "deadline passed");
        return GQ_ETIMEOUT;
    }
    return GQ_OK;
}

int
gq_model_forward (gq_model_t *self, gq_bctx_t *ctx, const float *input, int64_t rows,
                  float *output, const gq_forward_opts_t *opts, char *why, size_t whylen)
{
    const gq_backend_ops_t *ops = self->ops;
    const int64_t *widths = self->shape.widths;
    size_t layers = self->shape.layers;
    int64_t widest = 0;
    for (size_t i = 0; i <= layers; i++) {
        widest = widths[i] > widest ? widths[i] : widest;
    }
    /* Rows go through in chunks, so activations stay within GQ_MODEL_BATCH_BYTES per buffer. */
    int64_t chunk = GQ_MODEL_BATCH_BYTES / ((int64_t) sizeof (float) * widest);
    chunk = chunk < 1 ? 1 : chunk;
    chunk = chunk > rows ? rows : chunk;
    size_t buffer_bytes = (size_t) (chunk * widest) * sizeof (float);
    float *ping = ops->scratch (ctx, 0, buffer_bytes);
    float *pong = ping ? ops->scratch (ctx, 1, buffer_bytes) : NULL;
    if (!ping || !pong) {
        snprintf (why, whylen, "%s", ops->ctx_error (ctx));
        return GQ_ENOMEM;
    }
    int64_t inputs = widths[0], outputs = widths[layers];
    for (int64_t first = 0; first < rows; first += chunk) {
        int n = (int) (rows - first < chunk ? rows - first : chunk);
        int rc = ops->upload (ctx, ping, input + first * inputs,
                              (size_t) (n * inputs) * sizeof (float));
        float *x = ping, *y = pong;
        for (size_t i = 0; rc == 0 && i < layers; i++) {
            rc = s_stopped (opts, why, whylen);
            if (rc) {
                return rc;
            }
            rc = ops->gemm (ctx, opts->mode, n, (int) widths[i + 1], (int) widths[i], x,
                            self->weights[i], true, y);
            if (rc == 0) {
                rc = ops->bias_act (ctx, y, self->biases[i], n, (int) widths[i + 1],
                                    i + 1 < layers);
            }
            float *swap = x;
            x = y;
            y = swap;
        }
        if (rc == 0 && opts->softmax) {
            rc = ops->softmax (ctx, x, n, (int) outputs);
        }
        if (rc == 0) {
            rc = ops->download (ctx, output + first * outputs, x,
                                (size_t) (n * outputs) * sizeof (float));
        }
        if (rc) {
            snprintf (why, whylen, "%s", ops->ctx_error (ctx));
            return rc;
        }
    }
    return GQ_OK;
}

/* ---- Making --------------------------------------------------------------------------------- */

int
gq_model_make (const char *path, const int64_t *widths, size_t count, uint64_t seed,
               gq_dtype_t dtype, char *why, size_t whylen)
{
    if (count < 2 || count > GQ_MODEL_MAX_LAYERS + 1) {
        snprintf (why, whylen, "a model needs 2 to %d widths", GQ_MODEL_MAX_LAYERS + 1);
        return GQ_EINVAL;
    }
    for (size_t i = 0; i < count; i++) {
        if (widths[i] < 1 || widths[i] > GQ_MODEL_MAX_WIDTH) {
            snprintf (why, whylen, "width %" PRId64 " is not in 1..%d", widths[i],
                      GQ_MODEL_MAX_WIDTH);
            return GQ_EINVAL;
        }
    }
    size_t layers = count - 1;
    gq_st_tensor_t *tensors = calloc (2 * layers, sizeof *tensors);
    char (*names)[S_NAME_BUF] = calloc (2 * layers, S_NAME_BUF);
    int rc = tensors && names ? GQ_OK : GQ_ENOMEM;
    for (size_t i = 0; rc == 0 && i < layers; i++) {
        for (int part = 0; part < 2; part++) {
            gq_st_tensor_t *t = &tensors[2 * i + part];
            snprintf (names[2 * i + part], S_NAME_BUF, "layers.%zu.%s", i,
                      part ? "bias" : "weight");
            t->name = names[2 * i + part];
            t->dtype = dtype;
            t->ndim = part ? 1 : 2;
            t->shape[0] = widths[i + 1];
            t->shape[1] = widths[i];
            size_t n = (size_t) gq_st_elements (t);
            t->bytes = n * gq_dtype_size (dtype);
            void *data = malloc (t->bytes ? t->bytes : 1);
            if (!data) {
                rc = GQ_ENOMEM;
                break;
            }
            t->data = data;
            /* Each tensor has a stream of its own, so widths never shift another's values. */
            uint64_t stream = gq_mix64 (seed) + 2 * i + (uint64_t) part;
            float scale = part ? 0.1f : (float) (1.0 / sqrt ((double) widths[i]));
            for (size_t e = 0; e < n; e++) {
                float v = gq_rand_uniform (stream, e) * scale;
                if (dtype == GQ_DTYPE_F32) {
                    ((float *) data)[e] = v;
                } else {
                    ((uint16_t *) data)[e] =
                        dtype == GQ_DTYPE_BF16 ? gq_f32_to_bf16 (v) : gq_f32_to_f16 (v);
                }
            }
        }
    }
    if (rc == 0) {
        char layout[64 * 8] = "";
        size_t used = 0;
        for (size_t i = 0; i < count && used < sizeof layout; i++) {
            used += (size_t) snprintf (layout + used, sizeof layout - used, "%s%" PRId64,
                                       i ? "," : "", widths[i]);
        }
        char seed_text[32];
        snprintf (seed_text, sizeof seed_text, "%" PRIu64, seed);
        json_t *meta = json_pack ("{s:s, s:s, s:s}", "format", "gridq-mlp", "layers", layout,
                                  "seed", seed_text);
        rc = gq_safetensors_write (path, tensors, 2 * layers, meta, why, whylen);
        json_decref (meta);
    } else {
        snprintf (why, whylen, "out of memory making a model");
    }
    for (size_t i = 0; tensors && i < 2 * layers; i++) {
        free ((void *) tensors[i].data);
    }
    free (tensors);
    free (names);
    return rc;
}

/* ---- The cache ------------------------------------------------------------------------------ */

typedef enum {
    S_LOADING, /* one slot is loading it; others wait on `changed` */
    S_READY,   /* resident */
    S_FAILED   /* the load failed; kept until the slots waiting for it have read why */
} s_state_t;

typedef struct {
    char name[GQ_MODEL_MAX]; /* the model's name */
    s_state_t state;         /* see s_state_t */
    gq_model_t *model;       /* the model once S_READY */
    int refs;                /* jobs holding it, or waiting for it */
    uint64_t last_use;       /* the cache's clock at the last acquire or release (LRU) */
    size_t bytes;            /* device bytes counted against the budget */
    int err;                 /* the load's error when S_FAILED */
    char why[512];           /* and its reason */
} s_entry_t;

struct _gq_model_cache_t {
    const gq_backend_ops_t *ops; /* the backend models load onto */
    gq_bdev_t *dev;              /* and its device */
    char *dir;                   /* the models folder, or NULL */
    int64_t budget;              /* bytes of resident models before eviction */
    pthread_mutex_t lock;        /* guards everything below */
    pthread_cond_t changed;      /* broadcast when a load ends */
    s_entry_t **entries;         /* loading, resident and failed models */
    size_t count;                /* entries in use */
    size_t cap;                  /* entries allocated */
    uint64_t clock;              /* ticks at each acquire and release, for LRU */
    int64_t used;                /* bytes of S_LOADING (once sized) and S_READY entries */
};

gq_model_cache_t *
gq_model_cache_new (const gq_backend_ops_t *ops, gq_bdev_t *dev, const char *dir,
                    int64_t budget_bytes)
{
    gq_model_cache_t *self = calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->ops = ops;
    self->dev = dev;
    self->dir = dir ? strdup (dir) : NULL;
    self->budget = budget_bytes;
    pthread_mutex_init (&self->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&self->changed, &attr);
    pthread_condattr_destroy (&attr);
    return self;
}

void
gq_model_cache_destroy (gq_model_cache_t **self_p)
{
    if (self_p && *self_p) {
        gq_model_cache_t *self = *self_p;
        for (size_t i = 0; i < self->count; i++) {
            if (self->entries[i]->refs) {
                zsys_warning ("model: %s still held by %d jobs at shutdown",
                              self->entries[i]->name, self->entries[i]->refs);
            }
            gq_model_destroy (&self->entries[i]->model);
            free (self->entries[i]);
        }
        free (self->entries);
        free (self->dir);
        pthread_mutex_destroy (&self->lock);
        pthread_cond_destroy (&self->changed);
        free (self);
        *self_p = NULL;
    }
}

static s_entry_t *
s_find (gq_model_cache_t *self, const char *name)
{
    for (size_t i = 0; i < self->count; i++) {
        if (streq (self->entries[i]->name, name)) {
            return self->entries[i];
        }
    }
    return NULL;
}

static void
s_remove (gq_model_cache_t *self, s_entry_t *entry)
{
    for (size_t i = 0; i < self->count; i++) {
        if (self->entries[i] == entry) {
            self->entries[i] = self->entries[--self->count];
            free (entry);
            return;
        }
    }
}

/* Takes idle resident models out, least recently used first, until `extra` more bytes fit the
   budget (or nothing idle is left). Their models go to *victims for destruction outside the
   lock; returns how many. Call with the lock held. */
static size_t
s_evict (gq_model_cache_t *self, int64_t extra, const char *reason, gq_model_t **victims,
         size_t max)
{
    size_t taken = 0;
    while (self->used + extra > self->budget && taken < max) {
        s_entry_t *oldest = NULL;
        for (size_t i = 0; i < self->count; i++) {
            s_entry_t *e = self->entries[i];
            if (e->state == S_READY && e->refs == 0 &&
                (!oldest || e->last_use < oldest->last_use)) {
                oldest = e;
            }
        }
        if (!oldest) {
            break;
        }
        zsys_info ("model: evicting %s (%.1f MiB, least recently used) %s", oldest->name,
                   (double) oldest->bytes / 1048576.0, reason);
        self->used -= (int64_t) oldest->bytes;
        victims[taken++] = oldest->model;
        oldest->model = NULL;
        s_remove (self, oldest);
    }
    return taken;
}

static void
s_destroy_victims (gq_model_t **victims, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        gq_model_destroy (&victims[i]);
    }
}

/* Loads an entry that this thread created in S_LOADING state (refs 1). Called unlocked. */
static int
s_load (gq_model_cache_t *self, s_entry_t *entry, gq_bctx_t *ctx, char *why, size_t whylen)
{
    char *path = zsys_sprintf ("%s/%s.safetensors", self->dir, entry->name);
    int err = GQ_OK;
    /* Size it first (header only), so room is made before device memory is taken. */
    gq_safetensors_t *file = path ? gq_safetensors_open (path, &err, why, whylen) : NULL;
    gq_model_shape_t shape;
    if (!path) {
        err = GQ_ENOMEM;
        snprintf (why, whylen, "out of memory");
    } else if (file) {
        err = gq_model_check (file, &shape, why, whylen);
        gq_safetensors_destroy (&file);
    } else if (err == GQ_ENOTFOUND) {
        snprintf (why, whylen, "model '%s' not found in %s", entry->name, self->dir);
    }
    if (err == GQ_OK && (int64_t) shape.bytes > self->budget) {
        err = GQ_EMODEL;
        snprintf (why, whylen, "model '%s' needs %.1f MiB, more than the cache budget (%.1f MiB)",
                  entry->name, (double) shape.bytes / 1048576.0,
                  (double) self->budget / 1048576.0);
    }
    gq_model_t *victims[64];
    size_t nvictims = 0;
    if (err == GQ_OK) {
        char reason[GQ_MODEL_MAX + 32];
        snprintf (reason, sizeof reason, "to make room for %s", entry->name);
        pthread_mutex_lock (&self->lock);
        nvictims = s_evict (self, (int64_t) shape.bytes, reason, victims, 64);
        if (self->used + (int64_t) shape.bytes > self->budget) {
            zsys_warning ("model: loading %s puts the cache over its budget: the models in use "
                          "cannot be evicted",
                          entry->name);
        }
        entry->bytes = shape.bytes;
        self->used += (int64_t) shape.bytes;
        pthread_mutex_unlock (&self->lock);
    }
    s_destroy_victims (victims, nvictims);
    gq_model_t *model = NULL;
    if (err == GQ_OK) {
        model = gq_model_load (self->ops, self->dev, ctx, path, entry->name, &err, why, whylen);
    }
    zstr_free (&path);

    pthread_mutex_lock (&self->lock);
    if (model) {
        entry->model = model;
        entry->state = S_READY;
        entry->last_use = ++self->clock;
        zsys_info ("model: loaded %s (%zu layers, %.1f MiB) in %.1f ms", entry->name,
                   model->shape.layers, (double) entry->bytes / 1048576.0, model->load_ms);
    } else {
        self->used -= (int64_t) entry->bytes;
        entry->bytes = 0;
        entry->state = S_FAILED;
        entry->err = err;
        snprintf (entry->why, sizeof entry->why, "%s", why);
        zsys_warning ("model: cannot load %s: %s", entry->name, why);
        if (--entry->refs == 0) {
            s_remove (self, entry);
        }
    }
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    return err;
}

int
gq_model_cache_acquire (gq_model_cache_t *self, const char *name, gq_bctx_t *ctx,
                        gq_flag_t *cancel, gq_model_t **model_p, char *why, size_t whylen)
{
    *model_p = NULL;
    if (!name || !gq_valid_name (name, GQ_MODEL_MAX)) {
        snprintf (why, whylen, "model name '%.64s' is not valid", name ? name : "");
        return GQ_EINVAL;
    }
    if (!self->dir) {
        snprintf (why, whylen, "this worker has no models folder (--models)");
        return GQ_ENOTFOUND;
    }
    pthread_mutex_lock (&self->lock);
    s_entry_t *entry = s_find (self, name);
    if (!entry) {
        entry = calloc (1, sizeof *entry);
        if (!entry || (self->count == self->cap &&
                       !(self->entries = realloc (self->entries,
                                                  (self->cap = self->cap * 2 + 8) *
                                                      sizeof *self->entries)))) {
            pthread_mutex_unlock (&self->lock);
            free (entry);
            snprintf (why, whylen, "out of memory");
            return GQ_ENOMEM;
        }
        snprintf (entry->name, sizeof entry->name, "%s", name);
        entry->state = S_LOADING;
        entry->refs = 1;
        self->entries[self->count++] = entry;
        pthread_mutex_unlock (&self->lock);
        int rc = s_load (self, entry, ctx, why, whylen);
        if (rc == GQ_OK) {
            *model_p = entry->model; /* entry stays: our ref keeps it resident */
        }
        return rc;
    }
    entry->refs++;
    while (entry->state == S_LOADING) {
        if (cancel && *cancel) {
            entry->refs--; /* the loader still holds its own ref: the entry stays */
            pthread_mutex_unlock (&self->lock);
            snprintf (why, whylen, "cancelled");
            return GQ_ESTATE;
        }
        struct timespec until;
        clock_gettime (CLOCK_MONOTONIC, &until);
        until.tv_nsec += GQ_MODEL_WAIT_TICK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait (&self->changed, &self->lock, &until);
    }
    int rc = GQ_OK;
    if (entry->state == S_READY) {
        entry->last_use = ++self->clock;
        *model_p = entry->model;
    } else {
        rc = entry->err;
        snprintf (why, whylen, "%s", entry->why);
        if (--entry->refs == 0) {
            s_remove (self, entry);
        }
    }
    pthread_mutex_unlock (&self->lock);
    return rc;
}

void
gq_model_cache_release (gq_model_cache_t *self, gq_model_t **model_p)
{
    if (!model_p || !*model_p) {
        return;
    }
    gq_model_t *victims[64];
    size_t nvictims = 0;
    pthread_mutex_lock (&self->lock);
    s_entry_t *entry = s_find (self, (*model_p)->name);
    assert (entry && entry->model == *model_p && entry->refs > 0);
    entry->refs--;
    entry->last_use = ++self->clock;
    /* Loads that ran over the budget while models were in use are trimmed back now. */
    nvictims = s_evict (self, 0, "to return within the cache budget", victims, 64);
    pthread_mutex_unlock (&self->lock);
    s_destroy_victims (victims, nvictims);
    *model_p = NULL;
}

static int
s_compare_strings (const void *a, const void *b)
{
    return strcmp (*(char *const *) a, *(char *const *) b);
}

json_t *
gq_model_cache_json (gq_model_cache_t *self)
{
    json_t *available = json_array ();
    DIR *dir = self->dir ? opendir (self->dir) : NULL;
    if (dir) {
        char *names[GQ_MAX_MODELS];
        size_t count = 0;
        struct dirent *ent;
        const char *suffix = ".safetensors";
        size_t sl = strlen (suffix);
        while ((ent = readdir (dir)) && count < GQ_MAX_MODELS) {
            size_t len = strlen (ent->d_name);
            if (len <= sl || strcmp (ent->d_name + len - sl, suffix) != 0) {
                continue;
            }
            char *stem = strndup (ent->d_name, len - sl);
            /* Only names a job can ask for (the wire's rule for model names). */
            if (stem && gq_valid_name (stem, GQ_MODEL_MAX)) {
                names[count++] = stem;
            } else {
                free (stem);
            }
        }
        closedir (dir);
        qsort (names, count, sizeof names[0], s_compare_strings);
        for (size_t i = 0; i < count; i++) {
            json_array_append_new (available, json_string (names[i]));
            free (names[i]);
        }
    }
    json_t *loaded = json_array ();
    pthread_mutex_lock (&self->lock);
    const char *order[GQ_MAX_MODELS];
    s_entry_t *by_name[GQ_MAX_MODELS];
    size_t count = 0;
    for (size_t i = 0; i < self->count && count < GQ_MAX_MODELS; i++) {
        if (self->entries[i]->state == S_READY) {
            by_name[count] = self->entries[i];
            order[count++] = self->entries[i]->name;
        }
    }
    /* Sorted by name so reports are stable; a tiny insertion sort keeps entries paired. */
    for (size_t i = 1; i < count; i++) {
        for (size_t j = i; j > 0 && strcmp (order[j - 1], order[j]) > 0; j--) {
            const char *t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
            s_entry_t *e = by_name[j];
            by_name[j] = by_name[j - 1];
            by_name[j - 1] = e;
        }
    }
    for (size_t i = 0; i < count; i++) {
        json_array_append_new (loaded, json_pack ("{s:s, s:f, s:I}", "name", by_name[i]->name,
                                                  "load_ms", by_name[i]->model->load_ms, "bytes",
                                                  (json_int_t) by_name[i]->bytes));
    }
    pthread_mutex_unlock (&self->lock);
    return json_pack ("{s:o, s:o}", "available", available, "loaded", loaded);
}

int64_t
gq_model_cache_used (gq_model_cache_t *self)
{
    pthread_mutex_lock (&self->lock);
    int64_t used = self->used;
    pthread_mutex_unlock (&self->lock);
    return used;
}

int64_t
gq_model_cache_budget (gq_model_cache_t *self)
{
    return self->budget;
}

/* ---- Selftest ------------------------------------------------------------------------------- */

/* Names of the loaded models, comma-separated, for compact asserts. */
static char *
s_loaded_names (gq_model_cache_t *cache, char *buf, size_t size)
{
    json_t *report = gq_model_cache_json (cache);
    buf[0] = 0;
    size_t used = 0;
    size_t i;
    json_t *item;
    json_array_foreach (json_object_get (report, "loaded"), i, item) {
        used += (size_t) snprintf (buf + used, size - used, "%s%s", i ? "," : "",
                                   json_string_value (json_object_get (item, "name")));
    }
    json_decref (report);
    return buf;
}

typedef struct {
    gq_model_cache_t *cache; /* the cache under test */
    gq_bctx_t *ctx;          /* this thread's context */
    gq_model_t *model;       /* what acquire gave */
    int rc;                  /* what acquire returned */
} s_racer_t;

static void *
s_racer (void *arg)
{
    s_racer_t *r = arg;
    char why[256];
    r->rc = gq_model_cache_acquire (r->cache, "a", r->ctx, NULL, &r->model, why, sizeof why);
    return NULL;
}

static void
s_write_header_file (const char *path, const char *header, size_t data_bytes)
{
    FILE *f = fopen (path, "wb");
    assert (f);
    uint64_t len = strlen (header);
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++) {
        prefix[i] = (uint8_t) (len >> (8 * i));
    }
    fwrite (prefix, 1, 8, f);
    fwrite (header, 1, len, f);
    for (size_t i = 0; i < data_bytes; i++) {
        fputc (0, f);
    }
    fclose (f);
}

static void
s_expect_load_error (const gq_backend_ops_t *ops, gq_bdev_t *dev, gq_bctx_t *ctx,
                     const char *path, int code, const char *needle, bool verbose)
{
    int err = 0;
    char why[512] = "";
    gq_model_t *model = gq_model_load (ops, dev, ctx, path, "bad", &err, why, sizeof why);
    if (model || err != code || !strstr (why, needle)) {
        fprintf (stderr, "\n%s: expected %d with '%s', got err=%d why='%s'\n", path, code, needle,
                 err, why);
        assert (false);
    }
    if (verbose) {
        printf ("\n  rejected: %s", why);
    }
}

void
gq_model_test (bool verbose)
{
    const gq_backend_ops_t *ops = gq_backend_find ("cpu");
    char why[512];
    gq_bdev_t *dev = ops->dev_open (0, why, sizeof why);
    gq_bctx_t *ctx = ops->ctx_new (dev, why, sizeof why);
    assert (dev && ctx);
    char dir[] = "/tmp/gq-model-XXXXXX";
    assert (mkdtemp (dir));
    char path[256];

    /* Make, load, run a tiny model and check it by hand: 2 -> 2 -> 1. */
    snprintf (path, sizeof path, "%s/tiny.safetensors", dir);
    int64_t tiny[] = {2, 2, 1};
    assert (gq_model_make (path, tiny, 3, 5, GQ_DTYPE_F32, why, sizeof why) == 0);
    int err = -1;
    gq_model_t *model = gq_model_load (ops, dev, ctx, path, "tiny", &err, why, sizeof why);
    assert (model && err == 0);
    assert (streq (gq_model_name (model), "tiny") && gq_model_load_ms (model) >= 0);
    const gq_model_shape_t *shape = gq_model_shape (model);
    assert (shape->layers == 2 && shape->widths[0] == 2 && shape->widths[2] == 1);
    assert (shape->params == 2 * 2 + 2 + 2 + 1);
    float in[4] = {0.5f, -1.0f, 2.0f, 0.25f}, out[2];
    gq_forward_opts_t opts = {.mode = GQ_GEMM_F32};
    assert (gq_model_forward (model, ctx, in, 2, out, &opts, why, sizeof why) == 0);
    for (int r = 0; r < 2; r++) {
        /* By hand, from the generator's streams. */
        uint64_t s = gq_mix64 (5);
        double h[2];
        for (int o = 0; o < 2; o++) {
            double acc = gq_rand_uniform (s + 1, (uint64_t) o) * 0.1f;
            for (int i = 0; i < 2; i++) {
                acc += (double) (gq_rand_uniform (s + 0, (uint64_t) (o * 2 + i)) *
                                 (float) (1.0 / sqrt (2.0))) *
                       in[r * 2 + i];
            }
            h[o] = acc > 0 ? acc : 0;
        }
        double y = gq_rand_uniform (s + 3, 0) * 0.1f;
        for (int i = 0; i < 2; i++) {
            y += (double) (gq_rand_uniform (s + 2, (uint64_t) i) * (float) (1.0 / sqrt (2.0))) *
                 h[i];
        }
        if (fabs (y - out[r]) > 1e-5) {
            fprintf (stderr, "row %d: expected %g, got %g\n", r, y, out[r]);
            assert (false);
        }
    }
    gq_flag_t cancel = 1;
    opts.cancel = &cancel;
    assert (gq_model_forward (model, ctx, in, 2, out, &opts, why, sizeof why) == GQ_ESTATE);
    gq_model_destroy (&model);
    gq_model_destroy (&model);

    /* Model files that lie about their layers. */
    static const struct {
        const char *header;
        size_t data;
        const char *needle;
    } bad[] = {
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "no tensor 'layers.0.weight'"},
        {"{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16,
         "layer 0 has no tensor 'layers.0.bias'"},
        {"{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16,
         "'layers.0.weight': shape [4] is not [out, in]"},
        {"{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[0,2],\"data_offsets\":[0,0]}}", 0,
         "is empty"},
        {"{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
         "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[16,28]}}",
         28, "'layers.0.bias': shape [3] should be [2]"},
        {"{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
         "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
         "\"layers.1.weight\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[24,36]},"
         "\"layers.1.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[36,40]}}",
         40, "'layers.1.weight': shape [1, 3] does not chain: layer 0 gives 2 outputs"},
        {"{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
         "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
         "\"layers.2.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[24,28]}}",
         28, "'layers.2.bias' is not part of the chain"},
        {"{\"layers.0.weight\":{\"dtype\":\"I8\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 4,
         "dtype 'I8' is not supported"},
        {"{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
         "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         16, "overlap"},
        {"{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
         "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}",
         20, "run past the end of the data"},
    };
    snprintf (path, sizeof path, "%s/bad.safetensors", dir);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_write_header_file (path, bad[i].header, bad[i].data);
        s_expect_load_error (ops, dev, ctx, path, GQ_EMODEL, bad[i].needle, verbose);
    }
    s_write_header_file (path, "{\"layers.0.weight\": nope}", 0);
    s_expect_load_error (ops, dev, ctx, path, GQ_EMODEL, "not valid JSON", verbose);
    snprintf (path, sizeof path, "%s/none.safetensors", dir);
    s_expect_load_error (ops, dev, ctx, path, GQ_ENOTFOUND, "cannot open", verbose);

    /* The cache: four models of equal size, a budget for two. */
    int64_t widths[] = {64, 32, 8};
    const char *names[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        snprintf (path, sizeof path, "%s/%s.safetensors", dir, names[i]);
        assert (gq_model_make (path, widths, 3, (uint64_t) i, GQ_DTYPE_BF16, why, sizeof why) ==
                0);
    }
    snprintf (path, sizeof path, "%s/a.safetensors", dir);
    model = gq_model_load (ops, dev, ctx, path, "a", &err, why, sizeof why);
    assert (model);
    int64_t each = (int64_t) gq_model_shape (model)->bytes;
    gq_model_destroy (&model);
    gq_model_cache_t *cache = gq_model_cache_new (ops, dev, dir, 2 * each + each / 2);
    assert (gq_model_cache_budget (cache) == 2 * each + each / 2);
    char list[256];
    json_t *report = gq_model_cache_json (cache);
    char *text = json_dumps (report, JSON_COMPACT);
    /* bad.safetensors is listed: "available" means a file is there, not that it is sound. */
    if (!streq (text, "{\"available\":[\"a\",\"b\",\"bad\",\"c\",\"d\",\"tiny\"],\"loaded\":[]}")) {
        fprintf (stderr, "report: %s\n", text);
        assert (false);
    }
    free (text);
    json_decref (report);

    gq_model_t *ma = NULL, *mb = NULL, *mc = NULL, *md = NULL;
    assert (gq_model_cache_acquire (cache, "a", ctx, NULL, &ma, why, sizeof why) == 0 && ma);
    assert (gq_model_cache_acquire (cache, "b", ctx, NULL, &mb, why, sizeof why) == 0 && mb);
    gq_model_cache_release (cache, &mb);
    assert (mb == NULL);
    assert (gq_model_cache_used (cache) == 2 * each);
    /* c needs room: a is older but in use, so b goes. */
    assert (gq_model_cache_acquire (cache, "c", ctx, NULL, &mc, why, sizeof why) == 0 && mc);
    assert (streq (s_loaded_names (cache, list, sizeof list), "a,c"));
    /* d needs room while a and c are both held: the cache runs over, evicting nothing. */
    assert (gq_model_cache_acquire (cache, "d", ctx, NULL, &md, why, sizeof why) == 0 && md);
    assert (streq (s_loaded_names (cache, list, sizeof list), "a,c,d"));
    assert (gq_model_cache_used (cache) == 3 * each);
    /* A second hold on a resident model shares it. */
    gq_model_t *ma2 = NULL;
    assert (gq_model_cache_acquire (cache, "a", ctx, NULL, &ma2, why, sizeof why) == 0);
    assert (ma2 == ma);
    gq_model_cache_release (cache, &ma2);
    assert (streq (s_loaded_names (cache, list, sizeof list), "a,c,d")); /* a still held */
    /* Releasing c trims back within budget: c is the least recently used idle model. */
    gq_model_cache_release (cache, &mc);
    assert (streq (s_loaded_names (cache, list, sizeof list), "a,d"));
    gq_model_cache_release (cache, &md);
    gq_model_cache_release (cache, &ma);
    assert (gq_model_cache_used (cache) == 2 * each);
    /* b again: d was released before a, so d is the least recently used and goes. */
    assert (gq_model_cache_acquire (cache, "b", ctx, NULL, &mb, why, sizeof why) == 0);
    assert (streq (s_loaded_names (cache, list, sizeof list), "a,b"));
    gq_model_cache_release (cache, &mb);
    report = gq_model_cache_json (cache);
    json_t *first = json_array_get (json_object_get (report, "loaded"), 0);
    assert (json_integer_value (json_object_get (first, "bytes")) == each);
    assert (json_real_value (json_object_get (first, "load_ms")) >= 0);
    json_decref (report);

    /* Errors: bad names, missing files, lying files, too big for the budget. */
    assert (gq_model_cache_acquire (cache, "../etc/passwd", ctx, NULL, &mb, why, sizeof why) ==
            GQ_EINVAL);
    assert (gq_model_cache_acquire (cache, "zzz", ctx, NULL, &mb, why, sizeof why) ==
            GQ_ENOTFOUND);
    assert (strstr (why, "model 'zzz' not found"));
    assert (gq_model_cache_acquire (cache, "bad", ctx, NULL, &mb, why, sizeof why) == GQ_EMODEL);
    assert (strstr (why, "not valid JSON"));
    snprintf (path, sizeof path, "%s/huge.safetensors", dir);
    int64_t wide[] = {256, 256, 256};
    assert (gq_model_make (path, wide, 3, 1, GQ_DTYPE_F16, why, sizeof why) == 0);
    assert (gq_model_cache_acquire (cache, "huge", ctx, NULL, &mb, why, sizeof why) == GQ_EMODEL);
    assert (strstr (why, "more than the cache budget"));
    assert (mb == NULL && gq_model_cache_used (cache) == 2 * each);
    assert (streq (s_loaded_names (cache, list, sizeof list), "a,b"));
    gq_model_cache_destroy (&cache);
    gq_model_cache_destroy (&cache);

    /* Slots asking for one model at once share one load. */
    cache = gq_model_cache_new (ops, dev, dir, 1 << 30);
    s_racer_t racers[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        racers[i] = (s_racer_t){.cache = cache, .ctx = ops->ctx_new (dev, why, sizeof why)};
        assert (racers[i].ctx);
        assert (pthread_create (&threads[i], NULL, s_racer, &racers[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join (threads[i], NULL);
        assert (racers[i].rc == 0 && racers[i].model == racers[0].model);
    }
    assert (gq_model_cache_used (cache) == each);
    for (int i = 0; i < 4; i++) {
        gq_model_cache_release (cache, &racers[i].model);
        ops->ctx_destroy (&racers[i].ctx);
    }
    gq_model_cache_destroy (&cache);

    /* No models folder at all. */
    cache = gq_model_cache_new (ops, dev, NULL, 1 << 20);
    assert (gq_model_cache_acquire (cache, "a", ctx, NULL, &ma, why, sizeof why) == GQ_ENOTFOUND);
    report = gq_model_cache_json (cache);
    assert (json_array_size (json_object_get (report, "available")) == 0);
    json_decref (report);
    gq_model_cache_destroy (&cache);

    const char *files[] = {"tiny", "bad", "a", "b", "c", "d", "huge"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf (path, sizeof path, "%s/%s.safetensors", dir, files[i]);
        unlink (path);
    }
    rmdir (dir);
    ops->ctx_destroy (&ctx);
    ops->dev_close (&dev);
    if (verbose) {
        printf ("\n  ");
    }
}
