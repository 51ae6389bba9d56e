//! The pipeline: fetch → parse → classify → decide → act → record, for a
//! batch of messages from one mailbox.
//!
//! # Crash safety
//!
//! Every step that has an effect outside the process is preceded by a
//! state write, and every message is looked up in the store before
//! anything is done with it:
//!
//! | state in the store   | what a restart does                                  |
//! |----------------------|------------------------------------------------------|
//! | none                 | classify and decide from scratch                     |
//! | `decided` (no reply) | file it into the recorded folder                     |
//! | `decided` (reply)    | nothing was sent yet: decide again                   |
//! | `sending`            | the reply *may* have gone out: never send again; file it for a person |
//! | `sent`               | store the copy in Sent, flag, file as answered       |
//! | `archived`           | flag, file as answered                               |
//! | `deferred`           | wait until `retry_at`, then decide again             |
//! | `done`               | a duplicate (same Message-ID): file it like the first |
//!
//! So automatic replies are sent **at most once** per Message-ID, and
//! every message is filed **at least once** into exactly one folder
//! (moves are atomic renames or IMAP `UID MOVE`). Nothing is deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::act::outbox::{Outbox, SendError};
use crate::act::reply::{self, Outgoing, ReplyParts};
use crate::classify::{self, Classification, Context};
use crate::config::Folders;
use crate::decide::assign::{self, Assignment, TeamFacts};
use crate::decide::{self, Decision, History, Verdict};
use crate::fetch::{FetchError, Fetched, Flag, MailSource, MsgRef};
use crate::knowledge::Knowledge;
use crate::knowledge::templates::Rendered;
use crate::parse::{self, Message, ParseOptions};
use crate::record::{AuditEvent, NewMessage, SentTo, State, Store, StoreError};
use crate::util::now_ms;

/// What the pipeline needs to know about the mailbox a batch comes from.
#[derive(Debug, Clone)]
pub struct MailboxInfo {
    pub name: String,
    pub folders: Folders,
}

/// What happened to one message.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub message_id: Option<String>,
    pub from: String,
    pub subject: String,
    /// `reply`, `route`, `escalate`, `ignore`, `park`, or `deferred`.
    pub verdict: String,
    /// The folder the message was filed into (`None`: left in the inbox).
    pub folder: Option<String>,
    pub ticket: Option<String>,
    /// One line: why.
    pub why: String,
    pub decision: Option<Decision>,
    /// An automatic reply was sent while handling it (this time).
    #[serde(skip)]
    pub replied: bool,
}

