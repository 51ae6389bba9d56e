-- Representatives marked away with `switchboard rep away`.
-- away_until: milliseconds since the Unix epoch; NULL = until further notice.
CREATE TABLE rep_status (
    rep        TEXT PRIMARY KEY,
    away_until BIGINT,
    note       TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL
);

-- Customer messages in a conversation since a person last replied
-- (drives automatic escalation).
ALTER TABLE conversations ADD COLUMN since_human BIGINT NOT NULL DEFAULT 0;
CREATE INDEX audit_rep ON audit (rep);
CREATE INDEX messages_rep ON messages (rep);
