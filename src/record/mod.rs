//! Stage 6 — **record**: the state store and the audit log.
//!
//! sqlx's `Any` driver runs the same queries on SQLite (the default, one
//! file) and PostgreSQL (several instances, one state). Queries use `$1`
//! placeholders, which both understand; the two schemas live in
//! `migrations/sqlite` and `migrations/postgres` and are applied on start.
//!
//! The `messages.state` column is the crash-safety protocol of the act
//! stage: `decided` → (`sending` → `sent` → `archived`) → `done`, or
//! `deferred` after a temporary failure. See [`crate::pipeline`].

use std::collections::HashMap;
use std::str::FromStr;

use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

pub mod batch;
pub mod lease;
pub mod lock;
pub mod sla;
pub use batch::{
    Commit, ConversationWrite, CounterWrite, MessageWrite, ReplyFacts, Reservation, SentReply,
    StoredFacts,
};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the state store {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot migrate the state store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state store: {0}")]
    Query(#[from] sqlx::Error),
    /// A counter moved between reading the facts and writing (another
    /// instance used the same ticket number or round-robin turn).
    #[error("state store: counter {0} changed concurrently")]
    Conflict(String),
    /// This instance no longer holds the mailbox's lease: another one
    /// took it over, and nothing more is written for it from here.
    #[error("the lease on mailbox {0} was taken over by another instance; stopping work on it")]
    Fenced(String),
    #[error("state store: unknown message state {0:?} (written by a newer version?)")]
    UnknownState(String),
}

/// Where a message is in the processing protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Decided; side effects not yet done.
    Decided,
    /// A reply is being handed to the transport. After a crash in this
    /// state we cannot know whether it went out: never send again.
    Sending,
    /// The reply was accepted by the transport.
    Sent,
    /// The copy of the reply is in the Sent folder.
    Archived,
    /// A temporary failure; retry after `retry_at`.
    Deferred,
    /// Filed into its final folder.
    Done,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Decided => "decided",
            State::Sending => "sending",
            State::Sent => "sent",
            State::Archived => "archived",
            State::Deferred => "deferred",
            State::Done => "done",
        }
    }

    /// Decodes a stored state; an unknown one is an error, never a
    /// default (a wrong guess could send a reply twice).
    pub fn parse(s: &str) -> Result<State, StoreError> {
        Ok(match s {
            "decided" => State::Decided,
            "sending" => State::Sending,
            "sent" => State::Sent,
            "archived" => State::Archived,
            "deferred" => State::Deferred,
            "done" => State::Done,
            other => return Err(StoreError::UnknownState(other.to_string())),
        })
    }
}

/// What the store remembers about one message.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    pub key: String,
    pub mailbox: String,
    pub state: State,
    pub verdict: String,
    pub folder: String,
    pub queue: Option<String>,
    pub rep: Option<String>,
    pub template: Option<String>,
    pub ticket: Option<String>,
    pub reply_message_id: Option<String>,
    pub attempts: i64,
    pub retry_at: Option<i64>,
    pub last_error: Option<String>,
}

/// One audit record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditEvent {
    pub at: i64,
    pub event: String,
    pub mailbox: Option<String>,
    pub message_key: Option<String>,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub ticket: Option<String>,
    pub queue: Option<String>,
    pub rep: Option<String>,
    pub detail: String,
    /// JSON with the full evidence, when there is some.
    pub data: Option<String>,
}

/// A conversation (ticket).
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub ticket: String,
    pub customer: String,
    pub subject: String,
    pub queue: Option<String>,
    pub rep: Option<String>,
    pub customer_messages: i64,
    pub auto_replies: i64,
    pub escalated: bool,
    /// Customer messages since a person last replied.
    pub since_human: i64,
    /// When a person first answered.
    pub first_response_at: Option<i64>,
    /// When a person last answered.
    pub last_human_at: Option<i64>,
    /// The open service-level deadline.
    pub due_at: Option<i64>,
}

/// The state store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Whether the database is SQLite (statements use `?` there, see
    /// `batch::positional`).
    sqlite: bool,
    /// Writes for a mailbox check this lease (see [`lease`]).
    fence: Option<std::sync::Arc<lease::Fence>>,
}

/// The schema migrations, embedded in the binary: (version, description,
/// SQL) for SQLite and for PostgreSQL.
const MIGRATIONS_SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "team",
        include_str!("../../migrations/sqlite/0002_team.sql"),
    ),
    (
        3,
        "reply keys",
        include_str!("../../migrations/sqlite/0003_reply_keys.sql"),
    ),
    (
        4,
        "leases",
        include_str!("../../migrations/sqlite/0004_leases.sql"),
    ),
    (
        5,
        "follow-through",
        include_str!("../../migrations/sqlite/0005_follow_through.sql"),
    ),
];
const MIGRATIONS_POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "team",
        include_str!("../../migrations/postgres/0002_team.sql"),
    ),
    (
        3,
        "reply keys",
        include_str!("../../migrations/postgres/0003_reply_keys.sql"),
    ),
    (
        4,
        "leases",
        include_str!("../../migrations/postgres/0004_leases.sql"),
    ),
    (
        5,
        "follow-through",
        include_str!("../../migrations/postgres/0005_follow_through.sql"),
    ),
];

