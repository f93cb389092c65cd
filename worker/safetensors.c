/*  safetensors.c — the safetensors reader (mmap, every header field checked) and writer. */
#include "safetensors.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct _gq_safetensors_t {
    void *map;               /* the mapped file, or NULL when parsing a caller's buffer */
    size_t map_size;         /* bytes mapped */
    json_t *header;          /* the parsed header: owns the tensor names */
    json_t *metadata;        /* "__metadata__" inside header, or NULL */
    gq_st_tensor_t *tensors; /* in data order */
    size_t count;            /* number of tensors */
    size_t *by_name;         /* indexes into tensors, sorted by name, for find */
};

/* ---- Reading -------------------------------------------------------------------------------- */

static int
s_fail (int *err, int code, char *why, size_t whylen, const char *format, ...)
    __attribute__ ((format (printf, 5, 6)));

static int
s_fail (int *err, int code, char *why, size_t whylen, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (why, whylen, format, args);
    va_end (args);
    *err = code;
    return code;
}

static int
s_parse_dtype (const char *text, gq_dtype_t *dtype)
{
    if (streq (text, "F32")) {
        *dtype = GQ_DTYPE_F32;
    } else if (streq (text, "F16")) {
        *dtype = GQ_DTYPE_F16;
    } else if (streq (text, "BF16")) {
        *dtype = GQ_DTYPE_BF16;
    } else {
        return -1;
    }
    return 0;
}

int64_t
gq_st_elements (const gq_st_tensor_t *tensor)
{
    int64_t n = 1;
    for (int i = 0; i < tensor->ndim; i++) {
        n *= tensor->shape[i];
    }
    return n;
}

char *
gq_st_shape_text (const gq_st_tensor_t *tensor, char *buf, size_t size)
{
    size_t used = (size_t) snprintf (buf, size, "[");
    for (int i = 0; i < tensor->ndim && used < size; i++) {
        used += (size_t) snprintf (buf + used, size - used, "%s%" PRId64, i ? ", " : "",
                                   tensor->shape[i]);
    }
    if (used < size) {
        snprintf (buf + used, size - used, "]");
    }
    return buf;
}

