-- switchboard state, SQLite flavour. Keep in step with migrations/postgres.
-- Timestamps are milliseconds since the Unix epoch.

-- One row per distinct message (by Message-ID, or a hash when it has none):
-- where it is in the processing protocol and what was decided.
CREATE TABLE messages (
    key              TEXT PRIMARY KEY,
    mailbox          TEXT NOT NULL,
    message_id       TEXT,
    sender           TEXT NOT NULL DEFAULT '',
    subject          TEXT NOT NULL DEFAULT '',
    received_at      BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    -- decided | sending | sent | archived | deferred | done
    state            TEXT NOT NULL,
    verdict          TEXT NOT NULL DEFAULT '',
    folder           TEXT NOT NULL DEFAULT '',
    queue            TEXT,
    rep              TEXT,
    template         TEXT,
    rule             TEXT,
    ticket           TEXT,
    reply_message_id TEXT,
    -- the formatted reply, kept until it is filed in Sent (crash recovery)
    reply_raw        TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    retry_at         BIGINT,
    last_error       TEXT,
    decision         TEXT
);
CREATE INDEX messages_ticket ON messages (ticket);
CREATE INDEX messages_sender ON messages (sender);
CREATE INDEX messages_received ON messages (received_at);

-- Every automatic reply that was handed to the transport.
CREATE TABLE replies (
    message_id  TEXT PRIMARY KEY,
    message_key TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    template    TEXT NOT NULL,
    ticket      TEXT,
    sent_at     BIGINT NOT NULL
);
CREATE INDEX replies_recipient ON replies (recipient, template, sent_at);
CREATE INDEX replies_sent_at ON replies (sent_at);

-- Conversations (tickets) and the Message-IDs that belong to them.
CREATE TABLE conversations (
    ticket            TEXT PRIMARY KEY,
    customer          TEXT NOT NULL,
    subject           TEXT NOT NULL DEFAULT '',
    queue             TEXT,
    rep               TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    customer_messages BIGINT NOT NULL DEFAULT 0,
    auto_replies      BIGINT NOT NULL DEFAULT 0,
    escalated         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX conversations_customer ON conversations (customer);

CREATE TABLE thread_ids (
    message_id TEXT PRIMARY KEY,
    ticket     TEXT NOT NULL,
    -- 1 for our own automatic replies
    auto_reply BIGINT NOT NULL DEFAULT 0
);

-- Named counters (ticket numbers, round-robin positions).
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- The audit log: every interaction, append-only.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    event       TEXT NOT NULL,
    mailbox     TEXT,
    message_key TEXT,
    message_id  TEXT,
    sender      TEXT,
    ticket      TEXT,
    queue       TEXT,
    rep         TEXT,
    detail      TEXT NOT NULL DEFAULT '',
    data        TEXT
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_sender ON audit (sender);
CREATE INDEX audit_ticket ON audit (ticket);
