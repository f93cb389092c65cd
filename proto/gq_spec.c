/*  gq_spec.c — validation of jobs and node specs sent by peers. */
#include "gq_spec.h"

#include <stdio.h>
#include <string.h>

#include "gq_msg.h"

/* Known job fields; anything else is refused so that typos do not pass silently. */
static const char *s_job_fields[] = {
    "kind", "model", "min_vram_mb", "min_vram", "priority", "gpu", "max_price", "min_tflops",
    "constraints", "timeout_ms", "time_limit", "max_attempts", "idem", "payload", "blobs",
    "after_ok", "after_any", "after_fail", "affinity", "array", "name", "inputs", NULL};
/* Their places in s_job_fields: gq_jobspec_parse notes which a job has, and looks up only those
   (a job names two or three of its twenty-two fields; each lookup of one it lacks costs a hash). */
enum {
    S_KIND, S_MODEL, S_MIN_VRAM_MB, S_MIN_VRAM, S_PRIORITY, S_GPU, S_MAX_PRICE, S_MIN_TFLOPS,
    S_CONSTRAINTS, S_TIMEOUT_MS, S_TIME_LIMIT, S_MAX_ATTEMPTS, S_IDEM, S_PAYLOAD, S_BLOBS,
    S_AFTER_OK, S_AFTER_ANY, S_AFTER_FAIL, S_AFFINITY, S_ARRAY, S_NAME, S_INPUTS
};

const char *const gq_dep_fields[GQ_DEP_KINDS] = {"after_ok", "after_any", "after_fail"};
const char *const gq_dep_names[GQ_DEP_KINDS] = {"ok", "any", "fail"};

/* The dependency fields: arrays of positive integers (job or array ids) and names (of jobs of
   the same SUBMIT), no parent twice (in one field or across them: a parent has one condition),
   GQ_MAX_DEPS in all. */
static int
s_after_parse (json_t *obj, gq_jobspec_t *spec, char *why, size_t whylen)
{
    for (int k = 0; k < GQ_DEP_KINDS; k++) {
        json_t *ids = json_object_get (obj, gq_dep_fields[k]);
        if (!ids || json_is_null (ids)) {
            continue;
        }
        if (!json_is_array (ids)) {
            return gq_why (why, whylen, GQ_EINVAL, "\"%s\" must be an array of job ids",
                           gq_dep_fields[k]);
        }
        size_t i;
        json_t *id;
        json_array_foreach (ids, i, id) {
            if (json_is_string (id)) {
                if (!gq_valid_job_name (json_string_value (id))) {
                    return gq_why (why, whylen, GQ_EINVAL,
                                   "\"%s\"[%zu] is not a job name ([A-Za-z0-9_.-]{1,63}, "
                                   "not starting with a digit)",
                                   gq_dep_fields[k], i);
                }
                spec->n_named++;
            } else if (!json_is_integer (id) || json_integer_value (id) <= 0) {
                return gq_why (why, whylen, GQ_EINVAL,
                               "\"%s\"[%zu] is neither a job id (a positive integer) nor a "
                               "job name", gq_dep_fields[k], i);
            }
            if (++spec->n_after > GQ_MAX_DEPS) {
                return gq_why (why, whylen, GQ_EINVAL, "a job may depend on %d jobs at most",
                               GQ_MAX_DEPS);
            }
            /* Quadratic, over at most GQ_MAX_DEPS ids of one job. */
            for (int j = 0; j <= k; j++) {
                size_t n = j < k ? json_array_size (spec->after[j]) : i;
                for (size_t m = 0; m < n; m++) {
                    if (json_equal (json_array_get (j < k ? spec->after[j] : ids, m), id)) {
                        char what[80];
                        if (json_is_string (id)) {
                            snprintf (what, sizeof what, "\"%s\"", json_string_value (id));
                        } else {
                            snprintf (what, sizeof what, "%lld",
                                      (long long) json_integer_value (id));
                        }
                        return gq_why (why, whylen, GQ_EINVAL,
                                       "\"%s\": job %s is named twice (a parent has one "
                                       "condition)",
                                       gq_dep_fields[k], what);
                    }
                }
            }
        }
        spec->after[k] = json_array_size (ids) ? ids : NULL;
    }
    return GQ_OK;
}

