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

/// The keyword a reminder sets on the waiting message.
pub const OVERDUE_KEYWORD: &str = "$Overdue";
/// The keyword a conversation closed after the customer's silence gets.
pub const SOLVED_KEYWORD: &str = "$Solved";

/// What one check did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub reminded: usize,
    pub escalated: usize,
    pub solved: usize,
    pub checked_in: usize,
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
        let queue = row.conv.queue.as_deref().and_then(|q| k.queues.get(q));
        let queue_name = row.conv.queue.clone().unwrap_or_default();
        let kind = if row.due_kind == "follow_up" {
            "follow-up answer"
        } else {
            "first response"
        };
        let target = row.conv.folder.clone().zip(row.conv.message_id.clone());
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
            p.store.sla_reminded(&row.conv.ticket, now).await?;
            let late = crate::util::format_ms(row.due_at);
            let mut detail = format!(
                "{kind} was due at {late} and no person has answered yet{}",
                if flagged {
                    format!("; marked {OVERDUE_KEYWORD}")
                } else {
                    String::new()
                }
            );
            // The assigned person gets a mail too, where the queue asks.
            if let Some(rep) = row
                .conv
                .rep
                .as_deref()
                .and_then(|r| k.reps.get(r))
                .filter(|r| !r.email.is_empty() && queue.is_some_and(|q| q.sla.remind_by_mail))
            {
                let subject = format!("Overdue: {} {}", row.conv.ticket, row.conv.subject);
                let text = format!(
                    "Hello {},\n\nthe {kind} in conversation {} with {} (\"{}\") was due at {late} and nobody has answered yet.\n\
                     The customer's message is in {} with the keyword {OVERDUE_KEYWORD}.\n\n-- switchboard\n",
                    rep.name,
                    row.conv.ticket,
                    row.conv.customer,
                    crate::parse::single_line(&row.conv.subject),
                    row.conv.folder.as_deref().unwrap_or("your folder"),
                );
                let sent = crate::act::reply::notice(
                    &k.policy.reply.from,
                    &rep.email,
                    &subject,
                    &text,
                    &k.policy.domain,
                    k.policy.reply.null_sender,
                )
                .map_err(|e| e.to_string());
                let sent = match sent {
                    Ok(out) => p.outbox.send(&out).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(()) => detail.push_str(&format!("; reminder mailed to {}", rep.email)),
                    Err(e) => {
                        tracing::warn!(mailbox = %mb.name, rep = %rep.id, "reminder mail not sent: {e}");
                        detail.push_str(&format!("; reminder mail not sent: {e}"));
                    }
                }
            }
            tracing::warn!(mailbox = %mb.name, ticket = %row.conv.ticket, queue = %queue_name, rep = row.conv.rep.as_deref().unwrap_or(""), "overdue: {detail}");
            p.store
                .audit(&row.conv.audit(now, &mb.name, "sla_overdue", detail))
                .await?;
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
        let moved_to = match (&row.conv.key, moved) {
            (Some(key), true) => Some((key.as_str(), dest.as_str())),
            _ => None,
        };
        p.store
            .sla_escalated(&row.conv.ticket, moved_to, now)
            .await?;
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
        tracing::warn!(mailbox = %mb.name, ticket = %row.conv.ticket, queue = %q.name, "{detail}");
        p.store
            .audit(&row.conv.audit(now, &mb.name, "sla_escalated", detail))
            .await?;
        metrics::counter!("switchboard_sla_escalations_total", "queue" => q.name.clone())
            .increment(1);
        done.escalated += 1;
    }
    close_silent(p, src, mb, k, now, &mut done).await?;
    Ok(done)
}

/// Marks conversations solved whose customer stayed silent for the
/// queue's `close_after` since a person answered, and sends the one
/// check-in message where the queue has one.
async fn close_silent<S: MailSource>(
    p: &Pipeline,
    src: &mut S,
    mb: &MailboxInfo,
    k: &Knowledge,
    now: i64,
    done: &mut Swept,
) -> Result<(), PipelineError> {
    let Some(shortest) = k.queues.values().filter_map(|q| q.sla.close_after).min() else {
        return Ok(());
    };
    let before = now.saturating_sub(shortest.as_millis() as i64);
    for row in p.store.waiting_in(&mb.name, before).await? {
        let Some(q) = row.conv.queue.as_deref().and_then(|q| k.queues.get(q)) else {
            continue;
        };
        let Some(after) = q.sla.close_after else {
            continue;
        };
        if now < row.last_human_at.saturating_add(after.as_millis() as i64) {
            continue;
        }
        // Never to a machine or to ourselves; at most once per conversation.
        let check_in = q.sla.check_in.clone().filter(|_| {
            row.checked_in_at.is_none()
                && !crate::classify::loop_guard::daemon_address(&row.conv.customer)
                && !crate::classify::loop_guard::is_ours(
                    &row.conv.customer,
                    &k.policy.our_addresses,
                )
        });
        if !p
            .store
            .solved(&row.conv.ticket, check_in.is_some(), now)
            .await?
        {
            continue;
        }
        if let (Some(folder), Some(id)) = (&row.conv.folder, &row.conv.message_id) {
            src.in_folder(
                folder,
                id,
                &FolderAction::Flag(Flag::Keyword(SOLVED_KEYWORD.into())),
            )
            .await?;
        }
        let mut detail = format!(
            "solved: no answer from the customer for {} after a person's answer",
            crate::decide::human_duration(after.as_secs() as i64)
        );
        if let Some(t) = check_in {
            match send_check_in(p, src, mb, k, &row, &t).await {
                Ok(to) => {
                    detail.push_str(&format!("; check-in {t} sent to {to}"));
                    done.checked_in += 1;
                }
                Err(e) => {
                    tracing::warn!(mailbox = %mb.name, ticket = %row.conv.ticket, "check-in not sent: {e}");
                    detail.push_str(&format!("; check-in not sent: {e}"));
                }
            }
        }
        tracing::info!(mailbox = %mb.name, ticket = %row.conv.ticket, "{detail}");
        p.store
            .audit(&row.conv.audit(now, &mb.name, "solved", detail))
            .await?;
        metrics::counter!("switchboard_conversations_solved_total", "queue" => q.name.clone())
            .increment(1);
        done.solved += 1;
    }
    Ok(())
}