/* Reads one tensor's entry into *t; data_size is the bytes after the header. */
static int
s_parse_tensor (const char *name, json_t *entry, const uint8_t *data, size_t data_size,
                gq_st_tensor_t *t, int *err, char *why, size_t whylen)
{
    memset (t, 0, sizeof *t);
    t->name = name;
    if (!json_is_object (entry)) {
        return s_fail (err, GQ_EMODEL, why, whylen, "tensor '%s': entry is not an object", name);
    }
    json_t *dtype = json_object_get (entry, "dtype");
    if (!json_is_string (dtype)) {
        return s_fail (err, GQ_EMODEL, why, whylen, "tensor '%s': no \"dtype\" string", name);
    }
    if (s_parse_dtype (json_string_value (dtype), &t->dtype) != 0) {
        return s_fail (err, GQ_EMODEL, why, whylen,
                       "tensor '%s': dtype '%.32s' is not supported (F32, F16, BF16)", name,
                       json_string_value (dtype));
    }
    json_t *shape = json_object_get (entry, "shape");
    if (!json_is_array (shape)) {
        return s_fail (err, GQ_EMODEL, why, whylen, "tensor '%s': no \"shape\" array", name);
    }
    if (json_array_size (shape) > GQ_ST_MAX_DIMS) {
        return s_fail (err, GQ_EMODEL, why, whylen, "tensor '%s': %zu dimensions (at most %d)",
                       name, json_array_size (shape), GQ_ST_MAX_DIMS);
    }
    t->ndim = (int) json_array_size (shape);
    /* The element count must stay far from overflow: the data size bounds it anyway. */
    uint64_t elements = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *dim = json_array_get (shape, (size_t) i);
        if (!json_is_integer (dim) || json_integer_value (dim) < 0) {
            return s_fail (err, GQ_EMODEL, why, whylen,
                           "tensor '%s': shape entry %d is not a non-negative integer", name, i);
        }
        t->shape[i] = json_integer_value (dim);
        if (t->shape[i] > 0 && elements > (UINT64_C (1) << 61) / (uint64_t) t->shape[i]) {
            return s_fail (err, GQ_EMODEL, why, whylen, "tensor '%s': shape is absurdly large",
                           name);
        }
        elements *= (uint64_t) t->shape[i];
    }
    json_t *offsets = json_object_get (entry, "data_offsets");
    if (!json_is_array (offsets) || json_array_size (offsets) != 2 ||
        !json_is_integer (json_array_get (offsets, 0)) ||
        !json_is_integer (json_array_get (offsets, 1))) {
        return s_fail (err, GQ_EMODEL, why, whylen,
                       "tensor '%s': \"data_offsets\" is not [begin, end]", name);
    }
    json_int_t begin = json_integer_value (json_array_get (offsets, 0));
    json_int_t end = json_integer_value (json_array_get (offsets, 1));
    if (begin < 0 || end < begin) {
        return s_fail (err, GQ_EMODEL, why, whylen,
                       "tensor '%s': data_offsets [%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
                       "] are not an interval",
                       name, begin, end);
    }
    if ((uint64_t) end > data_size) {
        return s_fail (err, GQ_EMODEL, why, whylen,
                       "tensor '%s': data_offsets [%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
                       "] run past the end of the data (%zu bytes)",
                       name, begin, end, data_size);
    }
    uint64_t need = elements * gq_dtype_size (t->dtype);
    if ((uint64_t) (end - begin) != need) {
        char text[128];
        return s_fail (err, GQ_EMODEL, why, whylen,
                       "tensor '%s': data_offsets hold %" PRIu64 " bytes but shape %s of %s "
                       "needs %" PRIu64,
                       name, (uint64_t) (end - begin), gq_st_shape_text (t, text, sizeof text),
                       gq_dtype_name (t->dtype), need);
    }
    t->data = data + begin;
    t->bytes = (size_t) need;
    return GQ_OK;
}

static int
s_by_offset (const void *x, const void *y)
{
    const gq_st_tensor_t *a = x, *b = y;
    const uint8_t *pa = a->data, *pb = b->data;
    if (pa != pb) {
        return pa < pb ? -1 : 1;
    }
    return a->bytes < b->bytes ? -1 : a->bytes > b->bytes;
}

/* qsort has no context argument: the table being sorted for s_by_name. */
static __thread const gq_st_tensor_t *s_sort_tensors;

static int
s_by_name (const void *x, const void *y)
{
    return strcmp (s_sort_tensors[*(const size_t *) x].name,
                   s_sort_tensors[*(const size_t *) y].name);
}