/// Errors that stop a batch. Per-message problems never do: they park
/// the message or defer it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stateful part of the pipeline, shared by all mailboxes.
#[derive(Clone)]
pub struct Pipeline {
    pub store: Store,
    pub outbox: Outbox,
    /// First retry delay after a temporary failure (doubles each attempt).
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// Where a verdict files the message.
pub fn folder_for(v: &Verdict, k: &Knowledge, folders: &Folders) -> String {
    match v {
        Verdict::Reply { .. } => folders.answered.clone(),
        Verdict::Route { queue } => match (k.queues.get(queue), k.reps.get(queue)) {
            (Some(q), _) => q.folder.clone(),
            (None, Some(r)) => r.folder.clone(),
            (None, None) => folders.parked.clone(),
        },
        Verdict::Escalate { queue } => k
            .queues
            .get(queue)
            .map_or_else(|| folders.parked.clone(), |q| q.escalation_folder.clone()),
        Verdict::Ignore { .. } => folders.ignored.clone(),
        Verdict::Park { .. } => folders.parked.clone(),
    }
}

/// Parse options from a snapshot.
pub fn parse_options(k: &Knowledge, full_size: Option<u64>) -> ParseOptions {
    ParseOptions {
        full_size,
        languages: k.policy.languages.clone(),
    }
}

/// Classifies and decides without any state: what `switchboard test` shows.
pub fn dry_run(raw: &[u8], k: &Knowledge) -> (Option<Message>, Decision) {
    dry_run_sized(raw, None, k)
}

/// [`dry_run`] for a message of which only a prefix was read.
pub fn dry_run_sized(
    raw: &[u8],
    full_size: Option<u64>,
    k: &Knowledge,
) -> (Option<Message>, Decision) {
    match parse::parse(raw, &parse_options(k, full_size)) {
        Err(e) => (None, decide::park(format!("cannot parse: {e}"))),
        Ok(m) => {
            let c = classify::classify(&m, k, &Context::default());
            let d = decide::decide(&m, c, k, &History::default(), now_ms());
            (Some(m), d)
        }
    }
}

/// The variables of a reply template.
pub fn template_context(
    m: &Message,
    k: &Knowledge,
    faq: Option<&str>,
    ticket: &str,
) -> minijinja::Value {
    let entry = faq.and_then(|id| k.faq.entry(id));
    let date = m
        .date
        .and_then(|d| jiff::Timestamp::from_second(d).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    minijinja::context! {
        customer => minijinja::context! {
            name => crate::util::ellipsize(m.customer_name(), reply::MAX_NAME_ECHO),
            email => m.from.as_ref().map(|f| f.addr.as_str()).unwrap_or(""),
        },
        original => minijinja::context! {
            subject => crate::util::ellipsize(&m.subject, reply::MAX_SUBJECT_ECHO),
            date => date,
            message_id => m.message_id.as_deref().unwrap_or(""),
        },
        faq => minijinja::context! {
            id => entry.map(|e| e.id.as_str()).unwrap_or(""),
            title => entry.map(|e| e.title.as_str()).unwrap_or(""),
        },
        ticket => ticket,
        date => jiff::Zoned::now().strftime("%Y-%m-%d").to_string(),
        language => m.language.as_deref().unwrap_or(""),
        company => minijinja::Value::from(k.policy.company.clone()),
    }
}

/// Renders and builds the reply a decision asks for.
pub fn build_reply(
    m: &Message,
    d: &Decision,
    k: &Knowledge,
    ticket: Option<&str>,
) -> Result<(Rendered, Outgoing), String> {
    let Verdict::Reply { template, to, faq } = &d.verdict else {
        return Err("not a reply".into());
    };
    let ctx = template_context(m, k, faq.as_deref(), ticket.unwrap_or(""));
    let rendered = k
        .templates
        .render(template, m.language.as_deref(), &ctx)
        .map_err(|e| e.to_string())?;
    let out = reply::build(&ReplyParts {
        from: &k.policy.reply.from,
        to,
        original: m,
        ticket,
        domain: &k.policy.domain,
        body: &rendered,
        null_sender: k.policy.reply.null_sender,
    })
    .map_err(|e| e.to_string())?;
    Ok((rendered, out))
}

/// What a batch remembers across its messages: open loads counted so far
/// (moves happen at the end of the batch, so the server does not see this
/// batch's assignments yet) and the away marks read at its start.
#[derive(Default)]
struct BatchState {
    loads: BTreeMap<String, u32>,
    away: Option<std::collections::HashMap<String, i64>>,
}

/// Flags for a message that got a reply: `\Answered` plus the keywords
/// of every matching rule.
fn reply_flags(keywords: &[String]) -> Vec<Flag> {
    std::iter::once(Flag::Answered)
        .chain(keywords.iter().map(|k| Flag::Keyword(k.clone())))
        .collect()
}

enum Plan {
    /// File into a folder, then mark done.
    File { folder: String, key: String },
    /// Leave in the inbox (deferred).
    Leave,
}

impl Pipeline {
    /// Processes one batch of fetched messages from `src`.
    pub async fn process<S: MailSource>(
        &self,
        src: &mut S,
        mb: &MailboxInfo,
        k: &Arc<Knowledge>,
        batch: Vec<Fetched>,
    ) -> Result<Vec<Outcome>, PipelineError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut moves: BTreeMap<String, Vec<(MsgRef, String)>> = BTreeMap::new();
        let mut state = BatchState::default();
        for f in batch {
            let id = f.id.clone();
            // One span per message: every log line of its processing
            // carries the mailbox, the UID (or file) and the Message-ID.
            let span = tracing::info_span!(
                "message",
                mailbox = %mb.name,
                id = %id,
                message_id = tracing::field::Empty
            );
            let (plan, outcome) =
                tracing::Instrument::instrument(self.handle(src, mb, k, f, &mut state), span)
                    .await?;
            metrics::counter!(
                "switchboard_messages_total",
                "mailbox" => mb.name.clone(),
                "decision" => outcome.verdict.clone()
            )
            .increment(1);
            if let Plan::File { folder, key } = plan {
                moves.entry(folder).or_default().push((id, key));
            }
            outcomes.push(outcome);
        }
        // One move per destination folder, then the final state.
        for (folder, items) in moves {
            let ids: Vec<MsgRef> = items.iter().map(|(i, _)| i.clone()).collect();
            src.move_to(&folder, &ids).await?;
            let now = now_ms();
            for (_, key) in &items {
                self.store.done(key, &folder, now).await?;
            }
        }
        Ok(outcomes)
    }

    /// Picks the person (or shared folder) for a routed message.
    #[allow(clippy::too_many_arguments)]
    async fn assign<S: MailSource>(
        &self,
        src: &mut S,
        k: &Knowledge,
        route: &str,
        sticky: Option<&str>,
        ticket: Option<&str>,
        now: i64,
        state: &mut BatchState,
    ) -> Result<Assignment, PipelineError> {
        let target = assign::route_target(k, route);
        let mut facts = TeamFacts {
            now,
            ..Default::default()
        };
        if k.reps.is_empty() {
            return Ok(assign::assign(k, &target, None, &facts));
        }
        if state.away.is_none() {
            state.away = Some(self.store.away(now).await?);
        }
        facts.away = state.away.clone().unwrap_or_default();
        for id in assign::loads_needed(k, &target, sticky) {
            let Some(r) = k.reps.get(&id) else { continue };
            let load = match state.loads.get(&r.folder) {
                Some(n) => Some(*n),
                None => match src.count(&r.folder).await {
                    Ok(n) => {
                        metrics::gauge!("switchboard_rep_open_messages", "rep" => id.clone())
                            .set(f64::from(n));
                        state.loads.insert(r.folder.clone(), n);
                        Some(n)
                    }
                    Err(e) => {
                        warn!(rep = %id, folder = %r.folder, "cannot count open messages: {e}");
                        None
                    }
                },
            };
            if let Some(n) = load {
                facts.loads.insert(id, n);
            }
        }
        let queue = match &target {
            assign::Target::Queue(q) => Some(q.clone()),
            assign::Target::Rep(r) => k
                .reps
                .get(r)
                .and_then(|r| r.queues.first())
                .map(|q| q.0.clone()),
        };
        if let Some(q) = queue
            && let Some(pos) = self.store.counter(&format!("rotation:{q}")).await?
        {
            facts.rotation.insert(q, pos.max(0) as u64);
        }
        Ok(assign::assign(k, &target, sticky.zip(ticket), &facts))
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        mb: &MailboxInfo,
        key: &str,
        m: Option<&Message>,
        event: &str,
        detail: String,
        data: Option<String>,
        ticket: Option<&str>,
        queue: Option<&str>,
    ) -> Result<(), StoreError> {
        self.store
            .audit(&AuditEvent {
                at: now_ms(),
                event: event.into(),
                mailbox: Some(mb.name.clone()),
                message_key: Some(key.into()),
                message_id: m.and_then(|m| m.message_id.clone()),
                sender: m.and_then(|m| m.from.as_ref().map(|f| f.key())),
                ticket: ticket.map(str::to_string),
                queue: queue.map(str::to_string),
                rep: None,
                detail,
                data,
            })
            .await
    }

    /// Records a message as parked (state `decided`, folder Parked) with
    /// its audit event; the caller files it.
    async fn record_park(
        &self,
        mb: &MailboxInfo,
        key: &str,
        why: String,
        now: i64,
    ) -> Result<(String, Decision), PipelineError> {
        let d = decide::park(why.clone());
        let folder = mb.folders.parked.clone();
        let json = serde_json::to_string(&d).unwrap_or_default();
        self.store
            .record_decision(
                &NewMessage {
                    key,
                    mailbox: &mb.name,
                    verdict: "park",
                    folder: &folder,
                    decision: &json,
                    ..Default::default()
                },
                now,
            )
            .await?;
        self.audit(
            mb,
            key,
            None,
            "decided",
            format!("park: {why}"),
            Some(json),
            None,
            None,
        )
        .await?;
        Ok((folder, d))
    }

    /// Parks an entry that cannot be read as a message (a symbolic link in
    /// a Maildir): it is reported and filed for an admin, never processed.
    async fn park_unreadable(
        &self,
        mb: &MailboxInfo,
        id: &MsgRef,
        why: &str,
        now: i64,
    ) -> Result<(Plan, Outcome), PipelineError> {
        let key = format!(
            "unreadable:{}",
            crate::util::sha256_hex(format!("{}\0{id}", mb.name).as_bytes())
        );
        let (folder, d) = self
            .record_park(mb, &key, format!("{id}: {why}"), now)
            .await?;
        warn!(mailbox = %mb.name, id = %id, "parked: {why}");
        let outcome = Outcome {
            id: id.to_string(),
            message_id: None,
            from: String::new(),
            subject: String::new(),
            verdict: "park".into(),
            folder: Some(folder.clone()),
            ticket: None,
            why: why.to_string(),
            decision: Some(d),
            replied: false,
        };
        Ok((Plan::File { folder, key }, outcome))
    }

    async fn handle<S: MailSource>(
        &self,
        src: &mut S,
        mb: &MailboxInfo,
        k: &Arc<Knowledge>,
        f: Fetched,
        state: &mut BatchState,
    ) -> Result<(Plan, Outcome), PipelineError> {
        let now = now_ms();
        if let Some(why) = &f.unreadable {
            return self.park_unreadable(mb, &f.id, why, now).await;
        }
        let parsed = parse::parse(&f.raw, &parse_options(k, Some(f.size)));
        let key = match &parsed {
            Ok(m) => m.dedupe_key(&f.raw),
            Err(_) => format!("sha256:{}", crate::util::sha256_hex(&f.raw)),
        };
        let msg = parsed.as_ref().ok();
        if let Some(id) = msg.and_then(|m| m.message_id.as_deref()) {
            tracing::Span::current().record("message_id", id);
        }
        let mut outcome = Outcome {
            id: f.id.to_string(),
            message_id: msg.and_then(|m| m.message_id.clone()),
            from: msg
                .and_then(|m| m.from.as_ref().map(|a| a.addr.clone()))
                .unwrap_or_default(),
            subject: msg.map(|m| m.subject.clone()).unwrap_or_default(),
            verdict: String::new(),
            folder: None,
            ticket: None,
            why: String::new(),
            decision: None,
            replied: false,
        };

        // Resume whatever an earlier run started.
        let mut resumed_ticket = None;
        if let Some(row) = self.store.message(&key).await? {
            resumed_ticket = row.ticket.clone();
            outcome.verdict = row.verdict.clone();
            outcome.ticket = row.ticket.clone();
            let file = |folder: String, why: String, mut o: Outcome| {
                o.folder = Some(folder.clone());
                o.why = why;
                (
                    Plan::File {
                        folder,
                        key: key.clone(),
                    },
                    o,
                )
            };
            match row.state {
                State::Done => {
                    self.audit(
                        mb,
                        &key,
                        msg,
                        "duplicate",
                        format!("same message as one already filed in {}", row.folder),
                        None,
                        row.ticket.as_deref(),
                        None,
                    )
                    .await?;
                    return Ok(file(
                        row.folder.clone(),
                        "duplicate of a message already handled".into(),
                        outcome,
                    ));
                }
                State::Decided if row.verdict != "reply" => {
                    return Ok(file(
                        row.folder.clone(),
                        "resumed: filing as decided earlier".into(),
                        outcome,
                    ));
                }
                State::Sending => {
                    let queue = k.policy.default_queue.clone();
                    let folder = folder_for(
                        &Verdict::Route {
                            queue: queue.clone(),
                        },
                        k,
                        &mb.folders,
                    );
                    let note = "an automatic reply may already have been sent when processing was interrupted; it is not sent again — please check";
                    warn!(mailbox = %mb.name, key = %key, "{note}");
                    // If it did go out, an answer to it must be recognised.
                    if let (Some(id), Some(t)) = (&row.reply_message_id, &row.ticket) {
                        self.store.link_auto_reply(id, t).await?;
                    }
                    self.store
                        .reroute(&key, "route", &folder, Some(&queue), note, now)
                        .await?;
                    self.audit(
                        mb,
                        &key,
                        msg,
                        "interrupted",
                        note.into(),
                        None,
                        row.ticket.as_deref(),
                        Some(&queue),
                    )
                    .await?;
                    outcome.verdict = "route".into();
                    return Ok(file(folder, note.into(), outcome));
                }
                State::Sent | State::Archived => {
                    if row.state == State::Sent {
                        // A crash may have come between the APPEND and the
                        // state write: look before storing a second copy.
                        let there = match &row.reply_message_id {
                            Some(id) => src.has_message(&mb.folders.sent, id).await?,
                            None => false,
                        };
                        if !there && let Some(raw) = self.store.reply_raw(&key).await? {
                            src.append(&mb.folders.sent, &raw, &[Flag::Seen]).await?;
                        }
                        self.store.set_state(&key, State::Archived, now).await?;
                    }
                    src.add_flags(&f.id, &[Flag::Answered]).await?;
                    return Ok(file(
                        row.folder.clone(),
                        "resumed: reply already sent, filing".into(),
                        outcome,
                    ));
                }
                State::Deferred if row.retry_at.is_some_and(|t| t > now) => {
                    outcome.verdict = "deferred".into();
                    outcome.why = format!(
                        "waiting to retry: {}",
                        row.last_error.clone().unwrap_or_default()
                    );
                    return Ok((Plan::Leave, outcome));
                }
                // Decided-reply (nothing sent yet) or a due retry: decide again.
                State::Decided | State::Deferred => {}
            }
        }

        let m = match parsed {
            Ok(m) => m,
            Err(e) => {
                let (folder, d) = self
                    .record_park(mb, &key, format!("cannot parse the message: {e}"), now)
                    .await?;
                warn!(mailbox = %mb.name, id = %f.id, "parked: cannot parse: {e}");
                outcome.verdict = "park".into();
                outcome.why = d.reasons.join("; ");
                outcome.folder = Some(folder.clone());
                outcome.decision = Some(d);
                return Ok((Plan::File { folder, key }, outcome));
            }
        };

        // Conversation: a reply in a known thread, or a ticket tag typed by
        // the same customer (a tag from another address cannot hijack).
        let sender = m.from.as_ref().map(|a| a.key()).unwrap_or_default();
        let mut refs: Vec<String> = m.references.clone();
        refs.extend(m.in_reply_to.iter().cloned());
        let mut ticket = self.store.ticket_for_references(&refs).await?;
        if ticket.is_none() {
            for tag in reply::ticket_tags(&m.subject) {
                if let Some(c) = self.store.conversation(&tag).await?
                    && c.customer == sender
                {
                    ticket = Some(tag);
                    break;
                }
            }
        }
        let ctx = Context {
            follow_up: ticket.is_some(),
        };
        let started = std::time::Instant::now();
        let c: Classification = classify::classify(&m, k, &ctx);
        metrics::histogram!("switchboard_classify_seconds").record(started.elapsed().as_secs_f64());
        let proposed = decide::proposed_reply(&c, k);
        let recipient = decide::reply_address(&m, k.policy.reply.address, &k.policy.our_addresses)
            .map(|a| a.key())
            .unwrap_or_default();
        let history = self
            .store
            .history(
                &SentTo {
                    recipient: &recipient,
                    sender: &sender,
                },
                proposed.as_ref().map(|p| p.0.as_str()),
                &refs,
                now,
            )
            .await?;
        let mut d = decide::decide(&m, c, k, &history, now);
        if let Some(check) = d.suppressed {
            metrics::counter!("switchboard_reply_suppressed_total", "reason" => check).increment(1);
        }
        // A follow-up: who has the conversation, and has a person answered
        // since the customer last wrote? (The customer answers a message
        // that is neither theirs nor ours: a person's reply.)
        let existing = match &ticket {
            Some(t) => self.store.conversation(t).await?,
            None => None,
        };
        let human_replied = existing.is_some()
            && !m.in_reply_to.is_empty()
            && !self.store.knows_any(&m.in_reply_to).await?;
        if let (Some(c), Some(t)) = (&existing, &ticket) {
            let since_human = if human_replied { 1 } else { c.since_human + 1 };
            decide::escalate_unanswered(&mut d, k, c.queue.as_deref(), t, since_human);
        }
        if ticket.is_none()
            && matches!(
                d.verdict,
                Verdict::Reply { .. } | Verdict::Route { .. } | Verdict::Escalate { .. }
            )
        {
            // A message decided again after a retry keeps its ticket.
            ticket = Some(match resumed_ticket.take() {
                Some(t) => t,
                None => {
                    let n = self.store.next_counter("ticket", 1001).await?;
                    format!("{}-{n}", k.policy.reply.ticket_prefix)
                }
            });
        }

        // Build the reply before recording, so a template problem becomes
        // a decision for a person rather than an error.
        let mut outgoing = None;
        if matches!(d.verdict, Verdict::Reply { .. }) {
            match build_reply(&m, &d, k, ticket.as_deref()) {
                Ok((_, out)) => outgoing = Some(out),
                Err(e) => {
                    d.reasons.push(format!(
                        "the reply could not be rendered ({e}); a person answers instead"
                    ));
                    d.verdict = Verdict::Route {
                        queue: k.policy.default_queue.clone(),
                    };
                }
            }
        }
        let main_reason = d.reasons.last().cloned().unwrap_or_default();
        let assignment = match &d.verdict {
            Verdict::Route { queue } => {
                let sticky = existing.as_ref().and_then(|c| c.rep.clone());
                // A follow-up that no rule sent anywhere in particular stays
                // in its conversation's queue.
                let queue = match existing.as_ref().and_then(|c| c.queue.as_deref()) {
                    Some(q) if *queue == k.policy.default_queue && k.queues.contains_key(q) => q,
                    _ => queue.as_str(),
                };
                let a = self
                    .assign(
                        src,
                        k,
                        queue,
                        sticky.as_deref(),
                        ticket.as_deref(),
                        now,
                        state,
                    )
                    .await?;
                if a.rep.is_some() || !k.reps.is_empty() {
                    d.reasons.push(a.why.clone());
                }
                Some(a)
            }
            _ => None,
        };
        let folder = assignment.as_ref().map_or_else(
            || folder_for(&d.verdict, k, &mb.folders),
            |a| a.folder.clone(),
        );
        let queue = assignment
            .as_ref()
            .map(|a| a.queue.as_str())
            .or(d.verdict.queue());
        let rep = assignment.as_ref().and_then(|a| a.rep.as_deref());
        let json = serde_json::to_string(&d).unwrap_or_default();
        self.store
            .record_decision(
                &NewMessage {
                    key: &key,
                    mailbox: &mb.name,
                    message_id: m.message_id.as_deref(),
                    sender: &sender,
                    subject: &m.subject,
                    verdict: d.verdict.kind(),
                    folder: &folder,
                    queue,
                    rep,
                    template: d.verdict.template(),
                    rule: d.rule.as_deref(),
                    ticket: ticket.as_deref(),
                    decision: &json,
                },
                now,
            )
            .await?;
        if let Some(t) = &ticket {
            self.store
                .touch_conversation(
                    t,
                    &sender,
                    &m.subject,
                    m.message_id.as_deref(),
                    human_replied,
                    now,
                )
                .await?;
            if let Some(q) = queue {
                self.store
                    .assign_conversation(
                        t,
                        Some(q),
                        rep,
                        matches!(d.verdict, Verdict::Escalate { .. }),
                        now,
                    )
                    .await?;
            }
        }
        if let (Some(a), Some(r)) = (&assignment, rep) {
            // Only loads that were counted this batch are kept up to date;
            // an uncounted folder is counted when someone needs it.
            if let Some(n) = state.loads.get_mut(&a.folder) {
                *n += 1;
            }
            if let Some(pos) = a.rotation {
                self.store
                    .set_counter(&format!("rotation:{}", a.queue), pos as i64)
                    .await?;
            }
            info!(rep = r, "assigned");
        }
        let why = match assignment
            .as_ref()
            .filter(|a| a.rep.is_some() || !k.reps.is_empty())
        {
            Some(a) => format!("{main_reason} → {}", a.why),
            None => main_reason,
        };
        let summary = format!("{}: {why}", d.verdict.kind());
        self.store
            .audit(&AuditEvent {
                at: now_ms(),
                event: "decided".into(),
                mailbox: Some(mb.name.clone()),
                message_key: Some(key.clone()),
                message_id: m.message_id.clone(),
                sender: Some(sender.clone()),
                ticket: ticket.clone(),
                queue: queue.map(str::to_string),
                rep: rep.map(str::to_string),
                detail: summary,
                data: Some(json),
            })
            .await?;
        info!(decision = d.verdict.kind(), folder = %folder, "decided");

        outcome.ticket = ticket.clone();
        outcome.verdict = d.verdict.kind().into();
        outcome.why = why;

        if let (Verdict::Reply { template, to, .. }, Some(out)) = (&d.verdict, &outgoing) {
            self.store
                .reply_intent(&key, &out.message_id, &out.raw, now)
                .await?;
            match self.outbox.send(out).await {
                Ok(()) => {
                    let now = now_ms();
                    metrics::counter!("switchboard_auto_replies_sent_total", "template" => template.clone())
                        .increment(1);
                    self.store
                        .reply_sent(
                            &key,
                            &out.message_id,
                            &SentTo {
                                recipient: &to.addr,
                                sender: &sender,
                            },
                            template,
                            ticket.as_deref(),
                            now,
                        )
                        .await?;
                    self.audit(
                        mb,
                        &key,
                        Some(&m),
                        "reply_sent",
                        format!("{template} to {} ({})", out.to, out.subject),
                        None,
                        ticket.as_deref(),
                        None,
                    )
                    .await?;
                    src.append(&mb.folders.sent, &out.raw, &[Flag::Seen])
                        .await?;
                    self.store
                        .set_state(&key, State::Archived, now_ms())
                        .await?;
                    src.add_flags(&f.id, &reply_flags(&d.flags)).await?;
                    outcome.replied = true;
                }
                Err(SendError::Ambiguous(e)) => {
                    // The server may have accepted the reply: count it as
                    // sent for every limit, never send it again, and let a
                    // person check.
                    let note = format!(
                        "the SMTP server did not confirm the reply ({e}); it may have been \
                         delivered, so it is not sent again — please check"
                    );
                    self.store
                        .reply_sent(
                            &key,
                            &out.message_id,
                            &SentTo {
                                recipient: &to.addr,
                                sender: &sender,
                            },
                            template,
                            ticket.as_deref(),
                            now_ms(),
                        )
                        .await?;
                    let queue = k.policy.default_queue.clone();
                    d.reasons.push(note.clone());
                    d.verdict = Verdict::Route {
                        queue: queue.clone(),
                    };
                    let folder = folder_for(&d.verdict, k, &mb.folders);
                    self.store
                        .reroute(&key, "route", &folder, Some(&queue), &note, now_ms())
                        .await?;
                    self.audit(
                        mb,
                        &key,
                        Some(&m),
                        "reply_uncertain",
                        note.clone(),
                        None,
                        ticket.as_deref(),
                        Some(&queue),
                    )
                    .await?;
                    warn!(mailbox = %mb.name, id = %f.id, "{note}");
                    outcome.verdict = "route".into();
                    outcome.why = note;
                    outcome.folder = Some(folder.clone());
                    outcome.decision = Some(d);
                    return Ok((Plan::File { folder, key }, outcome));
                }
                Err(SendError::Temporary(e)) => {
                    let row = self.store.message(&key).await?;
                    let attempts = row.map_or(1, |r| r.attempts.max(1)) as u32;
                    let delay = self
                        .retry_initial
                        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)))
                        .min(self.retry_max);
                    let retry_at = now_ms() + delay.as_millis() as i64;
                    self.store.defer(&key, retry_at, &e, now_ms()).await?;
                    self.audit(
                        mb,
                        &key,
                        Some(&m),
                        "deferred",
                        format!(
                            "reply not sent, retry in {}: {e}",
                            decide::human_duration(delay.as_secs() as i64)
                        ),
                        None,
                        ticket.as_deref(),
                        None,
                    )
                    .await?;
                    warn!(mailbox = %mb.name, id = %f.id, "reply deferred: {e}");
                    outcome.verdict = "deferred".into();
                    outcome.why = format!("reply not sent yet: {e}");
                    outcome.decision = Some(d);
                    return Ok((Plan::Leave, outcome));
                }
                Err(SendError::Permanent(e)) => {
                    let queue = k.policy.default_queue.clone();
                    d.reasons.push(format!(
                        "the reply was refused ({e}); a person answers instead"
                    ));
                    d.verdict = Verdict::Route {
                        queue: queue.clone(),
                    };
                    let folder = folder_for(&d.verdict, k, &mb.folders);
                    self.store
                        .reroute(&key, "route", &folder, Some(&queue), &e, now_ms())
                        .await?;
                    self.audit(
                        mb,
                        &key,
                        Some(&m),
                        "reply_failed",
                        e.clone(),
                        None,
                        ticket.as_deref(),
                        Some(&queue),
                    )
                    .await?;
                    warn!(mailbox = %mb.name, id = %f.id, "reply refused: {e}");
                    outcome.verdict = "route".into();
                    outcome.why = d.reasons.last().cloned().unwrap_or_default();
                    outcome.folder = Some(folder.clone());
                    outcome.decision = Some(d);
                    return Ok((Plan::File { folder, key }, outcome));
                }
            }
        } else if !d.flags.is_empty() {
            let kw: Vec<Flag> = d.flags.iter().map(|f| Flag::Keyword(f.clone())).collect();
            src.add_flags(&f.id, &kw).await?;
        }
        outcome.folder = Some(folder.clone());
        outcome.decision = Some(d);
        Ok((Plan::File { folder, key }, outcome))
    }
}
