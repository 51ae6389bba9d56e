//! Batched reads and writes: everything a batch of messages needs to be
//! decided, read in a handful of queries, and everything it decided,
//! written in **one transaction** before any side effect. The messages'
//! final state (`done`) is one more statement after they are filed.
//!
//! Statements carry many rows each (`IN (…)` lists and multi-row
//! `VALUES`), in chunks that keep well below the parameter limits of
//! SQLite (32,766) and PostgreSQL (65,535). The SQL text is built only
//! from fixed column names and `$n` placeholders (hence `AssertSqlSafe`);
//! every value is a bind parameter.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::{AuditEvent, Conversation, MessageRow, State, Store, StoreError};

/// Rows per multi-row statement.
const CHUNK: usize = 200;

/// `$start, $start+1, …` for an `IN (…)` list.
fn list(n: usize, start: usize) -> String {
    let mut out = String::with_capacity(n * 7);
    push_list(&mut out, n, start);
    out
}

fn push_list(out: &mut String, n: usize, start: usize) {
    for i in start..start + n {
        if i > start {
            out.push_str(", ");
        }
        out.push('$');
        push_number(out, i);
    }
}

/// Appends `n` in decimal (a statement has thousands of placeholders:
/// cheaper than the formatting machinery).
fn push_number(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// `($1, $2), ($3, $4), …` for a multi-row `VALUES`.
fn values(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * (cols * 7 + 4));
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        push_list(&mut out, cols, r * cols + 1);
        out.push(')');
    }
    out
}

/// For SQLite, `$1, $2, …` numbered in order of appearance become
/// anonymous `?`: SQLite looks a named parameter up by a linear scan, so
/// binding n named parameters costs O(n²) (a fifth of the CPU of a large
/// batch). Statements whose numbers are not 1, 2, 3… in order are left
/// as they are.
pub(crate) fn positional(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut next = 1usize;
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if sql[start..j].parse::<usize>().ok()? != next {
                return None;
            }
            next += 1;
            out.push_str(&sql[last..i]);
            out.push('?');
            last = j;
            i = j;
        } else {
            i += 1;
        }
    }
    out.push_str(&sql[last..]);
    Some(out)
}

impl Store {
    /// The statement text for this store's database (see [`positional`]).
    pub(super) fn sql(&self, sql: String) -> String {
        if self.sqlite {
            positional(&sql).unwrap_or(sql)
        } else {
            sql
        }
    }

    /// A statement whose text depends on the batch (a row or a list item
    /// per message). Not kept prepared: each distinct text would stay in
    /// the connection's statement cache, and SQLite's compiled program
    /// of a 200-row INSERT is large (6 MiB of the daemon's memory in a
    /// backlog, measured).
    pub(super) fn many<'q>(
        &self,
        sql: String,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        sqlx::query(sqlx::AssertSqlSafe(self.sql(sql))).persistent(false)
    }
}

/// What the store knows that a batch's decisions depend on.
#[derive(Debug, Clone, Default)]
pub struct StoredFacts {
    /// Messages seen before, by key.
    pub rows: HashMap<String, MessageRow>,
    /// Known Message-IDs → their conversation (ticket).
    pub tickets: HashMap<String, String>,
    /// Message-IDs of our own automatic replies.
    pub auto_replies: HashSet<String>,
    /// Message-IDs of people's replies (a representative, or someone
    /// writing as us), seen in a watched mailbox.
    pub staff_replies: HashSet<String>,
    /// Open drafts by ticket: (draft Message-ID, text).
    pub drafts: HashMap<String, (String, String)>,
    /// Conversations by ticket.
    pub conversations: HashMap<String, Conversation>,
    /// Named counters (ticket numbers, round-robin positions).
    pub counters: HashMap<String, i64>,
    /// Representatives marked away: id → until (ms).
    pub away: HashMap<String, i64>,
}