gq_safetensors_t *
gq_safetensors_parse (const void *buffer, size_t size, int *err, char *why, size_t whylen)
{
    const uint8_t *bytes = buffer;
    if (size < 8) {
        s_fail (err, GQ_EMODEL, why, whylen,
                "truncated: %zu bytes, fewer than the 8-byte header length", size);
        return NULL;
    }
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) {
        header_len = (header_len << 8) | bytes[i];
    }
    if (header_len > GQ_ST_MAX_HEADER_BYTES) {
        s_fail (err, GQ_EMODEL, why, whylen,
                "header length %" PRIu64 " exceeds the limit of %d bytes", header_len,
                GQ_ST_MAX_HEADER_BYTES);
        return NULL;
    }
    if (header_len > size - 8) {
        s_fail (err, GQ_EMODEL, why, whylen,
                "header length %" PRIu64 " runs past the end of the file (%zu bytes)", header_len,
                size);
        return NULL;
    }
    json_error_t jerr;
    json_t *header = json_loadb ((const char *) bytes + 8, (size_t) header_len,
                                 JSON_REJECT_DUPLICATES, &jerr);
    if (!header) {
        s_fail (err, GQ_EMODEL, why, whylen, "header is not valid JSON (byte %d: %s)",
                jerr.position, jerr.text);
        return NULL;
    }
    gq_safetensors_t *self = calloc (1, sizeof *self);
    if (!self) {
        json_decref (header);
        s_fail (err, GQ_ENOMEM, why, whylen, "out of memory");
        return NULL;
    }
    self->header = header;
    if (!json_is_object (header)) {
        s_fail (err, GQ_EMODEL, why, whylen, "header is not a JSON object");
        gq_safetensors_destroy (&self);
        return NULL;
    }
    size_t entries = json_object_size (header);
    if (entries > GQ_ST_MAX_TENSORS + 1) {
        s_fail (err, GQ_EMODEL, why, whylen, "header lists %zu tensors (at most %d)", entries,
                GQ_ST_MAX_TENSORS);
        gq_safetensors_destroy (&self);
        return NULL;
    }
    self->tensors = calloc (entries + 1, sizeof *self->tensors);
    self->by_name = calloc (entries + 1, sizeof *self->by_name);
    if (!self->tensors || !self->by_name) {
        s_fail (err, GQ_ENOMEM, why, whylen, "out of memory");
        gq_safetensors_destroy (&self);
        return NULL;
    }
    const uint8_t *data = bytes + 8 + header_len;
    size_t data_size = size - 8 - (size_t) header_len;
    const char *name;
    json_t *entry;
    json_object_foreach (header, name, entry) {
        if (streq (name, "__metadata__")) {
            if (!json_is_object (entry)) {
                s_fail (err, GQ_EMODEL, why, whylen, "\"__metadata__\" is not an object");
                gq_safetensors_destroy (&self);
                return NULL;
            }
            self->metadata = entry;
            continue;
        }
        if (s_parse_tensor (name, entry, data, data_size, &self->tensors[self->count], err, why,
                            whylen)) {
            gq_safetensors_destroy (&self);
            return NULL;
        }
        self->count++;
    }
    /* Overlap check: sorted by start, each tensor must begin at or after the previous end. */
    qsort (self->tensors, self->count, sizeof *self->tensors, s_by_offset);
    for (size_t i = 1; i < self->count; i++) {
        const gq_st_tensor_t *prev = &self->tensors[i - 1], *cur = &self->tensors[i];
        if ((const uint8_t *) cur->data < (const uint8_t *) prev->data + prev->bytes) {
            s_fail (err, GQ_EMODEL, why, whylen,
                    "tensors '%s' and '%s' overlap (bytes %td..%td and %td..%td)", prev->name,
                    cur->name, (const uint8_t *) prev->data - data,
                    (const uint8_t *) prev->data - data + (ptrdiff_t) prev->bytes,
                    (const uint8_t *) cur->data - data,
                    (const uint8_t *) cur->data - data + (ptrdiff_t) cur->bytes);
            gq_safetensors_destroy (&self);
            return NULL;
        }
    }
    for (size_t i = 0; i < self->count; i++) {
        self->by_name[i] = i;
    }
    s_sort_tensors = self->tensors;
    qsort (self->by_name, self->count, sizeof *self->by_name, s_by_name);
    *err = GQ_OK;
    return self;
}

gq_safetensors_t *
gq_safetensors_open (const char *path, int *err, char *why, size_t whylen)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        s_fail (err, errno == ENOENT ? GQ_ENOTFOUND : GQ_EIO, why, whylen, "cannot open %s: %s",
                path, strerror (errno));
        return NULL;
    }
    struct stat st;
    if (fstat (fd, &st) != 0 || !S_ISREG (st.st_mode)) {
        s_fail (err, GQ_EIO, why, whylen, "%s is not a regular file", path);
        close (fd);
        return NULL;
    }
    size_t size = (size_t) st.st_size;
    if (size < 8) {
        /* mmap refuses empty files; the parser words the complaint. */
        uint8_t small[8];
        ssize_t got = read (fd, small, sizeof small);
        close (fd);
        return gq_safetensors_parse (small, got > 0 ? (size_t) got : 0, err, why, whylen);
    }
    void *map = mmap (NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close (fd);
    if (map == MAP_FAILED) {
        s_fail (err, GQ_EIO, why, whylen, "cannot map %s: %s", path, strerror (errno));
        return NULL;
    }
    gq_safetensors_t *self = gq_safetensors_parse (map, size, err, why, whylen);
    if (!self) {
        munmap (map, size);
        return NULL;
    }
    self->map = map;
    self->map_size = size;
    return self;
}