/* A decimal number at *p, 0 .. max; advances p. -1 when there is none or it is too large. */
static int64_t
s_number (const char **p, int64_t max)
{
    const char *s = *p;
    int64_t n = 0;
    if (*s < '0' || *s > '9') {
        return -1;
    }
    while (*s >= '0' && *s <= '9') {
        n = n * 10 + (*s++ - '0');
        if (n > max) {
            return -1;
        }
    }
    *p = s;
    return n;
}

int
gq_arrayspec_parse (const char *text, gq_arrayspec_t *spec, char *why, size_t whylen)
{
    memset (spec, 0, sizeof *spec);
    const char *p = text;
    int64_t next = 0; /* the lowest index the next part may start at */
    while (true) {
        if (spec->parts == GQ_MAX_ARRAY_PARTS) {
            return gq_why (why, whylen, GQ_EINVAL, "array \"%s\": more than %d parts", text,
                           GQ_MAX_ARRAY_PARTS);
        }
        int64_t first = s_number (&p, GQ_MAX_ARRAY_INDEX), last = first, step = 1;
        if (first >= 0 && *p == '-') {
            p++;
            last = s_number (&p, GQ_MAX_ARRAY_INDEX);
            if (last >= 0 && *p == ':') {
                p++;
                step = s_number (&p, GQ_MAX_ARRAY_INDEX);
            }
        }
        if (first < 0 || last < 0 || step <= 0) {
            return gq_why (why, whylen, GQ_EINVAL,
                           "array \"%s\" is not a spec like 0-999, 1,3,5, 0-99:5 or 0-999%%16",
                           text);
        }
        if (last < first || first < next) {
            return gq_why (why, whylen, GQ_EINVAL,
                           "array \"%s\": indexes must go up (each part above the one before)",
                           text);
        }
        int64_t count = (last - first) / step + 1;
        if (spec->count + count > GQ_MAX_ARRAY_ELEMENTS) {
            return gq_why (why, whylen, GQ_EINVAL, "array \"%s\": more than %d elements", text,
                           GQ_MAX_ARRAY_ELEMENTS);
        }
        spec->part[spec->parts].first = first;
        spec->part[spec->parts].step = step;
        spec->part[spec->parts++].count = count;
        spec->count += count;
        next = first + (count - 1) * step + 1;
        if (*p != ',') {
            break;
        }
        p++;
    }
    if (*p == '%') {
        p++;
        spec->limit = s_number (&p, GQ_MAX_ARRAY_ELEMENTS);
        if (spec->limit <= 0) {
            return gq_why (why, whylen, GQ_EINVAL,
                           "array \"%s\": %%K must be a number of elements, 1 or more", text);
        }
    }
    if (*p) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "array \"%s\" is not a spec like 0-999, 1,3,5, 0-99:5 or 0-999%%16", text);
    }
    return GQ_OK;
}

int64_t
gq_arrayspec_index (const gq_arrayspec_t *spec, int64_t k)
{
    for (int i = 0; i < spec->parts && k >= 0; i++) {
        if (k < spec->part[i].count) {
            return spec->part[i].first + k * spec->part[i].step;
        }
        k -= spec->part[i].count;
    }
    return -1;
}

bool
gq_valid_job_name (const char *name)
{
    size_t n = 0;
    if (!name || (name[0] >= '0' && name[0] <= '9')) {
        return false; /* "7" would read as job 7 */
    }
    for (; name[n]; n++) {
        char c = name[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-')) {
            return false;
        }
    }
    return n >= 1 && n < GQ_JOB_NAME_MAX;
}

/* The place of key in fields, or -1. */
static int
s_field (const char *key, const char **fields)
{
    for (int f = 0; fields[f]; f++) {
        if (strcmp (fields[f], key) == 0) {
            return f;
        }
    }
    return -1;
}

