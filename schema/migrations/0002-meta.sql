-- 0002: schema version 1 -> 2.
-- A table of small named integers kept across restarts; "next_job_id" is the first job id a
-- restarted broker may hand out (ids below it may have been dispatched before their commit).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
