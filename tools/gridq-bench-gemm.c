/*  gridq-bench-gemm.c — GPU figures for docs/BENCHMARKS.md, each beside its peer in one run:
    - SGEMM, TF32 and BF16 TFLOP/s at N^3 through a matmul job (gq_exec_run, the path a worker
      takes) against cuBLAS timed alone (worker/cuda/bench_cuda.cu);
    - an mlp model's cold first job (load + run) against the warm one, and rows/s in batches.
    Built only with the CUDA backend; tools/gpu-check runs it. */
#include <czmq.h>
#include <getopt.h>
#include <math.h>

#include "cuda/bench_cuda.h"
#include "exec.h"
#include "model.h"
#include "safetensors.h"
/* The worker's limits on a matmul job; a plain "tuning.h" would find tools/tuning.h first. */
#include "../worker/tuning.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-bench-gemm [--device D] [--size N] [--repeat R] [--models DIR "
             "--model NAME]\n"
             "                        [--rows N] [--jobs J] [--json]\n"
             "\n"
             "  --size N      GEMM size, N x N x N (default 8192)\n"
             "  --repeat R    GEMMs timed per figure after one warm-up (default 20)\n"
             "  --models DIR  a models folder, and --model NAME in it, for the mlp figures\n"
             "  --rows N      rows per mlp job for the throughput figure (default 4096)\n"
             "  --jobs J      mlp jobs timed for the throughput figure (default 10)\n"
             "  --json        one JSON object instead of the table\n"
             "  --help        this text\n");
}

/* One mlp job with `rows` random rows as a blob, output as a blob; wall milliseconds. */
static int
s_mlp_job (gq_exec_t *exec, const char *model, zframe_t *input, int64_t rows, int64_t cols,
           const char *dtype, double *ms, char *error, size_t errlen)
{
    char payload[256];
    snprintf (payload, sizeof payload,
              "{\"input\":{\"blob\":0,\"rows\":%" PRId64 ",\"cols\":%" PRId64
              "},\"output_blob\":true,\"dtype\":\"%s\"}",
              rows, cols, dtype);
    gq_task_t task = {.kind = "mlp",
                      .model = model,
                      .payload = json_loads (payload, 0, NULL),
                      .blobs = &input,
                      .n_blobs = 1};
    gq_outcome_t out;
    int64_t start = gq_mono_us ();
    int rc = gq_exec_run (exec, &task, &out);
    *ms = (double) (gq_mono_us () - start) / 1000.0;
    if (rc) {
        snprintf (error, errlen, "%.*s", (int) (errlen ? errlen - 1 : 0), out.error);
    }
    gq_outcome_clear (&out);
    json_decref (task.payload);
    return rc;
}

static zframe_t *
s_random_rows (int64_t rows, int64_t cols)
{
    zframe_t *frame = zframe_new (NULL, (size_t) (rows * cols) * sizeof (float));
    float *data = (float *) zframe_data (frame);
    for (int64_t i = 0; i < rows * cols; i++) {
        data[i] = gq_rand_uniform (17, (uint64_t) i);
    }
    return frame;
}