void
gq_safetensors_destroy (gq_safetensors_t **self_p)
{
    if (self_p && *self_p) {
        gq_safetensors_t *self = *self_p;
        if (self->map) {
            munmap (self->map, self->map_size);
        }
        json_decref (self->header);
        free (self->tensors);
        free (self->by_name);
        free (self);
        *self_p = NULL;
    }
}

size_t
gq_safetensors_count (gq_safetensors_t *self)
{
    return self->count;
}

const gq_st_tensor_t *
gq_safetensors_tensor (gq_safetensors_t *self, size_t index)
{
    return index < self->count ? &self->tensors[index] : NULL;
}

const gq_st_tensor_t *
gq_safetensors_find (gq_safetensors_t *self, const char *name)
{
    size_t lo = 0, hi = self->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const gq_st_tensor_t *t = &self->tensors[self->by_name[mid]];
        int cmp = strcmp (name, t->name);
        if (cmp == 0) {
            return t;
        }
        if (cmp < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

json_t *
gq_safetensors_metadata (gq_safetensors_t *self)
{
    return self->metadata;
}

/* ---- Writing -------------------------------------------------------------------------------- */

int
gq_safetensors_write (const char *path, const gq_st_tensor_t *tensors, size_t count,
                      json_t *metadata, char *why, size_t whylen)
{
    int err = GQ_OK;
    json_t *header = json_object ();
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        const gq_st_tensor_t *t = &tensors[i];
        if (!t->name || streq (t->name, "__metadata__") || t->ndim < 0 ||
            t->ndim > GQ_ST_MAX_DIMS ||
            (uint64_t) gq_st_elements (t) * gq_dtype_size (t->dtype) != t->bytes) {
            json_decref (header);
            return s_fail (&err, GQ_EINVAL, why, whylen, "tensor %zu is malformed", i);
        }
        json_t *shape = json_array ();
        for (int d = 0; d < t->ndim; d++) {
            json_array_append_new (shape, json_integer (t->shape[d]));
        }
        json_t *entry = json_pack ("{s:s, s:o, s:[I,I]}", "dtype", gq_dtype_name (t->dtype),
                                   "shape", shape, "data_offsets", (json_int_t) offset,
                                   (json_int_t) (offset + t->bytes));
        json_object_set_new (header, t->name, entry);
        offset += t->bytes;
    }
    if (metadata) {
        json_object_set (header, "__metadata__", metadata);
    }
    char *text = json_dumps (header, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref (header);
    if (!text) {
        return s_fail (&err, GQ_ENOMEM, why, whylen, "out of memory");
    }
    /* Pad with spaces so the data starts 8-byte aligned, as the reference writer does. */
    size_t len = strlen (text);
    size_t padded = (len + 7) / 8 * 8;
    char *tmp = zsys_sprintf ("%s.tmp.%d", path, (int) getpid ());
    FILE *file = tmp ? fopen (tmp, "wb") : NULL;
    if (!file) {
        s_fail (&err, GQ_EIO, why, whylen, "cannot create %s: %s", tmp ? tmp : path,
                strerror (errno));
        free (text);
        zstr_free (&tmp);
        return err;
    }
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++) {
        prefix[i] = (uint8_t) ((uint64_t) padded >> (8 * i));
    }
    bool ok = fwrite (prefix, 1, 8, file) == 8 && fwrite (text, 1, len, file) == len;
    for (size_t i = len; ok && i < padded; i++) {
        ok = fputc (' ', file) != EOF;
    }
    for (size_t i = 0; ok && i < count; i++) {
        ok = tensors[i].bytes == 0 ||
             fwrite (tensors[i].data, 1, tensors[i].bytes, file) == tensors[i].bytes;
    }
    ok = fclose (file) == 0 && ok;
    free (text);
    if (!ok || rename (tmp, path) != 0) {
        s_fail (&err, GQ_EIO, why, whylen, "cannot write %s: %s", path, strerror (errno));
        unlink (tmp);
    }
    zstr_free (&tmp);
    return err;
}

/* ---- Selftest ------------------------------------------------------------------------------- */

/* Builds a file image: the 8-byte length (as given, which may lie), the header, the data. */
static size_t
s_image (uint8_t *out, size_t cap, uint64_t claimed_len, const char *header, size_t data_bytes)
{
    size_t hl = strlen (header);
    assert (8 + hl + data_bytes <= cap);
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t) (claimed_len >> (8 * i));
    }
    memcpy (out + 8, header, hl);
    memset (out + 8 + hl, 0x3c, data_bytes);
    return 8 + hl + data_bytes;
}

