/*  store.c — the SQLite store: schema and migrations at open, typed writes for the broker's group
    commit, recovery at start, queries about finished jobs, retention.

    The only file that includes sqlite3.h. Every statement is prepared once, at open, with
    SQLITE_PREPARE_PERSISTENT, and its text and blob parameters are bound SQLITE_STATIC: the
    caller's buffers live across the call, so the hot path (insert, attempt, finish) allocates
    nothing and copies nothing. */
#include "store.h"
#include "tuning.h"
#include "gq_check.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gq_schema.h"
#include "gq_spec.h"

/* ---- Statements ------------------------------------------------------------------------------ */

typedef enum {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_JOB_INSERT,
    S_JOB_BY_IDEM,
    S_JOB_FINISH,
    S_JOB_STATE,
    S_BLOB_INSERT,
    S_BLOBS,
    S_ATTEMPT_INSERT,
    S_ATTEMPT_NODE,
    S_ATTEMPT_NEXT,
    S_ATTEMPT_SAME_RUN,
    S_ATTEMPTS_LOST,
    S_ATTEMPTS,
    S_NODE_UPSERT,
    S_NODES,
    S_RECOVER,
    S_JOB_GET,
    S_JOBS_ALL,
    S_JOBS_IN_STATE,
    S_COUNTS,
    S_PURGE_CLEAR,
    S_PURGE_PICK,
    S_PURGE_COUNTS,
    S_PURGE_TALLY,
    S_PURGE,
    S_PURGE_ARRAYS,
    S_MAX_ID,
    S_META_GET,
    S_META_SET,
    S_DEP_INSERT,
    S_DEPS_RECOVER,
    S_DEP_INPUTS,
    S_ARRAY_RESULTS,
    S_DEP_CHILDREN,
    S_DEPS_OF,
    S_JOB_RETRY,
    S_ARRAY_INSERT,
    S_ARRAYS,
    S_ARRAY_ENDED,
    S_STMTS
} s_stmt_t;

/* The columns s_row_read expects, in its order; payload is an expression so that listings need
   not read (and the broker not parse) payloads they leave out. */
#define S_JOB_COLUMNS(payload)                                                                     \
    "id, idem_key, kind, model, min_vram_mb, priority, gpu_pattern, max_price, min_tflops, "     \
    "timeout_ms, max_attempts, " payload ", state, attempts, node, submitted_at, started_at, "    \
    "finished_at, result, error, client"

