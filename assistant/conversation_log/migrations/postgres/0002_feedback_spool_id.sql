-- Feedback written while the database was down is spooled to a file and replayed later. Each
-- feedback carries a client-made uuid so that a replay that runs twice (crash between the commit
-- and the truncation of the spool) stores it once. NULL for rows written by other tools.

ALTER TABLE feedback ADD COLUMN IF NOT EXISTS spool_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS idx_feedback_spool_id ON feedback (spool_id);
