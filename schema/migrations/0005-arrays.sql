-- 0005: schema version 4 -> 5.
-- Pipelines in one SUBMIT (issue 18): the name a child gave its parent (a line's "name"), and
-- whether the child takes its parents' results as inputs ("inputs": "after").
ALTER TABLE deps ADD COLUMN name TEXT;
ALTER TABLE deps ADD COLUMN inputs INTEGER NOT NULL DEFAULT 0;
-- Job arrays (issue 18): one row per array; its elements are the jobs first .. first + count - 1.
CREATE TABLE arrays (
    id           INTEGER PRIMARY KEY,
    first        INTEGER NOT NULL,
    count        INTEGER NOT NULL CHECK (count > 0),
    spec         TEXT NOT NULL,
    submitted_at INTEGER NOT NULL
);
