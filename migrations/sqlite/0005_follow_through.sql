-- Follow-through: when people answered, and the service-level deadline
-- of each conversation (times in ms since the epoch).
ALTER TABLE conversations ADD COLUMN first_response_at BIGINT;
ALTER TABLE conversations ADD COLUMN last_human_at BIGINT;
ALTER TABLE conversations ADD COLUMN last_customer_at BIGINT;
-- The first first-response deadline (for attainment), and the open one.
ALTER TABLE conversations ADD COLUMN first_due_at BIGINT;
ALTER TABLE conversations ADD COLUMN due_at BIGINT;
ALTER TABLE conversations ADD COLUMN due_kind TEXT;
ALTER TABLE conversations ADD COLUMN reminded_at BIGINT;
ALTER TABLE conversations ADD COLUMN sla_escalated_at BIGINT;
ALTER TABLE conversations ADD COLUMN breaches BIGINT NOT NULL DEFAULT 0;
-- Waiting on the customer: marked solved after close_after of silence
-- (and the one check-in message, when configured).
ALTER TABLE conversations ADD COLUMN closed_at BIGINT;
ALTER TABLE conversations ADD COLUMN checked_in_at BIGINT;
CREATE INDEX conversations_due ON conversations (due_at);
-- Draft answers stored for people, and what became of them.
CREATE TABLE drafts (
    draft_id   TEXT PRIMARY KEY,
    ticket     TEXT,
    message_key TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    outcome    TEXT,
    outcome_at BIGINT
);
CREATE INDEX drafts_ticket ON drafts (ticket);
