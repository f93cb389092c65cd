-- 0005: schema version 4 -> 5.
-- Job arrays (issue 18): one row per array; its elements are the jobs first .. first + count - 1.
CREATE TABLE arrays (
    id           INTEGER PRIMARY KEY,
    first        INTEGER NOT NULL,
    count        INTEGER NOT NULL CHECK (count > 0),
    spec         TEXT NOT NULL,
    submitted_at INTEGER NOT NULL
);
