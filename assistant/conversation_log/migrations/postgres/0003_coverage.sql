-- The coverage gate's decision on each exchange (issue 8): covered or not, and the gate's
-- score (NULL when the gate was off). Existing rows count as covered.

ALTER TABLE conversations ADD COLUMN IF NOT EXISTS covered BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS coverage_score DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS idx_conversations_covered ON conversations (covered, created_at);
