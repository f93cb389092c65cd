/*  safetensors.h — reads (through mmap) and writes .safetensors files, distrusting every byte.

    The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
        {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
         "__metadata__": {...}}
    then the data; offsets count from the first byte after the header. Opening checks the header
    length against the file, the JSON, every tensor's dtype, shape and offsets (inside the data,
    matching the shape, not overlapping another tensor), and fails with GQ_EMODEL and a reason
    that names the tensor. Only F32, F16 and BF16 tensors are accepted: gridq's models use
    nothing else. */
#ifndef GQ_SAFETENSORS_H_INCLUDED
#define GQ_SAFETENSORS_H_INCLUDED

#include <jansson.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GQ_ST_MAX_DIMS         8                   /* dimensions of one tensor */
#define GQ_ST_MAX_HEADER_BYTES (100 * 1024 * 1024) /* the reference implementation's limit */
#define GQ_ST_MAX_TENSORS      65536               /* tensors in one file */

/* One tensor. From a file: every pointer is borrowed and valid while the file is open; data is
   not aligned (copy it out with memcpy). For writing: the caller owns everything. */
typedef struct {
    const char *name;                /* tensor name, e.g. "layers.0.weight" */
    gq_dtype_t dtype;                /* element type */
    int ndim;                        /* number of dimensions, 0 .. GQ_ST_MAX_DIMS */
    int64_t shape[GQ_ST_MAX_DIMS];   /* sizes, outermost first */
    const void *data;                /* the first byte of the tensor's data */
    size_t bytes;                    /* size of the data: elements x gq_dtype_size (dtype) */
} gq_st_tensor_t;

typedef struct _gq_safetensors_t gq_safetensors_t;

/* Maps and checks the file at path. NULL on failure with *err (GQ_ENOTFOUND, GQ_EIO, GQ_EMODEL)
   and the reason in why. */
gq_safetensors_t *gq_safetensors_open (const char *path, int *err, char *why, size_t whylen);
/* The same checks on a buffer the caller keeps alive (and owns) while the result lives. */
gq_safetensors_t *gq_safetensors_parse (const void *data, size_t size, int *err, char *why,
                                        size_t whylen);
/* Unmaps and frees; NULLs the pointer; safe on NULL. */
void gq_safetensors_destroy (gq_safetensors_t **self_p);

/* Tensors in the order of their data. */
size_t gq_safetensors_count (gq_safetensors_t *self);
const gq_st_tensor_t *gq_safetensors_tensor (gq_safetensors_t *self, size_t index);
/* The tensor named name, or NULL. */
const gq_st_tensor_t *gq_safetensors_find (gq_safetensors_t *self, const char *name);
/* "__metadata__" (borrowed), or NULL when the file has none. */
json_t *gq_safetensors_metadata (gq_safetensors_t *self);

/* Element count of a tensor. */
int64_t gq_st_elements (const gq_st_tensor_t *tensor);
/* Writes the shape as "[10, 256]" into buf; returns buf. */
char *gq_st_shape_text (const gq_st_tensor_t *tensor, char *buf, size_t size);

/* Writes count tensors (data contiguous in the given order) and optional metadata (borrowed;
   an object of strings) to path, through a temporary file renamed into place. 0, or GQ_EIO /
   GQ_EINVAL with a reason. */
int gq_safetensors_write (const char *path, const gq_st_tensor_t *tensors, size_t count,
                          json_t *metadata, char *why, size_t whylen);

void gq_safetensors_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
