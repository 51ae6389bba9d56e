//! Service-level deadlines in the store: which conversations are due,
//! and what was done about them.

use sqlx::Row;

use super::{AuditEvent, Store, StoreError};

/// A conversation whose deadline passed (or is near), with the message a
/// reminder or an escalation acts on: the latest customer message of the
/// conversation that went to a person.
/// A conversation and the message a follow-up step acts on: the latest
/// customer message of the conversation that went to a person.
#[derive(Debug, Clone)]
pub struct ConversationRef {
    pub ticket: String,
    pub customer: String,
    pub subject: String,
    pub queue: Option<String>,
    pub rep: Option<String>,
    pub key: Option<String>,
    pub message_id: Option<String>,
    pub folder: Option<String>,
}

impl ConversationRef {
    fn read(r: &sqlx::any::AnyRow) -> Result<ConversationRef, StoreError> {
        Ok(ConversationRef {
            ticket: r.try_get("ticket")?,
            customer: r.try_get("customer")?,
            subject: r.try_get("subject")?,
            queue: r.try_get("queue")?,
            rep: r.try_get("rep")?,
            key: r.try_get("key")?,
            message_id: r.try_get("message_id")?,
            folder: r.try_get("folder")?,
        })
    }

    /// An audit record about the conversation.
    pub fn audit(&self, at: i64, mailbox: &str, event: &str, detail: String) -> AuditEvent {
        AuditEvent {
            at,
            event: event.into(),
            mailbox: Some(mailbox.to_string()),
            message_key: self.key.clone(),
            message_id: self.message_id.clone(),
            sender: Some(self.customer.clone()),
            ticket: Some(self.ticket.clone()),
            queue: self.queue.clone(),
            rep: self.rep.clone(),
            detail,
            data: None,
        }
    }
}

/// A conversation whose deadline passed (or is near).
#[derive(Debug, Clone)]
pub struct DueRow {
    pub conv: ConversationRef,
    pub due_at: i64,
    pub due_kind: String,
    pub reminded_at: Option<i64>,
}

/// A conversation waiting on its customer since a person answered.
#[derive(Debug, Clone)]
pub struct WaitRow {
    pub conv: ConversationRef,
    pub last_human_at: i64,
    pub checked_in_at: Option<i64>,
}

/// Service-level figures per queue since a moment.
#[derive(Debug, Clone, Default)]
pub struct SlaStats {
    pub queue: String,
    /// Conversations with a first-response deadline.
    pub with_deadline: i64,
    /// … answered by a person before it.
    pub met: i64,
    /// Deadlines missed (first responses and follow-ups).
    pub breaches: i64,
    /// Open right now and past due.
    pub overdue: i64,
}

const DUE_SELECT: &str = "SELECT c.ticket, c.customer, c.subject, c.queue, c.rep, c.due_at, \
     COALESCE(c.due_kind, '') AS due_kind, c.reminded_at, \
     m.key, m.message_id, m.folder \
     FROM conversations c LEFT JOIN messages m ON m.key = (\
       SELECT key FROM messages WHERE ticket = c.ticket AND verdict IN ('route', 'escalate') \
       ORDER BY received_at DESC LIMIT 1)";

fn due_row(r: &sqlx::any::AnyRow) -> Result<DueRow, StoreError> {
    Ok(DueRow {
        conv: ConversationRef::read(r)?,
        due_at: r.try_get("due_at")?,
        due_kind: r.try_get("due_kind")?,
        reminded_at: r.try_get("reminded_at")?,
    })
}