int
main (int argc, char **argv)
{
    int device = 0, size = 8192, repeat = 20, jobs = 10;
    int64_t rows = 4096;
    const char *models = NULL, *model = NULL;
    bool as_json = false;
    static const struct option options[] = {
        {"device", required_argument, NULL, 'd'}, {"size", required_argument, NULL, 'n'},
        {"repeat", required_argument, NULL, 'r'}, {"models", required_argument, NULL, 'M'},
        {"model", required_argument, NULL, 'm'},  {"rows", required_argument, NULL, 'R'},
        {"jobs", required_argument, NULL, 'j'},   {"json", no_argument, NULL, 'J'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'd':
            device = atoi (optarg);
            break;
        case 'n':
            size = atoi (optarg);
            break;
        case 'r':
            repeat = atoi (optarg);
            break;
        case 'M':
            models = optarg;
            break;
        case 'm':
            model = optarg;
            break;
        case 'R':
            rows = atoll (optarg);
            break;
        case 'j':
            jobs = atoi (optarg);
            break;
        case 'J':
            as_json = true;
            break;
        case 'h':
            s_usage (stdout);
            return 0;
        default:
            s_usage (stderr);
            return 2;
        }
    }
    if (optind != argc || size < 1 || size > GQ_MATMUL_MAX_DIM_ELEMENTS || repeat < 1 ||
        repeat > GQ_MATMUL_MAX_REPEAT_COUNT || rows < 1 || jobs < 1 || (models && !model) ||
        device < 0) {
        s_usage (stderr);
        return 2;
    }
    zsys_set_logstream (NULL); /* the table is the output */
    char why[512];
    gq_runtime_opts_t opts = {.backend = "cuda", .device = device, .models_dir = models};
    gq_runtime_t *rt = gq_runtime_new (&opts, why, sizeof why);
    if (!rt) {
        fprintf (stderr, "gridq-bench-gemm: %s\n", why);
        return 1;
    }
    gq_exec_t *exec = gq_exec_new (rt, 0);
    if (!exec) {
        fprintf (stderr, "gridq-bench-gemm: cannot make a CUDA context\n");
        gq_runtime_destroy (&rt);
        return 1;
    }
    gq_device_info_t info;
    gq_runtime_device (rt, &info);
    json_t *report = json_pack ("{s:s, s:i, s:i, s:I, s:f, s:i, s:i}", "device", info.name,
                                "cc_major", info.cc_major, "cc_minor", info.cc_minor,
                                "vram_mb", (json_int_t) info.vram_total_mb, "tflops_fp32_peak",
                                info.tflops, "size", size, "repeat", repeat);
    if (!as_json) {
        printf ("gridq-bench-gemm: %s (cc %d.%d, %d SMs at %d MHz, %" PRId64
                " MiB; FP32 peak %.1f TFLOP/s)\n\n",
                info.name, info.cc_major, info.cc_minor, info.sm_count, info.clock_mhz,
                info.vram_total_mb, info.tflops);
        printf ("GEMM %dx%dx%d, %d repeats   cuBLAS alone    matmul job (gq_exec)   job/alone\n",
                size, size, size, repeat);
    }
    int failures = 0;
    const char *dtypes[] = {"f32", "tf32", "bf16"};
    json_t *gemm = json_object ();
    double flop = 2.0 * size * (double) size * size;
    for (size_t i = 0; i < 3; i++) {
        double raw_ms = 0;
        int rc = gq_cuda_bench_gemm (device, dtypes[i], size, size, size, repeat, &raw_ms, why,
                                     sizeof why);
        if (rc) {
            fprintf (stderr, "gridq-bench-gemm: cuBLAS %s: %s\n", dtypes[i], why);
            failures++;
            continue;
        }
        char payload[256];
        snprintf (payload, sizeof payload,
                  "{\"m\":%d,\"n\":%d,\"k\":%d,\"seed\":1,\"dtype\":\"%s\",\"repeat\":%d}", size,
                  size, size, dtypes[i], repeat);
        gq_task_t task = {.kind = "matmul", .payload = json_loads (payload, 0, NULL)};
        gq_outcome_t out;
        int64_t start = gq_mono_us ();
        rc = gq_exec_run (exec, &task, &out);
        double job_wall_ms = (double) (gq_mono_us () - start) / 1000.0;
        json_decref (task.payload);
        if (rc) {
            fprintf (stderr, "gridq-bench-gemm: matmul job %s: %s\n", dtypes[i], out.error);
            failures++;
            continue;
        }
        double job_ms = json_real_value (json_object_get (out.result, "ms"));
        gq_outcome_clear (&out);
        double raw_tf = flop / (raw_ms * 1e9), job_tf = flop / (job_ms * 1e9);
        json_object_set_new (gemm, dtypes[i],
                             json_pack ("{s:f, s:f, s:f, s:f, s:f}", "cublas_ms", raw_ms,
                                        "cublas_tflops", raw_tf, "job_ms", job_ms, "job_tflops",
                                        job_tf, "job_wall_ms", job_wall_ms));
        if (!as_json) {
            printf ("  %-4s                       %7.1f TFLOP/s   %7.1f TFLOP/s        %5.1f%%\n",
                    dtypes[i], raw_tf, job_tf, 100.0 * job_tf / raw_tf);
        }
    }
    json_object_set_new (report, "gemm", gemm);
    if (!as_json) {
        printf ("  (job: kernel time by CUDA events inside the job, as the job reports it; the "
                "job's wall time adds operand generation and the checksum)\n");
    }

    if (models) {
        json_t *mlp = json_object ();
        /* The input width comes from the model: a one-row probe job after a cold load. */
        char path[1024];
        snprintf (path, sizeof path, "%s/%s.safetensors", models, model);
        int err;
        gq_safetensors_t *file = gq_safetensors_open (path, &err, why, sizeof why);
        gq_model_shape_t shape;
        if (!file || gq_model_check (file, &shape, why, sizeof why)) {
            fprintf (stderr, "gridq-bench-gemm: %s\n", why);
            gq_safetensors_destroy (&file);
            failures++;
        } else {
            gq_safetensors_destroy (&file);
            int64_t cols = shape.widths[0];
            zframe_t *one = s_random_rows (1, cols);
            double cold_ms = 0, warm_ms = 0;
            if (s_mlp_job (exec, model, one, 1, cols, "f32", &cold_ms, why, sizeof why) ||
                s_mlp_job (exec, model, one, 1, cols, "f32", &warm_ms, why, sizeof why)) {
                fprintf (stderr, "gridq-bench-gemm: mlp: %s\n", why);
                failures++;
            }
            json_t *resident = gq_runtime_models (rt);
            double load_ms = 0;
            size_t index;
            json_t *item;
            json_array_foreach (json_object_get (resident, "loaded"), index, item) {
                if (streq (json_string_value (json_object_get (item, "name")), model)) {
                    load_ms = json_real_value (json_object_get (item, "load_ms"));
                }
            }
            json_decref (resident);
            zframe_destroy (&one);
            json_object_set_new (mlp, "model", json_string (model));
            json_object_set_new (mlp, "layers", json_integer ((json_int_t) shape.layers));
            json_object_set_new (mlp, "params", json_integer ((json_int_t) shape.params));
            json_object_set_new (mlp, "cold_job_ms", json_real (cold_ms));
            json_object_set_new (mlp, "load_ms", json_real (load_ms));
            json_object_set_new (mlp, "warm_job_ms", json_real (warm_ms));
            if (!as_json) {
                printf ("\nmlp %s: %zu layers, %zu parameters (%s weights)\n", model,
                        shape.layers, shape.params, gq_dtype_name (shape.dtype));
                printf ("  cold job, 1 row (load + run)    %9.2f ms   (model load %.2f ms)\n",
                        cold_ms, load_ms);
                printf ("  warm job, 1 row                 %9.2f ms\n", warm_ms);
            }
            zframe_t *batch = s_random_rows (rows, cols);
            const char *modes[] = {"f32", "tf32"};
            for (size_t m = 0; m < 2; m++) {
                double total = 0, ms = 0;
                int rc = s_mlp_job (exec, model, batch, rows, cols, modes[m], &ms, why,
                                    sizeof why); /* warm-up */
                for (int j = 0; rc == 0 && j < jobs; j++) {
                    rc = s_mlp_job (exec, model, batch, rows, cols, modes[m], &ms, why,
                                    sizeof why);
                    total += ms;
                }
                if (rc) {
                    fprintf (stderr, "gridq-bench-gemm: mlp %s: %s\n", modes[m], why);
                    failures++;
                    continue;
                }
                double rows_per_s = (double) rows * jobs / (total / 1000.0);
                char key[32];
                snprintf (key, sizeof key, "%s_rows_per_s", modes[m]);
                json_object_set_new (mlp, key, json_real (rows_per_s));
                if (!as_json) {
                    printf ("  %-4s throughput, %6" PRId64 " rows/job %9.0f rows/s   (%.2f ms a "
                            "job, upload and download included)\n",
                            modes[m], rows, rows_per_s, total / jobs);
                }
            }
            zframe_destroy (&batch);
        }
        json_object_set_new (report, "mlp", mlp);
    }
    if (as_json) {
        char *text = json_dumps (report, JSON_INDENT (2) | JSON_REAL_PRECISION (6));
        printf ("%s\n", text);
        free (text);
    }
    json_decref (report);
    gq_exec_destroy (&exec);
    gq_runtime_destroy (&rt);
    return failures ? 1 : 0;
}