/// What the store knows about earlier automatic replies, for the rate
/// limits of the messages that would get one.
#[derive(Debug, Clone, Default)]
pub struct ReplyFacts {
    /// (recipient, template) → last sent (ms).
    pub to_recipient: HashMap<(String, String), i64>,
    /// (From address answered, template) → last sent (ms).
    pub from_sender: HashMap<(String, String), i64>,
    /// Recipient → last automatic reply of any kind (ms).
    pub any_to_recipient: HashMap<String, i64>,
    /// Replies in the last hour per recipient domain / sender domain (for
    /// the domains of the batch's recipients and senders).
    pub recipient_domain_hour: HashMap<String, u32>,
    pub sender_domain_hour: HashMap<String, u32>,
    /// Distinct recipients in the last hour.
    pub recipients_hour: u32,
    /// Which of the batch's recipients are among them.
    pub answered_this_hour: HashSet<String>,
}

/// A message row as the commit writes it.
#[derive(Debug, Clone, Default)]
pub struct MessageWrite {
    pub key: String,
    pub mailbox: String,
    pub message_id: Option<String>,
    pub sender: String,
    pub subject: String,
    pub state: Option<State>,
    pub verdict: String,
    pub folder: String,
    pub queue: Option<String>,
    pub rep: Option<String>,
    pub template: Option<String>,
    pub rule: Option<String>,
    pub ticket: Option<String>,
    /// For a reply about to be sent: its Message-ID and formatted text.
    pub reply_message_id: Option<String>,
    pub reply_raw: Option<String>,
    pub last_error: Option<String>,
}

/// A conversation's change in one batch (summed over its messages).
#[derive(Debug, Clone, Default)]
pub struct ConversationWrite {
    pub ticket: String,
    pub customer: String,
    pub subject: String,
    /// Customer messages added.
    pub messages: i64,
    /// When a person replied in between: the customer messages since
    /// (the counter restarts); otherwise it grows by `messages`.
    pub since_human_reset: Option<i64>,
    pub queue: Option<String>,
    pub rep: Option<String>,
    pub escalated: bool,
    /// A person (a representative, or someone writing as us) answered
    /// in the conversation.
    pub human_reply: bool,
    /// A customer wrote (their latest message, for "waiting on us").
    pub customer_wrote: bool,
    /// A new service-level deadline: (when, first_response|follow_up).
    /// Kept when one is already open.
    pub due: Option<(i64, &'static str)>,
}

/// A counter moved by the batch: written only if it still has the value
/// the batch read (two instances cannot both use the same ticket number
/// or round-robin turn).
#[derive(Debug, Clone)]
pub struct CounterWrite {
    pub name: String,
    pub expected: Option<i64>,
    pub value: i64,
}

/// Everything one batch decided.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub messages: Vec<MessageWrite>,
    /// Replies about to be sent: recorded in the reply log with the
    /// decision, so that the rate limits of any other batch count them
    /// (released again if the send fails).
    pub reservations: Vec<Reservation>,
    pub conversations: Vec<ConversationWrite>,
    /// (Message-ID, ticket, is our automatic reply)
    pub thread_ids: Vec<(String, String, bool)>,
    /// (Message-ID, ticket) of people's replies.
    pub staff_ids: Vec<(String, String)>,
    /// Draft answers stored for people: (draft Message-ID, ticket,
    /// message key, text).
    pub drafts: Vec<(String, Option<String>, String, String)>,
    /// What became of drafts: (draft Message-ID, outcome).
    pub draft_outcomes: Vec<(String, String)>,
    pub counters: Vec<CounterWrite>,
    pub audit: Vec<AuditEvent>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.reservations.is_empty()
            && self.conversations.is_empty()
            && self.thread_ids.is_empty()
            && self.counters.is_empty()
            && self.audit.is_empty()
    }
}

/// One row of the reply log.
struct LogRow<'a> {
    reply_id: &'a str,
    key: &'a str,
    recipient: &'a str,
    sender: &'a str,
    template: &'a str,
    ticket: Option<&'a str>,
}

macro_rules! log_row_from {
    ($t:ty) => {
        impl<'a> From<&'a $t> for LogRow<'a> {
            fn from(r: &'a $t) -> Self {
                LogRow {
                    reply_id: &r.reply_id,
                    key: &r.key,
                    recipient: &r.recipient,
                    sender: &r.sender,
                    template: &r.template,
                    ticket: r.ticket.as_deref(),
                }
            }
        }
    };
}
log_row_from!(Reservation);
log_row_from!(SentReply);