impl Store {
    /// Conversations of `mailbox` past their deadline at `now` that still
    /// need a reminder or an escalation.
    pub async fn due_in(&self, mailbox: &str, now: i64) -> Result<Vec<DueRow>, StoreError> {
        let sql = format!(
            "{DUE_SELECT} WHERE c.due_at IS NOT NULL AND c.due_at <= $1 \
             AND c.sla_escalated_at IS NULL AND m.mailbox = $2 ORDER BY c.due_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(self.sql(sql)))
            .bind(now)
            .bind(mailbox)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(due_row).collect()
    }

    /// Open deadlines up to `until` (everything overdue and what comes
    /// due soon), oldest first: `switchboard overdue`.
    pub async fn deadlines(&self, until: i64) -> Result<Vec<DueRow>, StoreError> {
        let sql =
            format!("{DUE_SELECT} WHERE c.due_at IS NOT NULL AND c.due_at <= $1 ORDER BY c.due_at");
        let rows = sqlx::query(sqlx::AssertSqlSafe(self.sql(sql)))
            .bind(until)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(due_row).collect()
    }

    /// Conversations of `mailbox` whose customer has been silent since a
    /// person answered before `before`, not yet closed.
    pub async fn waiting_in(&self, mailbox: &str, before: i64) -> Result<Vec<WaitRow>, StoreError> {
        let sql = "SELECT c.ticket, c.customer, c.subject, c.queue, c.rep, c.last_human_at, \
             c.checked_in_at, m.key, m.message_id, m.folder \
             FROM conversations c JOIN messages m ON m.key = (\
               SELECT key FROM messages WHERE ticket = c.ticket AND verdict IN ('route', 'escalate') \
               ORDER BY received_at DESC LIMIT 1) \
             WHERE c.last_human_at IS NOT NULL AND c.last_human_at <= $1 AND c.closed_at IS NULL \
             AND (c.last_customer_at IS NULL OR c.last_customer_at < c.last_human_at) \
             AND m.mailbox = $2 ORDER BY c.last_human_at";
        let rows = sqlx::query(sqlx::AssertSqlSafe(self.sql(sql.to_string())))
            .bind(before)
            .bind(mailbox)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WaitRow {
                    conv: ConversationRef::read(r)?,
                    last_human_at: r.try_get("last_human_at")?,
                    checked_in_at: r.try_get("checked_in_at")?,
                })
            })
            .collect()
    }

    /// A conversation is solved (closed after the customer's silence);
    /// `checked_in`: the one check-in message is about to be sent
    /// (recorded first: it is sent at most once).
    pub async fn solved(
        &self,
        ticket: &str,
        checked_in: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE conversations SET closed_at = $1, \
             checked_in_at = CASE WHEN $2 = 1 THEN COALESCE(checked_in_at, $1) ELSE checked_in_at END \
             WHERE ticket = $3 AND closed_at IS NULL",
        )
        .bind(now)
        .bind(i64::from(checked_in))
        .bind(ticket);
        let n = self.exec_fenced(q).await?;
        Ok(n == 1)
    }

    /// The reminder for an overdue conversation went out.
    pub async fn sla_reminded(&self, ticket: &str, now: i64) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE conversations SET reminded_at = $1 WHERE ticket = $2 AND reminded_at IS NULL",
        )
        .bind(now)
        .bind(ticket);
        self.exec_fenced(q).await?;
        Ok(())
    }

    /// The overdue conversation went to the supervisor (its message now in
    /// `folder` when it was moved).
    pub async fn sla_escalated(
        &self,
        ticket: &str,
        moved: Option<(&str, &str)>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE conversations SET sla_escalated_at = $1, escalated = 1 \
             WHERE ticket = $2 AND sla_escalated_at IS NULL",
        )
        .bind(now)
        .bind(ticket)
        .execute(&mut *tx)
        .await?;
        if let Some((key, folder)) = moved {
            sqlx::query("UPDATE messages SET folder = $1, updated_at = $2 WHERE key = $3")
                .bind(folder)
                .bind(now)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drafts written since `since`, by what became of them
    /// (`sent_unchanged`, `edited`, `not_used`, `open`).
    pub async fn draft_stats(&self, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT COALESCE(outcome, 'open') AS outcome, COUNT(*) AS n FROM drafts \
             WHERE created_at >= $1 GROUP BY 1 ORDER BY 1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("outcome")?, r.try_get("n")?)))
            .collect()
    }

    /// First-response attainment, breaches and overdue conversations per
    /// queue, for conversations opened since `since`.
    pub async fn sla_stats(&self, since: i64, now: i64) -> Result<Vec<SlaStats>, StoreError> {
        let rows = sqlx::query(
            "SELECT COALESCE(queue, '') AS queue, \
             CAST(SUM(CASE WHEN first_due_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS with_deadline, \
             CAST(SUM(CASE WHEN first_due_at IS NOT NULL AND first_response_at IS NOT NULL \
                 AND first_response_at <= first_due_at THEN 1 ELSE 0 END) AS BIGINT) AS met, \
             CAST(SUM(breaches + CASE WHEN due_at IS NOT NULL AND due_at <= $2 THEN 1 ELSE 0 END) AS BIGINT) AS breaches, \
             CAST(SUM(CASE WHEN due_at IS NOT NULL AND due_at <= $2 THEN 1 ELSE 0 END) AS BIGINT) AS overdue \
             FROM conversations WHERE created_at >= $1 GROUP BY COALESCE(queue, '') ORDER BY 1",
        )
        .bind(since)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SlaStats {
                    queue: r.try_get("queue")?,
                    with_deadline: r.try_get::<Option<i64>, _>("with_deadline")?.unwrap_or(0),
                    met: r.try_get::<Option<i64>, _>("met")?.unwrap_or(0),
                    breaches: r.try_get::<Option<i64>, _>("breaches")?.unwrap_or(0),
                    overdue: r.try_get::<Option<i64>, _>("overdue")?.unwrap_or(0),
                })
            })
            .filter(|s: &Result<SlaStats, StoreError>| {
                s.as_ref()
                    .map_or(true, |s| s.with_deadline > 0 || s.breaches > 0)
            })
            .collect()
    }
}