/// A migrator over embedded migrations (what sqlx's `migrate!` macro
/// builds, without compiling the macro crates and both drivers twice).
fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator {
        migrations: std::borrow::Cow::Owned(
            list.iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        std::borrow::Cow::Borrowed(*description),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let full = if sqlite && !url.contains('?') {
            if let Some(path) = url.strip_prefix("sqlite://")
                && let Some(dir) = std::path::Path::new(path).parent()
            {
                let _ = std::fs::create_dir_all(dir);
            }
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let shown = redact_url(url);
        let opts = AnyConnectOptions::from_str(&full).map_err(|source| StoreError::Open {
            url: shown.clone(),
            source,
        })?;
        // One SQLite connection: SQLite writes one transaction at a time
        // anyway, and several connections invalidate each other's page
        // cache on every write.
        let mut pool_opts = AnyPoolOptions::new().max_connections(if sqlite { 1 } else { 8 });
        if !sqlite {
            // A paused or cut-off instance must not hold a row lock (its
            // lease row, a counter) for long: the server ends a
            // transaction left idle for 30 s, and no statement waits more
            // than 10 s for a lock (the caller retries).
            pool_opts = pool_opts.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("SET lock_timeout = '10s'").await?;
                    conn.execute("SET idle_in_transaction_session_timeout = '30s'")
                        .await?;
                    Ok(())
                })
            });
        }
        if sqlite {
            pool_opts = pool_opts.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            });
        }
        let pool = pool_opts
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open { url: shown, source })?;
        migrator(if sqlite {
            MIGRATIONS_SQLITE
        } else {
            MIGRATIONS_POSTGRES
        })
        .run(&pool)
        .await?;
        Ok(Store {
            pool,
            sqlite,
            fence: None,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The row of a message, if it was seen before.
    pub async fn message(&self, key: &str) -> Result<Option<MessageRow>, StoreError> {
        let row = sqlx::query(
            "SELECT key, mailbox, state, verdict, folder, queue, rep, template, ticket, \
             reply_message_id, attempts, retry_at, last_error FROM messages WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(message_row).transpose()
    }

    /// The formatted reply recorded with the intent to send.
    pub async fn reply_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let raw: Option<Option<String>> =
            sqlx::query_scalar("SELECT reply_raw FROM messages WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(raw.flatten().map(String::into_bytes))
    }

    /// Replaces the verdict of a message whose plan changed (e.g. a reply
    /// that may already have been sent before a crash goes to a person).
    pub async fn reroute(
        &self,
        key: &str,
        verdict: &str,
        folder: &str,
        queue: Option<&str>,
        note: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE messages SET state = 'decided', verdict = $1, folder = $2, queue = $3, \
             last_error = $4, updated_at = $5 WHERE key = $6 AND state <> 'done'",
        )
        .bind(verdict)
        .bind(folder)
        .bind(queue)
        .bind(note)
        .bind(now)
        .bind(key);
        self.exec_fenced(q).await?;
        Ok(())
    }

    /// A temporary failure: the message stays where it is and is retried
    /// after `retry_at`.
    pub async fn defer(
        &self,
        key: &str,
        retry_at: i64,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE messages SET state = 'deferred', retry_at = $1, last_error = $2, updated_at = $3 \
             WHERE key = $4 AND state <> 'done'",
        )
        .bind(retry_at)
        .bind(error)
        .bind(now)
        .bind(key);
        self.exec_fenced(q).await?;
        Ok(())
    }

    /// Representatives marked away: rep id → away until (ms; `i64::MAX`
    /// for "until further notice"). Marks that have run out are left out.
    pub async fn away(&self, now: i64) -> Result<HashMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT rep, away_until FROM rep_status")
            .fetch_all(&self.pool)
            .await?;
        let mut out = HashMap::new();
        for r in rows {
            let rep: String = r.try_get("rep")?;
            let until: Option<i64> = r.try_get("away_until")?;
            let until = until.unwrap_or(i64::MAX);
            if until > now {
                out.insert(rep, until);
            }
        }
        Ok(out)
    }

    /// Marks a representative away (`until = None`: until further notice).
    pub async fn set_away(
        &self,
        rep: &str,
        until: Option<i64>,
        note: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rep_status (rep, away_until, note, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (rep) DO UPDATE SET away_until = $2, note = $3, updated_at = $4",
        )
        .bind(rep)
        .bind(until)
        .bind(note)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Clears an away mark; whether there was one.
    pub async fn clear_away(&self, rep: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM rep_status WHERE rep = $1")
            .bind(rep)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Messages per (verdict, queue, rep) received since `since`.
    pub async fn routing_counts(
        &self,
        since: i64,
    ) -> Result<Vec<(String, Option<String>, Option<String>, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT verdict, queue, rep, COUNT(*) AS n FROM messages WHERE received_at >= $1 \
             GROUP BY verdict, queue, rep ORDER BY verdict, queue, rep",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("verdict")?,
                    r.try_get("queue")?,
                    r.try_get("rep")?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }

    /// Appends to the audit log.
    pub async fn audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        let q = sqlx::query(
            "INSERT INTO audit (at, event, mailbox, message_key, message_id, sender, ticket, queue, rep, detail, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(e.at)
        .bind(&e.event)
        .bind(&e.mailbox)
        .bind(&e.message_key)
        .bind(&e.message_id)
        .bind(&e.sender)
        .bind(&e.ticket)
        .bind(&e.queue)
        .bind(&e.rep)
        .bind(&e.detail)
        .bind(&e.data);
        self.exec_fenced(q).await?;
        Ok(())
    }

    /// Audit records, newest last, filtered.
    pub async fn audit_query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, event, mailbox, message_key, message_id, sender, ticket, queue, rep, detail, data \
             FROM audit WHERE ($1 IS NULL OR sender = $1) AND ($2 IS NULL OR ticket = $2) \
             AND ($3 IS NULL OR rep = $3) AND at >= $4 AND at < $5 AND ($6 IS NULL OR event = $6) \
             AND ($8 IS NULL OR queue = $8) \
             ORDER BY at, id LIMIT $7",
        )
        .bind(q.sender.as_deref().map(str::to_lowercase))
        .bind(q.ticket.as_deref())
        .bind(q.rep.as_deref())
        .bind(q.since.unwrap_or(0))
        .bind(q.until.unwrap_or(i64::MAX))
        .bind(q.event.as_deref())
        .bind(q.limit.unwrap_or(1_000_000))
        .bind(q.queue.as_deref())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    at: r.try_get("at")?,
                    event: r.try_get("event")?,
                    mailbox: r.try_get("mailbox")?,
                    message_key: r.try_get("message_key")?,
                    message_id: r.try_get("message_id")?,
                    sender: r.try_get("sender")?,
                    ticket: r.try_get("ticket")?,
                    queue: r.try_get("queue")?,
                    rep: r.try_get("rep")?,
                    detail: r.try_get("detail")?,
                    data: r.try_get("data")?,
                })
            })
            .collect()
    }

    /// The underlying pool, for commands that need ad-hoc queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Decodes a `messages` row.
