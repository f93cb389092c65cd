-- 0001: schema version 0 -> 1.
-- Jobs remember who submitted them (the submitter's CURVE key), so that a client's own jobs can be
-- told apart; and finished jobs get an index by finish time, so that retention deletes old ones
-- without scanning the table.
ALTER TABLE jobs ADD COLUMN client TEXT;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