/// An automatic reply about to be sent.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub key: String,
    pub reply_id: String,
    /// The address mailed and the From address answered.
    pub recipient: String,
    pub sender: String,
    pub template: String,
    pub ticket: Option<String>,
}

/// An automatic reply the transport accepted.
#[derive(Debug, Clone)]
pub struct SentReply {
    pub key: String,
    pub reply_id: String,
    /// The address mailed and the From address answered.
    pub recipient: String,
    pub sender: String,
    pub template: String,
    pub ticket: Option<String>,
    pub audit: AuditEvent,
}

/// The distinct values of a list, sorted.
fn sorted_unique(list: &[String]) -> Vec<&String> {
    let mut l: Vec<&String> = list.iter().collect();
    l.sort();
    l.dedup();
    l
}

fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim().to_lowercase())
        .unwrap_or_default()
}

impl Store {
    /// Enters replies in the reply log the rate limits read (once per
    /// reply Message-ID).
    async fn log_replies(
        &self,
        conn: &mut sqlx::AnyConnection,
        rows: &[LogRow<'_>],
        now: i64,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO replies (message_id, message_key, recipient, template, ticket, sent_at, \
             sender, sender_domain, recipient_domain) VALUES {} ON CONFLICT (message_id) DO NOTHING",
            values(rows.len(), 9)
        );
        let mut q = self.many(sql);
        for r in rows {
            q = q
                .bind(r.reply_id)
                .bind(r.key)
                .bind(r.recipient.to_lowercase())
                .bind(r.template)
                .bind(r.ticket)
                .bind(now)
                .bind(r.sender.to_lowercase())
                .bind(domain_of(r.sender))
                .bind(domain_of(r.recipient));
        }
        q.execute(conn).await?;
        Ok(())
    }

    /// Appends audit records, one statement for all of them.
    async fn insert_audit(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[&AuditEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO audit (at, event, mailbox, message_key, message_id, sender, ticket, \
             queue, rep, detail, data) VALUES {}",
            values(events.len(), 11)
        );
        let mut q = self.many(sql);
        for e in events {
            q = q
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
        }
        q.execute(conn).await?;
        Ok(())
    }

