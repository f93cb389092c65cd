/*  gridq-model.c — makes, inspects and runs MLP models in gridq's .safetensors layout.

    `make` writes a random model (deterministic from the seed) for tests, demos and benchmarks;
    `info` lists a file's tensors and checks it the way a worker will; `run` answers an mlp job
    on the CPU backend through the worker's own job path, so its output is what a worker would
    return for the same payload. */
#include <czmq.h>
#include <errno.h>
#include <getopt.h>

#include "exec.h"
#include "gq_common.h"
#include "model.h"
#include "safetensors.h"
#include "tool.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-model make --layers W0,W1,...,WN --seed S [--dtype f32|f16|bf16] "
             "--out FILE\n"
             "       gridq-model info FILE\n"
             "       gridq-model run FILE --input JSON|@FILE|- [--softmax]\n"
             "\n"
             "Models are MLPs: tensors layers.{i}.weight [out, in] and layers.{i}.bias [out],\n"
             "ReLU between layers. A worker serves NAME.safetensors in its --models folder as\n"
             "model NAME.\n"
             "\n"
             "  make   writes a random model: weights uniform in [-1, 1) / sqrt(in), biases in\n"
             "         [-0.1, 0.1), the same for the same --layers, --seed and --dtype\n"
             "         (default f32)\n"
             "  info   prints the tensors and the layer chain; exits 1 if a worker would refuse it\n"
             "  run    runs rows through the model on the CPU backend and prints the job result\n"
             "         {\"output\": [[..]], \"argmax\": [..]}; --input is a JSON array of rows (one\n"
             "         row may be given flat), or a whole mlp payload {\"input\": ...}; inline,\n"
             "         @FILE, or - for stdin\n"
             "  --help this text\n"
             "\n"
             "example:\n"
             "  gridq-model make --layers 784,256,10 --seed 1 --out models/mnist.safetensors\n"
             "  gridq-model run models/mnist.safetensors --input \"[$(seq -s, 784 | "
             "sed 's/[0-9]*/0/g')]\"\n");
}

/* ---- make ----------------------------------------------------------------------------------- */

static int
s_make (int argc, char **argv)
{
    const char *layers = NULL, *out = NULL, *dtype_text = "f32", *seed_text = NULL;
    static const struct option options[] = {{"layers", required_argument, NULL, 'l'},
                                            {"seed", required_argument, NULL, 's'},
                                            {"dtype", required_argument, NULL, 'd'},
                                            {"out", required_argument, NULL, 'o'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'l':
            layers = optarg;
            break;
        case 's':
            seed_text = optarg;
            break;
        case 'd':
            dtype_text = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'h':
            s_usage (stdout);
            return 0;
        default:
            s_usage (stderr);
            return 2;
        }
    }
    if (!layers || !out || !seed_text || optind != argc) {
        s_usage (stderr);
        return 2;
    }
    char *end;
    errno = 0;
    unsigned long long seed = strtoull (seed_text, &end, 10);
    if (errno || end == seed_text || *end || *seed_text == '-') {
        return tool_fail ("--seed must be a non-negative integer, not '%s'", seed_text);
    }
    gq_dtype_t dtype;
    if (streq (dtype_text, "f32")) {
        dtype = GQ_DTYPE_F32;
    } else if (streq (dtype_text, "f16")) {
        dtype = GQ_DTYPE_F16;
    } else if (streq (dtype_text, "bf16")) {
        dtype = GQ_DTYPE_BF16;
    } else {
        return tool_fail ("--dtype must be f32, f16 or bf16, not '%s'", dtype_text);
    }
    int64_t widths[GQ_MODEL_MAX_LAYERS + 1];
    size_t count = 0;
    const char *p = layers;
    while (*p) {
        if (count == GQ_MODEL_MAX_LAYERS + 1) {
            return tool_fail ("--layers: more than %d layers", GQ_MODEL_MAX_LAYERS);
        }
        errno = 0;
        long long w = strtoll (p, &end, 10);
        if (errno || end == p || w < 1 || w > GQ_MODEL_MAX_WIDTH || (*end && *end != ',')) {
            return tool_fail ("--layers must be widths like 784,256,10 (each 1..%d), not '%s'",
                           GQ_MODEL_MAX_WIDTH, layers);
        }
        widths[count++] = w;
        p = *end ? end + 1 : end;
    }
    if (count < 2) {
        return tool_fail ("--layers needs at least an input and an output width");
    }
    char why[512];
    if (gq_model_make (out, widths, count, (uint64_t) seed, dtype, why, sizeof why) != 0) {
        return tool_fail ("%s", why);
    }
    size_t params = 0;
    for (size_t i = 0; i + 1 < count; i++) {
        params += (size_t) (widths[i] * widths[i + 1] + widths[i + 1]);
    }
    printf ("wrote %s: %zu layers, %zu parameters, %s\n", out, count - 1, params,
            gq_dtype_name (dtype));
    return 0;
}

/* ---- info ----------------------------------------------------------------------------------- */

static int
s_info (const char *path)
{
    int err;
    char why[512];
    gq_safetensors_t *file = gq_safetensors_open (path, &err, why, sizeof why);
    if (!file) {
        return tool_fail ("%s", why);
    }
    printf ("%s: %zu tensors\n", path, gq_safetensors_count (file));
    for (size_t i = 0; i < gq_safetensors_count (file); i++) {
        const gq_st_tensor_t *t = gq_safetensors_tensor (file, i);
        char shape[128];
        printf ("  %-24s %-4s %-16s %zu bytes\n", t->name, gq_dtype_name (t->dtype),
                gq_st_shape_text (t, shape, sizeof shape), t->bytes);
    }
    json_t *meta = gq_safetensors_metadata (file);
    if (meta) {
        char *text = json_dumps (meta, JSON_COMPACT | JSON_SORT_KEYS);
        printf ("metadata: %s\n", text ? text : "?");
        free (text);
    }
    gq_model_shape_t shape;
    int rc = gq_model_check (file, &shape, why, sizeof why);
    gq_safetensors_destroy (&file);
    if (rc) {
        return tool_fail ("not a usable model: %s", why);
    }
    printf ("mlp: %" PRId64, shape.widths[0]);
    for (size_t i = 1; i <= shape.layers; i++) {
        printf (" -> %" PRId64, shape.widths[i]);
    }
    printf (" (%zu layers, %zu parameters, %.1f MiB on a device)\n", shape.layers, shape.params,
            (double) shape.bytes / 1048576.0);
    return 0;
}

