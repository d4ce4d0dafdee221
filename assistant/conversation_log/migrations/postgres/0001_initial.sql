-- Conversation log, PostgreSQL. Grafana panels query these table and column names directly:
-- rename nothing. Keep migrations/sqlite/0001_initial.sql in step (same tables, same columns).
-- Migrations only ever add: no DROP, no destructive ALTER.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per exchange (a question and its answer).
CREATE TABLE IF NOT EXISTS conversations (
    id                      TEXT PRIMARY KEY,          -- uuid4 hex of the exchange
    conversation_id         TEXT NOT NULL,             -- groups follow-up questions
    turn                    INTEGER NOT NULL,          -- 1, 2, ... within the conversation
    question                TEXT NOT NULL,
    rewritten_question      TEXT,
    answer                  TEXT,
    sources                 JSONB NOT NULL DEFAULT '[]'::jsonb,  -- [{article_id,title,url,chunk_id,score}]
    mode                    TEXT,                      -- 'llm' | 'extractive'
    model                   TEXT,
    category                TEXT,
    language                TEXT,
    status                  TEXT NOT NULL DEFAULT 'ok',  -- 'ok' | 'llm_error' | 'engine_error' ...
    error                   TEXT,
    response_time           DOUBLE PRECISION,          -- seconds
    retrieval_time          DOUBLE PRECISION,
    llm_time                DOUBLE PRECISION,
    prompt_tokens           INTEGER,
    completion_tokens       INTEGER,
    total_tokens            INTEGER,
    judge_prompt_tokens     INTEGER,
    judge_completion_tokens INTEGER,
    judge_total_tokens      INTEGER,
    cost                    NUMERIC,                   -- USD; NULL when unknown
    judge_cost              NUMERIC,
    relevance               TEXT CHECK (relevance IN ('RELEVANT', 'PARTLY_RELEVANT', 'NON_RELEVANT')),
    relevance_explanation   TEXT,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_conversations_conversation_id ON conversations (conversation_id, turn);
CREATE INDEX IF NOT EXISTS idx_conversations_created_at ON conversations (created_at);

CREATE TABLE IF NOT EXISTS feedback (
    id              SERIAL PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    exchange_id     TEXT,                              -- latest exchange when the feedback came
    feedback        INTEGER NOT NULL CHECK (feedback IN (1, -1)),
    comment         TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_feedback_conversation_id ON feedback (conversation_id);
CREATE INDEX IF NOT EXISTS idx_feedback_created_at ON feedback (created_at);