int
gq_jobspec_parse (json_t *obj, gq_jobspec_t *spec, char *why, size_t whylen)
{
    memset (spec, 0, sizeof *spec);
    spec->blob_first = -1;
    const char *inputs = NULL;
    if (!json_is_object (obj)) {
        return gq_why (why, whylen, GQ_EINVAL, "a job must be a JSON object");
    }
    const char *key;
    json_t *value;
    uint32_t has = 0;
    json_object_foreach (obj, key, value) {
        int f = s_field (key, s_job_fields);
        if (f < 0) {
            return gq_why (why, whylen, GQ_EINVAL, "unknown job field \"%s\"", key);
        }
        has |= 1u << f;
    }
    /* The job object where it has the field, else NULL: a lookup in NULL finds nothing. */
#define S_IN(field) (has & (1u << (field)) ? obj : NULL)
    int64_t n;
    if (gq_json_str (S_IN (S_KIND), "kind", GQ_KIND_MAX, "echo", &spec->kind, why, whylen)) {
        return GQ_EINVAL;
    }
    if (!gq_valid_kind (spec->kind)) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "kind \"%s\" is not a valid kind name ([a-z0-9_.-]{1,31})", spec->kind);
    }
    if (gq_json_str (S_IN (S_MODEL), "model", GQ_MODEL_MAX, NULL, &spec->model, why, whylen)) {
        return GQ_EINVAL;
    }
    if (spec->model && !gq_valid_name (spec->model, GQ_MODEL_MAX)) {
        return gq_why (why, whylen, GQ_EINVAL, "model \"%s\" is not a valid model name",
                       spec->model);
    }
    /* Two spellings of one thing: both given is a mistake, not a choice. */
    static const int twins[][2] = {{S_MIN_VRAM, S_MIN_VRAM_MB},
                                   {S_TIME_LIMIT, S_TIMEOUT_MS},
                                   {S_CONSTRAINTS, S_GPU},
                                   {S_CONSTRAINTS, S_MAX_PRICE},
                                   {S_CONSTRAINTS, S_MIN_TFLOPS}};
    for (size_t t = 0; t < sizeof twins / sizeof twins[0]; t++) {
        const char *one = s_job_fields[twins[t][0]], *other = s_job_fields[twins[t][1]];
        json_t *a = json_object_get (S_IN (twins[t][0]), one);
        json_t *b = json_object_get (S_IN (twins[t][1]), other);
        if (a && !json_is_null (a) && b && !json_is_null (b)) {
            return gq_why (why, whylen, GQ_EINVAL, "give \"%s\" or \"%s\", not both", one, other);
        }
    }
    json_t *size = json_object_get (S_IN (S_MIN_VRAM), "min_vram");
    if (json_is_string (size)) {
        if (gq_parse_size_mb (json_string_value (size), &spec->min_vram_mb)) {
            return gq_why (why, whylen, GQ_EINVAL, "min_vram \"%s\" is not a size like 512M or 24G",
                           json_string_value (size));
        }
    } else if (size && !json_is_null (size)) {
        return gq_why (why, whylen, GQ_EINVAL, "\"min_vram\" must be a size string like \"24G\"");
    } else if (gq_json_int (S_IN (S_MIN_VRAM_MB), "min_vram_mb", 0, GQ_MAX_VRAM_MB, 0, &spec->min_vram_mb, why,
                            whylen)) {
        return GQ_EINVAL;
    }
    if (gq_json_int (S_IN (S_PRIORITY), "priority", 0, 9, 5, &n, why, whylen)) {
        return GQ_EINVAL;
    }
    spec->priority = (int) n;

    json_t *constraints = json_object_get (S_IN (S_CONSTRAINTS), "constraints");
    json_t *where = has & (1u << S_GPU | 1u << S_MAX_PRICE | 1u << S_MIN_TFLOPS) ? obj : NULL;
    if (constraints && !json_is_null (constraints)) {
        if (!json_is_object (constraints)) {
            return gq_why (why, whylen, GQ_EINVAL, "\"constraints\" must be an object");
        }
        where = constraints;
    }
    if (gq_json_str (where, "gpu", GQ_PATTERN_MAX, NULL, &spec->gpu_pattern, why, whylen) ||
        gq_json_num (where, "max_price", 0, GQ_MAX_PRICE, -1, &spec->max_price, why, whylen) ||
        gq_json_num (where, "min_tflops", 0, GQ_MAX_TFLOPS, 0, &spec->min_tflops, why, whylen)) {
        return GQ_EINVAL;
    }
    if (spec->gpu_pattern && !*spec->gpu_pattern) {
        spec->gpu_pattern = NULL;
    }
    json_t *limit = json_object_get (S_IN (S_TIME_LIMIT), "time_limit");
    if (json_is_string (limit)) {
        if (gq_parse_duration_ms (json_string_value (limit), &spec->timeout_ms) ||
            spec->timeout_ms > GQ_MAX_TIMEOUT_MS) {
            return gq_why (why, whylen, GQ_EINVAL,
                           "time_limit \"%s\" is not a duration like 30s or 5m",
                           json_string_value (limit));
        }
    } else if (limit && !json_is_null (limit)) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "\"time_limit\" must be a duration string like \"30s\"");
    } else if (gq_json_int (S_IN (S_TIMEOUT_MS), "timeout_ms", 0, GQ_MAX_TIMEOUT_MS, 0, &spec->timeout_ms, why,
                            whylen)) {
        return GQ_EINVAL;
    }
    if (gq_json_int (S_IN (S_MAX_ATTEMPTS), "max_attempts", 1, GQ_MAX_ATTEMPTS_LIMIT, GQ_MAX_ATTEMPTS, &n, why,
                     whylen)) {
        return GQ_EINVAL;
    }
    spec->max_attempts = (int) n;
    if (gq_json_str (S_IN (S_IDEM), "idem", GQ_IDEM_MAX, NULL, &spec->idem, why, whylen)) {
        return GQ_EINVAL;
    }
    if (spec->idem && !*spec->idem) {
        return gq_why (why, whylen, GQ_EINVAL, "\"idem\" must not be empty");
    }
    if (gq_json_str (S_IN (S_AFFINITY), "affinity", GQ_AFFINITY_MAX, NULL, &spec->affinity, why, whylen)) {
        return GQ_EINVAL;
    }
    if (spec->affinity && !*spec->affinity) {
        return gq_why (why, whylen, GQ_EINVAL, "\"affinity\" must not be empty");
    }
    spec->payload = json_object_get (S_IN (S_PAYLOAD), "payload");
    json_t *blobs = json_object_get (S_IN (S_BLOBS), "blobs");
    if (blobs && !json_is_null (blobs)) {
        if (!json_is_array (blobs) || json_array_size (blobs) != 2 ||
            !json_is_integer (json_array_get (blobs, 0)) ||
            !json_is_integer (json_array_get (blobs, 1))) {
            return gq_why (why, whylen, GQ_EINVAL, "\"blobs\" must be [first, count]");
        }
        json_int_t first = json_integer_value (json_array_get (blobs, 0));
        json_int_t count = json_integer_value (json_array_get (blobs, 1));
        if (first < 0 || count < 0 || first >= GQ_MAX_BLOBS || count > GQ_MAX_BLOBS - first) {
            return gq_why (why, whylen, GQ_EINVAL, "\"blobs\" [%lld, %lld] is out of range",
                           (long long) first, (long long) count);
        }
        spec->blob_first = count ? (int) first : -1;
        spec->blob_count = (int) count;
    }
    if (gq_json_str (S_IN (S_ARRAY), "array", 1024, NULL, &spec->array, why, whylen) ||
        gq_json_str (S_IN (S_NAME), "name", GQ_JOB_NAME_MAX, NULL, &spec->name, why, whylen) ||
        gq_json_str (S_IN (S_INPUTS), "inputs", 16, NULL, &inputs, why, whylen)) {
        return GQ_EINVAL;
    }
    if (spec->name && !gq_valid_job_name (spec->name)) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "name \"%s\" is not a job name ([A-Za-z0-9_.-]{1,63}, not starting "
                       "with a digit)",
                       spec->name);
    }
    if (inputs && !streq (inputs, "after")) {
        return gq_why (why, whylen, GQ_EINVAL, "\"inputs\" must be \"after\" (the parents' results)");
    }
    spec->inputs = inputs != NULL;
    if (spec->array) {
        gq_arrayspec_t array;
        if (gq_arrayspec_parse (spec->array, &array, why, whylen)) {
            return GQ_EINVAL;
        }
        spec->array_count = array.count;
        if (spec->idem || spec->blob_first >= 0) {
            return gq_why (why, whylen, GQ_EINVAL, "an array takes no \"%s\"",
                           spec->idem ? "idem" : "blobs");
        }
        if (spec->payload && (!json_is_object (spec->payload) ||
                              json_object_get (spec->payload, "array_index"))) {
            return gq_why (why, whylen, GQ_EINVAL,
                           "an array's \"payload\" must be an object without \"array_index\" "
                           "(each element's gets its index there)");
        }
    }
    if ((has & (1u << S_AFTER_OK | 1u << S_AFTER_ANY | 1u << S_AFTER_FAIL)) &&
        s_after_parse (obj, spec, why, whylen)) {
        return GQ_EINVAL;
    }
    if (spec->inputs && !spec->n_after) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "\"inputs\": \"after\" needs after_ok, after_any or after_fail");
    }
    if (spec->inputs && spec->payload && !json_is_object (spec->payload)) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "\"inputs\": \"after\" needs an object \"payload\" (its \"inputs\" "
                       "are added there)");
    }
    return GQ_OK;
}
#undef S_IN