static const char *s_sql[S_STMTS] = {
    /* IMMEDIATE: take the write lock at begin, so a busy database fails the turn there and not
       halfway through its writes. */
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT gq_group",
    [S_RELEASE] = "RELEASE gq_group",
    [S_ROLLBACK_TO] = "ROLLBACK TO gq_group",
    /* ?14: the id the broker chose, or NULL for SQLite's max(id) + 1. */
    [S_JOB_INSERT] = "INSERT INTO jobs (id, idem_key, kind, model, min_vram_mb, priority, "
                     "gpu_pattern, max_price, min_tflops, timeout_ms, max_attempts, payload, "
                     "state, submitted_at, client) "
                     "VALUES (?14, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, ?12, ?13)",
    [S_JOB_BY_IDEM] = "SELECT id FROM jobs WHERE idem_key = ?1",
    /* "state < 2": the first end is the one recorded. */
    [S_JOB_FINISH] = "UPDATE jobs SET state = ?2, attempts = ?3, node = ?4, started_at = ?5, "
                     "finished_at = ?6, result = ?7, error = ?8 WHERE id = ?1 AND state < 2",
    [S_JOB_STATE] = "SELECT state FROM jobs WHERE id = ?1",
    [S_BLOB_INSERT] = "INSERT INTO job_blobs (job_id, direction, idx, data) VALUES (?1, ?2, ?3, ?4)",
    [S_BLOBS] = "SELECT data FROM job_blobs WHERE job_id = ?1 AND direction = ?2 ORDER BY idx",
    /* A run is (job, attempt, node): the same run recorded again updates its row (a running
       attempt that ended, a lost run that finished after all) when ?8 allows, and never adds a
       second row; a run of another node under a number taken is numbered after (S_ATTEMPT_NEXT). */
    [S_ATTEMPT_INSERT] = "INSERT INTO attempts (job_id, attempt, node, started_at, finished_at, "
                         "outcome, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                         "ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = "
                         "excluded.started_at, finished_at = excluded.finished_at, outcome = "
                         "excluded.outcome, reason = excluded.reason "
                         "WHERE ?8 AND attempts.node = excluded.node",
    [S_ATTEMPT_NODE] = "SELECT node FROM attempts WHERE job_id = ?1 AND attempt = ?2",
    [S_ATTEMPT_NEXT] = "INSERT INTO attempts (job_id, attempt, node, started_at, finished_at, "
                       "outcome, reason) SELECT ?1, coalesce (max (attempt), 0) + 1, ?3, ?4, ?5, "
                       "?6, ?7 FROM attempts WHERE job_id = ?1",
    /* The same run under another number (numbered after, because another node's run held its
       own): known by its node and start. */
    [S_ATTEMPT_SAME_RUN] = "UPDATE attempts SET finished_at = ?5, outcome = ?6, reason = ?7 "
                           "WHERE job_id = ?1 AND node = ?3 AND started_at = ?4",
    /* At start nothing runs: runs recorded as running were lost with the broker. */
    [S_ATTEMPTS_LOST] = "UPDATE attempts SET outcome = 'lost', finished_at = ?1, reason = "
                        "'the broker stopped while it ran' WHERE outcome = 'running'",
    [S_ATTEMPTS] = "SELECT attempt, node, started_at, finished_at, outcome, reason "
                   "FROM attempts WHERE job_id = ?1 ORDER BY attempt",
    [S_NODE_UPSERT] = "INSERT INTO nodes (name, gpu_model, vram_total_mb, tflops, price_per_hour, "
                      "first_seen, last_seen, jobs_ok, jobs_failed) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8) "
                      "ON CONFLICT (name) DO UPDATE SET gpu_model = excluded.gpu_model, "
                      "vram_total_mb = excluded.vram_total_mb, tflops = excluded.tflops, "
                      "price_per_hour = excluded.price_per_hour, last_seen = excluded.last_seen, "
                      "jobs_ok = excluded.jobs_ok, jobs_failed = excluded.jobs_failed",
    [S_NODES] = "SELECT name, gpu_model, vram_total_mb, tflops, price_per_hour, first_seen, "
                "last_seen, jobs_ok, jobs_failed FROM nodes ORDER BY name",
    /* The ids come from the state index and are sorted as bare integers; the rows are then read
       in id order by rowid. "WHERE state < 2 ORDER BY id" would scan the whole table, and
       sorting whole rows would drag every payload through the sorter. */
    [S_RECOVER] = "SELECT " S_JOB_COLUMNS ("payload") " FROM jobs "
                  "WHERE id IN (SELECT id FROM jobs WHERE state IN (0, 1)) ORDER BY id",
    [S_JOB_GET] = "SELECT " S_JOB_COLUMNS ("CASE WHEN ?2 THEN payload END") " FROM jobs "
                  "WHERE id = ?1",
    [S_JOBS_ALL] = "SELECT " S_JOB_COLUMNS ("NULL") " FROM jobs WHERE id < ?3 "
                   "ORDER BY id DESC LIMIT ?1",
    [S_JOBS_IN_STATE] = "SELECT " S_JOB_COLUMNS ("NULL") " FROM jobs WHERE state = ?2 "
                        "AND id < ?3 ORDER BY id DESC LIMIT ?1",
    [S_COUNTS] = "SELECT state, count(*) FROM jobs GROUP BY state",
    /* Oldest first through the finished_at index, chosen once into the temporary table purging
       (gq_store_open makes it), so that the counts, the arrays' tallies and the delete all see
       the same jobs; the cascade takes attempts, blobs and the job's own deps rows along. The
       largest id stays: SQLite gives a new row max(id) + 1, so deleting the newest job would
       hand its id out again. A parent stays while a child that has not ended depends on it (the
       child's recovery needs its outcome, its inputs its result): a job through deps_parent,
       an array's elements through their array (the one with the largest id below theirs). */
    [S_PURGE_CLEAR] = "DELETE FROM temp.purging",
    [S_PURGE_PICK] = "INSERT INTO temp.purging (id, state) SELECT id, state FROM jobs "
                     "WHERE finished_at < ?1 AND state >= 2 AND id < (SELECT max(id) FROM jobs) "
                     "AND NOT EXISTS (SELECT 1 FROM deps d JOIN jobs c ON c.id = d.child "
                     "WHERE d.parent = jobs.id AND c.state < 2) "
                     "AND NOT EXISTS (SELECT 1 FROM arrays a JOIN deps d ON d.parent = a.id "
                     "JOIN jobs c ON c.id = d.child WHERE a.id = (SELECT max(id) FROM arrays "
                     "WHERE id < jobs.id) AND jobs.id < a.first + a.count AND c.state < 2) "
                     "ORDER BY finished_at LIMIT ?2",
    /* What a purge is about to delete, per state: the broker keeps its counts exact. */
    [S_PURGE_COUNTS] = "SELECT state, count(*) FROM temp.purging GROUP BY state",
    /* An array keeps count of its elements purged, by state: a restarted broker adds them to
       those it finds (gq_store_arrays_recover). */
    [S_PURGE_TALLY] =
        "UPDATE arrays SET purged_done = purged_done + (SELECT count(*) FROM temp.purging p "
        "WHERE p.id BETWEEN arrays.first AND arrays.first + arrays.count - 1 AND p.state = 2), "
        "purged_failed = purged_failed + (SELECT count(*) FROM temp.purging p WHERE p.id "
        "BETWEEN arrays.first AND arrays.first + arrays.count - 1 AND p.state = 3), "
        "purged_cancelled = purged_cancelled + (SELECT count(*) FROM temp.purging p WHERE p.id "
        "BETWEEN arrays.first AND arrays.first + arrays.count - 1 AND p.state = 4) "
        "WHERE id IN (SELECT a.id FROM temp.purging p JOIN arrays a ON a.id = (SELECT max(id) "
        "FROM arrays WHERE id < p.id) WHERE p.id < a.first + a.count)",
    [S_PURGE] = "DELETE FROM jobs WHERE id IN (SELECT id FROM temp.purging)",
    /* An array goes with the last of its elements: no row of it remains to be recovered. */
    [S_PURGE_ARRAYS] = "DELETE FROM arrays WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id "
                       "BETWEEN arrays.first AND arrays.first + arrays.count - 1)",
    [S_MAX_ID] = "SELECT max(id) FROM jobs",
    [S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [S_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [S_DEP_INSERT] = "INSERT INTO deps (child, parent, kind, name, inputs) "
                     "VALUES (?1, ?2, ?3, ?4, ?5)",
    /* A child's parents with their names and results; an array's range instead of a result. */
    [S_DEP_INPUTS] = "SELECT d.parent, d.name, p.result, a.first, a.count FROM deps d "
                     "LEFT JOIN jobs p ON p.id = d.parent LEFT JOIN arrays a ON a.id = d.parent "
                     "WHERE d.child = ?1 ORDER BY d.parent",
    /* An array's results, through the primary key: the elements' range, in index order. */
    [S_ARRAY_RESULTS] = "SELECT id, result FROM jobs WHERE id BETWEEN ?1 AND ?2 ORDER BY id",
    /* The edges of the jobs that had not ended (from the state index, each child's edges by
       its key), each with its parent's stored state (NULL: no such job). */
    [S_DEPS_RECOVER] = "SELECT d.child, d.parent, d.kind, p.state, d.inputs FROM jobs c "
                       "JOIN deps d ON d.child = c.id LEFT JOIN jobs p ON p.id = d.parent "
                       "WHERE c.state IN (0, 1) ORDER BY d.child, d.parent",
    /* Retry (a rescue DAG): the children of a parent, with their states and errors; the edges
       of one child; a job that ended failed or cancelled becomes queued again. */
    [S_DEP_CHILDREN] = "SELECT d.child, c.state, c.error FROM deps d JOIN jobs c ON c.id = "
                       "d.child WHERE d.parent = ?1 ORDER BY d.child",
    [S_DEPS_OF] = "SELECT d.child, d.parent, d.kind, p.state, d.inputs FROM deps d LEFT JOIN "
                  "jobs p ON p.id = d.parent WHERE d.child = ?1 ORDER BY d.parent",
    [S_JOB_RETRY] = "UPDATE jobs SET state = 0, started_at = NULL, finished_at = NULL, "
                    "result = NULL, error = NULL, max_attempts = ?2 WHERE id = ?1 AND state IN "
                    "(3, 4)",
    [S_ARRAY_INSERT] = "INSERT INTO arrays (id, first, count, spec, submitted_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_ARRAYS] = "SELECT id, first, count, spec, submitted_at, purged_done, purged_failed, "
                 "purged_cancelled FROM arrays ORDER BY id",
    /* Through the primary key: the elements' range, not the table. */
    [S_ARRAY_ENDED] = "SELECT state, count(*) FROM jobs WHERE id BETWEEN ?1 AND ?2 "
                      "AND state >= 2 GROUP BY state",
};

/* Outcomes of an attempt; the first two exclude the node from the job's next attempts after a
   restart (a lost run is no verdict on its node: the broker may have been the one that stopped). */
static const char *s_outcomes[] = {"failed", "timeout", "lost", "ok", "cancelled", "running"};
#define S_EXCLUDING_OUTCOMES 2

/* ---- The store ------------------------------------------------------------------------------- */

struct _gq_store_t {
    sqlite3 *db;                  /* the one connection */
    sqlite3_stmt *stmt[S_STMTS];  /* prepared at open, finalized at close */
    char *path;                   /* database file, for messages */
    int version;                  /* schema version after open */
    int error;                    /* code of the last call's failure, 0 after a success */
    bool row_fault;               /* that failure was the write's own (a constraint, a bad
                                     value): the same write fails again; else the database's */
    int wal_pages;                /* pages in the WAL after this connection's last commit */
    char errmsg[512];             /* text of the last failure, kept until the next one */
};

/* Records a SQLite failure of step `what` and returns GQ_ESTORE. Call before resetting the
   statement, while the connection's message is still the statement's. */
static int
s_fail (gq_store_t *self, const char *what)
{
    snprintf (self->errmsg, sizeof self->errmsg, "store: %s: %s", what,
              sqlite3_errmsg (self->db));
    int primary = sqlite3_errcode (self->db) & 0xff;
    self->row_fault = primary == SQLITE_CONSTRAINT || primary == SQLITE_MISMATCH ||
                      primary == SQLITE_TOOBIG || primary == SQLITE_RANGE;
    self->error = GQ_ESTORE;
    return GQ_ESTORE;
}

/* Records a failure that is not SQLite's (a bad argument, a missing job). */
static int
s_error (gq_store_t *self, int code, const char *what, const char *detail)
{
    snprintf (self->errmsg, sizeof self->errmsg, "store: %s: %s", what, detail);
    self->row_fault = code == GQ_EINVAL;
    self->error = code;
    return code;
}

static int
s_ok (gq_store_t *self)
{
    self->error = GQ_OK;
    self->row_fault = false;
    return GQ_OK;
}

/* Binds text, or NULL for NULL and for "" (where empty means "none"). */
static void
s_bind_text (sqlite3_stmt *stmt, int index, const char *text)
{
    if (text && *text) {
        sqlite3_bind_text (stmt, index, text, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null (stmt, index);
    }
}

/* Binds a time, or NULL for 0 ("not yet"). */
static void
s_bind_time (sqlite3_stmt *stmt, int index, int64_t ms)
{
    if (ms > 0) {
        sqlite3_bind_int64 (stmt, index, ms);
    } else {
        sqlite3_bind_null (stmt, index);
    }
}

/* Steps a statement that returns no rows and resets it: 0 or GQ_ESTORE. */
static int
s_step_done (gq_store_t *self, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step (stmt);
    int err = rc == SQLITE_DONE ? GQ_OK : s_fail (self, what);
    sqlite3_reset (stmt);
    return err ? err : s_ok (self);
}

/* Steps a bound statement that selects one integer: 1 with *value set, 0 for no row (value
   untouched), or GQ_ESTORE (failing step `what`). Resets the statement. */
static int
s_step_int64 (gq_store_t *self, sqlite3_stmt *stmt, const char *what, int64_t *value)
{
    int rc = sqlite3_step (stmt);
    int found = 0;
    if (rc == SQLITE_ROW) {
        *value = sqlite3_column_int64 (stmt, 0);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = s_fail (self, what);
    }
    sqlite3_reset (stmt);
    if (found >= 0) {
        s_ok (self);
    }
    return found;
}

/* Fills row from the current result row of a statement selecting S_JOB_COLUMNS. */
static void
s_row_read (sqlite3_stmt *stmt, gq_job_row_t *row)
{
    row->id = sqlite3_column_int64 (stmt, 0);
    row->idem = (const char *) sqlite3_column_text (stmt, 1);
    row->kind = (const char *) sqlite3_column_text (stmt, 2);
    row->model = (const char *) sqlite3_column_text (stmt, 3);
    row->min_vram_mb = sqlite3_column_int (stmt, 4);
    row->priority = sqlite3_column_int (stmt, 5);
    row->gpu_pattern = (const char *) sqlite3_column_text (stmt, 6);
    row->max_price = sqlite3_column_type (stmt, 7) == SQLITE_NULL
                         ? -1
                         : sqlite3_column_double (stmt, 7);
    row->min_tflops = sqlite3_column_double (stmt, 8);   /* NULL reads as 0: no limit */
    row->timeout_ms = sqlite3_column_int64 (stmt, 9);
    row->max_attempts = sqlite3_column_int (stmt, 10);
    row->payload = (const char *) sqlite3_column_text (stmt, 11);
    row->state = sqlite3_column_int (stmt, 12);
    row->attempts = sqlite3_column_int (stmt, 13);
    row->node = (const char *) sqlite3_column_text (stmt, 14);
    row->submitted_ms = sqlite3_column_int64 (stmt, 15);
    row->started_ms = sqlite3_column_int64 (stmt, 16);
    row->finished_ms = sqlite3_column_int64 (stmt, 17);
    row->result = (const char *) sqlite3_column_text (stmt, 18);
    row->error = (const char *) sqlite3_column_text (stmt, 19);
    row->client = (const char *) sqlite3_column_text (stmt, 20);
}

/* ---- Opening: pragmas, schema, migrations ---------------------------------------------------- */

/* Runs one or more statements that return nothing of interest. */
static int
s_exec (sqlite3 *db, const char *sql)
{
    return sqlite3_exec (db, sql, NULL, NULL, NULL);
}

/* The first column of the first row of sql as an integer (0 without a row). */
static int
s_query_int (sqlite3 *db, const char *sql, int64_t *value)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    *value = 0;
    rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        *value = sqlite3_column_int64 (stmt, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize (stmt);
    return rc;
}

/* The first column of the first row of sql as text into buf ("" without a row). */
static int
s_query_text (sqlite3 *db, const char *sql, char *buf, size_t size)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    buf[0] = 0;
    rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text (stmt, 0);
        snprintf (buf, size, "%s", text ? (const char *) text : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize (stmt);
    return rc;
}

/* One step of bringing db to schema version `count`, inside the caller's write transaction:
   a new (empty) database gets schema_sql; an older one gets migrations[version]. Sets *done when
   there is nothing left to do. 0, or -1 with the reason in why. */
static int
s_schema_step (sqlite3 *db, const char *path, const char *schema_sql,
               const char *const *migrations, const char *const *names, int count, bool *done,
               char *why, size_t whylen)
{
    int64_t version, objects, has_jobs;
    if (s_query_int (db, "PRAGMA user_version", &version) != SQLITE_OK ||
        s_query_int (db, "SELECT count(*) FROM sqlite_master", &objects) != SQLITE_OK ||
        s_query_int (db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
                     &has_jobs) != SQLITE_OK) {
        snprintf (why, whylen, "store: cannot open %s: %s", path, sqlite3_errmsg (db));
        return -1;
    }
    *done = false;
    if (version > count) {
        snprintf (why, whylen,
                  "store: %s has schema version %d, newer than this gridq-broker knows "
                  "(up to %d): it was written by a newer gridq; run that version (the store "
                  "never downgrades)",
                  path, (int) version, count);
        return -1;
    }
    char sql[64];
    if (version == 0 && objects == 0) {
        /* A new database: the full current schema in one go. */
        if (s_exec (db, schema_sql) != SQLITE_OK) {
            snprintf (why, whylen, "store: cannot create the schema in %s: %s", path,
                      sqlite3_errmsg (db));
            return -1;
        }
        snprintf (sql, sizeof sql, "PRAGMA user_version = %d", count);
        if (s_exec (db, sql) != SQLITE_OK) {
            snprintf (why, whylen, "store: cannot create the schema in %s: %s", path,
                      sqlite3_errmsg (db));
            return -1;
        }
        zsys_info ("store: created %s (schema version %d)", path, count);
        *done = true;
        return 0;
    }
    if (!has_jobs) {
        snprintf (why, whylen, "store: %s is not a gridq database (it has no jobs table)", path);
        return -1;
    }
    if (version == count) {
        *done = true;
        return 0;
    }
    if (s_exec (db, migrations[version]) != SQLITE_OK) {
        snprintf (why, whylen, "store: cannot upgrade %s to schema version %d (%s): %s", path,
                  (int) version + 1, names[version], sqlite3_errmsg (db));
        return -1;
    }
    /* Migrations run with foreign keys off (a table rebuild needs it, as SQLite's ALTER TABLE
       recipe says), so check what they left before it counts. */
    int64_t violations;
    if (s_query_int (db, "SELECT count(*) FROM pragma_foreign_key_check", &violations) !=
            SQLITE_OK ||
        violations > 0) {
        snprintf (why, whylen,
                  "store: cannot upgrade %s to schema version %d (%s): foreign key check "
                  "failed",
                  path, (int) version + 1, names[version]);
        return -1;
    }
    snprintf (sql, sizeof sql, "PRAGMA user_version = %d", (int) version + 1);
    if (s_exec (db, sql) != SQLITE_OK) {
        snprintf (why, whylen, "store: cannot upgrade %s to schema version %d: %s", path,
                  (int) version + 1, sqlite3_errmsg (db));
        return -1;
    }
    zsys_info ("store: upgraded %s to schema version %d (%s)", path, (int) version + 1,
               names[version]);
    return 0;
}

/* Brings db up to schema version count, one step per transaction: each migration commits or
   leaves nothing behind. The version is read inside each write transaction, so two processes
   opening one file at once cannot both apply a step. 0, or -1 with the reason in why. */
static int
s_schema_apply (sqlite3 *db, const char *path, const char *schema_sql,
                const char *const *migrations, const char *const *names, int count, char *why,
                size_t whylen)
{
    for (int step = 0; step <= count + 1; step++) {
        if (s_exec (db, "BEGIN IMMEDIATE") != SQLITE_OK) {
            snprintf (why, whylen, "store: cannot open %s: %s", path, sqlite3_errmsg (db));
            return -1;
        }
        bool done = false;
        if (s_schema_step (db, path, schema_sql, migrations, names, count, &done, why, whylen)) {
            s_exec (db, "ROLLBACK");
            return -1;
        }
        if (s_exec (db, "COMMIT") != SQLITE_OK) {
            snprintf (why, whylen, "store: cannot open %s: %s", path, sqlite3_errmsg (db));
            s_exec (db, "ROLLBACK");
            return -1;
        }
        if (done) {
            return 0;
        }
    }
    snprintf (why, whylen, "store: cannot open %s: migrations do not converge", path);
    return -1;
}

gq_store_t *
gq_store_open (const char *path, gq_durability_t durability, char *why, size_t whylen)
{
    /* SQLite's memory statistics take a global mutex on every allocation: 8% of the write path,
       for numbers nobody reads. A process-wide setting that only takes effect before SQLite's
       first use (later it fails harmlessly); the broker's one thread is the only SQLite user. */
    sqlite3_config (SQLITE_CONFIG_MEMSTATUS, 0);
    if (!path || !*path) {
        snprintf (why, whylen, "store: cannot open a database without a path");
        return NULL;
    }
    gq_store_t *self = calloc (1, sizeof *self);
    char *copy = strdup (path);
    if (!self || !copy) {
        snprintf (why, whylen, "store: cannot open %s: out of memory", path);
        free (self);
        free (copy);
        return NULL;
    }
    self->path = copy;

    /* NOMUTEX: the broker is one thread; SQLite's per-call mutexes would buy nothing. */
    int rc = sqlite3_open_v2 (path, &self->db,
                              SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                              NULL);
    if (rc != SQLITE_OK) {
        snprintf (why, whylen, "store: cannot open %s: %s", path,
                  self->db ? sqlite3_errmsg (self->db) : sqlite3_errstr (rc));
        gq_store_close (&self);
        return NULL;
    }
    sqlite3_busy_timeout (self->db, GQ_STORE_BUSY_MS);

    /* WAL: a commit appends to one file (no journal copy of each page), readers never block
       the writer. The first statement that reads the file also tells us whether it is a
       database at all. */
    char mode[32];
    if (s_query_text (self->db, "PRAGMA journal_mode = WAL", mode, sizeof mode) != SQLITE_OK) {
        snprintf (why, whylen, "store: cannot open %s: %s", path, sqlite3_errmsg (self->db));
        gq_store_close (&self);
        return NULL;
    }
    if (strcmp (mode, "wal") != 0 && strcmp (path, ":memory:") != 0) {
        zsys_warning ("store: %s: journal mode is %s, not wal", path, mode);
    }
    /* journal_size_limit: a burst can grow the WAL file far past the automatic checkpoint's
       1000 pages; after a checkpoint it is cut back to this instead of keeping its peak size. */
    char pragmas[256];
    snprintf (pragmas, sizeof pragmas,
              "PRAGMA synchronous = %s; PRAGMA cache_size = -%d; PRAGMA temp_store = MEMORY; "
              "PRAGMA journal_size_limit = %lld; PRAGMA foreign_keys = OFF",
              durability == GQ_DURABILITY_FULL ? "FULL" : "NORMAL", GQ_STORE_CACHE_KB,
              (long long) GQ_STORE_WAL_LIMIT_BYTES);
    if (s_exec (self->db, pragmas) != SQLITE_OK) {
        snprintf (why, whylen, "store: cannot open %s: %s", path, sqlite3_errmsg (self->db));
        gq_store_close (&self);
        return NULL;
    }
    if (s_schema_apply (self->db, path, gq_schema_sql, gq_migrations, gq_migration_names,
                        gq_migrations_count, why, whylen)) {
        gq_store_close (&self);
        return NULL;
    }
    self->version = gq_migrations_count;
    /* On only now: the cascade deletes attempts and blobs with their job (retention), and an
       attempt or blob of a job that does not exist is refused. */
    if (s_exec (self->db, "PRAGMA foreign_keys = ON") != SQLITE_OK) {
        snprintf (why, whylen, "store: cannot open %s: %s", path, sqlite3_errmsg (self->db));
        gq_store_close (&self);
        return NULL;
    }
    /* The jobs a retention run chose (S_PURGE_PICK): this connection's own, in memory. */
    if (s_exec (self->db, "CREATE TEMP TABLE purging (id INTEGER PRIMARY KEY, "
                          "state INTEGER NOT NULL)") != SQLITE_OK) {
        snprintf (why, whylen, "store: cannot open %s: %s", path, sqlite3_errmsg (self->db));
        gq_store_close (&self);
        return NULL;
    }
    for (int i = 0; i < S_STMTS; i++) {
        rc = sqlite3_prepare_v3 (self->db, s_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                 &self->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            /* Only a schema that differs from what this code expects gets here. */
            snprintf (why, whylen, "store: %s: cannot prepare \"%s\": %s", path, s_sql[i],
                      sqlite3_errmsg (self->db));
            gq_store_close (&self);
            return NULL;
        }
    }
    return self;
}

void
gq_store_close (gq_store_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_store_t *self = *self_p;
    for (int i = 0; i < S_STMTS; i++) {
        sqlite3_finalize (self->stmt[i]);
    }
    if (self->db) {
        /* No "PRAGMA optimize" here: without sqlite_stat1 the planner picks the plans that the
           selftest checks (indexes for recovery and retention) whatever the table holds today;
           statistics gathered at one shutdown could turn a plan into a scan later. */
        if (!sqlite3_get_autocommit (self->db)) {
            s_exec (self->db, "ROLLBACK");
        }
        sqlite3_close (self->db);
    }
    free (self->path);
    free (self);
    *self_p = NULL;
}

/* ---- Transactions ---------------------------------------------------------------------------- */

int
gq_store_begin (gq_store_t *self)
{
    if (!sqlite3_get_autocommit (self->db)) {
        return s_error (self, GQ_ESTORE, "begin", "a transaction is open already");
    }
    return s_step_done (self, self->stmt[S_BEGIN], "begin");
}

int
gq_store_commit (gq_store_t *self)
{
    if (sqlite3_get_autocommit (self->db)) {
        /* SQLite rolled the transaction back by itself (disk full, I/O error): the turn's
           writes are gone, and saying so here keeps them from being acknowledged. */
        return s_error (self, GQ_ESTORE, "commit", "no transaction is open (rolled back)");
    }
    return s_step_done (self, self->stmt[S_COMMIT], "commit");
}

int
gq_store_rollback (gq_store_t *self)
{
    if (sqlite3_get_autocommit (self->db)) {
        return s_ok (self);
    }
    return s_step_done (self, self->stmt[S_ROLLBACK], "rollback");
}

int
gq_store_group_begin (gq_store_t *self)
{
    return s_step_done (self, self->stmt[S_SAVEPOINT], "savepoint");
}

int
gq_store_group_end (gq_store_t *self, bool keep)
{
    int rc = keep ? GQ_OK : s_step_done (self, self->stmt[S_ROLLBACK_TO], "rollback to savepoint");
    int released = s_step_done (self, self->stmt[S_RELEASE], "release savepoint");
    return rc ? rc : released;
}

/* sqlite3_wal_hook: remembers the WAL's size after each commit; 0 keeps SQLite going. */
static int
s_wal_hook (void *arg, sqlite3 *db, const char *name, int pages)
{
    ((gq_store_t *) arg)->wal_pages = pages;
    return SQLITE_OK;
}

int
gq_store_wal_pages (gq_store_t *self)
{
    return self->wal_pages;
}

int
gq_store_autocheckpoint (gq_store_t *self, bool on)
{
    /* Either SQLite's checkpoint after commits past 1000 pages, or (off) a hook that only counts
       them, for the caller to have the checkpoint done elsewhere. */
    if (on) {
        sqlite3_wal_autocheckpoint (self->db, 1000);
    } else {
        sqlite3_wal_hook (self->db, s_wal_hook, self);
    }
    return s_ok (self);
}

int
gq_store_checkpoint (gq_store_t *self)
{
    if (sqlite3_wal_checkpoint_v2 (self->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) !=
        SQLITE_OK) {
        return s_fail (self, "checkpoint");
    }
    return s_ok (self);
}

int
gq_store_max_pages (gq_store_t *self, int64_t pages)
{
    /* SQLite raises a maximum below the file's size to that size: -1 means "no growth". */
    char sql[64];
    snprintf (sql, sizeof sql, "PRAGMA max_page_count = %lld",
              (long long) (pages < 0 ? 1 : pages ? pages : 1073741823));
    if (sqlite3_exec (self->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        return s_fail (self, "max_page_count");
    }
    return s_ok (self);
}

bool
gq_store_row_fault (gq_store_t *self)
{
    return self->error && self->row_fault;
}

bool
gq_store_in_transaction (gq_store_t *self)
{
    return !sqlite3_get_autocommit (self->db);
}

const char *
gq_store_errmsg (gq_store_t *self)
{
    return self->errmsg;
}

int
gq_store_error (gq_store_t *self)
{
    return self->error;
}

int
gq_store_schema_version (gq_store_t *self)
{
    return self->version;
}

/* ---- Writes ---------------------------------------------------------------------------------- */

int
gq_store_job_insert (gq_store_t *self, gq_job_t *job, const char *kind, const char *model,
                     const char *idem, const char *client, int64_t *existing_id)
{
    if (!job || !job->payload || !kind || !*kind) {
        return s_error (self, GQ_EINVAL, "insert job", "no payload or no kind");
    }
    if (idem && *idem && existing_id) {
        /* A lookup before the insert rather than a caught constraint error: a failed statement
           inside the group transaction is not worth the risk, and the index makes this cheap. */
        int found = gq_store_job_by_idem (self, idem, existing_id);
        if (found) {
            return found; /* 1, or GQ_ESTORE */
        }
    }
    sqlite3_stmt *stmt = self->stmt[S_JOB_INSERT];
    const gq_constraints_t *c = job->constraints;
    s_bind_text (stmt, 1, idem);
    sqlite3_bind_text (stmt, 2, kind, -1, SQLITE_STATIC);
    s_bind_text (stmt, 3, model);
    sqlite3_bind_int (stmt, 4, job->min_vram_mb);
    sqlite3_bind_int (stmt, 5, job->priority);
    s_bind_text (stmt, 6, c ? c->gpu_pattern : NULL);
    if (c && c->max_price >= 0) {
        sqlite3_bind_double (stmt, 7, c->max_price);
    } else {
        sqlite3_bind_null (stmt, 7);
    }
    if (c && c->min_tflops > 0) {
        sqlite3_bind_double (stmt, 8, c->min_tflops);
    } else {
        sqlite3_bind_null (stmt, 8);
    }
    sqlite3_bind_int64 (stmt, 9, job->timeout_ms);
    sqlite3_bind_int (stmt, 10, job->max_attempts);
    sqlite3_bind_text (stmt, 11, job->payload, (int) job->payload_len, SQLITE_STATIC);
    sqlite3_bind_int64 (stmt, 12, job->submitted_ms);
    s_bind_text (stmt, 13, client);
    if (job->id > 0) {
        sqlite3_bind_int64 (stmt, 14, job->id);
    } else {
        sqlite3_bind_null (stmt, 14);
    }
    int err = s_step_done (self, stmt, "insert job");
    if (err) {
        return err;
    }
    job->id = sqlite3_last_insert_rowid (self->db);
    return GQ_OK;
}

/* "in" and "out" are the only directions. */
static bool
s_valid_direction (const char *direction)
{
    return direction && (strcmp (direction, "in") == 0 || strcmp (direction, "out") == 0);
}

int
gq_store_job_blob_insert (gq_store_t *self, int64_t job_id, const char *direction, int idx,
                          const void *data, size_t size)
{
    if (!s_valid_direction (direction) || idx < 0 || (!data && size > 0)) {
        return s_error (self, GQ_EINVAL, "insert blob", "bad direction, index or data");
    }
    sqlite3_stmt *stmt = self->stmt[S_BLOB_INSERT];
    sqlite3_bind_int64 (stmt, 1, job_id);
    sqlite3_bind_text (stmt, 2, direction, -1, SQLITE_STATIC);
    sqlite3_bind_int (stmt, 3, idx);
    if (size > 0) {
        sqlite3_bind_blob64 (stmt, 4, data, size, SQLITE_STATIC);
    } else {
        sqlite3_bind_zeroblob (stmt, 4, 0);   /* a NULL pointer would bind SQL NULL */
    }
    return s_step_done (self, stmt, "insert blob");
}

void
gq_store_blobs_free (void **data, size_t *sizes, int n)
{
    for (int i = 0; data && i < n; i++) {
        free (data[i]);
    }
    free (data);
    free (sizes);
}

int
gq_store_job_blobs (gq_store_t *self, int64_t job_id, const char *direction, void ***data_p,
                    size_t **sizes_p)
{
    *data_p = NULL;
    *sizes_p = NULL;
    if (!s_valid_direction (direction)) {
        return s_error (self, GQ_EINVAL, "read blobs", "bad direction");
    }
    sqlite3_stmt *stmt = self->stmt[S_BLOBS];
    sqlite3_bind_int64 (stmt, 1, job_id);
    sqlite3_bind_text (stmt, 2, direction, -1, SQLITE_STATIC);
    void **data = NULL;
    size_t *sizes = NULL;
    int n = 0, err = GQ_OK, rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        size_t size = (size_t) sqlite3_column_bytes (stmt, 0);
        const void *bytes = sqlite3_column_blob (stmt, 0);
        void **more_data = realloc (data, (size_t) (n + 1) * sizeof *data);
        if (more_data) {
            data = more_data;
        }
        size_t *more_sizes = realloc (sizes, (size_t) (n + 1) * sizeof *sizes);
        if (more_sizes) {
            sizes = more_sizes;
        }
        void *copy = malloc (size ? size : 1);
        if (!more_data || !more_sizes || !copy) {
            free (copy);
            err = s_error (self, GQ_ENOMEM, "read blobs", "out of memory");
            break;
        }
        if (size) {
            memcpy (copy, bytes, size);
        }
        data[n] = copy;
        sizes[n] = size;
        n++;
    }
    if (!err && rc != SQLITE_DONE) {
        err = s_fail (self, "read blobs");
    }
    sqlite3_reset (stmt);
    if (err) {
        gq_store_blobs_free (data, sizes, n);
        return err;
    }
    *data_p = data;
    *sizes_p = sizes;
    s_ok (self);
    return n;
}

/* One run of a job, as gq_store_attempt_record records it. */
typedef struct {
    int64_t job_id;
    int attempt;
    const char *node;
    int64_t started_ms, finished_ms;
    const char *outcome, *reason;
    bool update;
} s_run_t;

/* Steps one of the attempt statements with the run's values bound (?1 job, ?2 attempt, ?3 node,
   ?4 start, ?5 end, ?6 outcome, ?7 reason, ?8 update: as many as its SQL names). GQ_OK with
   *changed whether a row changed, or GQ_ESTORE. */
static int
s_run_step (gq_store_t *self, s_stmt_t which, const s_run_t *run, bool *changed)
{
    sqlite3_stmt *stmt = self->stmt[which];
    int params = sqlite3_bind_parameter_count (stmt);
    sqlite3_bind_int64 (stmt, 1, run->job_id);
    sqlite3_bind_int (stmt, 2, run->attempt);
    sqlite3_bind_text (stmt, 3, run->node, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (stmt, 4, run->started_ms);
    s_bind_time (stmt, 5, run->finished_ms);
    sqlite3_bind_text (stmt, 6, run->outcome, -1, SQLITE_STATIC);
    s_bind_text (stmt, 7, run->reason);
    if (params >= 8) {
        sqlite3_bind_int (stmt, 8, run->update);
    }
    int rc = s_step_done (self, stmt, "record attempt");
    *changed = rc == GQ_OK && sqlite3_changes (self->db) > 0;
    return rc;
}

int
gq_store_attempt_record (gq_store_t *self, int64_t job_id, int attempt, const char *node,
                         int64_t started_ms, int64_t finished_ms, const char *outcome,
                         const char *reason, bool update)
{
    bool known = false;
    for (size_t i = 0; outcome && i < sizeof s_outcomes / sizeof s_outcomes[0]; i++) {
        known = known || strcmp (outcome, s_outcomes[i]) == 0;
    }
    if (!known || !node || attempt < 1) {
        return s_error (self, GQ_EINVAL, "record attempt", "bad outcome, node or number");
    }
    s_run_t run = {job_id, attempt, node, started_ms, finished_ms, outcome, reason, update};
    bool changed = false;
    int rc = s_run_step (self, S_ATTEMPT_INSERT, &run, &changed);
    if (rc || changed) {
        return rc;
    }
    /* The number is taken: by this run (recorded already, kept) or by another node's. */
    sqlite3_stmt *stmt = self->stmt[S_ATTEMPT_NODE];
    sqlite3_bind_int64 (stmt, 1, job_id);
    sqlite3_bind_int (stmt, 2, attempt);
    rc = sqlite3_step (stmt);
    bool other = rc == SQLITE_ROW &&
                 strcmp ((const char *) sqlite3_column_text (stmt, 0) ?: "", node) != 0;
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? GQ_OK : s_fail (self, "record attempt");
    sqlite3_reset (stmt);
    if (rc || !other) {
        return rc ? rc : s_ok (self);
    }
    if (update && ((rc = s_run_step (self, S_ATTEMPT_SAME_RUN, &run, &changed)) || changed)) {
        return rc;
    }
    return s_run_step (self, S_ATTEMPT_NEXT, &run, &changed);
}

int
gq_store_job_finish (gq_store_t *self, int64_t job_id, int state, int attempts, const char *node,
                     int64_t started_ms, int64_t finished_ms, const char *result,
                     size_t result_len, const char *error)
{
    /* finished_at > 0 is what retention selects on: a job without it would never go. */
    if (!gq_job_state_final (state) || state >= GQ_JOB_STATES || finished_ms <= 0 ||
        result_len > INT32_MAX) {
        return s_error (self, GQ_EINVAL, "finish job", "bad state, time or result");
    }
    sqlite3_stmt *stmt = self->stmt[S_JOB_FINISH];
    sqlite3_bind_int64 (stmt, 1, job_id);
    sqlite3_bind_int (stmt, 2, state);
    sqlite3_bind_int (stmt, 3, attempts);
    s_bind_text (stmt, 4, node);
    s_bind_time (stmt, 5, started_ms);
    sqlite3_bind_int64 (stmt, 6, finished_ms);
    if (result) {
        sqlite3_bind_text (stmt, 7, result, (int) result_len, SQLITE_STATIC);
    } else {
        sqlite3_bind_null (stmt, 7);
    }
    if (error) {
        sqlite3_bind_text (stmt, 8, error, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null (stmt, 8);
    }
    int err = s_step_done (self, stmt, "finish job");
    if (err || sqlite3_changes (self->db) == 1) {
        return err;
    }
    /* Nothing changed: tell "ended already" from "no such job" (rare, so a second look). */
    stmt = self->stmt[S_JOB_STATE];
    sqlite3_bind_int64 (stmt, 1, job_id);
    int rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        err = s_error (self, GQ_ESTATE, "finish job", "the job has ended already");
    } else if (rc == SQLITE_DONE) {
        err = s_error (self, GQ_ENOTFOUND, "finish job", "no such job");
    } else {
        err = s_fail (self, "finish job");
    }
    sqlite3_reset (stmt);
    return err;
}

int
gq_store_node_upsert (gq_store_t *self, const char *name, const char *gpu_model,
                      int64_t vram_total_mb, double tflops, double price, int64_t now_ms,
                      int64_t jobs_ok, int64_t jobs_failed)
{
    if (!name || !*name) {
        return s_error (self, GQ_EINVAL, "upsert node", "no name");
    }
    sqlite3_stmt *stmt = self->stmt[S_NODE_UPSERT];
    sqlite3_bind_text (stmt, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text (stmt, 2, gpu_model ? gpu_model : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64 (stmt, 3, vram_total_mb);
    sqlite3_bind_double (stmt, 4, tflops);
    sqlite3_bind_double (stmt, 5, price);
    sqlite3_bind_int64 (stmt, 6, now_ms);
    sqlite3_bind_int64 (stmt, 7, jobs_ok);
    sqlite3_bind_int64 (stmt, 8, jobs_failed);
    return s_step_done (self, stmt, "upsert node");
}

/* ---- Recovery -------------------------------------------------------------------------------- */

/* Attempt rows of one job read back: their count, and the nodes that failed it. */
typedef struct {
    int count;                                         /* attempt rows */
    size_t n_excluded;                                 /* used entries of names */
    char names[GQ_MAX_ATTEMPTS_LIMIT][GQ_NAME_MAX];    /* distinct, oldest first */
    const char *excluded[GQ_MAX_ATTEMPTS_LIMIT];       /* pointers into names, for the callback */
} s_attempts_t;

static int
s_attempts_read (gq_store_t *self, int64_t job_id, s_attempts_t *out)
{
    out->count = 0;
    out->n_excluded = 0;
    sqlite3_stmt *stmt = self->stmt[S_ATTEMPTS];
    sqlite3_bind_int64 (stmt, 1, job_id);
    int rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        int number = sqlite3_column_int (stmt, 0);
        out->count = number > out->count ? number : out->count;
        const char *node = (const char *) sqlite3_column_text (stmt, 1);
        const char *outcome = (const char *) sqlite3_column_text (stmt, 4);
        bool excluding = false;
        for (int i = 0; outcome && i < S_EXCLUDING_OUTCOMES; i++) {
            excluding = excluding || strcmp (outcome, s_outcomes[i]) == 0;
        }
        bool seen = false;
        for (size_t i = 0; excluding && node && i < out->n_excluded; i++) {
            seen = seen || strncmp (out->names[i], node, GQ_NAME_MAX - 1) == 0;
        }
        if (excluding && node && !seen && out->n_excluded < GQ_MAX_ATTEMPTS_LIMIT) {
            snprintf (out->names[out->n_excluded], GQ_NAME_MAX, "%s", node);
            out->excluded[out->n_excluded] = out->names[out->n_excluded];
            out->n_excluded++;
        }
    }
    int err = rc == SQLITE_DONE ? GQ_OK : s_fail (self, "recover: read attempts");
    sqlite3_reset (stmt);
    return err;
}

int
gq_store_recover (gq_store_t *self, gq_store_recover_fn *fn, void *arg)
{
    s_attempts_t *attempts = malloc (sizeof *attempts);
    if (!attempts) {
        return s_error (self, GQ_ENOMEM, "recover", "out of memory");
    }
    sqlite3_stmt *lost = self->stmt[S_ATTEMPTS_LOST];
    sqlite3_bind_int64 (lost, 1, gq_now_ms ());
    if (s_step_done (self, lost, "recover: runs the broker lost")) {
        free (attempts);
        return self->error;
    }
    /* One statement, one read snapshot: the attempt reads below share it. */
    sqlite3_stmt *stmt = self->stmt[S_RECOVER];
    int rc, err = GQ_OK;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        gq_job_row_t row;
        s_row_read (stmt, &row);
        err = s_attempts_read (self, row.id, attempts);
        if (err) {
            break;
        }
        row.state = GQ_JOB_QUEUED;
        if (attempts->count > row.attempts) {
            row.attempts = attempts->count;
        }
        err = fn (arg, &row, attempts->excluded, attempts->n_excluded);
        if (err) {
            break;
        }
    }
    if (!err && rc != SQLITE_DONE) {
        err = s_fail (self, "recover");
    }
    sqlite3_reset (stmt);
    free (attempts);
    if (!err) {
        s_ok (self);
    }
    return err;
}

/* ---- Queries --------------------------------------------------------------------------------- */

/* An RFC 3339 string, or null for 0. */
static json_t *
s_time_json (int64_t ms)
{
    char buf[GQ_TIME_BUF];
    return ms > 0 ? json_string (gq_format_time (ms, buf)) : json_null ();
}

/* The job's attempts as [{attempt, node, started_at, finished_at, outcome, reason}]. */
static json_t *
s_attempts_json (gq_store_t *self, int64_t job_id)
{
    json_t *list = json_array ();
    if (!list) {
        s_error (self, GQ_ENOMEM, "read attempts", "out of memory");
        return NULL;
    }
    sqlite3_stmt *stmt = self->stmt[S_ATTEMPTS];
    sqlite3_bind_int64 (stmt, 1, job_id);
    int rc;
    bool ok = true;
    while (ok && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        const char *reason = (const char *) sqlite3_column_text (stmt, 5);
        json_t *item = json_pack ("{s:i, s:s?, s:o, s:o, s:s?, s:s?}", "attempt",
                                  sqlite3_column_int (stmt, 0), "node",
                                  (const char *) sqlite3_column_text (stmt, 1), "started_at",
                                  s_time_json (sqlite3_column_int64 (stmt, 2)), "finished_at",
                                  s_time_json (sqlite3_column_int64 (stmt, 3)), "outcome",
                                  (const char *) sqlite3_column_text (stmt, 4), "reason", reason);
        ok = item && json_array_append_new (list, item) == 0;
    }
    if (!ok) {
        s_error (self, GQ_ENOMEM, "read attempts", "out of memory");
    } else if (rc != SQLITE_DONE) {
        s_fail (self, "read attempts");
        ok = false;
    }
    sqlite3_reset (stmt);
    if (!ok) {
        json_decref (list);
        return NULL;
    }
    return list;
}

json_t *
gq_store_job_brief_json (gq_store_t *self, int64_t job_id, bool with_payload)
{
    sqlite3_stmt *stmt = self->stmt[S_JOB_GET];
    sqlite3_bind_int64 (stmt, 1, job_id);
    sqlite3_bind_int (stmt, 2, with_payload);
    int rc = sqlite3_step (stmt);
    json_t *job = NULL;
    if (rc == SQLITE_ROW) {
        gq_job_row_t row;
        s_row_read (stmt, &row);
        job = gq_job_row_json (&row);
        if (!job) {
            s_error (self, GQ_ENOMEM, "read job", "out of memory");
        }
    } else if (rc == SQLITE_DONE) {
        s_error (self, GQ_ENOTFOUND, "read job", "no such job");
    } else {
        s_fail (self, "read job");
    }
    sqlite3_reset (stmt);
    if (job) {
        s_ok (self);
    }
    return job;
}

int
gq_store_job_text (gq_store_t *self, int64_t job_id, zchunk_t *out)
{
    sqlite3_stmt *stmt = self->stmt[S_JOB_GET];
    sqlite3_bind_int64 (stmt, 1, job_id);
    sqlite3_bind_int (stmt, 2, 0);
    int rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        gq_job_row_t row;
        s_row_read (stmt, &row);
        gq_job_row_text (out, &row);
    }
    int found = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : s_fail (self, "read job");
    sqlite3_reset (stmt);
    if (found >= 0) {
        s_ok (self);
    }
    return found;
}

json_t *
gq_store_job_json (gq_store_t *self, int64_t job_id, bool with_payload)
{
    json_t *job = gq_store_job_brief_json (self, job_id, with_payload);
    if (!job) {
        return NULL;
    }
    json_t *detail = s_attempts_json (self, job_id);
    const char *state = json_string_value (json_object_get (job, "state"));
    json_t *node = json_object_get (job, "node");
    if (detail && json_array_size (detail) == 0 && state && strcmp (state, "done") == 0 &&
        json_is_string (node)) {
        /* A first attempt that succeeded has no row of its own: the job's row tells it. */
        json_array_append_new (
            detail, json_pack ("{s:O, s:O, s:O, s:O, s:s, s:n}", "attempt",
                               json_object_get (job, "attempts"), "node", node, "started_at",
                               json_object_get (job, "started_at"), "finished_at",
                               json_object_get (job, "finished_at"), "outcome", "ok", "reason"));
    }
    if (!detail || json_object_set_new (job, "attempts_detail", detail) != 0) {
        json_decref (job);
        return NULL;
    }
    s_ok (self);
    return job;
}

/* A job row of stmt as JSON (new reference, NULL when out of memory). */
static json_t *
s_job_row_json (sqlite3_stmt *stmt)
{
    gq_job_row_t row;
    s_row_read (stmt, &row);
    return gq_job_row_json (&row);
}

/* A node row of stmt (S_NODES) as JSON (new reference, NULL when out of memory). */
static json_t *
s_node_row_json (sqlite3_stmt *stmt)
{
    return json_pack ("{s:s?, s:s?, s:I, s:f, s:f, s:o, s:o, s:I, s:I}", "name",
                      (const char *) sqlite3_column_text (stmt, 0), "gpu_model",
                      (const char *) sqlite3_column_text (stmt, 1), "vram_total_mb",
                      (json_int_t) sqlite3_column_int64 (stmt, 2), "tflops",
                      sqlite3_column_double (stmt, 3), "price_per_hour",
                      sqlite3_column_double (stmt, 4), "first_seen",
                      s_time_json (sqlite3_column_int64 (stmt, 5)), "last_seen",
                      s_time_json (sqlite3_column_int64 (stmt, 6)), "jobs_ok",
                      (json_int_t) sqlite3_column_int64 (stmt, 7), "jobs_failed",
                      (json_int_t) sqlite3_column_int64 (stmt, 8));
}

/* Every row of a bound statement as a JSON array (new reference), each made by row_json; NULL
   with the store's error set (what names the step in it). The statement is reset. */
static json_t *
s_rows_json (gq_store_t *self, sqlite3_stmt *stmt, json_t *(*row_json) (sqlite3_stmt *),
             const char *what)
{
    json_t *list = json_array ();
    int rc = SQLITE_DONE;
    bool ok = list != NULL;
    while (ok && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        json_t *item = row_json (stmt);
        ok = item && json_array_append_new (list, item) == 0;
    }
    if (!ok) {
        s_error (self, GQ_ENOMEM, what, "out of memory");
    } else if (rc != SQLITE_DONE) {
        s_fail (self, what);
        ok = false;
    }
    sqlite3_reset (stmt);
    if (!ok) {
        json_decref (list);
        return NULL;
    }
    s_ok (self);
    return list;
}

json_t *
gq_store_jobs_json (gq_store_t *self, int state, int64_t below, size_t limit)
{
    sqlite3_stmt *stmt = self->stmt[state < 0 ? S_JOBS_ALL : S_JOBS_IN_STATE];
    sqlite3_bind_int64 (stmt, 1, limit > INT64_MAX ? INT64_MAX : (int64_t) limit);
    if (state >= 0) {
        sqlite3_bind_int (stmt, 2, state);
    }
    sqlite3_bind_int64 (stmt, 3, below);
    return s_rows_json (self, stmt, s_job_row_json, "list jobs");
}

json_t *
gq_store_nodes_json (gq_store_t *self)
{
    return s_rows_json (self, self->stmt[S_NODES], s_node_row_json, "list nodes");
}

int
gq_store_counts (gq_store_t *self, int64_t counts[GQ_JOB_STATES])
{
    memset (counts, 0, GQ_JOB_STATES * sizeof counts[0]);
    sqlite3_stmt *stmt = self->stmt[S_COUNTS];
    int rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        int state = sqlite3_column_int (stmt, 0);
        if (state >= 0 && state < GQ_JOB_STATES) {
            counts[state] = sqlite3_column_int64 (stmt, 1);
        }
    }
    int err = rc == SQLITE_DONE ? s_ok (self) : s_fail (self, "count jobs");
    sqlite3_reset (stmt);
    return err;
}

int
gq_store_purge (gq_store_t *self, int64_t before_ms, int limit, int64_t purged[GQ_JOB_STATES])
{
    if (purged) {
        memset (purged, 0, GQ_JOB_STATES * sizeof purged[0]);
    }
    if (limit <= 0) {
        return s_ok (self);
    }
    sqlite3_stmt *pick = self->stmt[S_PURGE_PICK];
    sqlite3_bind_int64 (pick, 1, before_ms);
    sqlite3_bind_int (pick, 2, limit);
    int err = s_step_done (self, self->stmt[S_PURGE_CLEAR], "purge: clear");
    err = err ? err : s_step_done (self, pick, "purge: pick");
    if (!err && purged) {
        sqlite3_stmt *stmt = self->stmt[S_PURGE_COUNTS];
        int rc;
        while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
            int state = sqlite3_column_int (stmt, 0);
            if (state >= 0 && state < GQ_JOB_STATES) {
                purged[state] = sqlite3_column_int64 (stmt, 1);
            }
        }
        err = rc == SQLITE_DONE ? GQ_OK : s_fail (self, "purge: count");
        sqlite3_reset (stmt);
    }
    err = err ? err : s_step_done (self, self->stmt[S_PURGE_TALLY], "purge: arrays' tallies");
    err = err ? err : s_step_done (self, self->stmt[S_PURGE], "purge");
    /* sqlite3_changes counts the jobs only, not the cascaded attempts and blobs. */
    int jobs = err ? 0 : sqlite3_changes (self->db);
    if (!err && jobs > 0) {
        err = s_step_done (self, self->stmt[S_PURGE_ARRAYS], "purge: arrays");
    }
    return err ? err : jobs;
}

int64_t
gq_store_max_id (gq_store_t *self)
{
    int64_t id = 0; /* max() of no rows is NULL: read as 0 */
    int rc = s_step_int64 (self, self->stmt[S_MAX_ID], "max id", &id);
    return rc < 0 ? rc : id;
}

int
gq_store_job_by_idem (gq_store_t *self, const char *idem, int64_t *id)
{
    if (!idem || !*idem) {
        return s_error (self, GQ_EINVAL, "idem lookup", "no key");
    }
    sqlite3_bind_text (self->stmt[S_JOB_BY_IDEM], 1, idem, -1, SQLITE_STATIC);
    return s_step_int64 (self, self->stmt[S_JOB_BY_IDEM], "idem lookup", id);
}

int
gq_store_meta_get (gq_store_t *self, const char *key, int64_t *value)
{
    sqlite3_bind_text (self->stmt[S_META_GET], 1, key, -1, SQLITE_STATIC);
    int rc = s_step_int64 (self, self->stmt[S_META_GET], "read meta", value);
    return rc < 0 ? rc : GQ_OK;
}

int
gq_store_meta_set (gq_store_t *self, const char *key, int64_t value)
{
    sqlite3_stmt *stmt = self->stmt[S_META_SET];
    sqlite3_bind_text (stmt, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (stmt, 2, value);
    return s_step_done (self, stmt, "write meta");
}

/* ---- Dependencies ---------------------------------------------------------------------------- */

int
gq_store_dep_insert (gq_store_t *self, int64_t child, int64_t parent, int kind, const char *name,
                     bool inputs)
{
    if (child <= 0 || parent <= 0 || kind < 0 || kind >= GQ_DEP_KINDS) {
        return s_error (self, GQ_EINVAL, "insert dependency", "bad id or kind");
    }
    sqlite3_stmt *stmt = self->stmt[S_DEP_INSERT];
    sqlite3_bind_int64 (stmt, 1, child);
    sqlite3_bind_int64 (stmt, 2, parent);
    sqlite3_bind_text (stmt, 3, gq_dep_names[kind], -1, SQLITE_STATIC);
    if (name && *name) {
        sqlite3_bind_text (stmt, 4, name, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null (stmt, 4);
    }
    sqlite3_bind_int (stmt, 5, inputs);
    return s_step_done (self, stmt, "insert dependency");
}

/* The results of the elements first .. first + count - 1 of an array, in index order (null for
   an element without one, or purged). A new reference, or NULL when the store fails. */
static json_t *
s_array_results (gq_store_t *self, int64_t first, int64_t count)
{
    json_t *results = json_array ();
    for (int64_t k = 0; results && k < count; k++) {
        if (json_array_append_new (results, json_null ())) {
            json_decref (results);
            results = NULL;
        }
    }
    sqlite3_stmt *stmt = self->stmt[S_ARRAY_RESULTS];
    sqlite3_bind_int64 (stmt, 1, first);
    sqlite3_bind_int64 (stmt, 2, first + count - 1);
    int rc = SQLITE_DONE;
    while (results && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        const char *text = (const char *) sqlite3_column_text (stmt, 1);
        json_t *result = text ? json_loads (text, JSON_DECODE_ANY, NULL) : NULL;
        if (result) {
            json_array_set_new (results, (size_t) (sqlite3_column_int64 (stmt, 0) - first),
                                result);
        }
    }
    if (results && rc != SQLITE_DONE) {
        s_fail (self, "read an array's results");
        json_decref (results);
        results = NULL;
    }
    sqlite3_reset (stmt);
    return results;
}

json_t *
gq_store_dep_inputs (gq_store_t *self, int64_t child)
{
    sqlite3_stmt *stmt = self->stmt[S_DEP_INPUTS];
    sqlite3_bind_int64 (stmt, 1, child);
    json_t *inputs = json_object ();
    int rc = SQLITE_DONE;
    while (inputs && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        char key[32];
        const char *name = (const char *) sqlite3_column_text (stmt, 1);
        if (!name) {
            snprintf (key, sizeof key, "%lld", (long long) sqlite3_column_int64 (stmt, 0));
            name = key;
        }
        const char *text = (const char *) sqlite3_column_text (stmt, 2);
        json_t *result = NULL;
        if (sqlite3_column_type (stmt, 3) != SQLITE_NULL) {
            /* An array: its elements' results. The statement waits, open, meanwhile. */
            result = s_array_results (self, sqlite3_column_int64 (stmt, 3),
                                      sqlite3_column_int64 (stmt, 4));
            if (!result) {
                json_decref (inputs);
                inputs = NULL;
                break;
            }
        } else if (text) {
            result = json_loads (text, JSON_DECODE_ANY, NULL);
        }
        json_object_set_new (inputs, name, result ? result : json_null ());
    }
    if (inputs && rc != SQLITE_DONE) {
        s_fail (self, "read inputs");
        json_decref (inputs);
        inputs = NULL;
    }
    sqlite3_reset (stmt);
    return inputs;
}

int
gq_store_job_state (gq_store_t *self, int64_t job_id)
{
    int64_t state = -1;
    sqlite3_bind_int64 (self->stmt[S_JOB_STATE], 1, job_id);
    int found = s_step_int64 (self, self->stmt[S_JOB_STATE], "job state", &state);
    if (found == 0) {
        return s_error (self, GQ_ENOTFOUND, "job state", "no such job");
    }
    return found < 0 ? found : (int) state;
}

int
gq_store_array_insert (gq_store_t *self, int64_t id, int64_t first, int64_t count,
                       const char *spec, int64_t submitted_ms)
{
    if (id <= 0 || first <= id || count <= 0 || !spec) {
        return s_error (self, GQ_EINVAL, "insert array", "bad id, range or spec");
    }
    sqlite3_stmt *stmt = self->stmt[S_ARRAY_INSERT];
    sqlite3_bind_int64 (stmt, 1, id);
    sqlite3_bind_int64 (stmt, 2, first);
    sqlite3_bind_int64 (stmt, 3, count);
    sqlite3_bind_text (stmt, 4, spec, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (stmt, 5, submitted_ms);
    return s_step_done (self, stmt, "insert array");
}

int
gq_store_job_reload (gq_store_t *self, int64_t id, gq_store_recover_fn *fn, void *arg)
{
    s_attempts_t *attempts = malloc (sizeof *attempts);
    if (!attempts) {
        return s_error (self, GQ_ENOMEM, "reload", "out of memory");
    }
    sqlite3_stmt *stmt = self->stmt[S_JOB_GET];
    sqlite3_bind_int64 (stmt, 1, id);
    sqlite3_bind_int (stmt, 2, 1);
    int rc = sqlite3_step (stmt), err = GQ_OK;
    if (rc == SQLITE_ROW) {
        gq_job_row_t row;
        s_row_read (stmt, &row);
        err = s_attempts_read (self, row.id, attempts);
        if (!err) {
            if (attempts->count > row.attempts) {
                row.attempts = attempts->count;
            }
            err = fn (arg, &row, attempts->excluded, attempts->n_excluded);
        }
    } else {
        err = rc == SQLITE_DONE ? s_error (self, GQ_ENOTFOUND, "reload", "no such job")
                                : s_fail (self, "reload");
    }
    sqlite3_reset (stmt);
    free (attempts);
    if (!err) {
        s_ok (self);
    }
    return err;
}

int
gq_store_dep_children (gq_store_t *self, int64_t parent, gq_store_child_fn *fn, void *arg)
{
    sqlite3_stmt *stmt = self->stmt[S_DEP_CHILDREN];
    sqlite3_bind_int64 (stmt, 1, parent);
    int rc, err = GQ_OK;
    while (!err && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        err = fn (arg, sqlite3_column_int64 (stmt, 0), sqlite3_column_int (stmt, 1),
                  (const char *) sqlite3_column_text (stmt, 2));
    }
    if (!err && rc != SQLITE_DONE) {
        err = s_fail (self, "dependents");
    }
    sqlite3_reset (stmt);
    if (!err) {
        s_ok (self);
    }
    return err;
}

int
gq_store_job_retry (gq_store_t *self, int64_t id, int max_attempts)
{
    sqlite3_stmt *stmt = self->stmt[S_JOB_RETRY];
    sqlite3_bind_int64 (stmt, 1, id);
    sqlite3_bind_int (stmt, 2, max_attempts);
    return s_step_done (self, stmt, "retry");
}

int
gq_store_arrays_recover (gq_store_t *self, gq_store_array_fn *fn, void *arg)
{
    sqlite3_stmt *stmt = self->stmt[S_ARRAYS];
    sqlite3_stmt *ended = self->stmt[S_ARRAY_ENDED];
    int rc, err = GQ_OK;
    while (!err && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        int64_t first = sqlite3_column_int64 (stmt, 1), count = sqlite3_column_int64 (stmt, 2);
        int64_t by_state[GQ_JOB_STATES] = {0};
        sqlite3_bind_int64 (ended, 1, first);
        sqlite3_bind_int64 (ended, 2, first + count - 1);
        int erc;
        while ((erc = sqlite3_step (ended)) == SQLITE_ROW) {
            int state = sqlite3_column_int (ended, 0);
            if (state >= 0 && state < GQ_JOB_STATES) {
                by_state[state] = sqlite3_column_int64 (ended, 1);
            }
        }
        if (erc != SQLITE_DONE) {
            err = s_fail (self, "recover arrays");
            rc = SQLITE_DONE;
        }
        sqlite3_reset (ended);
        /* The elements retention purged are counted in the array's row. */
        for (int state = GQ_JOB_DONE; state <= GQ_JOB_CANCELLED; state++) {
            by_state[state] += sqlite3_column_int64 (stmt, 5 + state - GQ_JOB_DONE);
        }
        if (!err) {
            err = fn (arg, sqlite3_column_int64 (stmt, 0), first, count,
                      (const char *) sqlite3_column_text (stmt, 3), sqlite3_column_int64 (stmt, 4),
                      by_state);
        }
    }
    if (!err && rc != SQLITE_DONE) {
        err = s_fail (self, "recover arrays");
    }
    sqlite3_reset (stmt);
    if (!err) {
        s_ok (self);
    }
    return err;
}

/* Calls fn for each row of stmt (child, parent, kind, parent's state or NULL, inputs), then
   resets it. 0, fn's code, or GQ_ESTORE. */
static int
s_edges (gq_store_t *self, sqlite3_stmt *stmt, gq_store_dep_fn *fn, void *arg, const char *what)
{
    int rc, err = GQ_OK;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        const char *name = (const char *) sqlite3_column_text (stmt, 2);
        int kind = GQ_DEP_KINDS;
        for (int k = 0; name && k < GQ_DEP_KINDS && kind == GQ_DEP_KINDS; k++) {
            kind = streq (name, gq_dep_names[k]) ? k : kind;
        }
        int state = sqlite3_column_type (stmt, 3) == SQLITE_NULL ? -1
                                                                  : sqlite3_column_int (stmt, 3);
        err = kind < GQ_DEP_KINDS ? fn (arg, sqlite3_column_int64 (stmt, 0),
                                        sqlite3_column_int64 (stmt, 1), kind, state,
                                        sqlite3_column_int (stmt, 4) != 0)
                                  : GQ_OK; /* the CHECK keeps others out */
        if (err) {
            break;
        }
    }
    if (!err && rc != SQLITE_DONE) {
        err = s_fail (self, what);
    }
    sqlite3_reset (stmt);
    if (!err) {
        s_ok (self);
    }
    return err;
}

int
gq_store_deps_recover (gq_store_t *self, gq_store_dep_fn *fn, void *arg)
{
    return s_edges (self, self->stmt[S_DEPS_RECOVER], fn, arg, "recover dependencies");
}

int
gq_store_deps_of (gq_store_t *self, int64_t child, gq_store_dep_fn *fn, void *arg)
{
    sqlite3_bind_int64 (self->stmt[S_DEPS_OF], 1, child);
    return s_edges (self, self->stmt[S_DEPS_OF], fn, arg, "dependencies of a job");
}

/* ---- Selftest -------------------------------------------------------------------------------- */

#define S_HAS_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *s_a_ = (a), *s_b_ = (b);                                                       \
        if (!s_a_ || !strstr (s_a_, s_b_)) {                                                       \
            fprintf (stderr, "\n%s:%d: %s is \"%s\", expected it to contain \"%s\"\n", __FILE__,   \
                     __LINE__, #a, s_a_ ? s_a_ : "(null)", s_b_);                                  \
            abort ();                                                                              \
        }                                                                                          \
    } while (0)

#define S_OPENED(store, why)                                                                       \
    do {                                                                                           \
        if (!(store)) {                                                                            \
            fprintf (stderr, "\n%s:%d: open failed: %s\n", __FILE__, __LINE__, (why));             \
            abort ();                                                                              \
        }                                                                                          \
    } while (0)

/* Schema version 0: schema.sql as it was before migration 0001 (no jobs.client, no
   jobs_finished index). The migration test builds a database of this shape by hand. */
static const char *s_schema_v0 =
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, idem_key TEXT, kind TEXT NOT NULL, model TEXT,"
    " min_vram_mb INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL DEFAULT 0,"
    " gpu_pattern TEXT, max_price REAL, min_tflops REAL, timeout_ms INTEGER NOT NULL DEFAULT 0,"
    " max_attempts INTEGER NOT NULL, payload TEXT NOT NULL,"
    " state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4), attempts INTEGER NOT NULL DEFAULT 0,"
    " node TEXT, submitted_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,"
    " result TEXT, error TEXT);"
    "CREATE UNIQUE INDEX jobs_idem ON jobs (idem_key) WHERE idem_key IS NOT NULL;"
    "CREATE INDEX jobs_state ON jobs (state);"
    "CREATE TABLE job_blobs (job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    " direction TEXT NOT NULL CHECK (direction IN ('in', 'out')), idx INTEGER NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY (job_id, direction, idx));"
    "CREATE TABLE attempts (job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    " attempt INTEGER NOT NULL, node TEXT NOT NULL, started_at INTEGER NOT NULL,"
    " finished_at INTEGER NOT NULL, outcome TEXT NOT NULL CHECK (outcome = 'ok' OR"
    " outcome = 'failed' OR outcome = 'lost' OR outcome = 'timeout' OR outcome = 'cancelled'),"
    " reason TEXT, PRIMARY KEY (job_id, attempt))"
    " WITHOUT ROWID;"
    "CREATE TABLE nodes (name TEXT PRIMARY KEY, gpu_model TEXT NOT NULL,"
    " vram_total_mb INTEGER NOT NULL, tflops REAL NOT NULL, price_per_hour REAL NOT NULL,"
    " first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
    " jobs_ok INTEGER NOT NULL DEFAULT 0, jobs_failed INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;";

static void
s_path (char *buf, size_t size, const char *dir, const char *name)
{
    int n = snprintf (buf, size, "%s/%s", dir, name);
    GQ_CHECK_EQ (n >= 0 && (size_t) n < size, 1);
}

/* Runs sql on the database at path through a connection of its own (as an older gridq or an
   operator's shell would). */
static void
s_raw_exec (const char *path, const char *sql)
{
    sqlite3 *db;
    GQ_CHECK_EQ (sqlite3_open (path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec (db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        fprintf (stderr, "\nstore test: %s: %s\n", sql, msg ? msg : "?");
        abort ();
    }
    sqlite3_close (db);
}

/* gq_store_deps_recover's callback for the selftest: "child<parent:kind@state " appended to the
   text arg points to. */
static int
s_edge_cb (void *arg, int64_t child, int64_t parent, int kind, int parent_state, bool inputs)
{
    char *text = (char *) arg;
    size_t len = strlen (text);
    snprintf (text + len, 8192 - len, "%lld<%lld:%d@%d%s ", (long long) child, (long long) parent,
              kind, parent_state, inputs ? "+in" : "");
    return 0;
}

/* gq_store_arrays_recover's callback for the selftest: "id first+count spec ended d/f/c" and a
   newline appended to the text arg points to. */
static int
s_array_cb (void *arg, int64_t id, int64_t first, int64_t count, const char *spec,
            int64_t submitted_ms, const int64_t *ended)
{
    (void) submitted_ms;
    char *text = (char *) arg;
    size_t len = strlen (text);
    snprintf (text + len, 8192 - len, "%lld %lld+%lld %s ended %lld/%lld/%lld\n", (long long) id,
              (long long) first, (long long) count, spec, (long long) ended[GQ_JOB_DONE],
              (long long) ended[GQ_JOB_FAILED], (long long) ended[GQ_JOB_CANCELLED]);
    return 0;
}

/* Every row of sql appended to buf, columns joined by '|', rows by '\n'. */
static void
s_append_rows (sqlite3 *db, const char *sql, char *buf, size_t size)
{
    sqlite3_stmt *stmt;
    GQ_CHECK_EQ (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK);
    while (sqlite3_step (stmt) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count (stmt); i++) {
            const unsigned char *text = sqlite3_column_text (stmt, i);
            size_t used = strlen (buf);
            snprintf (buf + used, size - used, "%s%s", i ? "|" : "",
                      text ? (const char *) text : "NULL");
        }
        size_t used = strlen (buf);
        snprintf (buf + used, size - used, "\n");
    }
    sqlite3_finalize (stmt);
}

/* The shape of a schema: tables with their columns, indexes with their columns and whether
   they are unique or partial, foreign keys. Two roads to one version must give one text. */
static void
s_fingerprint (sqlite3 *db, char *buf, size_t size)
{
    buf[0] = 0;
    s_append_rows (db,
                   "SELECT m.name, p.cid, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk "
                   "FROM sqlite_master AS m JOIN pragma_table_info (m.name) AS p "
                   "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite%' ORDER BY m.name, p.cid",
                   buf, size);
    s_append_rows (db,
                   "SELECT m.name, l.name, l.\"unique\", l.origin, l.partial, i.seqno, i.name "
                   "FROM sqlite_master AS m JOIN pragma_index_list (m.name) AS l "
                   "JOIN pragma_index_info (l.name) AS i "
                   "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite%' ORDER BY m.name, l.name, i.seqno",
                   buf, size);
    s_append_rows (db,
                   "SELECT m.name, f.id, f.seq, f.\"table\", f.\"from\", f.\"to\", f.on_delete "
                   "FROM sqlite_master AS m JOIN pragma_foreign_key_list (m.name) AS f "
                   "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite%' ORDER BY m.name, f.id, f.seq",
                   buf, size);
}

/* The plan SQLite chooses for one of the store's statements, as one line. */
static void
s_plan (gq_store_t *self, s_stmt_t which, char *buf, size_t size)
{
    char sql[1024];
    snprintf (sql, sizeof sql, "EXPLAIN QUERY PLAN %s", s_sql[which]);
    buf[0] = 0;
    sqlite3_stmt *stmt;
    GQ_CHECK_EQ (sqlite3_prepare_v2 (self->db, sql, -1, &stmt, NULL), SQLITE_OK);
    while (sqlite3_step (stmt) == SQLITE_ROW) {
        size_t used = strlen (buf);
        snprintf (buf + used, size - used, "%s; ", (const char *) sqlite3_column_text (stmt, 3));
    }
    sqlite3_finalize (stmt);
}

/* A job to insert: payload is borrowed. */
static gq_job_t
s_job (char *payload, int priority, int64_t submitted_ms)
{
    gq_job_t job = {.submitted_ms = submitted_ms, .payload = payload,
                    .payload_len = (uint32_t) strlen (payload), .min_vram_mb = 1024, .node = -1,
                    .priority = (uint8_t) priority, .max_attempts = GQ_MAX_ATTEMPTS,
                    .timeout_ms = 60000};
    return job;
}

/* What recovery handed back, one line per job, for comparing as text. */
typedef struct {
    char text[2048];
    int calls;
    int stop_after;          /* stop the walk after this many calls (0: never) */
    gq_store_t *store;       /* to read a job's input blobs from inside the walk */
} s_recovered_t;

static int
s_recover_cb (void *arg, const gq_job_row_t *row, const char *const *excluded, size_t n_excluded)
{
    s_recovered_t *rec = arg;
    rec->calls++;
    size_t used = strlen (rec->text);
    snprintf (rec->text + used, sizeof rec->text - used,
              "%lld %s %s model=%s attempts=%d/%d payload=%s client=%s excluded=", (long long) row->id,
              gq_job_state_name (row->state), row->kind, row->model ? row->model : "-",
              row->attempts, row->max_attempts, row->payload, row->client ? row->client : "-");
    for (size_t i = 0; i < n_excluded; i++) {
        used = strlen (rec->text);
        snprintf (rec->text + used, sizeof rec->text - used, "%s%s", i ? "," : "", excluded[i]);
    }
    void **data;
    size_t *sizes;
    int n = gq_store_job_blobs (rec->store, row->id, "in", &data, &sizes);
    used = strlen (rec->text);
    snprintf (rec->text + used, sizeof rec->text - used, " blobs=%d\n", n);
    gq_store_blobs_free (data, sizes, n);
    return rec->stop_after && rec->calls >= rec->stop_after ? 99 : 0;
}

/* Removes the test directory and the database files in it. */
static void
s_remove_dir (const char *dir)
{
    DIR *d = opendir (dir);
    if (!d) {
        return;
    }
    struct dirent *entry;
    while ((entry = readdir (d))) {
        if (strcmp (entry->d_name, ".") != 0 && strcmp (entry->d_name, "..") != 0) {
            char path[512];
            s_path (path, sizeof path, dir, entry->d_name);
            unlink (path);
        }
    }
    closedir (d);
    rmdir (dir);
}

/* Inserts, then in the next turn records one attempt and the end of, `jobs` jobs in turns of
   `batch`: the broker's write pattern at full load. Prints rows/s when verbose; asserts only
   the outcome, never the time. */
static void
s_bench (const char *dir, gq_durability_t durability, int jobs, int batch, bool verbose)
{
    char path[512], why[256];
    s_path (path, sizeof path, dir, durability == GQ_DURABILITY_FULL ? "bench-full.db"
                                                                     : "bench-normal.db");
    gq_store_t *store = gq_store_open (path, durability, why, sizeof why);
    S_OPENED (store, why);
    int64_t *ids = malloc ((size_t) jobs * sizeof *ids);
    GQ_CHECK_EQ (ids != NULL, 1);
    char payload[] = "{\"input\":[[0.1,0.2,0.3,0.4]],\"seed\":12345}";
    char result[] = "{\"output\":[[0.9,0.1]],\"argmax\":[0]}";
    int64_t t0 = gq_mono_us ();
    int inserted = 0, finished = 0;
    while (finished < jobs) {
        GQ_CHECK_EQ (gq_store_begin (store), 0);
        for (int i = 0; i < batch && inserted < jobs; i++) {
            gq_job_t job = s_job (payload, 5, 1764411673000 + inserted);
            GQ_CHECK_EQ (gq_store_job_insert (store, &job, "mlp", "mnist", NULL, "", NULL), 0);
            ids[inserted++] = job.id;
        }
        /* The previous turn's jobs end in this one. */
        int end = inserted - batch < finished ? finished : inserted - batch;
        if (inserted == jobs) {
            end = inserted;
        }
        for (; finished < end; finished++) {
            int64_t id = ids[finished];
            GQ_CHECK_EQ (gq_store_attempt_record (store, id, 1, "gpu-node-17", 1764411673100,
                                               1764411673150, "ok", NULL, true),
                      0);
            GQ_CHECK_EQ (gq_store_job_finish (store, id, GQ_JOB_DONE, 1, "gpu-node-17",
                                           1764411673100, 1764411673150, result,
                                           sizeof result - 1, NULL),
                      0);
        }
        GQ_CHECK_EQ (gq_store_commit (store), 0);
    }
    double secs = (double) (gq_mono_us () - t0) / 1e6;
    int64_t counts[GQ_JOB_STATES];
    GQ_CHECK_EQ (gq_store_counts (store, counts), 0);
    GQ_CHECK_EQ (counts[GQ_JOB_DONE], jobs);
    GQ_CHECK_EQ (counts[GQ_JOB_QUEUED], 0);
    if (verbose) {
        printf ("  bench (%s, %d jobs, %d per turn): %.0f rows/s, %.0f jobs/s end to end\n",
                durability == GQ_DURABILITY_FULL ? "full" : "normal", jobs, batch,
                3.0 * jobs / secs, jobs / secs);
    }
    free (ids);
    gq_store_close (&store);
    /* Each run starts from an empty database. */
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char file[600];
        snprintf (file, sizeof file, "%s%s", path, suffixes[i]);
        unlink (file);
    }
}

void
gq_store_test (bool verbose)
{
    if (verbose) {
        printf ("\n");   /* verbose lines, and the store's log lines, each on a line of its own */
    }
    char dir[] = "/tmp/gq-store-XXXXXX";
    if (!mkdtemp (dir)) {
        fprintf (stderr, "\nstore test: mkdtemp: %s\n", strerror (errno));
        abort ();
    }
    char path[512], why[256], text[8192], other[8192];
    s_path (path, sizeof path, dir, "gridq.db");

    /* A new database gets the full schema, at the newest version, in WAL mode. */
    gq_store_t *store = gq_store_open (path, GQ_DURABILITY_FULL, why, sizeof why);
    S_OPENED (store, why);
    GQ_CHECK_EQ (gq_store_schema_version (store), gq_migrations_count);
    GQ_CHECK_EQ (s_query_text (store->db, "PRAGMA journal_mode", text, sizeof text), SQLITE_OK);
    GQ_CHECK_STR (text, "wal");
    int64_t value;
    GQ_CHECK_EQ (s_query_int (store->db, "PRAGMA foreign_keys", &value), SQLITE_OK);
    GQ_CHECK_EQ (value, 1);
    GQ_CHECK_EQ (gq_store_max_id (store), 0);

    /* The statements that must not scan: recovery, retention, idem lookups, listings. */
    s_plan (store, S_RECOVER, text, sizeof text);
    S_HAS_STR (text, "USING COVERING INDEX jobs_state");
    s_plan (store, S_PURGE_PICK, text, sizeof text);
    S_HAS_STR (text, "USING INDEX jobs_finished");
    s_plan (store, S_JOB_BY_IDEM, text, sizeof text);
    S_HAS_STR (text, "jobs_idem");
    s_plan (store, S_JOBS_IN_STATE, text, sizeof text);
    S_HAS_STR (text, "jobs_state");
    S_HAS_STR (text, "rowid<?");

    /* One turn: three submissions, one repeated by its idem key within the turn. */
    char p1[] = "{\"n\":1}", p2[] = "{\"n\":2}", p3[] = "{\"input\":[[1,2]]}", p4[] = "[4]";
    int64_t t = 1764411673000;
    gq_job_t j1 = s_job (p1, 5, t), j2 = s_job (p2, 9, t + 1), j3 = s_job (p3, 0, t + 2);
    gq_constraints_t c3 = {.gpu_pattern = "A100|H100", .max_price = 3.5, .min_tflops = 0};
    j3.constraints = &c3;
    int64_t existing = 0;
    GQ_CHECK_EQ (gq_store_begin (store), 0);
    GQ_CHECK_EQ (gq_store_in_transaction (store), 1);
    GQ_CHECK_EQ (gq_store_begin (store), GQ_ESTORE);
    S_HAS_STR (gq_store_errmsg (store), "open already");
    GQ_CHECK_EQ (gq_store_job_insert (store, &j1, "echo", NULL, NULL, "", &existing), 0);
    GQ_CHECK_EQ (gq_store_job_insert (store, &j2, "echo", "", "key-2", "client-key", &existing), 0);
    gq_job_t again = s_job (p4, 1, t + 3);
    GQ_CHECK_EQ (gq_store_job_insert (store, &again, "echo", NULL, "key-2", "", &existing), 1);
    GQ_CHECK_EQ (existing, j2.id);
    GQ_CHECK_EQ (gq_store_job_insert (store, &j3, "mlp", "mnist", NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_store_job_blob_insert (store, j3.id, "in", 1, "world", 5), 0);
    GQ_CHECK_EQ (gq_store_job_blob_insert (store, j3.id, "in", 0, "hello", 5), 0);
    GQ_CHECK_EQ (gq_store_job_blob_insert (store, j3.id, "in", 2, NULL, 0), 0);
    GQ_CHECK_EQ (gq_store_commit (store), 0);
    GQ_CHECK_EQ (gq_store_in_transaction (store), 0);
    GQ_CHECK_EQ (j1.id > 0 && j2.id > j1.id && j3.id > j2.id, 1);
    GQ_CHECK_EQ (gq_store_max_id (store), j3.id);
    /* After the commit too, and outside a transaction. */
    existing = 0;
    GQ_CHECK_EQ (gq_store_job_insert (store, &again, "echo", NULL, "key-2", "", &existing), 1);
    GQ_CHECK_EQ (existing, j2.id);
    GQ_CHECK_EQ (gq_store_job_insert (store, &again, NULL, NULL, NULL, "", &existing), GQ_EINVAL);
    GQ_CHECK_EQ (gq_store_job_blob_insert (store, j3.id, "sideways", 0, "x", 1), GQ_EINVAL);
    GQ_CHECK_EQ (gq_store_job_blob_insert (store, j3.id, "in", 0, "again", 5), GQ_ESTORE);
    GQ_CHECK_EQ (gq_store_job_blob_insert (store, 999999, "in", 0, "orphan", 6), GQ_ESTORE);
    S_HAS_STR (gq_store_errmsg (store), "FOREIGN KEY");

    void **data;
    size_t *sizes;
    int n = gq_store_job_blobs (store, j3.id, "in", &data, &sizes);
    GQ_CHECK_EQ (n, 3);
    GQ_CHECK_EQ (sizes[0] == 5 && memcmp (data[0], "hello", 5) == 0, 1);
    GQ_CHECK_EQ (sizes[1] == 5 && memcmp (data[1], "world", 5) == 0, 1);
    GQ_CHECK_EQ (sizes[2], 0);
    gq_store_blobs_free (data, sizes, n);
    GQ_CHECK_EQ (gq_store_job_blobs (store, j3.id, "out", &data, &sizes), 0);
    GQ_CHECK_EQ (data == NULL && sizes == NULL, 1);

    /* Attempts and ends: j1 fails on a, is lost on b, times out on a again, and stays queued;
       j2 succeeds on c; j3 is cancelled before it ran. */
    GQ_CHECK_EQ (gq_store_begin (store), 0);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j1.id, 1, "a", t + 10, t + 20, "failed", "exit 1", true), 0);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j1.id, 2, "b", t + 30, t + 40, "lost", NULL, true), 0);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j1.id, 3, "a", t + 50, t + 60, "timeout", NULL, true), 0);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j2.id, 1, "c", t + 10, t + 25, "ok", NULL, true), 0);
    const char *r2 = "{\"echo\":2}";
    GQ_CHECK_EQ (gq_store_job_finish (store, j2.id, GQ_JOB_DONE, 1, "c", t + 10, t + 25, r2,
                                   strlen (r2), NULL),
              0);
    GQ_CHECK_EQ (gq_store_job_blob_insert (store, j2.id, "out", 0, "\x00\x01\x02", 3), 0);
    GQ_CHECK_EQ (gq_store_job_finish (store, j3.id, GQ_JOB_CANCELLED, 0, NULL, 0, t + 30, NULL, 0,
                                   "cancelled by client"),
              0);
    GQ_CHECK_EQ (gq_store_commit (store), 0);
    /* The first end is the one recorded. */
    GQ_CHECK_EQ (gq_store_job_finish (store, j2.id, GQ_JOB_FAILED, 2, "d", t, t + 99, NULL, 0, "x"),
              GQ_ESTATE);
    GQ_CHECK_EQ (gq_store_job_finish (store, 999999, GQ_JOB_DONE, 1, "d", t, t + 99, NULL, 0, NULL),
              GQ_ENOTFOUND);
    GQ_CHECK_EQ (gq_store_job_finish (store, j1.id, GQ_JOB_RUNNING, 1, "d", t, t + 9, NULL, 0, NULL),
              GQ_EINVAL);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j1.id, 4, "a", t, t, "exploded", NULL, true), GQ_EINVAL);
    GQ_CHECK_EQ (gq_store_row_fault (store), true);
    GQ_CHECK_EQ (gq_store_attempt_record (store, 999999, 1, "a", t, t, "failed", NULL, true), GQ_ESTORE);
    GQ_CHECK_EQ (gq_store_row_fault (store), true); /* no such job: a constraint */
    /* A run recorded again is one row: kept as it is, or updated; another node's run under a
       number taken is numbered after the last. */
    GQ_CHECK_EQ (gq_store_attempt_record (store, j1.id, 3, "a", t, t + 70, "failed", NULL, false), 0);
    GQ_CHECK_EQ (gq_store_row_fault (store), false);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j1.id, 2, "b", t + 30, t + 45, "ok", NULL, true), 0);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j1.id, 3, "c", t + 50, 0, "running", NULL, true), 0);
    /* Such a run, recorded again under the number it had, is found by its node and start. */
    GQ_CHECK_EQ (gq_store_attempt_record (store, j3.id, 1, "e", t + 5, t + 6, "cancelled", NULL,
                                          false),
                 0);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j3.id, 1, "f", t + 7, 0, "running", NULL, true), 0);
    GQ_CHECK_EQ (gq_store_attempt_record (store, j3.id, 1, "f", t + 7, t + 9, "ok", NULL, true), 0);
    snprintf (other, sizeof other, "SELECT count(*) FROM attempts WHERE job_id = %lld",
              (long long) j3.id);
    GQ_CHECK_EQ (s_query_int (store->db, other, &value), SQLITE_OK);
    GQ_CHECK_EQ (value, 2);
    snprintf (other, sizeof other,
              "SELECT count(*) FROM attempts WHERE job_id = %lld AND attempt = 2 AND node = 'f' "
              "AND outcome = 'ok'",
              (long long) j3.id);
    GQ_CHECK_EQ (s_query_int (store->db, other, &value), SQLITE_OK);
    GQ_CHECK_EQ (value, 1);

    /* Queries about stored jobs. */
    json_t *job = gq_store_job_json (store, j2.id, true);
    GQ_CHECK_EQ (job != NULL, 1);
    GQ_CHECK_STR (json_string_value (json_object_get (job, "state")), "done");
    GQ_CHECK_STR (json_string_value (json_object_get (job, "idem")), "key-2");
    GQ_CHECK_EQ (json_is_null (json_object_get (job, "model")), 1);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_object_get (job, "result"), "echo")), 2);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_object_get (job, "payload"), "n")), 2);
    GQ_CHECK_STR (json_string_value (json_object_get (job, "finished_at")), "2025-11-29T10:21:13.025Z");
    json_t *detail = json_object_get (job, "attempts_detail");
    GQ_CHECK_EQ (json_array_size (detail), 1);
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 0), "outcome")), "ok");
    GQ_CHECK_EQ (json_is_null (json_object_get (json_array_get (detail, 0), "reason")), 1);
    GQ_CHECK_EQ (json_object_get (job, "client") == NULL, 1);
    json_decref (job);
    job = gq_store_job_json (store, j1.id, false);
    GQ_CHECK_EQ (json_object_get (job, "payload") == NULL, 1);
    GQ_CHECK_STR (json_string_value (json_object_get (job, "state")), "queued");
    detail = json_object_get (job, "attempts_detail");
    GQ_CHECK_EQ (json_array_size (detail), 4);
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 0), "reason")), "exit 1");
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 1), "outcome")), "ok");
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 2), "node")), "a");
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 2), "outcome")), "timeout");
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (detail, 3), "attempt")), 4);
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 3), "node")), "c");
    GQ_CHECK_EQ (json_is_null (json_object_get (json_array_get (detail, 3), "finished_at")), 1);
    json_decref (job);
    job = gq_store_job_json (store, j3.id, true);
    GQ_CHECK_STR (json_string_value (json_object_get (job, "model")), "mnist");
    GQ_CHECK_STR (json_string_value (json_object_get (job, "error")), "cancelled by client");
    GQ_CHECK_EQ (json_is_null (json_object_get (job, "started_at")), 1);
    char *dump = json_dumps (json_object_get (job, "constraints"), JSON_SORT_KEYS | JSON_COMPACT);
    GQ_CHECK_STR (dump, "{\"gpu\":\"A100|H100\",\"max_price\":3.5}");
    free (dump);
    json_decref (job);
    GQ_CHECK_EQ (gq_store_job_json (store, 999999, true) == NULL, 1);
    GQ_CHECK_EQ (gq_store_error (store), GQ_ENOTFOUND);

    json_t *list = gq_store_jobs_json (store, -1, INT64_MAX, 10);
    GQ_CHECK_EQ (json_array_size (list), 3);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (list, 0), "id")), j3.id);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (list, 2), "id")), j1.id);
    GQ_CHECK_EQ (json_object_get (json_array_get (list, 0), "payload") == NULL, 1);
    json_decref (list);
    list = gq_store_jobs_json (store, GQ_JOB_DONE, INT64_MAX, 10);
    GQ_CHECK_EQ (json_array_size (list), 1);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (list, 0), "id")), j2.id);
    json_decref (list);
    list = gq_store_jobs_json (store, -1, INT64_MAX, 1);
    GQ_CHECK_EQ (json_array_size (list), 1);
    json_decref (list);
    /* The next page: below the last id of the one before. */
    list = gq_store_jobs_json (store, -1, j3.id, 10);
    GQ_CHECK_EQ (json_array_size (list), 2);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (list, 0), "id")), j2.id);
    json_decref (list);

    int64_t counts[GQ_JOB_STATES];
    GQ_CHECK_EQ (gq_store_counts (store, counts), 0);
    GQ_CHECK_EQ (counts[GQ_JOB_QUEUED], 1);
    GQ_CHECK_EQ (counts[GQ_JOB_RUNNING], 0);
    GQ_CHECK_EQ (counts[GQ_JOB_DONE], 1);
    GQ_CHECK_EQ (counts[GQ_JOB_CANCELLED], 1);

    /* Nodes: the first sighting stays, the rest follows the latest. */
    GQ_CHECK_EQ (gq_store_node_upsert (store, "c", "NVIDIA A100", 40960, 19.5, 1.2, t, 0, 0), 0);
    GQ_CHECK_EQ (gq_store_node_upsert (store, "c", "NVIDIA A100", 40960, 19.5, 1.1, t + 500, 7, 1),
              0);
    GQ_CHECK_EQ (gq_store_node_upsert (store, "", "x", 1, 1, 1, t, 0, 0), GQ_EINVAL);
    list = gq_store_nodes_json (store);
    GQ_CHECK_EQ (json_array_size (list), 1);
    json_t *node = json_array_get (list, 0);
    GQ_CHECK_STR (json_string_value (json_object_get (node, "first_seen")), "2025-11-29T10:21:13.000Z");
    GQ_CHECK_STR (json_string_value (json_object_get (node, "last_seen")), "2025-11-29T10:21:13.500Z");
    GQ_CHECK_EQ (json_integer_value (json_object_get (node, "jobs_ok")), 7);
    json_decref (list);

    /* A rolled-back turn leaves nothing behind. */
    gq_job_t j4 = s_job (p4, 1, t + 4);
    GQ_CHECK_EQ (gq_store_begin (store), 0);
    GQ_CHECK_EQ (gq_store_job_insert (store, &j4, "echo", NULL, "key-4", NULL, NULL), 0);
    GQ_CHECK_EQ (gq_store_rollback (store), 0);
    GQ_CHECK_EQ (gq_store_rollback (store), 0);   /* none open: fine */
    GQ_CHECK_EQ (gq_store_max_id (store), j3.id);
    GQ_CHECK_EQ (gq_store_job_insert (store, &j4, "echo", NULL, "key-4", NULL, &existing), 0);
    int64_t found = 0;
    GQ_CHECK_EQ (gq_store_job_by_idem (store, "key-4", &found), 1);
    GQ_CHECK_EQ (found, j4.id);
    GQ_CHECK_EQ (gq_store_job_by_idem (store, "key-none", &found), 0);
    GQ_CHECK_EQ (found, j4.id);
    GQ_CHECK_EQ (gq_store_job_by_idem (store, "", &found), GQ_EINVAL);
    /* Without existing_id the caller has looked the key up: a key taken fails the insert. */
    gq_job_t taken = s_job (p4, 1, t + 4);
    GQ_CHECK_EQ (gq_store_job_insert (store, &taken, "echo", NULL, "key-4", NULL, NULL), GQ_ESTORE);
    S_HAS_STR (gq_store_errmsg (store), "UNIQUE");

    /* The broker's own ids: a job inserted with an id keeps it, and the next SQLite id follows;
       an id taken already fails. */
    gq_job_t jx5 = s_job (p4, 1, t + 5), jx6 = s_job (p4, 1, t + 6), jx7 = s_job (p4, 1, t + 7);
    jx5.id = j4.id + 1000;
    GQ_CHECK_EQ (gq_store_job_insert (store, &jx5, "echo", NULL, NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (jx5.id, j4.id + 1000);
    GQ_CHECK_EQ (gq_store_job_insert (store, &jx6, "echo", NULL, NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (jx6.id, j4.id + 1001);
    jx7.id = jx5.id;
    GQ_CHECK_EQ (gq_store_job_insert (store, &jx7, "echo", NULL, NULL, NULL, NULL), GQ_ESTORE);
    char del[128];
    snprintf (del, sizeof del, "DELETE FROM jobs WHERE id >= %lld", (long long) jx5.id);
    GQ_CHECK_EQ (s_exec (store->db, del), SQLITE_OK); /* the tests below count the jobs */

    /* meta: absent keys leave the value alone; set inserts, then replaces. */
    int64_t meta = -7;
    GQ_CHECK_EQ (gq_store_meta_get (store, "next_job_id", &meta), 0);
    GQ_CHECK_EQ (meta, -7);
    GQ_CHECK_EQ (gq_store_meta_set (store, "next_job_id", 5000), 0);
    GQ_CHECK_EQ (gq_store_meta_set (store, "next_job_id", 6000), 0);
    GQ_CHECK_EQ (gq_store_meta_get (store, "next_job_id", &meta), 0);
    GQ_CHECK_EQ (meta, 6000);

    /* Recovery after close and reopen: exactly the jobs that had not ended, in id order, with
       their attempts (the highest number recorded) and the distinct nodes that failed them or
       timed out (a lost run is no verdict on its node); strings valid in the call. A run still
       recorded as running was lost with the broker. */
    gq_store_close (&store);
    gq_store_close (&store);
    store = gq_store_open (path, GQ_DURABILITY_NORMAL, why, sizeof why);
    S_OPENED (store, why);
    s_recovered_t rec = {.store = store};
    GQ_CHECK_EQ (gq_store_recover (store, s_recover_cb, &rec), 0);
    snprintf (other, sizeof other,
              "%lld queued echo model=- attempts=4/3 payload={\"n\":1} client=- excluded=a "
              "blobs=0\n"
              "%lld queued echo model=- attempts=0/3 payload=[4] client=- excluded= blobs=0\n",
              (long long) j1.id, (long long) j4.id);
    GQ_CHECK_STR (rec.text, other);
    job = gq_store_job_json (store, j1.id, false);
    detail = json_object_get (job, "attempts_detail");
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 3), "outcome")), "lost");
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 3), "reason")),
                  "the broker stopped while it ran");
    GQ_CHECK_EQ (json_is_string (json_object_get (json_array_get (detail, 3), "finished_at")), 1);
    json_decref (job);
    /* A callback may stop the walk; its value comes back. */
    rec = (s_recovered_t) {.store = store, .stop_after = 1};
    GQ_CHECK_EQ (gq_store_recover (store, s_recover_cb, &rec), 99);
    GQ_CHECK_EQ (rec.calls, 1);

    /* Retention: oldest first, in chunks, attempts and blobs with them; the newest job stays
       even when it is old, so its id is never handed out again. */
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 0, NULL), 0);
    /* An array of j2 alone, and one of j2 and j3: the first goes with j2, the second stays
       while j3 does. */
    char arrays[200];
    snprintf (arrays, sizeof arrays,
              "INSERT INTO arrays (id, first, count, spec, submitted_at) "
              "VALUES (9001, %lld, 1, '0', 0), (9002, %lld, 2, '0-1', 0)",
              (long long) j2.id, (long long) j2.id);
    GQ_CHECK_EQ (s_exec (store->db, arrays), SQLITE_OK);
    GQ_CHECK_EQ (gq_store_purge (store, t + 26, 5, NULL), 1);           /* j2 ended at t+25, j3 at t+30 */
    GQ_CHECK_EQ (s_query_int (store->db, "SELECT group_concat(id) FROM arrays", &value),
                 SQLITE_OK);
    GQ_CHECK_EQ (value, 9002);
    GQ_CHECK_EQ (gq_store_job_json (store, j2.id, false) == NULL, 1);
    GQ_CHECK_EQ (s_query_int (store->db, "SELECT count(*) FROM attempts "
                                      "WHERE job_id NOT IN (SELECT id FROM jobs)",
                           &value),
              SQLITE_OK);
    GQ_CHECK_EQ (value, 0);
    GQ_CHECK_EQ (s_query_int (store->db, "SELECT count(*) FROM job_blobs WHERE direction = 'out'",
                           &value),
              SQLITE_OK);
    GQ_CHECK_EQ (value, 0);
    GQ_CHECK_EQ (gq_store_job_finish (store, j1.id, GQ_JOB_FAILED, 3, "a", t + 50, t + 60, NULL, 0,
                                   "failed 3 times"),
              0);
    GQ_CHECK_EQ (gq_store_job_finish (store, j4.id, GQ_JOB_DONE, 1, "c", t + 70, t + 80, "4", 1,
                                   NULL),
              0);
    int64_t by_state[GQ_JOB_STATES];
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 1, by_state), 1);
    GQ_CHECK_EQ (by_state[GQ_JOB_DONE] + by_state[GQ_JOB_FAILED] + by_state[GQ_JOB_CANCELLED], 1);
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 100, NULL), 1);
    GQ_CHECK_EQ (s_query_int (store->db, "SELECT count(*) FROM arrays", &value), SQLITE_OK);
    GQ_CHECK_EQ (value, 0); /* j3 went: the second array with it */
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 100, by_state), 0);
    GQ_CHECK_EQ (by_state[GQ_JOB_DONE], 0);
    GQ_CHECK_EQ (gq_store_counts (store, counts), 0);
    GQ_CHECK_EQ (counts[GQ_JOB_DONE], 1);                          /* j4, the newest, stays */
    GQ_CHECK_EQ (s_query_int (store->db, "SELECT count(*) FROM job_blobs", &value), SQLITE_OK);
    GQ_CHECK_EQ (value, 0);                                        /* j3's inputs went with it */
    gq_job_t j5 = s_job (p1, 1, t + 5);
    GQ_CHECK_EQ (gq_store_job_insert (store, &j5, "echo", NULL, NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (j5.id, j4.id + 1);

    /* Dependencies: edges written after their child, read back for the children that have not
       ended with their parents' stored states (-1: none); retention keeps a parent while a
       child that has not ended needs its outcome, and takes a child's edges along with it. */
    s_plan (store, S_DEPS_RECOVER, text, sizeof text);
    S_HAS_STR (text, "jobs_state");
    gq_job_t kid = s_job (p2, 1, t + 7);
    GQ_CHECK_EQ (gq_store_job_insert (store, &kid, "echo", NULL, NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_store_dep_insert (store, kid.id, j4.id, GQ_DEP_OK, "four", true), 0);
    GQ_CHECK_EQ (gq_store_dep_insert (store, kid.id, j5.id, GQ_DEP_FAIL, NULL, true), 0);
    GQ_CHECK_EQ (gq_store_dep_insert (store, kid.id, 424242, GQ_DEP_ANY, NULL, true), 0);
    GQ_CHECK_EQ (gq_store_dep_insert (store, kid.id, j4.id, GQ_DEP_ANY, NULL, true),
                 GQ_ESTORE); /* twice */
    GQ_CHECK_EQ (gq_store_row_fault (store), true);
    GQ_CHECK_EQ (gq_store_dep_insert (store, 999999, j4.id, GQ_DEP_OK, NULL, false),
                 GQ_ESTORE); /* no child */
    GQ_CHECK_EQ (gq_store_row_fault (store), true);
    GQ_CHECK_EQ (gq_store_dep_insert (store, kid.id, j4.id, GQ_DEP_KINDS, NULL, false), GQ_EINVAL);
    /* Its inputs: each parent's result under the name the child gave it, else its id. */
    json_t *inputs = gq_store_dep_inputs (store, kid.id);
    GQ_CHECK_EQ (inputs != NULL, 1);
    GQ_CHECK_EQ (json_object_size (inputs), 3);
    GQ_CHECK_EQ (json_object_get (inputs, "four") != NULL, 1);
    GQ_CHECK_EQ (json_is_null (json_object_get (inputs, "424242")), 1);
    json_decref (inputs);
    GQ_CHECK_EQ (gq_store_job_state (store, j4.id), GQ_JOB_DONE);
    GQ_CHECK_EQ (gq_store_job_state (store, j5.id), GQ_JOB_QUEUED);
    GQ_CHECK_EQ (gq_store_job_state (store, 424242), GQ_ENOTFOUND);
    text[0] = '\0';
    GQ_CHECK_EQ (gq_store_deps_recover (store, s_edge_cb, text), 0);
    snprintf (other, sizeof other, "%lld<%lld:0@2+in %lld<%lld:2@0+in %lld<424242:1@-1+in ",
              (long long) kid.id, (long long) j4.id, (long long) kid.id, (long long) j5.id,
              (long long) kid.id);
    GQ_CHECK_STR (text, other);
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 100, NULL), 0); /* j4: kid needs it */
    GQ_CHECK_EQ (gq_store_job_finish (store, kid.id, GQ_JOB_CANCELLED, 0, NULL, 0, t + 90, NULL, 0,
                                      "dependency 424242 no longer exists"),
                 0);
    text[0] = '\0';
    GQ_CHECK_EQ (gq_store_deps_recover (store, s_edge_cb, text), 0);
    GQ_CHECK_STR (text, ""); /* only the edges of jobs that have not ended */
    gq_job_t last = s_job (p1, 1, t + 8);
    GQ_CHECK_EQ (gq_store_job_insert (store, &last, "echo", NULL, NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 100, NULL), 2); /* j4, and kid with its edges */
    GQ_CHECK_EQ (s_query_int (store->db, "SELECT count(*) FROM deps", &value), SQLITE_OK);
    GQ_CHECK_EQ (value, 0);

    /* A full disk: the write fails with GQ_ESTORE, the turn is rolled back (SQLite may have
       done it itself), and the store works again once there is room. */
    int64_t pages;
    GQ_CHECK_EQ (s_query_int (store->db, "PRAGMA page_count", &pages), SQLITE_OK);
    char sql[128];
    snprintf (sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long) pages + 4);
    GQ_CHECK_EQ (s_exec (store->db, sql), SQLITE_OK);
    size_t big_len = 64 * 1024;
    char *big = malloc (big_len + 1);
    GQ_CHECK_EQ (big != NULL, 1);
    memset (big, ' ', big_len);
    big[0] = '[';
    big[big_len - 1] = ']';
    big[big_len] = 0;
    GQ_CHECK_EQ (gq_store_begin (store), 0);
    int err = 0;
    for (int i = 0; i < 100 && !err; i++) {
        gq_job_t fat = s_job (big, 1, t + 6);
        err = gq_store_job_insert (store, &fat, "echo", NULL, NULL, NULL, NULL);
    }
    GQ_CHECK_EQ (err, GQ_ESTORE);
    GQ_CHECK_EQ (gq_store_error (store), GQ_ESTORE);
    S_HAS_STR (gq_store_errmsg (store), "full");
    GQ_CHECK_EQ (gq_store_rollback (store), 0);
    GQ_CHECK_EQ (gq_store_in_transaction (store), 0);
    GQ_CHECK_EQ (s_exec (store->db, "PRAGMA max_page_count = 1073741823"), SQLITE_OK);
    GQ_CHECK_EQ (gq_store_begin (store), 0);
    gq_job_t fat = s_job (big, 1, t + 6);
    GQ_CHECK_EQ (gq_store_job_insert (store, &fat, "echo", NULL, NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_store_commit (store), 0);
    GQ_CHECK_EQ (fat.id, last.id + 1);
    free (big);

    /* Arrays: a child of an array takes its elements' results, in index order, as its inputs;
       retention keeps the elements while the child has not ended, and counts in the array's row
       those it purges, so that recovery still finds every ended element. */
    int64_t arr = fat.id + 10;
    snprintf (other, sizeof other,
              "INSERT INTO arrays (id, first, count, spec, submitted_at) "
              "VALUES (%lld, %lld, 4, '0-6:2', %lld)",
              (long long) arr, (long long) arr + 1, (long long) t);
    GQ_CHECK_EQ (s_exec (store->db, other), SQLITE_OK);
    for (int64_t id = arr + 1; id <= arr + 6; id++) { /* 4 elements, the child, the newest */
        gq_job_t job = s_job (p1, 1, t);
        job.id = id;
        GQ_CHECK_EQ (gq_store_job_insert (store, &job, "echo", NULL, NULL, NULL, NULL), 0);
    }
    int64_t child = arr + 5;
    GQ_CHECK_EQ (gq_store_dep_insert (store, child, arr, GQ_DEP_ANY, "sweep", true), 0);
    const char *element_results[] = {"10", NULL, "[3]", NULL};
    const int element_states[] = {GQ_JOB_DONE, GQ_JOB_FAILED, GQ_JOB_DONE, GQ_JOB_CANCELLED};
    for (int k = 0; k < 4; k++) {
        const char *result = element_results[k];
        GQ_CHECK_EQ (gq_store_job_finish (store, arr + 1 + k, element_states[k], 1, "a", t,
                                          t + 100 + k, result, result ? strlen (result) : 0,
                                          NULL),
                     0);
    }
    inputs = gq_store_dep_inputs (store, child);
    dump = json_dumps (inputs, JSON_COMPACT);
    GQ_CHECK_STR (dump, "{\"sweep\":[10,null,[3],null]}");
    free (dump);
    json_decref (inputs);
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 100, NULL), 0); /* the child needs them */
    GQ_CHECK_EQ (gq_store_job_finish (store, child, GQ_JOB_DONE, 1, "a", t, t + 200, NULL, 0,
                                      NULL),
                 0);
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 3, by_state), 3); /* the first 3 elements */
    GQ_CHECK_EQ (by_state[GQ_JOB_DONE], 2);
    GQ_CHECK_EQ (by_state[GQ_JOB_FAILED], 1);
    text[0] = '\0';
    s_append_rows (store->db, "SELECT purged_done, purged_failed, purged_cancelled FROM arrays",
                   text, sizeof text);
    GQ_CHECK_STR (text, "2|1|0\n");
    gq_store_close (&store);
    store = gq_store_open (path, GQ_DURABILITY_NORMAL, why, sizeof why);
    S_OPENED (store, why);
    text[0] = '\0';
    GQ_CHECK_EQ (gq_store_arrays_recover (store, s_array_cb, text), 0);
    snprintf (other, sizeof other, "%lld %lld+4 0-6:2 ended 2/1/1\n", (long long) arr,
              (long long) arr + 1);
    GQ_CHECK_STR (text, other);
    GQ_CHECK_EQ (gq_store_purge (store, t + 1000, 100, NULL), 2); /* the last, and the child */
    GQ_CHECK_EQ (s_query_int (store->db, "SELECT count(*) FROM arrays", &value), SQLITE_OK);
    GQ_CHECK_EQ (value, 0);
    gq_store_close (&store);

    /* The fresh schema's shape, to compare the migrated one against. */
    sqlite3 *db;
    GQ_CHECK_EQ (sqlite3_open (path, &db), SQLITE_OK);
    s_fingerprint (db, text, sizeof text);
    sqlite3_close (db);
    S_HAS_STR (text, "jobs|20|client|TEXT|0|NULL|0");

    /* Migration: a version-0 database with a queued job that failed once is upgraded in place,
       reaches the same shape as a new one, and recovers its job. */
    char old_path[512];
    s_path (old_path, sizeof old_path, dir, "old.db");
    s_raw_exec (old_path, s_schema_v0);
    s_raw_exec (old_path,
                "INSERT INTO jobs (id, kind, max_attempts, payload, state, submitted_at) "
                "VALUES (41, 'echo', 3, '{\"old\":true}', 0, 1000);"
                "INSERT INTO attempts VALUES (41, 1, 'old-node', 1100, 1200, 'failed', 'oom');");
    store = gq_store_open (old_path, GQ_DURABILITY_NORMAL, why, sizeof why);
    S_OPENED (store, why);
    GQ_CHECK_EQ (gq_store_schema_version (store), gq_migrations_count);
    GQ_CHECK_EQ (s_query_int (store->db, "PRAGMA user_version", &value), SQLITE_OK);
    GQ_CHECK_EQ (value, gq_migrations_count);
    s_fingerprint (store->db, other, sizeof other);
    GQ_CHECK_STR (other, text);
    rec = (s_recovered_t) {.store = store};
    GQ_CHECK_EQ (gq_store_recover (store, s_recover_cb, &rec), 0);
    GQ_CHECK_STR (rec.text, "41 queued echo model=- attempts=1/3 payload={\"old\":true} client=- "
                        "excluded=old-node blobs=0\n");
    gq_job_t j6 = s_job (p2, 1, t);
    GQ_CHECK_EQ (gq_store_job_insert (store, &j6, "echo", NULL, NULL, "client-key", NULL), 0);
    GQ_CHECK_EQ (j6.id, 42);
    gq_store_close (&store);

    /* A failing migration leaves its database at the last step that succeeded, untouched by
       the one that failed. */
    s_path (old_path, sizeof old_path, dir, "old2.db");
    s_raw_exec (old_path, s_schema_v0);
    const char *steps[] = {gq_migrations[0], "CREATE TABLE half (x); SELECT no_such_function ();"};
    const char *names[] = {"0001-test", "0002-broken"};
    GQ_CHECK_EQ (sqlite3_open (old_path, &db), SQLITE_OK);
    GQ_CHECK_EQ (s_schema_apply (db, old_path, gq_schema_sql, steps, names, 2, why, sizeof why), -1);
    S_HAS_STR (why, "cannot upgrade");
    S_HAS_STR (why, "version 2 (0002-broken)");
    S_HAS_STR (why, "no_such_function");
    GQ_CHECK_EQ (s_query_int (db, "PRAGMA user_version", &value), SQLITE_OK);
    GQ_CHECK_EQ (value, 1);
    GQ_CHECK_EQ (s_query_int (db, "SELECT count(*) FROM sqlite_master WHERE name = 'half'", &value),
              SQLITE_OK);
    GQ_CHECK_EQ (value, 0);
    sqlite3_close (db);

    /* A database from a newer gridq is refused, and left as it is. */
    snprintf (sql, sizeof sql, "PRAGMA user_version = %d", gq_migrations_count + 1);
    s_raw_exec (path, sql);
    GQ_CHECK_EQ (gq_store_open (path, GQ_DURABILITY_NORMAL, why, sizeof why) == NULL, 1);
    S_HAS_STR (why, "newer than this gridq-broker knows");
    if (verbose) {
        printf ("  %s\n", why);
    }

    /* A path that cannot be a database file: a reason, not a crash. */
    GQ_CHECK_EQ (gq_store_open ("", GQ_DURABILITY_NORMAL, why, sizeof why) == NULL, 1);
    S_HAS_STR (why, "without a path");
    char file[512];
    s_path (file, sizeof file, dir, "not-a-db.txt");
    FILE *f = fopen (file, "w");
    GQ_CHECK_EQ (f != NULL, 1);
    fputs ("this is not a database, but it is long enough to have a header of sorts\n", f);
    fclose (f);
    s_path (path, sizeof path, file, "gridq.db");   /* under a regular file */
    GQ_CHECK_EQ (gq_store_open (path, GQ_DURABILITY_NORMAL, why, sizeof why) == NULL, 1);
    S_HAS_STR (why, "store: cannot open ");
    S_HAS_STR (why, "unable to open database file");
    if (verbose) {
        printf ("  %s\n", why);
    }
    GQ_CHECK_EQ (gq_store_open (file, GQ_DURABILITY_NORMAL, why, sizeof why) == NULL, 1);
    S_HAS_STR (why, "file is not a database");
    s_path (path, sizeof path, dir, "other.db");
    s_raw_exec (path, "CREATE TABLE accounts (id INTEGER PRIMARY KEY)");
    GQ_CHECK_EQ (gq_store_open (path, GQ_DURABILITY_NORMAL, why, sizeof why) == NULL, 1);
    S_HAS_STR (why, "not a gridq database");

    /* The broker's write pattern, measured (printed only when verbose). */
    s_bench (dir, GQ_DURABILITY_NORMAL, verbose ? 300000 : 20000, 1000, verbose);
    if (verbose) {
        s_bench (dir, GQ_DURABILITY_FULL, 300000, 1000, verbose);
        s_bench (dir, GQ_DURABILITY_FULL, 100000, 100, verbose);
        printf ("  ");
    }
    s_remove_dir (dir);
}
