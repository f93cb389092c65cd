-- 0006: schema version 5 -> 6.
-- Arrays count their elements that retention purged, by final state (issue 18): a restarted
-- broker adds them to the ended elements it finds, so a partly purged array keeps its counts
-- and still ends.
ALTER TABLE arrays ADD COLUMN purged_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE arrays ADD COLUMN purged_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE arrays ADD COLUMN purged_cancelled INTEGER NOT NULL DEFAULT 0;