    /// Takes back the reservation of a reply that was not sent (deferred or
    /// refused): it no longer counts for the rate limits.
    pub async fn release_reply(&self, reply_id: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM replies WHERE message_id = $1")
            .bind(reply_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records replies the transport accepted (state `sending` → `sent`,
    /// the reply log the rate limits read, the reply's Message-ID in its
    /// conversation), in one transaction.
    pub async fn replies_sent(&self, sent: &[SentReply], now: i64) -> Result<(), StoreError> {
        if sent.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for chunk in sent.chunks(CHUNK) {
            let sql = format!(
                "UPDATE messages SET state = 'sent', updated_at = $1 WHERE state = 'sending' AND key IN ({})",
                list(chunk.len(), 2)
            );
            let mut q = self.many(sql).bind(now);
            for r in chunk {
                q = q.bind(&r.key);
            }
            q.execute(&mut *tx).await?;
            let rows: Vec<LogRow> = chunk.iter().map(LogRow::from).collect();
            self.log_replies(&mut tx, &rows, now).await?;
            let linked: Vec<&SentReply> = chunk.iter().filter(|r| r.ticket.is_some()).collect();
            if !linked.is_empty() {
                let sql = format!(
                    "INSERT INTO thread_ids (message_id, ticket, auto_reply) VALUES {} \
                     ON CONFLICT (message_id) DO NOTHING",
                    values(linked.len(), 3)
                );
                let mut q = self.many(sql);
                for r in &linked {
                    q = q.bind(&r.reply_id).bind(&r.ticket).bind(1i64);
                }
                q.execute(&mut *tx).await?;
            }
            let events: Vec<&AuditEvent> = chunk.iter().map(|r| &r.audit).collect();
            self.insert_audit(&mut tx, &events).await?;
        }
        let mut per_ticket: HashMap<&str, i64> = HashMap::new();
        for r in sent {
            if let Some(t) = &r.ticket {
                *per_ticket.entry(t).or_default() += 1;
            }
        }
        for (t, n) in per_ticket {
            sqlx::query(
                "UPDATE conversations SET auto_replies = auto_replies + $1, updated_at = $2 WHERE ticket = $3",
            )
            .bind(n)
            .bind(now)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The facts for a batch: message rows for `keys`, conversations for
    /// the Message-IDs a batch refers to and the ticket tags it carries,
    /// counters and away marks. Five queries, whatever the batch size.
    pub async fn facts(
        &self,
        keys: &[String],
        ids: &[String],
        tags: &[String],
        counters: &[String],
    ) -> Result<StoredFacts, StoreError> {
        let mut f = StoredFacts::default();
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT key, mailbox, state, verdict, folder, queue, rep, template, ticket, \
                 reply_message_id, attempts, retry_at, last_error FROM messages WHERE key IN ({})",
                list(chunk.len(), 1)
            );
            let mut q = self.many(sql);
            for k in chunk {
                q = q.bind(k);
            }
            for r in q.fetch_all(&self.pool).await? {
                let row = super::message_row(&r)?;
                f.rows.insert(row.key.clone(), row);
            }
        }
        let mut ids: Vec<&String> = ids.iter().collect();
        ids.sort();
        ids.dedup();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT message_id, ticket, auto_reply FROM thread_ids WHERE message_id IN ({})",
                list(chunk.len(), 1)
            );
            let mut q = self.many(sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                let id: String = r.try_get("message_id")?;
                let auto: i64 = r.try_get("auto_reply")?;
                if auto == 1 {
                    f.auto_replies.insert(id.clone());
                } else if auto == 2 {
                    f.staff_replies.insert(id.clone());
                }
                f.tickets.insert(id, r.try_get("ticket")?);
            }
        }
        let mut tickets: Vec<String> = f.tickets.values().cloned().collect();
        tickets.extend(tags.iter().cloned());
        tickets.sort();
        tickets.dedup();
        for chunk in tickets.chunks(CHUNK) {
            let sql = format!(
                "SELECT ticket, customer, subject, queue, rep, customer_messages, auto_replies, \
                 escalated, since_human, first_response_at, last_human_at, due_at \
                 FROM conversations WHERE ticket IN ({})",
                list(chunk.len(), 1)
            );
            let mut q = self.many(sql);
            for t in chunk {
                q = q.bind(t);
            }
            for r in q.fetch_all(&self.pool).await? {
                let c = super::conversation_row(&r)?;
                f.conversations.insert(c.ticket.clone(), c);
            }
            let sql = format!(
                "SELECT draft_id, ticket, text FROM drafts WHERE outcome IS NULL AND ticket IN ({})",
                list(chunk.len(), 1)
            );
            let mut q = self.many(sql);
            for t in chunk {
                q = q.bind(t);
            }
            for r in q.fetch_all(&self.pool).await? {
                f.drafts.insert(
                    r.try_get("ticket")?,
                    (r.try_get("draft_id")?, r.try_get("text")?),
                );
            }
        }
        if !counters.is_empty() {
            let sql = format!(
                "SELECT name, value FROM counters WHERE name IN ({})",
                list(counters.len(), 1)
            );
            let mut q = self.many(sql);
            for c in counters {
                q = q.bind(c);
            }
            for r in q.fetch_all(&self.pool).await? {
                f.counters.insert(r.try_get("name")?, r.try_get("value")?);
            }
        }
        for r in sqlx::query("SELECT rep, away_until FROM rep_status")
            .fetch_all(&self.pool)
            .await?
        {
            let until: Option<i64> = r.try_get("away_until")?;
            f.away.insert(r.try_get("rep")?, until.unwrap_or(i64::MAX));
        }
        Ok(f)
    }

    /// Reply history for the addresses a batch would answer (`recipients`)
    /// and whose mail it answers (`senders`), all lower-case.
    pub async fn reply_facts(
        &self,
        recipients: &[String],
        senders: &[String],
        now: i64,
    ) -> Result<ReplyFacts, StoreError> {
        let mut f = ReplyFacts::default();
        let rcpts = sorted_unique(recipients);
        for (column, l, to) in [
            ("recipient", &rcpts, true),
            ("sender", &sorted_unique(senders), false),
        ] {
            for chunk in l.chunks(CHUNK) {
                let sql = format!(
                    "SELECT {column} AS addr, template, MAX(sent_at) AS last FROM replies \
                     WHERE {column} IN ({}) GROUP BY {column}, template",
                    list(chunk.len(), 1)
                );
                let mut q = self.many(sql);
                for a in chunk {
                    q = q.bind(*a);
                }
                for r in q.fetch_all(&self.pool).await? {
                    let addr: String = r.try_get("addr")?;
                    let template: String = r.try_get("template")?;
                    let last: i64 = r.try_get("last")?;
                    if to {
                        let any = f.any_to_recipient.entry(addr.clone()).or_default();
                        *any = (*any).max(last);
                        f.to_recipient.insert((addr, template), last);
                    } else {
                        f.from_sender.insert((addr, template), last);
                    }
                }
            }
        }
        // The last hour, aggregated by the database and only for what
        // this batch needs: reading every reply of the hour made each
        // batch cost O(replies per hour) (16 ms per message arriving
        // alone after a backlog of 5,000 replies, measured).
        let hour_ago = now - 3_600_000;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT recipient) FROM replies WHERE sent_at > $1")
                .bind(hour_ago)
                .fetch_one(&self.pool)
                .await?;
        f.recipients_hour = u32::try_from(n).unwrap_or(u32::MAX);
        for chunk in rcpts.chunks(CHUNK) {
            let sql = format!(
                "SELECT DISTINCT recipient FROM replies WHERE sent_at > $1 AND recipient IN ({})",
                list(chunk.len(), 2)
            );
            let mut q = self.many(sql).bind(hour_ago);
            for a in chunk {
                q = q.bind(*a);
            }
            for r in q.fetch_all(&self.pool).await? {
                f.answered_this_hour.insert(r.try_get("recipient")?);
            }
        }
        for (column, list_of, out) in [
            ("recipient_domain", recipients, &mut f.recipient_domain_hour),
            ("sender_domain", senders, &mut f.sender_domain_hour),
        ] {
            let mut domains: Vec<String> = list_of.iter().map(|a| domain_of(a)).collect();
            domains.sort();
            domains.dedup();
            for chunk in domains.chunks(CHUNK) {
                let sql = format!(
                    "SELECT {column} AS domain, COUNT(*) AS n FROM replies \
                     WHERE sent_at > $1 AND {column} IN ({}) GROUP BY {column}",
                    list(chunk.len(), 2)
                );
                let mut q = self.many(sql).bind(hour_ago);
                for d in chunk {
                    q = q.bind(d);
                }
                for r in q.fetch_all(&self.pool).await? {
                    let d: String = r.try_get("domain")?;
                    let n: i64 = r.try_get("n")?;
                    out.insert(d, u32::try_from(n).unwrap_or(u32::MAX));
                }
            }
        }
        Ok(f)
    }

