/*  opts.c — the broker's options: the defaults of the command-line contract, and the JSON
    config file (weights and scheduling). */
#include "opts.h"

#include <string.h>

#include "gq_msg.h"
#include "matcher.h"
#include "tuning.h"

void
gq_broker_opts_default (gq_broker_opts_t *opts)
{
    memset (opts, 0, sizeof *opts);
    opts->endpoint = GQ_DEFAULT_ENDPOINT;
    opts->db_path = "gridq.db";
    opts->heartbeat_ms = GQ_HEARTBEAT_MS;
    opts->liveness = GQ_LIVENESS;
    opts->durability = GQ_DURABILITY_FULL;
    opts->retention_ms = GQ_RETENTION_MS;
    gq_weights_default (&opts->weights);
    opts->aging_ms = GQ_AGING_MS;
    opts->backfill_window = GQ_BACKFILL_WINDOW;
    opts->reserve_after_ms = GQ_RESERVE_AFTER_MS;
    opts->backoff_base_ms = GQ_BACKOFF_BASE_MS;
    opts->node_grace_ms = -1;
    opts->prefetch_max = GQ_PREFETCH_MAX_JOBS;
    opts->prefetch_below_ms = GQ_PREFETCH_BELOW_MS;
    opts->prefetch_recall_ms = GQ_PREFETCH_RECALL_MS;
}

int
gq_broker_opts_load (gq_broker_opts_t *opts, const char *path, char *why, size_t whylen)
{
    json_error_t error;
    json_t *config = json_load_file (path, JSON_REJECT_DUPLICATES, &error);
    if (!config) {
        snprintf (why, whylen, "config %s: %s (line %d)", path, error.text, error.line);
        return GQ_EINVAL;
    }
    int rc = GQ_EINVAL;
    char field[200];
    json_t *weights = json_object_get (config, "weights");
    if (!json_is_object (config) || (weights && !json_is_object (weights))) {
        snprintf (why, whylen, "config %s: must be an object with \"weights\" an object", path);
        goto done;
    }
    struct {
        const char *name;
        double *value;
    } terms[] = {{"fit", &opts->weights.fit},
                 {"compute", &opts->weights.compute},
                 {"cost", &opts->weights.cost},
                 {"warm", &opts->weights.warm},
                 {"load", &opts->weights.load},
                 {"latency", &opts->weights.latency},
                 {"reliability", &opts->weights.reliability},
                 {"affinity", &opts->weights.affinity}};
    for (size_t i = 0; weights && i < sizeof terms / sizeof terms[0]; i++) {
        if (gq_json_num (weights, terms[i].name, 0, 100, *terms[i].value, terms[i].value, field,
                         sizeof field)) {
            snprintf (why, whylen, "config %s: weights: %s", path, field);
            goto done;
        }
    }
    int64_t aging, window, reserve, heartbeat, liveness, grace, prefetch, recall;
    if (gq_json_int (config, "aging_ms", 1, INT64_MAX / 16, opts->aging_ms, &aging, field,
                     sizeof field) ||
        gq_json_int (config, "backfill_window", 0, 1000000, (int64_t) opts->backfill_window, &window,
                     field, sizeof field) ||
        gq_json_int (config, "reserve_after_ms", 0, INT64_MAX / 16, opts->reserve_after_ms,
                     &reserve, field, sizeof field) ||
        gq_json_int (config, "heartbeat_ms", 10, 3600000, opts->heartbeat_ms, &heartbeat, field,
                     sizeof field) ||
        gq_json_int (config, "liveness", 1, 1000, opts->liveness, &liveness, field, sizeof field) ||
        gq_json_num (config, "backoff_base_ms", 0, 3600000, opts->backoff_base_ms,
                     &opts->backoff_base_ms, field, sizeof field) ||
        gq_json_int (config, "node_grace_ms", -1, 24LL * 3600000, opts->node_grace_ms, &grace,
                     field, sizeof field) ||
        gq_json_int (config, "prefetch_max", 0, GQ_PREFETCH_MAX_LIMIT, opts->prefetch_max,
                     &prefetch, field, sizeof field) ||
        gq_json_num (config, "prefetch_below_ms", 0, 3600000, opts->prefetch_below_ms,
                     &opts->prefetch_below_ms, field, sizeof field) ||
        gq_json_int (config, "prefetch_recall_ms", 0, 3600000, opts->prefetch_recall_ms, &recall,
                     field, sizeof field)) {
        snprintf (why, whylen, "config %s: %s", path, field);
        goto done;
    }
    opts->aging_ms = aging;
    opts->backfill_window = (size_t) window;
    opts->reserve_after_ms = reserve;
    opts->heartbeat_ms = (int) heartbeat;
    opts->liveness = (int) liveness;
    opts->node_grace_ms = grace;
    opts->prefetch_max = (int) prefetch;
    opts->prefetch_recall_ms = recall;
    rc = GQ_OK;
done:
    json_decref (config);
    return rc;
}
