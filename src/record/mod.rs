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

use crate::decide::History;

pub mod batch;
pub mod lease;
pub mod lock;
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

/// A new message row.
#[derive(Debug, Clone, Default)]
pub struct NewMessage<'a> {
    pub key: &'a str,
    pub mailbox: &'a str,
    pub message_id: Option<&'a str>,
    pub sender: &'a str,
    pub subject: &'a str,
    pub verdict: &'a str,
    pub folder: &'a str,
    pub queue: Option<&'a str>,
    pub rep: Option<&'a str>,
    pub template: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub ticket: Option<&'a str>,
    /// JSON of the decision and its evidence.
    pub decision: &'a str,
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

    /// Records a decision (state `decided`), replacing an earlier deferred one.
    pub async fn record_decision(&self, m: &NewMessage<'_>, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO messages (key, mailbox, message_id, sender, subject, received_at, updated_at, \
             state, verdict, folder, queue, rep, template, rule, ticket, decision) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, 'decided', $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (key) DO UPDATE SET mailbox = $2, updated_at = $6, state = 'decided', \
             verdict = $7, folder = $8, queue = $9, rep = $10, template = $11, rule = $12, \
             ticket = $13, decision = $14, retry_at = NULL",
        )
        .bind(m.key)
        .bind(m.mailbox)
        .bind(m.message_id)
        .bind(m.sender)
        .bind(m.subject)
        .bind(now)
        .bind(m.verdict)
        .bind(m.folder)
        .bind(m.queue)
        .bind(m.rep)
        .bind(m.template)
        .bind(m.rule)
        .bind(m.ticket)
        .bind(m.decision)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves a message to a new state.
    pub async fn set_state(&self, key: &str, state: State, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET state = $1, updated_at = $2 WHERE key = $3")
            .bind(state.as_str())
            .bind(now)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the intent to send: written *before* the reply is handed to
    /// the transport, so a crash during sending is never followed by a
    /// second send.
    pub async fn reply_intent(
        &self,
        key: &str,
        reply_id: &str,
        raw: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET state = 'sending', reply_message_id = $1, reply_raw = $2, \
             updated_at = $3, attempts = attempts + 1 WHERE key = $4",
        )
        .bind(reply_id)
        .bind(String::from_utf8_lossy(raw).into_owned())
        .bind(now)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a sent reply (state `sent`) in one transaction with the
    /// reply log that rate limits read.
    #[allow(clippy::too_many_arguments)]
    pub async fn reply_sent(
        &self,
        key: &str,
        reply_id: &str,
        to: &SentTo<'_>,
        template: &str,
        ticket: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE messages SET state = 'sent', updated_at = $1 WHERE key = $2")
            .bind(now)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO replies (message_id, message_key, recipient, template, ticket, sent_at, \
             sender, sender_domain, recipient_domain) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(reply_id)
        .bind(key)
        .bind(to.recipient.to_lowercase())
        .bind(template)
        .bind(ticket)
        .bind(now)
        .bind(to.sender.to_lowercase())
        .bind(domain_of(to.sender))
        .bind(domain_of(to.recipient))
        .execute(&mut *tx)
        .await?;
        if let Some(t) = ticket {
            sqlx::query(
                "INSERT INTO thread_ids (message_id, ticket, auto_reply) VALUES ($1, $2, 1) \
                 ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(reply_id)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE conversations SET auto_replies = auto_replies + 1, updated_at = $1 WHERE ticket = $2",
            )
            .bind(now)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
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
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE messages SET state = 'decided', verdict = $1, folder = $2, queue = $3, \
             last_error = $4, updated_at = $5 WHERE key = $6 AND state <> 'done'",
        )
        .bind(verdict)
        .bind(folder)
        .bind(queue)
        .bind(note)
        .bind(now)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
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
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE messages SET state = 'deferred', retry_at = $1, last_error = $2, updated_at = $3 \
             WHERE key = $4 AND state <> 'done'",
        )
        .bind(retry_at)
        .bind(error)
        .bind(now)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The message was filed into its final folder.
    pub async fn done(&self, key: &str, folder: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET state = 'done', folder = $1, updated_at = $2 WHERE key = $3",
        )
        .bind(folder)
        .bind(now)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Rate-limit and threading facts for a decision: the limits for the
    /// address a reply would go to (`recipient`) and for the From address
    /// (`sender`), and whether the message answers one of our replies.
    pub async fn history(
        &self,
        to: &SentTo<'_>,
        template: Option<&str>,
        references: &[String],
        now: i64,
    ) -> Result<History, StoreError> {
        let mut h = History::default();
        let recipient = to.recipient.to_lowercase();
        let sender = to.sender.to_lowercase();
        let hour_ago = now - 3_600_000;
        if let Some(t) = template {
            if !recipient.is_empty() {
                h.last_reply_to_recipient = sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT MAX(sent_at) FROM replies WHERE recipient = $1 AND template = $2",
                )
                .bind(&recipient)
                .bind(t)
                .fetch_one(&self.pool)
                .await?;
            }
            if !sender.is_empty() {
                h.last_reply_from_sender = sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT MAX(sent_at) FROM replies WHERE sender = $1 AND template = $2",
                )
                .bind(&sender)
                .bind(t)
                .fetch_one(&self.pool)
                .await?;
            }
        }
        if !recipient.is_empty() {
            h.last_any_reply_to_recipient = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(sent_at) FROM replies WHERE recipient = $1",
            )
            .bind(&recipient)
            .fetch_one(&self.pool)
            .await?;
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM replies WHERE recipient_domain = $1 AND sent_at > $2",
            )
            .bind(domain_of(&recipient))
            .bind(hour_ago)
            .fetch_one(&self.pool)
            .await?;
            h.recipient_domain_last_hour = clamp_u32(n);
        }
        if !sender.is_empty() {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM replies WHERE sender_domain = $1 AND sent_at > $2",
            )
            .bind(domain_of(&sender))
            .bind(hour_ago)
            .fetch_one(&self.pool)
            .await?;
            h.sender_domain_last_hour = clamp_u32(n);
        }
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT recipient) FROM replies WHERE sent_at > $1")
                .bind(hour_ago)
                .fetch_one(&self.pool)
                .await?;
        h.replies_last_hour = clamp_u32(n);
        for r in references.iter().take(50) {
            let auto: Option<i64> =
                sqlx::query_scalar("SELECT auto_reply FROM thread_ids WHERE message_id = $1")
                    .bind(r)
                    .fetch_optional(&self.pool)
                    .await?;
            if auto == Some(1) {
                h.answers_auto_reply = true;
                break;
            }
        }
        Ok(h)
    }

    /// The next value of a named counter (starting at `start`).
    pub async fn next_counter(&self, name: &str, start: i64) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(start - 1)
        .execute(&mut *tx)
        .await?;
        let v: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(v)
    }

    /// The conversation a message belongs to, found by the Message-IDs it
    /// answers.
    pub async fn ticket_for_references(
        &self,
        ids: &[String],
    ) -> Result<Option<String>, StoreError> {
        for id in ids.iter().rev().take(50) {
            let t: Option<String> =
                sqlx::query_scalar("SELECT ticket FROM thread_ids WHERE message_id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            if t.is_some() {
                return Ok(t);
            }
        }
        Ok(None)
    }

    pub async fn conversation(&self, ticket: &str) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(
            "SELECT ticket, customer, subject, queue, rep, customer_messages, auto_replies, escalated, since_human \
             FROM conversations WHERE ticket = $1",
        )
        .bind(ticket)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_row).transpose()
    }

    /// Opens a conversation or adds a customer message to it, and links
    /// the message's id to it. `human_replied`: the message answers a
    /// person's reply, which restarts the count towards escalation.
    pub async fn touch_conversation(
        &self,
        ticket: &str,
        customer: &str,
        subject: &str,
        message_id: Option<&str>,
        human_replied: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO conversations (ticket, customer, subject, created_at, updated_at, customer_messages, since_human) \
             VALUES ($1, $2, $3, $4, $4, 1, 1) \
             ON CONFLICT (ticket) DO UPDATE SET customer_messages = conversations.customer_messages + 1, \
             since_human = CASE WHEN $5 = 1 THEN 1 ELSE conversations.since_human + 1 END, \
             updated_at = $4",
        )
        .bind(ticket)
        .bind(customer.to_lowercase())
        .bind(subject)
        .bind(now)
        .bind(i64::from(human_replied))
        .execute(&mut *tx)
        .await?;
        if let Some(id) = message_id {
            sqlx::query(
                "INSERT INTO thread_ids (message_id, ticket, auto_reply) VALUES ($1, $2, 0) \
                 ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(id)
            .bind(ticket)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets who handles a conversation.
    pub async fn assign_conversation(
        &self,
        ticket: &str,
        queue: Option<&str>,
        rep: Option<&str>,
        escalated: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE conversations SET queue = COALESCE($1, queue), rep = COALESCE($2, rep), \
             escalated = CASE WHEN $3 = 1 THEN 1 ELSE escalated END, updated_at = $4 WHERE ticket = $5",
        )
        .bind(queue)
        .bind(rep)
        .bind(i64::from(escalated))
        .bind(now)
        .bind(ticket)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Links the Message-ID of an automatic reply to its conversation (so an
    /// answer to it is recognised as answering an automatic reply).
    pub async fn link_auto_reply(&self, message_id: &str, ticket: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO thread_ids (message_id, ticket, auto_reply) VALUES ($1, $2, 1) \
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(message_id)
        .bind(ticket)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether any of these Message-IDs belongs to a known conversation.
    pub async fn knows_any(&self, ids: &[String]) -> Result<bool, StoreError> {
        Ok(self.ticket_for_references(ids).await?.is_some())
    }

    /// The current value of a named counter.
    pub async fn counter(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Sets a named counter.
    pub async fn set_counter(&self, name: &str, value: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = $2",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
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
        let mut tx = self.write_tx().await?;
        sqlx::query(
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
        .bind(&e.data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
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

    /// Count of messages by verdict.
    pub async fn verdict_counts(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT verdict, COUNT(*) AS n FROM messages WHERE received_at >= $1 GROUP BY verdict ORDER BY verdict",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("verdict")?, r.try_get("n")?)))
            .collect()
    }

    /// The underlying pool, for commands that need ad-hoc queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Whom an automatic reply goes to, and whose message it answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SentTo<'a> {
    /// The address mailed (Reply-To, From or Return-Path).
    pub recipient: &'a str,
    /// The From address of the message answered.
    pub sender: &'a str,
}

/// The domain of an address, lower-case ("" without `@`).
fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim().to_lowercase())
        .unwrap_or_default()
}

fn clamp_u32(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
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

    #[tokio::test]
    async fn protocol_and_history() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let s = Store::open(&url).await?;
        let m = NewMessage {
            key: "mid:a@x",
            mailbox: "support",
            sender: "a@x",
            verdict: "reply",
            folder: "Answered",
            template: Some("faq/x"),
            decision: "{}",
            ..Default::default()
        };
        s.record_decision(&m, 1000).await?;
        s.reply_intent("mid:a@x", "r1@us", b"raw", 1001).await?;
        let row = s.message("mid:a@x").await?.ok_or("row")?;
        assert_eq!(row.state, State::Sending);
        assert_eq!(row.reply_message_id.as_deref(), Some("r1@us"));
        s.touch_conversation("SB-1", "A@X", "hi", Some("a@x"), false, 1000)
            .await?;
        let sent = SentTo {
            recipient: "A@x",
            sender: "a@x",
        };
        s.reply_sent("mid:a@x", "r1@us", &sent, "faq/x", Some("SB-1"), 1002)
            .await?;
        let h = s
            .history(
                &SentTo {
                    recipient: "a@X",
                    sender: "a@x",
                },
                Some("faq/x"),
                &["r1@us".to_string()],
                2000,
            )
            .await?;
        assert_eq!(h.last_reply_to_recipient, Some(1002));
        assert_eq!(h.last_reply_from_sender, Some(1002));
        assert_eq!(h.recipient_domain_last_hour, 1);
        assert_eq!(h.replies_last_hour, 1);
        assert!(h.answers_auto_reply);
        // A forged Reply-To: the From address still remembers its reply.
        let h = s
            .history(
                &SentTo {
                    recipient: "victim@elsewhere",
                    sender: "A@x",
                },
                Some("faq/x"),
                &[],
                2000,
            )
            .await?;
        assert_eq!(h.last_reply_to_recipient, None);
        assert_eq!(h.last_reply_from_sender, Some(1002));
        assert_eq!(h.sender_domain_last_hour, 1);
        assert_eq!(h.recipient_domain_last_hour, 0);
        assert!(!h.answers_auto_reply);
        assert_eq!(s.next_counter("ticket", 1001).await?, 1001);
        assert_eq!(s.next_counter("ticket", 1001).await?, 1002);
        assert_eq!(
            s.ticket_for_references(&["x".into(), "r1@us".into()])
                .await?
                .as_deref(),
            Some("SB-1")
        );
        let c = s.conversation("SB-1").await?.ok_or("conv")?;
        assert_eq!((c.customer_messages, c.auto_replies), (1, 1));
        s.done("mid:a@x", "Answered", 3000).await?;
        assert_eq!(
            s.message("mid:a@x").await?.map(|r| r.state),
            Some(State::Done)
        );
        // Reopening keeps the data (migrations are idempotent).
        drop(s);
        let s = Store::open(&url).await?;
        assert!(s.message("mid:a@x").await?.is_some());
        Ok(())
    }
}