/// The "was your problem solved?" message: threaded to the customer's
/// last message, marked as automatic (RFC 3834), a copy in Sent.
async fn send_check_in<S: MailSource>(
    p: &Pipeline,
    src: &mut S,
    mb: &MailboxInfo,
    k: &Knowledge,
    row: &crate::record::sla::WaitRow,
    template: &str,
) -> Result<String, String> {
    let to = crate::parse::Mailbox {
        name: String::new(),
        addr: row.conv.customer.clone(),
    };
    let original = crate::parse::Message {
        message_id: row.conv.message_id.clone(),
        from: Some(to.clone()),
        subject: row.conv.subject.clone(),
        ..Default::default()
    };
    let ctx = super::template_context(
        &original,
        k,
        None,
        &row.conv.ticket,
        serde_json::Value::Object(serde_json::Map::new()),
    );
    let body = k
        .templates
        .render(template, None, &ctx)
        .map_err(|e| e.to_string())?;
    let out = crate::act::reply::build(&crate::act::reply::ReplyParts {
        from: &k.policy.reply.from,
        to: &to,
        original: &original,
        ticket: Some(&row.conv.ticket),
        domain: &k.policy.domain,
        body: &body,
        null_sender: k.policy.reply.null_sender,
    })
    .map_err(|e| e.to_string())?;
    p.outbox.send(&out).await.map_err(|e| e.to_string())?;
    if let Err(e) = src.append(&mb.folders.sent, &out.raw, &[Flag::Seen]).await {
        tracing::warn!(mailbox = %mb.name, "cannot store the check-in's copy: {e}");
    }
    Ok(to.addr)
}

/// People's answers found in a mailbox's `sent_folders` (a team that
/// answers from the shared account, or files its answers there): each
/// new message there from a representative or one of our addresses that
/// refers to a known conversation is recorded as that conversation's
/// answer, as if it had come in with the shared address in Cc. Returns
/// how many were recorded.
pub async fn sent_folders<S: MailSource>(
    p: &Pipeline,
    src: &mut S,
    mb: &MailboxInfo,
    k: &Knowledge,
) -> Result<usize, PipelineError> {
    let mut recorded = 0;
    for folder in &mb.sent_folders {
        let cursor_name = format!("sent:{}:{folder}", mb.name);
        let stored = p
            .store
            .facts(&[], &[], &[], std::slice::from_ref(&cursor_name))
            .await?;
        let cursor = stored.counters.get(&cursor_name).copied();
        let (raws, next) = src.since_in_folder(folder, cursor).await?;
        let Some(next) = next.filter(|n| Some(*n) != cursor) else {
            continue;
        };
        let opts = super::parse_options(k, None);
        let messages: Vec<crate::parse::Message> = raws
            .iter()
            .filter_map(|raw| crate::parse::parse(raw, &opts).ok())
            .collect();
        let mut ids = Vec::new();
        let mut tags = Vec::new();
        for m in &messages {
            ids.extend(crate::decide::plan::references(m));
            tags.extend(crate::act::reply::ticket_tags(&m.subject));
        }
        let known = p.store.facts(&[], &ids, &tags, &[]).await?;
        let now = p.now();
        let mut commit = crate::record::Commit::default();
        for m in &messages {
            let Some(by) = crate::decide::plan::staff_sender(m, k) else {
                continue;
            };
            let refs = crate::decide::plan::references(m);
            let ticket = refs
                .iter()
                .rev()
                .find_map(|id| known.tickets.get(id).cloned())
                .or_else(|| {
                    (by != "team")
                        .then(|| {
                            crate::act::reply::ticket_tags(&m.subject)
                                .into_iter()
                                .find(|t| known.conversations.contains_key(t))
                        })
                        .flatten()
                });
            let Some(ticket) = ticket else { continue };
            if commit.conversations.iter().any(|c| c.ticket == ticket) {
                continue;
            }
            commit.conversations.push(crate::record::ConversationWrite {
                ticket: ticket.clone(),
                human_reply: true,
                since_human_reset: Some(0),
                ..Default::default()
            });
            if let Some(id) = &m.message_id {
                commit.staff_ids.push((id.clone(), ticket.clone()));
            }
            let who = k.reps.get(&by).map_or_else(
                || "the team".to_string(),
                |r| format!("{} ({})", r.name, r.id),
            );
            commit.audit.push(crate::record::AuditEvent {
                at: now,
                event: "staff_reply".into(),
                mailbox: Some(mb.name.clone()),
                message_id: m.message_id.clone(),
                ticket: Some(ticket.clone()),
                rep: k.reps.contains_key(&by).then(|| by.clone()),
                detail: format!("a person's answer in {ticket} by {who}, found in {folder}"),
                ..Default::default()
            });
            recorded += 1;
        }
        commit.counters.push(crate::record::CounterWrite {
            name: cursor_name,
            expected: cursor,
            value: next,
        });
        match p.store.commit(&commit, now).await {
            Ok(()) => {}
            // Another pass moved the cursor meanwhile: it read the same
            // messages; nothing is lost.
            Err(crate::record::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(recorded)
}
