-- 0003: schema version 2 -> 3.
-- A run that lasts is recorded when it starts ("running", finished_at NULL) and updated when it
-- ends, so that a broker killed while it ran still shows the run (lost) after its restart.
-- SQLite cannot change a column's constraints: the table is made anew and its rows copied.
CREATE TABLE attempts_new (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    node        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT NOT NULL CHECK (outcome = 'ok' OR outcome = 'failed' OR outcome = 'lost'
                                     OR outcome = 'timeout' OR outcome = 'cancelled'
                                     OR outcome = 'running'),
    reason      TEXT,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
INSERT INTO attempts_new SELECT job_id, attempt, node, started_at, finished_at, outcome, reason
FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
