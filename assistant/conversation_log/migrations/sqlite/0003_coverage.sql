-- The coverage gate's decision on each exchange (issue 8): covered (1) or not (0), and the
-- gate's score (NULL when the gate was off). Existing rows count as covered.
-- (SQLite has no ADD COLUMN IF NOT EXISTS: the runner applies each version once.)

ALTER TABLE conversations ADD COLUMN covered INTEGER NOT NULL DEFAULT 1;
ALTER TABLE conversations ADD COLUMN coverage_score REAL;
CREATE INDEX IF NOT EXISTS idx_conversations_covered ON conversations (covered, created_at);
