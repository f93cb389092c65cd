-- schema.sql — the full, current gridq store schema. A new database gets exactly this text and
-- PRAGMA user_version = the number of files in migrations/; an older database instead gets the
-- migrations it lacks. So every change is made twice: here, and as the next numbered migration
-- (the selftest checks that both roads lead to the same tables, columns and indexes).
--
-- Times are milliseconds since the Unix epoch (UTC). Job states are the numbers of
-- gq_job_state_t (0 queued, 1 running, 2 done, 3 failed, 4 cancelled). The broker never writes
-- "running" on a job's row: it is inserted queued and updated once, when the job ends.

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,          -- the job id clients see; rowid, never reused
    idem_key     TEXT,                         -- client's idempotency key, unique when set
    kind         TEXT NOT NULL,
    model        TEXT,                         -- NULL when the job needs no model
    min_vram_mb  INTEGER NOT NULL DEFAULT 0,
    priority     INTEGER NOT NULL DEFAULT 0,
    gpu_pattern  TEXT,                         -- constraints; NULL when not set
    max_price    REAL,
    min_tflops   REAL,
    timeout_ms   INTEGER NOT NULL DEFAULT 0,   -- per attempt; 0 means none
    max_attempts INTEGER NOT NULL,
    payload      TEXT NOT NULL,                -- JSON text
    state        INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4),
    attempts     INTEGER NOT NULL DEFAULT 0,   -- written when the job ends
    node         TEXT,                         -- node of the last attempt
    submitted_at INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    result       TEXT,                         -- JSON text
    error        TEXT,
    client       TEXT                          -- submitter's CURVE public key; NULL without CURVE
);
-- Partial: most jobs have no key, and a NULL entry would cost index work on every insert.
CREATE UNIQUE INDEX jobs_idem ON jobs (idem_key) WHERE idem_key IS NOT NULL;
-- Recovery (state 0), counts, listings by state.
CREATE INDEX jobs_state ON jobs (state);
-- Retention: only finished jobs have an entry, so a submission pays nothing for it.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Binary frames of a job: its inputs ('in', sent with the job) and its outputs ('out').
CREATE TABLE job_blobs (
    job_id    INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    idx       INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (job_id, direction, idx)
);

-- One row per attempt (a run of the job on a node), except a first attempt that succeeded
-- quickly: the job's own row (node, started_at, finished_at) tells that one, which saves a write
-- for most jobs. A run that lasts is recorded "running" (finished_at NULL) and updated when it
-- ends; at start the broker records the runs still "running" as lost. WITHOUT ROWID: rows are
-- small and always reached by the key, so one b-tree instead of a table plus its key index.
CREATE TABLE attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,              -- 1, 2, ...
    node        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,                       -- NULL while it runs
    -- OR, not IN: SQLite evaluates a constant IN list of more than two values through a
    -- temporary b-tree built on every insert, which made this check cost more than the insert.
    outcome     TEXT NOT NULL CHECK (outcome = 'ok' OR outcome = 'failed' OR outcome = 'lost'
                                     OR outcome = 'timeout' OR outcome = 'cancelled'
                                     OR outcome = 'running'),
    reason      TEXT,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;

-- Every node ever seen, for history and reliability across broker restarts.
CREATE TABLE nodes (
    name           TEXT PRIMARY KEY,
    gpu_model      TEXT NOT NULL,
    vram_total_mb  INTEGER NOT NULL,
    tflops         REAL NOT NULL,
    price_per_hour REAL NOT NULL,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    jobs_ok        INTEGER NOT NULL DEFAULT 0,
    jobs_failed    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Small named integers kept across restarts. "next_job_id": job ids below it may have been
-- handed out (the broker dispatches a job before its row is committed), so a restarted broker
-- starts there and never gives an id twice.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Dependencies: child may start only when its condition on parent holds ('ok': the parent is
-- done; 'any': it ended; 'fail': it failed or was cancelled). Written with the child's insert, in
-- its submission's group; kept after the child ends (the edges of a finished pipeline stay, for
-- a retry of what failed). A job has no row here unless it depends on one. The key serves
-- recovery (a child's edges); the index on parent serves retention, which keeps a parent while
-- a child that has not ended still needs its outcome.
CREATE TABLE deps (
    child  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    parent INTEGER NOT NULL,                   -- a job id (no foreign key: retention may purge
                                               -- a parent once its children ended)
    kind   TEXT NOT NULL CHECK (kind = 'ok' OR kind = 'any' OR kind = 'fail'),
    name   TEXT,                               -- the parent's name in the child's SUBMIT (a
                                               -- pipeline), NULL when named by id
    inputs INTEGER NOT NULL DEFAULT 0,         -- 1: the child takes its parents' results
                                               -- (on every edge of that child)
    PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX deps_parent ON deps (parent);

-- Job arrays: an array's elements are the jobs first .. first + count - 1, whose ids follow the
-- array's own (first = id + 1); spec is the array as submitted ("0-999%16"): the elements'
-- indexes, in order, and the limit on elements running at once. The array's id comes from the
-- jobs' sequence and names no job. Retention purges ended elements one by one; the purged_*
-- columns count them by final state, so that the array's counts (and its end) survive it.
CREATE TABLE arrays (
    id               INTEGER PRIMARY KEY,
    first            INTEGER NOT NULL,
    count            INTEGER NOT NULL CHECK (count > 0),
    spec             TEXT NOT NULL,
    submitted_at     INTEGER NOT NULL,
    purged_done      INTEGER NOT NULL DEFAULT 0,
    purged_failed    INTEGER NOT NULL DEFAULT 0,
    purged_cancelled INTEGER NOT NULL DEFAULT 0
);