static void
s_expect_bad (const char *label, const uint8_t *image, size_t size, const char *needle,
              bool verbose)
{
    int err = 0;
    char why[512] = "";
    gq_safetensors_t *st = gq_safetensors_parse (image, size, &err, why, sizeof why);
    if (st || err != GQ_EMODEL || !strstr (why, needle)) {
        fprintf (stderr, "\n%s: expected GQ_EMODEL with '%s', got %s err=%d why='%s'\n", label,
                 needle, st ? "a file" : "NULL", err, why);
        assert (false);
    }
    if (verbose) {
        printf ("\n  %s: %s", label, why);
    }
}

void
gq_safetensors_test (bool verbose)
{
    /* A round trip through the writer and the mmap reader. */
    char dir[] = "/tmp/gq-st-XXXXXX";
    assert (mkdtemp (dir));
    char path[256];
    snprintf (path, sizeof path, "%s/m.safetensors", dir);
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {gq_f32_to_f16 (0.5f), gq_f32_to_f16 (-1), gq_f32_to_f16 (2)};
    gq_st_tensor_t out[2] = {
        {.name = "w", .dtype = GQ_DTYPE_F32, .ndim = 2, .shape = {3, 2}, .data = w,
         .bytes = sizeof w},
        {.name = "b", .dtype = GQ_DTYPE_F16, .ndim = 1, .shape = {3}, .data = b,
         .bytes = sizeof b},
    };
    json_t *meta = json_pack ("{s:s}", "format", "pt");
    char why[512];
    assert (gq_safetensors_write (path, out, 2, meta, why, sizeof why) == 0);
    json_decref (meta);
    int err = -1;
    gq_safetensors_t *st = gq_safetensors_open (path, &err, why, sizeof why);
    assert (st && err == 0);
    assert (gq_safetensors_count (st) == 2);
    const gq_st_tensor_t *t = gq_safetensors_find (st, "w");
    assert (t && t->dtype == GQ_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 3);
    float back[6];
    memcpy (back, t->data, sizeof back);
    assert (memcmp (back, w, sizeof w) == 0);
    t = gq_safetensors_find (st, "b");
    assert (t && t->dtype == GQ_DTYPE_F16 && t->bytes == 6);
    assert (gq_safetensors_tensor (st, 0)->bytes == 24); /* data order: w first */
    assert (gq_safetensors_find (st, "nope") == NULL);
    char text[64];
    assert (streq (gq_st_shape_text (gq_safetensors_find (st, "w"), text, sizeof text), "[3, 2]"));
    assert (streq (json_string_value (json_object_get (gq_safetensors_metadata (st), "format")),
                   "pt"));
    gq_safetensors_destroy (&st);
    gq_safetensors_destroy (&st);

    /* Files that do not exist, are empty, or are cut short. */
    snprintf (path, sizeof path, "%s/absent.safetensors", dir);
    assert (!gq_safetensors_open (path, &err, why, sizeof why) && err == GQ_ENOTFOUND);
    snprintf (path, sizeof path, "%s/empty.safetensors", dir);
    FILE *f = fopen (path, "wb");
    assert (f);
    fclose (f);
    assert (!gq_safetensors_open (path, &err, why, sizeof why) && err == GQ_EMODEL);
    assert (strstr (why, "truncated"));
    unlink (path);
    assert (!gq_safetensors_open (dir, &err, why, sizeof why) && err == GQ_EIO);

    /* Headers that lie, one way each. */
    static uint8_t image[4096];
    const char *good = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t n = s_image (image, sizeof image, strlen (good), good, 8);
    st = gq_safetensors_parse (image, n, &err, why, sizeof why);
    assert (st && gq_safetensors_count (st) == 1);
    gq_safetensors_destroy (&st);
    s_expect_bad ("truncated", image, 5, "truncated", verbose);
    s_expect_bad ("data cut", image, n - 1, "run past the end", verbose);
    s_expect_bad ("length beyond file", image,
                  s_image (image, sizeof image, strlen (good) + 100, good, 8), "past the end",
                  verbose);
    s_expect_bad ("length too large", image,
                  s_image (image, sizeof image, UINT64_C (1) << 40, good, 8), "exceeds the limit",
                  verbose);
    s_expect_bad ("length huge", image, s_image (image, sizeof image, UINT64_MAX, good, 8),
                  "exceeds the limit", verbose);

    static const struct {
        const char *label;
        const char *header;
        size_t data;
        const char *needle;
    } cases[] = {
        {"not json", "{\"x\": [", 0, "not valid JSON"},
        {"not an object", "[1, 2, 3]", 0, "not a JSON object"},
        {"not utf-8", "{\"x\xff\xfe\":{}}", 0, "not valid JSON"},
        {"duplicate key",
         "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "not valid JSON"},
        {"entry not object", "{\"x\": 3}", 0, "'x': entry is not an object"},
        {"unknown dtype", "{\"x\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "'x': dtype 'Q7' is not supported"},
        {"f64 dtype", "{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
         "dtype 'F64' is not supported"},
        {"no dtype", "{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "no \"dtype\""},
        {"no shape", "{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "no \"shape\""},
        {"negative dim", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
         "not a non-negative integer"},
        {"fractional dim", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
         "not a non-negative integer"},
        {"too many dims",
         "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "9 dimensions"},
        {"huge shape",
         "{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
         4, "absurdly large"},
        {"no offsets", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "not [begin, end]"},
        {"offsets reversed", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",
         4, "not an interval"},
        {"offsets negative",
         "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
         "not an interval"},
        {"offsets past end", "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
         8, "'x': data_offsets [0, 16] run past the end of the data (8 bytes)"},
        {"size mismatch", "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
         "shape [3] of F32 needs 12"},
        {"overlap",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "'a' and 'b' overlap"},
        {"bad metadata", "{\"__metadata__\": 3}", 0, "\"__metadata__\" is not an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        n = s_image (image, sizeof image, strlen (cases[i].header), cases[i].header,
                     cases[i].data);
        s_expect_bad (cases[i].label, image, n, cases[i].needle, verbose);
    }
    /* An empty header object and zero-size tensors are legal. */
    n = s_image (image, sizeof image, 2, "{}", 0);
    st = gq_safetensors_parse (image, n, &err, why, sizeof why);
    assert (st && gq_safetensors_count (st) == 0);
    gq_safetensors_destroy (&st);
    const char *zero = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]}}";
    n = s_image (image, sizeof image, strlen (zero), zero, 2);
    st = gq_safetensors_parse (image, n, &err, why, sizeof why);
    assert (st && gq_safetensors_count (st) == 2);
    gq_safetensors_destroy (&st);

    snprintf (path, sizeof path, "%s/m.safetensors", dir);
    unlink (path);
    rmdir (dir);
    if (verbose) {
        printf ("\n  ");
    }
}
