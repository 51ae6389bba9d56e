//! Follow-through on a timer: conversations whose service-level deadline
//! passed without a person's answer get a reminder (the IMAP keyword
//! `$Overdue` on the waiting message, an audit record, a metric), and if
//! still unanswered `escalate_overdue` later, go to the queue's
//! supervisor folder. Deadlines live in the store, so they survive
//! restarts; each step is recorded before the next check, so it happens
//! once.

use super::{MailboxInfo, Pipeline, PipelineError};
use crate::fetch::{Flag, FolderAction, MailSource};
use crate::knowledge::Knowledge;
use crate::record::AuditEvent;

/// The keyword a reminder sets on the waiting message.
pub const OVERDUE_KEYWORD: &str = "$Overdue";

/// What one check did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub reminded: usize,
    pub escalated: usize,
}

/// Whether any queue has a service level (else nothing to check).
pub fn has_deadlines(k: &Knowledge) -> bool {
    k.queues.values().any(|q| q.sla.is_set())
}

/// Reminds and escalates the overdue conversations of mailbox `mb`.
pub async fn sweep<S: MailSource>(
    p: &Pipeline,
    src: &mut S,
    mb: &MailboxInfo,
    k: &Knowledge,
) -> Result<Swept, PipelineError> {
    let mut done = Swept::default();
    if !has_deadlines(k) {
        return Ok(done);
    }
    let now = p.now();
    for row in p.store.due_in(&mb.name, now).await? {
        let queue = row.queue.as_deref().and_then(|q| k.queues.get(q));
        let queue_name = row.queue.clone().unwrap_or_default();
        let kind = if row.due_kind == "follow_up" {
            "follow-up answer"
        } else {
            "first response"
        };
        let event = |event: &str, detail: String| AuditEvent {
            at: now,
            event: event.into(),
            mailbox: Some(mb.name.clone()),
            message_key: row.key.clone(),
            message_id: row.message_id.clone(),
            sender: Some(row.customer.clone()),
            ticket: Some(row.ticket.clone()),
            queue: row.queue.clone(),
            rep: row.rep.clone(),
            detail,
            data: None,
        };
        let target = row.folder.clone().zip(row.message_id.clone());
        if row.reminded_at.is_none() {
            let flagged = match &target {
                Some((folder, id)) => {
                    src.in_folder(
                        folder,
                        id,
                        &FolderAction::Flag(Flag::Keyword(OVERDUE_KEYWORD.into())),
                    )
                    .await?
                }
                None => false,
            };
            p.store.sla_reminded(&row.ticket, now).await?;
            let late = crate::util::format_ms(row.due_at);
            let detail = format!(
                "{kind} was due at {late} and no person has answered yet{}",
                if flagged {
                    format!("; marked {OVERDUE_KEYWORD}")
                } else {
                    String::new()
                }
            );
            tracing::warn!(mailbox = %mb.name, ticket = %row.ticket, queue = %queue_name, rep = row.rep.as_deref().unwrap_or(""), "overdue: {detail}");
            p.store.audit(&event("sla_overdue", detail)).await?;
            metrics::counter!("switchboard_sla_breaches_total", "queue" => queue_name.clone(), "kind" => row.due_kind.clone())
                .increment(1);
            done.reminded += 1;
            continue;
        }
        let Some(q) = queue else { continue };
        if now
            < row
                .due_at
                .saturating_add(q.sla.escalate_after.as_millis() as i64)
        {
            continue;
        }
        let dest = q.escalation_folder.clone();
        let moved = match &target {
            Some((folder, id)) if *folder != dest => {
                src.in_folder(folder, id, &FolderAction::MoveTo(dest.clone()))
                    .await?
            }
            _ => false,
        };
        let moved_to = match (&row.key, moved) {
            (Some(key), true) => Some((key.as_str(), dest.as_str())),
            _ => None,
        };
        p.store.sla_escalated(&row.ticket, moved_to, now).await?;
        let detail = format!(
            "still no answer {} after the {kind} deadline: escalated to the supervisor of {}{}",
            crate::decide::human_duration(q.sla.escalate_after.as_secs() as i64),
            q.name,
            if moved {
                format!(" (moved to {dest})")
            } else {
                String::new()
            }
        );
        tracing::warn!(mailbox = %mb.name, ticket = %row.ticket, queue = %q.name, "{detail}");
        p.store.audit(&event("sla_escalated", detail)).await?;
        metrics::counter!("switchboard_sla_escalations_total", "queue" => q.name.clone())
            .increment(1);
        done.escalated += 1;
    }
    Ok(done)
}
