-- Several instances on one store: each mailbox is worked by the instance
-- holding its lease. `token` grows with every new holder (fencing: a
-- write for a mailbox checks that the writer's token is still current).
-- Times are milliseconds since the epoch, from the database's clock.
CREATE TABLE leases (
    mailbox TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- The instances working on this store, with their last heartbeat.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
-- Messages between decision and filing (few at any time): a mailbox's
-- task settles those filed just before a crash (record::batch::settle_filed).
CREATE INDEX messages_open ON messages (state, mailbox, updated_at);
