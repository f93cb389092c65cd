/*  mlp_test.c — the mlp kind on the CPU backend against an independent reference.

    The reference shares no code with the worker's model path: it reads the .safetensors file
    with its own few lines (jansson for the header), decodes F16 and BF16 by its own arithmetic,
    and runs the layers in double precision with plain loops. Models come from the generator in
    all three dtypes, with odd widths so every edge of the blocked GEMM is crossed. */
#include <czmq.h>
#include <math.h>
#include <unistd.h>

#include "exec.h"
#include "model.h"

/* ---- The reference ---------------------------------------------------------------------------- */

typedef struct {
    size_t layers;      /* linear layers */
    int64_t width[16];  /* inputs, then each layer's outputs */
    double *weight[16]; /* [out, in] per layer */
    double *bias[16];   /* [out] per layer */
} s_ref_t;

static double
s_half (uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp (m, -24) : e == 31 ? INFINITY : ldexp (m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double
s_bfloat (uint16_t b)
{
    /* A bfloat16 is the top half of a binary32: sign, 8 exponent bits, 7 mantissa bits. */
    int e = (b >> 7) & 255, m = b & 127;
    double v = e == 0 ? ldexp (m, -133) : ldexp (m + 128, e - 134);
    return (b & 0x8000) ? -v : v;
}

static double *
s_ref_tensor (json_t *header, const uint8_t *data, const char *name, int64_t *d0, int64_t *d1)
{
    json_t *entry = json_object_get (header, name);
    if (!entry) {
        return NULL;
    }
    const char *dtype = json_string_value (json_object_get (entry, "dtype"));
    json_t *shape = json_object_get (entry, "shape");
    *d0 = json_integer_value (json_array_get (shape, 0));
    *d1 = json_array_size (shape) > 1 ? json_integer_value (json_array_get (shape, 1)) : 1;
    size_t n = (size_t) (*d0 * *d1);
    const uint8_t *at =
        data + json_integer_value (json_array_get (json_object_get (entry, "data_offsets"), 0));
    double *out = malloc (n * sizeof (double));
    assert (out);
    for (size_t i = 0; i < n; i++) {
        if (streq (dtype, "F32")) {
            float f;
            memcpy (&f, at + 4 * i, 4);
            out[i] = f;
        } else {
            uint16_t h = (uint16_t) (at[2 * i] | (at[2 * i + 1] << 8));
            out[i] = streq (dtype, "F16") ? s_half (h) : s_bfloat (h);
        }
    }
    return out;
}

static void
s_ref_load (const char *path, s_ref_t *ref)
{
    memset (ref, 0, sizeof *ref);
    FILE *f = fopen (path, "rb");
    assert (f);
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    fseek (f, 0, SEEK_SET);
    uint8_t *bytes = malloc ((size_t) size);
    assert (bytes && fread (bytes, 1, (size_t) size, f) == (size_t) size);
    fclose (f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) {
        hl = hl << 8 | bytes[i];
    }
    json_t *header = json_loadb ((char *) bytes + 8, (size_t) hl, 0, NULL);
    assert (header);
    for (size_t i = 0; i < 16; i++) {
        char name[64];
        int64_t out, in, blen, one;
        snprintf (name, sizeof name, "layers.%zu.weight", i);
        double *w = s_ref_tensor (header, bytes + 8 + hl, name, &out, &in);
        if (!w) {
            break;
        }
        snprintf (name, sizeof name, "layers.%zu.bias", i);
        double *b = s_ref_tensor (header, bytes + 8 + hl, name, &blen, &one);
        assert (b && blen == out);
        ref->weight[i] = w;
        ref->bias[i] = b;
        ref->width[i] = in;
        ref->width[i + 1] = out;
        ref->layers = i + 1;
    }
    json_decref (header);
    free (bytes);
}

static void
s_ref_free (s_ref_t *ref)
{
    for (size_t i = 0; i < ref->layers; i++) {
        free (ref->weight[i]);
        free (ref->bias[i]);
    }
}

/* One row through the reference. out has room for the widest layer. */
static void
s_ref_forward (const s_ref_t *ref, const float *in, double *out)
{
    double x[4096], y[4096];
    for (int64_t i = 0; i < ref->width[0]; i++) {
        x[i] = in[i];
    }
    for (size_t l = 0; l < ref->layers; l++) {
        int64_t nin = ref->width[l], nout = ref->width[l + 1];
        assert (nin <= 4096 && nout <= 4096);
        for (int64_t o = 0; o < nout; o++) {
            double acc = ref->bias[l][o];
            for (int64_t i = 0; i < nin; i++) {
                acc += ref->weight[l][o * nin + i] * x[i];
            }
            y[o] = l + 1 < ref->layers && acc < 0 ? 0 : acc;
        }
        memcpy (x, y, (size_t) nout * sizeof (double));
    }
    memcpy (out, x, (size_t) ref->width[ref->layers] * sizeof (double));
}

/* ---- The test ------------------------------------------------------------------------------- */

static void
s_check_model (gq_exec_t *exec, const char *dir, const char *name, const int64_t *widths,
               size_t count, gq_dtype_t dtype, int rows, bool verbose)
{
    char path[300], why[256], tagged[64];
    /* A name per dtype: the cache keeps a model by name once loaded. */
    snprintf (tagged, sizeof tagged, "%s-%s", name, gq_dtype_name (dtype));
    name = tagged;
    snprintf (path, sizeof path, "%s/%s.safetensors", dir, name);
    assert (gq_model_make (path, widths, count, 1234 + count, dtype, why, sizeof why) == 0);
    s_ref_t ref;
    s_ref_load (path, &ref);
    assert (ref.layers == count - 1);
    int64_t nin = widths[0], nout = widths[count - 1];

    /* Inputs from a generator of the test's own (a 64-bit LCG), in [-2, 2). */
    float *in = malloc ((size_t) (rows * nin) * sizeof (float));
    uint64_t state = 88172645463325252ULL;
    for (int64_t i = 0; i < rows * nin; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        in[i] = (float) ((double) (state >> 40) / (double) (1ULL << 24) * 4.0 - 2.0);
    }
    zframe_t *blob = zframe_new (in, (size_t) (rows * nin) * sizeof (float));
    char payload[128];
    snprintf (payload, sizeof payload, "{\"input\":{\"blob\":0,\"rows\":%d,\"cols\":%" PRId64 "}}",
              rows, nin);
    gq_task_t task = {.id = 1,
                      .kind = "mlp",
                      .model = name,
                      .payload = json_loads (payload, 0, NULL),
                      .blobs = &blob,
                      .n_blobs = 1};
    gq_outcome_t out;
    int rc = gq_exec_run (exec, &task, &out);
    if (rc) {
        fprintf (stderr, "\n%s: %s\n", name, out.error);
        assert (false);
    }
    json_t *output = json_object_get (out.result, "output");
    json_t *argmax = json_object_get (out.result, "argmax");
    assert ((int) json_array_size (output) == rows && (int) json_array_size (argmax) == rows);
    double worst = 0, *want = malloc ((size_t) nout * sizeof (double));
    for (int r = 0; r < rows; r++) {
        s_ref_forward (&ref, in + r * nin, want);
        json_t *row = json_array_get (output, (size_t) r);
        assert ((int64_t) json_array_size (row) == nout);
        int64_t best = 0;
        for (int64_t o = 0; o < nout; o++) {
            double got = json_real_value (json_array_get (row, (size_t) o));
            double err = fabs (got - want[o]) / (1.0 + fabs (want[o]));
            if (err > 2e-5) {
                fprintf (stderr, "\n%s row %d output %" PRId64 ": reference %.9g, got %.9g\n",
                         name, r, o, want[o], got);
                assert (false);
            }
            worst = err > worst ? err : worst;
            best = want[o] > want[best] ? o : best;
        }
        /* Argmax agrees unless two outputs tie within the arithmetic's noise. */
        int64_t got_best = json_integer_value (json_array_get (argmax, (size_t) r));
        if (got_best != best && fabs (want[got_best] - want[best]) > 1e-4) {
            fprintf (stderr, "\n%s row %d: argmax reference %" PRId64 ", got %" PRId64 "\n", name,
                     r, best, got_best);
            assert (false);
        }
    }
    if (verbose) {
        printf ("\n  %-8s %-4s %zu layers, %d rows: worst relative error %.3g", name,
                gq_dtype_name (dtype), count - 1, rows, worst);
    }
    free (want);
    free (in);
    gq_outcome_clear (&out);
    json_decref (task.payload);
    zframe_destroy (&blob);
    s_ref_free (&ref);
    unlink (path);
}

void
gq_mlp_reference_test (bool verbose)
{
    char dir[] = "/tmp/gq-mlpref-XXXXXX";
    assert (mkdtemp (dir));
    char why[256];
    gq_runtime_opts_t opts = {.backend = "cpu", .models_dir = dir};
    gq_runtime_t *rt = gq_runtime_new (&opts, why, sizeof why);
    assert (rt);
    gq_exec_t *exec = gq_exec_new (rt, 0);
    assert (exec);

    /* Exact values of the independent decoders, so the reference is itself checked. */
    assert (s_half (0x3c00) == 1.0 && s_half (0xc000) == -2.0 && s_half (0x0001) == ldexp (1, -24));
    assert (s_half (0x7bff) == 65504.0 && s_bfloat (0x3f80) == 1.0 && s_bfloat (0xc040) == -3.0);
    assert (s_bfloat (0x0001) == ldexp (1, -133));

    int64_t small[] = {13, 40, 7};
    int64_t deep[] = {33, 64, 31, 17, 10};
    int64_t wide[] = {5, 300, 3};
    int64_t mnist[] = {784, 256, 10};
    gq_dtype_t dtypes[] = {GQ_DTYPE_F32, GQ_DTYPE_F16, GQ_DTYPE_BF16};
    for (size_t d = 0; d < 3; d++) {
        s_check_model (exec, dir, "small", small, 3, dtypes[d], 9, verbose);
        s_check_model (exec, dir, "deep", deep, 5, dtypes[d], 50, verbose);
        s_check_model (exec, dir, "wide", wide, 3, dtypes[d], 1, verbose);
    }
    s_check_model (exec, dir, "mnist", mnist, 3, GQ_DTYPE_BF16, 64, verbose);

    gq_exec_destroy (&exec);
    gq_runtime_destroy (&rt);
    rmdir (dir);
    if (verbose) {
        printf ("\n  ");
    }
}