pub(crate) fn message_row(r: &sqlx::any::AnyRow) -> Result<MessageRow, StoreError> {
    Ok(MessageRow {
        key: r.try_get("key")?,
        mailbox: r.try_get("mailbox")?,
        state: State::parse(&r.try_get::<String, _>("state")?)?,
        verdict: r.try_get("verdict")?,
        folder: r.try_get("folder")?,
        queue: r.try_get("queue")?,
        rep: r.try_get("rep")?,
        template: r.try_get("template")?,
        ticket: r.try_get("ticket")?,
        reply_message_id: r.try_get("reply_message_id")?,
        attempts: r.try_get("attempts")?,
        retry_at: r.try_get("retry_at")?,
        last_error: r.try_get("last_error")?,
    })
}

/// Decodes a `conversations` row.
pub(crate) fn conversation_row(r: &sqlx::any::AnyRow) -> Result<Conversation, StoreError> {
    Ok(Conversation {
        ticket: r.try_get("ticket")?,
        customer: r.try_get("customer")?,
        subject: r.try_get("subject")?,
        queue: r.try_get("queue")?,
        rep: r.try_get("rep")?,
        customer_messages: r.try_get("customer_messages")?,
        auto_replies: r.try_get("auto_replies")?,
        escalated: r.try_get::<i64, _>("escalated")? != 0,
        since_human: r.try_get("since_human")?,
        first_response_at: r.try_get("first_response_at")?,
        last_human_at: r.try_get("last_human_at")?,
        due_at: r.try_get("due_at")?,
    })
}

/// Filters for [`Store::audit_query`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub sender: Option<String>,
    pub ticket: Option<String>,
    pub rep: Option<String>,
    pub queue: Option<String>,
    pub event: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: Option<i64>,
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &base[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &base[..s], user, &base[at + 1..])
        }
        _ => base.to_string(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://sb:pw@db/sb?sslmode=require&password=x"),
            "postgres://sb:***@db/sb?sslmode=require&password=***"
        );
        assert_eq!(
            super::redact_url("sqlite://state.db?mode=rwc"),
            "sqlite://state.db?mode=rwc"
        );
    }

    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://sb:pw@db/x"),
            "postgres://sb:***@db/x"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/x.db"),
            "sqlite:///var/lib/x.db"
        );
    }
}
