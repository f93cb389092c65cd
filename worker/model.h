/*  model.h — MLP models from .safetensors files, and the model cache that keeps them resident.

    A model is a chain of linear layers: tensors layers.{i}.weight [out, in] and layers.{i}.bias
    [out] for i = 0, 1, ..., each layer's `in` equal to the previous layer's `out`, ReLU between
    layers and none after the last. Weights may be stored as F32, F16 or BF16; they are widened
    to f32 at load (exactly: both half formats are subsets of f32), so a model costs 4 bytes per
    parameter on the device whatever its file dtype, and every backend computes the same thing.
    The file dtype saves disk and load I/O; "tf32" in a job trades precision for speed on GPUs.

    The cache is the one structure that slot threads share: every gq_model_cache_* function is
    thread-safe (one mutex; loading happens outside it, so one slow load blocks no other model).
    A model stays resident after its first job; when the bytes of resident models would pass the
    budget, the least recently used model that no job holds is evicted. A model in use is never
    evicted: while jobs hold models the cache may run over its budget, and it trims back when
    they are released. */
#ifndef GQ_MODEL_H_INCLUDED
#define GQ_MODEL_H_INCLUDED

#include <jansson.h>

#include "backend.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GQ_MODEL_MAX_LAYERS 256       /* linear layers in one model */
#define GQ_MODEL_MAX_WIDTH  (1 << 20) /* inputs or outputs of one layer */

/* The shape of a model, as checked from its file. */
typedef struct {
    size_t layers;                           /* number of linear layers, >= 1 */
    int64_t widths[GQ_MODEL_MAX_LAYERS + 1]; /* inputs, then each layer's outputs */
    gq_dtype_t dtype;                        /* dtype of layers.0.weight (others may differ) */
    size_t params;                           /* weights and biases, all layers */
    size_t bytes;                            /* device bytes once loaded (f32, aligned) */
} gq_model_shape_t;

/* How to run a batch. */
typedef struct {
    gq_gemm_mode_t mode;   /* GQ_GEMM_F32, or GQ_GEMM_TF32 to allow TF32 tensor cores */
    bool softmax;          /* replace the outputs of each row by their softmax */
    gq_flag_t *cancel;  /* non-zero: stop between layers with GQ_ESTATE (may be NULL) */
    int64_t deadline_us;   /* gq_mono_us deadline, checked between layers (0: none) */
} gq_forward_opts_t;

typedef struct _gq_model_t gq_model_t;

/* Checks that an open file is an MLP in this layout and fills *shape. 0, or GQ_EMODEL with a
   reason naming the tensor. */
int gq_model_check (gq_safetensors_t *file, gq_model_shape_t *shape, char *why, size_t whylen);

/* Loads the model at path onto the device: the weights are widened to f32 and uploaded through
   ctx. NULL on failure with *err (GQ_ENOTFOUND, GQ_EIO, GQ_EMODEL, GQ_ENOMEM, GQ_EBACKEND) and
   a reason. The caller owns the result. */
gq_model_t *gq_model_load (const gq_backend_ops_t *ops, gq_bdev_t *dev, gq_bctx_t *ctx,
                           const char *path, const char *name, int *err, char *why,
                           size_t whylen);
/* Frees the device memory; NULLs the pointer; safe on NULL. */
void gq_model_destroy (gq_model_t **self_p);

const char *gq_model_name (gq_model_t *self);
const gq_model_shape_t *gq_model_shape (gq_model_t *self);
/* Milliseconds the load took (open, check, convert, upload). */
double gq_model_load_ms (gq_model_t *self);

/* Runs rows x inputs floats (host memory, any alignment) through the model into rows x outputs
   floats (host). ctx must be a context of the model's device. Several threads may run one model
   at once, each with its own ctx. 0, or an error with a reason. */
int gq_model_forward (gq_model_t *self, gq_bctx_t *ctx, const float *input, int64_t rows,
                      float *output, const gq_forward_opts_t *opts, char *why, size_t whylen);

/* Writes a random MLP with the given widths (inputs, hidden..., outputs) to path: weights
   uniform in [-1, 1) / sqrt (inputs of the layer), biases in [-0.1, 0.1), all a function of
   seed, stored as dtype. 0, or an error with a reason. */
int gq_model_make (const char *path, const int64_t *widths, size_t count, uint64_t seed,
                   gq_dtype_t dtype, char *why, size_t whylen);

/* ---- The cache ------------------------------------------------------------------------------- */
typedef struct _gq_model_cache_t gq_model_cache_t;

/* A cache of the models in dir (NULL: none) on dev, holding at most budget_bytes resident.
   ops and dev are borrowed and must outlive the cache. */
gq_model_cache_t *gq_model_cache_new (const gq_backend_ops_t *ops, gq_bdev_t *dev,
                                      const char *dir, int64_t budget_bytes);
/* Frees every resident model; all must have been released. NULLs the pointer; safe on NULL. */
void gq_model_cache_destroy (gq_model_cache_t **self_p);

/* Gets model `name` (file dir/name.safetensors), loading it through ctx when it is not
   resident; a load already under way in another slot is awaited rather than repeated. While
   waiting, *cancel (may be NULL) is polled. 0 and a model in *model_p that the caller must give
   back with gq_model_cache_release, or an error (GQ_EINVAL bad name, GQ_ENOTFOUND, GQ_EMODEL,
   GQ_ENOMEM, GQ_EBACKEND, GQ_ESTATE when cancelled) with a reason. */
int gq_model_cache_acquire (gq_model_cache_t *self, const char *name, gq_bctx_t *ctx,
                            gq_flag_t *cancel, gq_model_t **model_p, char *why,
                            size_t whylen);
/* Gives back a model from acquire; NULLs the pointer. */
void gq_model_cache_release (gq_model_cache_t *self, gq_model_t **model_p);

/* {"available": [names of dir/ *.safetensors, sorted], "loaded": [{"name", "load_ms", "bytes"}]}
   as a new reference. */
json_t *gq_model_cache_json (gq_model_cache_t *self);
/* Bytes of resident (and loading) models. */
int64_t gq_model_cache_used (gq_model_cache_t *self);
/* The budget in bytes. */
int64_t gq_model_cache_budget (gq_model_cache_t *self);

void gq_model_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