    /// Writes everything a batch decided in one transaction. Fails with
    /// [`StoreError::Conflict`] (and writes nothing) when a counter moved
    /// since the facts were read: the caller decides the batch again.
    pub async fn commit(&self, c: &Commit, now: i64) -> Result<(), StoreError> {
        if c.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for w in &c.counters {
            let done = match w.expected {
                Some(old) => sqlx::query(
                    "UPDATE counters SET value = $1 WHERE name = $2 AND value = $3",
                )
                .bind(w.value)
                .bind(&w.name)
                .bind(old)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                None => sqlx::query(
                    "INSERT INTO counters (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&w.name)
                .bind(w.value)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            if done != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(w.name.clone()));
            }
        }
        for chunk in c.messages.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO messages (key, mailbox, message_id, sender, subject, received_at, updated_at, \
                 state, verdict, folder, queue, rep, template, rule, ticket, reply_message_id, reply_raw, \
                 last_error, attempts) VALUES {} \
                 ON CONFLICT (key) DO UPDATE SET mailbox = excluded.mailbox, updated_at = excluded.updated_at, \
                 state = excluded.state, verdict = excluded.verdict, folder = excluded.folder, \
                 queue = excluded.queue, rep = excluded.rep, template = excluded.template, \
                 rule = excluded.rule, ticket = COALESCE(excluded.ticket, messages.ticket), \
                 reply_message_id = COALESCE(excluded.reply_message_id, messages.reply_message_id), \
                 reply_raw = COALESCE(excluded.reply_raw, messages.reply_raw), \
                 last_error = excluded.last_error, retry_at = NULL, \
                 attempts = messages.attempts + excluded.attempts",
                values(chunk.len(), 19)
            );
            let mut q = self.many(sql);
            for m in chunk {
                let state = m.state.unwrap_or(State::Decided);
                q = q
                    .bind(&m.key)
                    .bind(&m.mailbox)
                    .bind(&m.message_id)
                    .bind(&m.sender)
                    .bind(&m.subject)
                    .bind(now)
                    .bind(now)
                    .bind(state.as_str())
                    .bind(&m.verdict)
                    .bind(&m.folder)
                    .bind(&m.queue)
                    .bind(&m.rep)
                    .bind(&m.template)
                    .bind(&m.rule)
                    .bind(&m.ticket)
                    .bind(&m.reply_message_id)
                    .bind(&m.reply_raw)
                    .bind(&m.last_error)
                    .bind(i64::from(state == State::Sending));
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in c.reservations.chunks(CHUNK) {
            let rows: Vec<LogRow> = chunk.iter().map(LogRow::from).collect();
            self.log_replies(&mut tx, &rows, now).await?;
        }
        // A person answered: the service-level clock stops (a deadline
        // already past counts as a breach), the "since a person" count
        // restarts. Before the upsert, so that a customer message after
        // the answer in the same batch starts the next deadline.
        for w in c.conversations.iter().filter(|w| w.human_reply) {
            sqlx::query(
                "UPDATE conversations SET first_response_at = COALESCE(first_response_at, $1), \
                 last_human_at = $1, since_human = 0, \
                 breaches = breaches + CASE WHEN due_at IS NOT NULL AND due_at < $1 THEN 1 ELSE 0 END, \
                 due_at = NULL, due_kind = NULL, reminded_at = NULL, sla_escalated_at = NULL, \
                 closed_at = NULL, updated_at = $1 WHERE ticket = $2",
            )
            .bind(now)
            .bind(&w.ticket)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in c.conversations.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO conversations (ticket, customer, subject, created_at, updated_at, \
                 customer_messages, since_human, queue, rep, escalated, last_customer_at, \
                 due_at, due_kind, first_due_at) VALUES {} \
                 ON CONFLICT (ticket) DO UPDATE SET \
                 customer_messages = conversations.customer_messages + excluded.customer_messages, \
                 since_human = conversations.since_human + excluded.customer_messages, \
                 queue = COALESCE(excluded.queue, conversations.queue), \
                 rep = COALESCE(excluded.rep, conversations.rep), \
                 escalated = CASE WHEN excluded.escalated = 1 THEN 1 ELSE conversations.escalated END, \
                 last_customer_at = COALESCE(excluded.last_customer_at, conversations.last_customer_at), \
                 closed_at = CASE WHEN excluded.last_customer_at IS NOT NULL THEN NULL ELSE conversations.closed_at END, \
                 due_kind = CASE WHEN conversations.due_at IS NULL THEN excluded.due_kind ELSE conversations.due_kind END, \
                 due_at = COALESCE(conversations.due_at, excluded.due_at), \
                 first_due_at = COALESCE(conversations.first_due_at, excluded.first_due_at), \
                 updated_at = excluded.updated_at",
                values(chunk.len(), 14)
            );
            let mut q = self.many(sql);
            for w in chunk {
                q = q
                    .bind(&w.ticket)
                    .bind(w.customer.to_lowercase())
                    .bind(&w.subject)
                    .bind(now)
                    .bind(now)
                    .bind(w.messages)
                    .bind(w.since_human_reset.unwrap_or(w.messages))
                    .bind(&w.queue)
                    .bind(&w.rep)
                    .bind(i64::from(w.escalated))
                    .bind(w.customer_wrote.then_some(now))
                    .bind(w.due.map(|d| d.0))
                    .bind(w.due.map(|d| d.1))
                    .bind(w.due.filter(|d| d.1 == "first_response").map(|d| d.0));
            }
            q.execute(&mut *tx).await?;
        }
        // A person replied: the count restarts (rare, one statement each).
        for w in c.conversations.iter() {
            if let Some(n) = w.since_human_reset {
                sqlx::query("UPDATE conversations SET since_human = $1 WHERE ticket = $2")
                    .bind(n)
                    .bind(&w.ticket)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for chunk in c.thread_ids.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO thread_ids (message_id, ticket, auto_reply) VALUES {} \
                 ON CONFLICT (message_id) DO NOTHING",
                values(chunk.len(), 3)
            );
            let mut q = self.many(sql);
            for (id, t, auto) in chunk {
                q = q.bind(id).bind(t).bind(i64::from(*auto));
            }
            q.execute(&mut *tx).await?;
        }
        for (id, ticket, key, text) in &c.drafts {
            sqlx::query(
                "INSERT INTO drafts (draft_id, ticket, message_key, text, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (draft_id) DO NOTHING",
            )
            .bind(id)
            .bind(ticket)
            .bind(key)
            .bind(text)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (id, outcome) in &c.draft_outcomes {
            sqlx::query(
                "UPDATE drafts SET outcome = $1, outcome_at = $2 WHERE draft_id = $3 AND outcome IS NULL",
            )
            .bind(outcome)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in c.staff_ids.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO thread_ids (message_id, ticket, auto_reply) VALUES {} \
                 ON CONFLICT (message_id) DO NOTHING",
                values(chunk.len(), 3)
            );
            let mut q = self.many(sql);
            for (id, t) in chunk {
                q = q.bind(id).bind(t).bind(2i64);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in c.audit.chunks(CHUNK) {
            let events: Vec<&AuditEvent> = chunk.iter().collect();
            self.insert_audit(&mut tx, &events).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// After a complete pass over a mailbox's inbox: messages of the
    /// mailbox still recorded as on their way to a folder (`decided`,
    /// `sent`, `archived`) since before the pass were not in the inbox any
    /// more, so they were filed: by a move that went through just before
    /// a crash (or a store outage) kept it from being recorded. They are
    /// marked done, with a note. Returns how many.
    pub async fn settle_filed(
        &self,
        mailbox: &str,
        before: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let q = sqlx::query(
            "UPDATE messages SET state = 'done', updated_at = $1, \
             last_error = 'no longer in the inbox after an interruption: recorded as filed' \
             WHERE state IN ('decided', 'sent', 'archived') AND mailbox = $2 AND updated_at < $3",
        )
        .bind(now)
        .bind(mailbox)
        .bind(before);
        let n = self.exec_fenced(q).await?;
        Ok(n)
    }

    /// Marks filed messages done (one statement per chunk). Only a message
    /// in a state that leads to filing moves on (`WHERE state IN …`).
    pub async fn finish(&self, keys: &[String], now: i64) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "UPDATE messages SET state = 'done', updated_at = $1 WHERE key IN ({}) \
                 AND state IN ('decided', 'sent', 'archived', 'done')",
                list(chunk.len(), 2)
            );
            let mut q = self.many(sql).bind(now);
            for k in chunk {
                q = q.bind(k);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_placeholders() {
        assert_eq!(
            super::positional("UPDATE t SET a = $1 WHERE k IN ($2, $3)").as_deref(),
            Some("UPDATE t SET a = ? WHERE k IN (?, ?)")
        );
        assert_eq!(super::positional("SELECT $2, $1"), None);
        assert_eq!(super::positional("SELECT $1, $1"), None);
        assert_eq!(
            super::positional("SELECT '$' || $1").as_deref(),
            Some("SELECT '$' || ?")
        );
    }

    #[test]
    fn placeholders() {
        assert_eq!(list(3, 2), "$2, $3, $4");
        assert_eq!(values(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(list(3, 9), "$9, $10, $11");
        for n in [0, 7, 10, 99, 100, 3_799, 65_535, usize::MAX] {
            let mut s = String::new();
            super::push_number(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