int
gq_models_validate (json_t *models, bool loaded, char *why, size_t whylen)
{
    if (!models || json_is_null (models)) {
        return GQ_OK;
    }
    if (!json_is_array (models) || json_array_size (models) > GQ_MAX_MODELS) {
        return gq_why (why, whylen, GQ_EINVAL, "models must be an array of at most %d entries",
                       GQ_MAX_MODELS);
    }
    size_t i;
    json_t *item;
    json_array_foreach (models, i, item) {
        const char *name = NULL;
        if (loaded) {
            double load_ms;
            if (!json_is_object (item) ||
                gq_json_str (item, "name", GQ_MODEL_MAX, NULL, &name, why, whylen) ||
                gq_json_num (item, "load_ms", 0, 1e9, 0, &load_ms, why, whylen)) {
                return gq_why (why, whylen, GQ_EINVAL,
                               "models_loaded[%zu] must be {\"name\", \"load_ms\"}", i);
            }
        } else {
            name = json_string_value (item);
        }
        if (!name || !gq_valid_name (name, GQ_MODEL_MAX)) {
            return gq_why (why, whylen, GQ_EINVAL, "model entry %zu is not a valid model name", i);
        }
    }
    return GQ_OK;
}

int
gq_nodespec_parse (json_t *obj, gq_nodespec_t *spec, char *why, size_t whylen)
{
    memset (spec, 0, sizeof *spec);
    if (!json_is_object (obj)) {
        return gq_why (why, whylen, GQ_EINVAL, "\"spec\" must be an object");
    }
    int64_t n;
    if (gq_json_str (obj, "name", GQ_NAME_MAX, NULL, &spec->name, why, whylen) ||
        gq_json_str (obj, "gpu_model", GQ_GPU_MODEL_MAX, "cpu", &spec->gpu_model, why, whylen) ||
        gq_json_str (obj, "backend", 16, "cpu", &spec->backend, why, whylen) ||
        gq_json_int (obj, "vram_total_mb", 0, GQ_MAX_VRAM_MB, 0, &spec->vram_total_mb, why,
                     whylen) ||
        gq_json_num (obj, "tflops", 0, GQ_MAX_TFLOPS, 0, &spec->tflops, why, whylen) ||
        gq_json_num (obj, "price_per_hour", 0, GQ_MAX_PRICE, 0, &spec->price_per_hour, why,
                     whylen) ||
        gq_json_int (obj, "slots", 1, GQ_MAX_SLOTS, 1, &n, why, whylen)) {
        return GQ_EINVAL;
    }
    spec->slots = (int) n;
    if (!spec->name || !gq_valid_name (spec->name, GQ_NAME_MAX)) {
        return gq_why (why, whylen, GQ_EINVAL,
                       "\"name\" must be a node name ([A-Za-z0-9_.:@+-], < %d bytes)", GQ_NAME_MAX);
    }
    if (gq_json_int (obj, "vram_free_mb", 0, spec->vram_total_mb, spec->vram_total_mb,
                     &spec->vram_free_mb, why, whylen)) {
        return GQ_EINVAL;
    }
    spec->kinds = json_object_get (obj, "kinds");
    if (!json_is_array (spec->kinds) || json_array_size (spec->kinds) == 0 ||
        json_array_size (spec->kinds) > GQ_MAX_KINDS) {
        return gq_why (why, whylen, GQ_EINVAL, "\"kinds\" must be an array of 1..%d kind names",
                       GQ_MAX_KINDS);
    }
    size_t i;
    json_t *item;
    json_array_foreach (spec->kinds, i, item) {
        if (!json_is_string (item) || !gq_valid_kind (json_string_value (item))) {
            return gq_why (why, whylen, GQ_EINVAL, "kinds[%zu] is not a valid kind name", i);
        }
    }
    spec->models_available = json_object_get (obj, "models_available");
    spec->models_loaded = json_object_get (obj, "models_loaded");
    if (gq_models_validate (spec->models_available, false, why, whylen) ||
        gq_models_validate (spec->models_loaded, true, why, whylen)) {
        return GQ_EINVAL;
    }
    return GQ_OK;
}

