-- 0004: schema version 3 -> 4.
-- Dependencies between jobs (issue 18): a child waits until its condition on each parent holds.
CREATE TABLE deps (
    child  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    parent INTEGER NOT NULL,
    kind   TEXT NOT NULL CHECK (kind = 'ok' OR kind = 'any' OR kind = 'fail'),
    PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX deps_parent ON deps (parent);