/* ---- run ------------------------------------------------------------------------------------ */

static char *
s_read_all (FILE *in)
{
    size_t cap = 65536, len = 0;
    char *text = malloc (cap);
    while (text) {
        size_t got = fread (text + len, 1, cap - len - 1, in);
        len += got;
        if (got == 0) {
            break;
        }
        if (len + 1 == cap) {
            char *grown = realloc (text, cap * 2);
            if (!grown) {
                free (text);
                return NULL;
            }
            text = grown;
            cap *= 2;
        }
    }
    if (text) {
        text[len] = 0;
    }
    return text;
}

static int
s_run (int argc, char **argv)
{
    const char *input = NULL;
    bool softmax = false;
    static const struct option options[] = {{"input", required_argument, NULL, 'i'},
                                            {"softmax", no_argument, NULL, 's'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'i':
            input = optarg;
            break;
        case 's':
            softmax = true;
            break;
        case 'h':
            s_usage (stdout);
            return 0;
        default:
            s_usage (stderr);
            return 2;
        }
    }
    if (!input || optind != argc - 1) {
        s_usage (stderr);
        return 2;
    }
    const char *path = argv[optind];
    /* The worker's model names are file stems in a folder: run it the same way. */
    const char *slash = strrchr (path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t base_len = strlen (base), suffix_len = strlen (".safetensors");
    if (base_len <= suffix_len || !streq (base + base_len - suffix_len, ".safetensors")) {
        return tool_fail ("%s: a model file is NAME.safetensors", path);
    }
    char name[GQ_MODEL_MAX];
    snprintf (name, sizeof name, "%.*s", (int) (base_len - suffix_len), base);
    if (base_len - suffix_len >= sizeof name || !gq_valid_name (name, GQ_MODEL_MAX)) {
        return tool_fail ("%s: '%s' is not a valid model name", path, name);
    }
    char *dir = slash ? strndup (path, (size_t) (slash - path)) : strdup (".");
    if (dir && !*dir) {
        free (dir);
        dir = strdup ("/");
    }

    char *text = NULL;
    if (streq (input, "-")) {
        text = s_read_all (stdin);
    } else if (input[0] == '@') {
        FILE *f = fopen (input + 1, "r");
        if (!f) {
            free (dir);
            return tool_fail ("cannot read %s: %s", input + 1, strerror (errno));
        }
        text = s_read_all (f);
        fclose (f);
    } else {
        text = strdup (input);
    }
    json_error_t jerr;
    json_t *value = text ? json_loads (text, 0, &jerr) : NULL;
    free (text);
    if (!value) {
        free (dir);
        return tool_fail ("--input is not JSON: %s", jerr.text);
    }
    if (json_is_array (value) && json_is_number (json_array_get (value, 0))) {
        value = json_pack ("[o]", value); /* one row given flat */
    }
    json_t *payload = json_is_object (value) ? value : json_pack ("{s:o}", "input", value);
    if (softmax) {
        json_object_set_new (payload, "softmax", json_true ());
    }

    /* Quiet: the runtime's log lines would mix with the result on the terminal. */
    zsys_set_logstream (NULL);
    zsys_set_logsystem (false);
    char why[512];
    gq_runtime_opts_t opts = {.backend = "cpu", .models_dir = dir};
    gq_runtime_t *rt = gq_runtime_new (&opts, why, sizeof why);
    free (dir);
    if (!rt) {
        json_decref (payload);
        return tool_fail ("%s", why);
    }
    gq_exec_t *exec = gq_exec_new (rt, 0);
    gq_task_t task = {.kind = "mlp", .model = name, .payload = payload};
    gq_outcome_t out;
    int rc = exec ? gq_exec_run (exec, &task, &out) : GQ_EBACKEND;
    if (rc == 0) {
        char *result = json_dumps (out.result, JSON_COMPACT | JSON_REAL_PRECISION (9));
        printf ("%s\n", result ? result : "null");
        free (result);
        gq_outcome_clear (&out);
    } else {
        tool_fail ("%s", exec ? out.error : "cannot make a CPU context");
    }
    gq_exec_destroy (&exec);
    gq_runtime_destroy (&rt);
    json_decref (payload);
    return rc ? 1 : 0;
}

int
main (int argc, char **argv)
{
    tool_set_name ("gridq-model");
    if (argc < 2 || streq (argv[1], "--help") || streq (argv[1], "-h") ||
        streq (argv[1], "help")) {
        s_usage (argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *command = argv[1];
    if (streq (command, "make")) {
        return s_make (argc - 1, argv + 1);
    }
    if (streq (command, "run")) {
        return s_run (argc - 1, argv + 1);
    }
    if (streq (command, "info")) {
        if (argc == 3 && streq (argv[2], "--help")) {
            s_usage (stdout);
            return 0;
        }
        if (argc != 3) {
            s_usage (stderr);
            return 2;
        }
        return s_info (argv[2]);
    }
    s_usage (stderr);
    return tool_fail ("unknown command '%s'", command) + 1;
}