/* ---- Selftest ------------------------------------------------------------------------------ */

/* Parses text into spec; the JSON stays alive in *keep (spec borrows from it) until the next
   call or a call with text NULL. */
static int
s_parse_job (const char *text, gq_jobspec_t *spec, char *why, size_t whylen)
{
    static json_t *keep = NULL;
    json_decref (keep);
    keep = text ? json_loads (text, 0, NULL) : NULL;
    if (!text) {
        return GQ_OK;
    }
    assert (keep);
    return gq_jobspec_parse (keep, spec, why, whylen);
}

void
gq_spec_test (bool verbose)
{
    char why[256];
    gq_jobspec_t job;
    assert (s_parse_job ("{}", &job, why, sizeof why) == GQ_OK);
    assert (strcmp (job.kind, "echo") == 0 && job.priority == 5 && job.max_attempts == 3);
    assert (job.max_price < 0 && job.model == NULL && job.blob_first == -1);
    assert (s_parse_job ("{\"kind\":\"mlp\",\"model\":\"mnist\",\"min_vram\":\"24G\","
                         "\"priority\":9,\"constraints\":{\"gpu\":\"A100|H100\",\"max_price\":2.5},"
                         "\"time_limit\":\"30s\",\"idem\":\"k1\",\"blobs\":[0,2]}",
                         &job, why, sizeof why) == GQ_OK);
    assert (job.min_vram_mb == 24576 && job.priority == 9 && job.timeout_ms == 30000);
    assert (strcmp (job.gpu_pattern, "A100|H100") == 0 && job.max_price == 2.5);
    assert (job.blob_first == 0 && job.blob_count == 2);
    assert (job.n_after == 0 && !job.after[GQ_DEP_OK] && !job.after[GQ_DEP_FAIL]);
    assert (s_parse_job ("{\"after_ok\":[3,4],\"after_any\":[],\"after_fail\":[5]}", &job, why,
                         sizeof why) == GQ_OK);
    assert (job.n_after == 3 && json_array_size (job.after[GQ_DEP_OK]) == 2);
    assert (job.after[GQ_DEP_ANY] == NULL && json_array_size (job.after[GQ_DEP_FAIL]) == 1);
    assert (s_parse_job ("{\"array\":\"0-999%16\"}", &job, why, sizeof why) == GQ_OK);
    assert (job.array_count == 1000 && strcmp (job.array, "0-999%16") == 0);
    assert (s_parse_job ("{\"name\":\"d\",\"after_ok\":[\"b\",7,\"c\"],\"inputs\":\"after\"}",
                         &job, why, sizeof why) == GQ_OK);
    assert (job.n_after == 3 && job.n_named == 2 && job.inputs && strcmp (job.name, "d") == 0);
    gq_arrayspec_t array;
    assert (gq_arrayspec_parse ("1,3,10-20:5,30%2", &array, why, sizeof why) == GQ_OK);
    assert (array.count == 6 && array.limit == 2 && array.parts == 4);
    int64_t want[] = {1, 3, 10, 15, 20, 30, -1};
    for (int k = 0; k < 7; k++) {
        assert (gq_arrayspec_index (&array, k) == want[k]);
    }
    assert (gq_arrayspec_parse ("0-99:5", &array, why, sizeof why) == GQ_OK && array.count == 20);
    assert (gq_arrayspec_index (&array, 19) == 95 && array.limit == 0);
    /* Each bad field is refused with its name in the reason. */
    const char *bad[] = {
        "{\"priority\":99}", "{\"priority\":-1}", "{\"min_vram_mb\":-5}",
        "{\"min_vram\":\"lots\"}", "{\"kind\":\"Bad Kind\"}", "{\"kind\":7}",
        "{\"model\":\"../etc/passwd\"}", "{\"max_attempts\":0}", "{\"max_attempts\":1000}",
        "{\"time_limit\":\"soon\"}", "{\"min_tflops\":-1}", "{\"constraints\":[1]}",
        "{\"colour\":\"red\"}", "{\"idem\":\"\"}", "{\"blobs\":[0,99]}", "{\"blobs\":\"x\"}",
        "{\"timeout_ms\":1.5}", "{\"min_vram\":\"1G\",\"min_vram_mb\":5}",
        "{\"time_limit\":\"1s\",\"timeout_ms\":5}", "{\"constraints\":{},\"gpu\":\"A100\"}",
        "{\"after_ok\":5}", "{\"after_ok\":[0]}", "{\"after_any\":[\"7\"]}",
        "{\"after_ok\":[7,7]}", "{\"after_ok\":[7],\"after_fail\":[7]}",
        "{\"array\":\"5-1\"}", "{\"array\":\"1,1\"}", "{\"array\":\"0-9%0\"}",
        "{\"array\":\"0-2000000\"}", "{\"array\":\"x\"}", "{\"array\":\"0-9:0\"}",
        "{\"array\":\"0-9\",\"idem\":\"k\"}", "{\"array\":\"0-9\",\"payload\":[1]}",
        "{\"array\":\"0-9\",\"payload\":{\"array_index\":1}}", "{\"name\":\"a b\"}",
        "{\"after_ok\":[\"a\",\"a\"]}", "{\"after_ok\":[\"\"]}", "{\"inputs\":\"after\"}",
        "{\"inputs\":\"before\",\"after_ok\":[1]}", NULL};
    for (const char **b = bad; *b; b++) {
        if (s_parse_job (*b, &job, why, sizeof why) != GQ_EINVAL) {
            fprintf (stderr, "spec: %s was accepted\n", *b);
            abort ();
        }
        if (verbose) {
            printf ("\n  %s -> %s", *b, why);
        }
    }
    /* Node specs. */
    json_t *node = json_pack ("{s:s, s:s, s:I, s:I, s:f, s:f, s:i, s:[s,s], s:[s], s:[{s:s,s:f}]}",
                              "name", "gpu-1", "gpu_model", "RTX 4090", "vram_total_mb",
                              (json_int_t) 24576, "vram_free_mb", (json_int_t) 20000, "tflops",
                              82.6, "price_per_hour", 0.4, "slots", 2, "kinds", "echo", "mlp",
                              "models_available", "mnist", "models_loaded", "name", "mnist",
                              "load_ms", 12.0);
    gq_nodespec_t ns;
    assert (gq_nodespec_parse (node, &ns, why, sizeof why) == GQ_OK);
    assert (ns.slots == 2 && ns.vram_free_mb == 20000 && strcmp (ns.name, "gpu-1") == 0);
    json_object_set_new (node, "vram_free_mb", json_integer (30000)); /* more free than total */
    assert (gq_nodespec_parse (node, &ns, why, sizeof why) == GQ_EINVAL);
    json_object_set_new (node, "vram_free_mb", json_integer (100));
    json_object_set_new (node, "tflops", json_real (-1));
    assert (gq_nodespec_parse (node, &ns, why, sizeof why) == GQ_EINVAL);
    json_object_set_new (node, "tflops", json_real (10));
    json_object_set_new (node, "slots", json_integer (100000));
    assert (gq_nodespec_parse (node, &ns, why, sizeof why) == GQ_EINVAL);
    json_object_set_new (node, "slots", json_integer (1));
    json_object_set_new (node, "name", json_string ("bad name"));
    assert (gq_nodespec_parse (node, &ns, why, sizeof why) == GQ_EINVAL);
    json_object_set_new (node, "name", json_string ("ok"));
    json_object_set_new (node, "kinds", json_pack ("[]"));
    assert (gq_nodespec_parse (node, &ns, why, sizeof why) == GQ_EINVAL);
    json_object_set_new (node, "kinds", json_pack ("[s]", "echo"));
    json_object_set_new (node, "models_loaded", json_pack ("[s]", "mnist"));
    assert (gq_nodespec_parse (node, &ns, why, sizeof why) == GQ_EINVAL);
    json_decref (node);
    s_parse_job (NULL, &job, why, sizeof why);
}
