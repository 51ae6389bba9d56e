//! Deciding one message of a batch, purely: classification, the reply
//! checks, automatic escalation, the conversation it belongs to, its
//! ticket and who gets it — as a function of (message, knowledge, facts,
//! what the batch decided so far, now). The pipeline gathers [`Facts`]
//! before and writes the [`Ledger`] after, in one transaction.

use std::collections::{HashMap, HashSet};

use crate::classify::{self, Classification, Context};
use crate::decide::assign::{self, Assignment, TeamFacts};
use crate::decide::{self, Decision, History, Verdict};
use crate::knowledge::Knowledge;
use crate::parse::Message;

/// A conversation as the store knows it.
#[derive(Debug, Clone, Default)]
pub struct Thread {
    pub customer: String,
    pub queue: Option<String>,
    pub rep: Option<String>,
    /// Customer messages since a person last replied.
    pub since_human: i64,
    /// A person answered at least once.
    pub first_response_at: Option<i64>,
    /// The open service-level deadline.
    pub due_at: Option<i64>,
}

/// Earlier automatic replies, for the rate limits: as the store reads
/// them (in-flight replies included).
pub use crate::record::ReplyFacts as ReplyHistory;

/// Everything a batch's decisions depend on, read before deciding.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Known Message-IDs → their conversation (ticket).
    pub tickets: HashMap<String, String>,
    /// Message-IDs of our own automatic replies.
    pub auto_replies: HashSet<String>,
    /// Message-IDs of people's replies seen in a watched mailbox.
    pub staff_replies: HashSet<String>,
    /// Open drafts by ticket: (draft Message-ID, text).
    pub drafts: HashMap<String, (String, String)>,
    pub threads: HashMap<String, Thread>,
    pub replies: ReplyHistory,
    /// Away marks and open loads of the team.
    pub team: TeamFacts,
    /// The last ticket number used.
    pub last_ticket: Option<i64>,
}

/// What the batch has decided so far: later messages of the same batch see
/// earlier ones (a reply sent, a conversation opened, a turn taken).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Ticket numbers taken by the batch.
    pub tickets_taken: i64,
    /// Round-robin positions moved by the batch: queue → position.
    pub rotation: HashMap<String, u64>,
    /// Conversations opened or continued: ticket → change.
    pub threads: HashMap<String, ThreadChange>,
    /// Message-IDs the batch linked to conversations.
    pub ids: HashMap<String, String>,
    /// Automatic replies decided: (recipient, sender, template).
    pub replies: Vec<(String, String, String)>,
    /// Messages the batch assigned to each representative (their open
    /// loads grow before the moves happen).
    pub loads: HashMap<String, u32>,
    /// Message-IDs of people's replies (recorded as such).
    pub staff_ids: HashSet<String>,
    /// What became of drafts: (draft Message-ID, outcome).
    pub draft_outcomes: Vec<(String, String)>,
}

/// How a batch changes one conversation.
#[derive(Debug, Clone, Default)]
pub struct ThreadChange {
    pub customer: String,
    pub subject: String,
    pub messages: i64,
    /// Customer messages since the last one that answered a person.
    pub since_human_reset: Option<i64>,
    pub queue: Option<String>,
    pub rep: Option<String>,
    pub escalated: bool,
    /// Opened by this batch.
    pub new: bool,
    /// A person answered (the deadline stops).
    pub human_reply: bool,
    /// A customer wrote.
    pub customer_wrote: bool,
    /// A service-level deadline started: (when, kind).
    pub due: Option<(i64, &'static str)>,
}

/// The decision for one message, with what it means for the conversation
/// and the team.
#[derive(Debug, Clone)]
pub struct Planned {
    pub decision: Decision,
    /// The reply to send, when the decision is to reply.
    pub reply: Option<crate::act::reply::Outgoing>,
    /// A draft answer for the person, when the decision has one: its
    /// text and the message.
    pub draft: Option<(String, crate::act::reply::Outgoing)>,
    pub ticket: Option<String>,
    pub assignment: Option<Assignment>,
    pub folder: String,
    pub queue: Option<String>,
    pub rep: Option<String>,
    /// The customer answered a person's reply.
    pub human_replied: bool,
    /// One line: why.
    pub why: String,
}

/// The lower-case From address (the sender's identity for limits and
/// conversations).
pub fn sender_key(m: &Message) -> String {
    m.from.as_ref().map(|a| a.key()).unwrap_or_default()
}

/// The Message-IDs a message refers to, oldest first.
pub fn references(m: &Message) -> Vec<String> {
    let mut refs = m.references.clone();
    refs.extend(m.in_reply_to.iter().cloned());
    refs
}

impl Ledger {
    /// The conversation a Message-ID belongs to, seen by this batch or the
    /// store.
    fn ticket_of(&self, facts: &Facts, id: &str) -> Option<String> {
        self.ids.get(id).or_else(|| facts.tickets.get(id)).cloned()
    }

    /// The conversation as it stands now (store plus this batch).
    fn thread(&self, facts: &Facts, ticket: &str) -> Option<Thread> {
        let stored = facts.threads.get(ticket);
        let change = self.threads.get(ticket);
        if stored.is_none() && change.is_none() {
            return None;
        }
        let mut t = stored.cloned().unwrap_or_default();
        if let Some(c) = change {
            if t.customer.is_empty() {
                t.customer = c.customer.clone();
            }
            t.since_human = match c.since_human_reset {
                Some(n) => n,
                None => t.since_human + c.messages,
            };
            if c.queue.is_some() {
                t.queue = c.queue.clone();
            }
            if c.rep.is_some() {
                t.rep = c.rep.clone();
            }
            if c.human_reply {
                t.first_response_at = t.first_response_at.or(Some(0));
                t.due_at = None;
            }
            if t.due_at.is_none() {
                t.due_at = c.due.map(|d| d.0);
            }
        }
        Some(t)
    }
}

/// The rate-limit facts for one reply: the store's history plus the
/// replies this batch already decided.
fn history(
    facts: &Facts,
    ledger: &Ledger,
    recipient: &str,
    sender: &str,
    template: Option<&str>,
    answers_auto_reply: bool,
    now: i64,
) -> History {
    let r = &facts.replies;
    let domain = |a: &str| {
        a.rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default()
    };
    let batch_now = |hit: bool| hit.then_some(now);
    let mut h = History {
        answers_auto_reply,
        ..History::default()
    };
    if let Some(t) = template {
        h.last_reply_to_recipient = r
            .to_recipient
            .get(&(recipient.to_string(), t.to_string()))
            .copied()
            .max(batch_now(
                ledger
                    .replies
                    .iter()
                    .any(|(rc, _, tp)| rc == recipient && tp == t),
            ));
        h.last_reply_from_sender = r
            .from_sender
            .get(&(sender.to_string(), t.to_string()))
            .copied()
            .max(batch_now(
                ledger
                    .replies
                    .iter()
                    .any(|(_, s, tp)| s == sender && tp == t),
            ));
    }
    h.last_any_reply_to_recipient = r.any_to_recipient.get(recipient).copied().max(batch_now(
        ledger.replies.iter().any(|(rc, _, _)| rc == recipient),
    ));
    let (rd, sd) = (domain(recipient), domain(sender));
    h.recipient_domain_last_hour = r.recipient_domain_hour.get(&rd).copied().unwrap_or(0)
        + ledger
            .replies
            .iter()
            .filter(|(rc, _, _)| domain(rc) == rd)
            .count() as u32;
    h.sender_domain_last_hour = r.sender_domain_hour.get(&sd).copied().unwrap_or(0)
        + ledger
            .replies
            .iter()
            .filter(|(_, s, _)| domain(s) == sd)
            .count() as u32;
    // Distinct recipients: the hour's, plus those this batch adds.
    let added: std::collections::HashSet<&String> = ledger
        .replies
        .iter()
        .map(|(rc, _, _)| rc)
        .filter(|rc| !r.answered_this_hour.contains(*rc))
        .collect();
    h.replies_last_hour = r.recipients_hour.saturating_add(added.len() as u32);
    h
}

/// Who wrote a message as a person of the team: a representative's id
/// (From is their `email`), `team` (From is one of our addresses), or
/// `None`. Our own automatic replies (`X-Switchboard-Ticket`) and
/// automatic mail never count.
pub fn staff_sender(m: &Message, k: &Knowledge) -> Option<String> {
    let from = m.from.as_ref()?.addr.to_lowercase();
    if m.headers.iter().any(|(n, _)| n == "x-switchboard-ticket") {
        return None;
    }
    let by = match k
        .reps
        .values()
        .find(|r| !r.email.is_empty() && r.email == from)
    {
        Some(r) => r.id.clone(),
        None if crate::classify::loop_guard::is_ours(&from, &k.policy.our_addresses) => {
            "team".into()
        }
        None => return None,
    };
    let automatic = crate::classify::loop_guard::inspect(m, &k.policy.our_addresses)
        .iter()
        .any(|f| f.is_automatic() && !matches!(f, crate::classify::Finding::OwnAddress(_)));
    (!automatic).then_some(by)
}

/// Records a person's answer: the conversation's clock stops, the
/// message is filed with the answered mail.
fn staff_reply(
    m: &Message,
    k: &Knowledge,
    ledger: &mut Ledger,
    facts: &Facts,
    ticket: String,
    by: String,
    mailbox_folders: &crate::config::Folders,
) -> Planned {
    let who = match k.reps.get(&by) {
        Some(r) => format!("{} ({})", r.name, r.id),
        None => "the team (from our address)".into(),
    };
    let mut why =
        format!("a person's answer in {ticket} by {who}: the conversation waits for the customer");
    // The draft we stored for this conversation: sent as it was, edited,
    // or not used?
    if let Some((id, text)) = facts.drafts.get(&ticket)
        && !ledger.draft_outcomes.iter().any(|(d, _)| d == id)
    {
        let outcome = draft_outcome(text, &m.body_full);
        why.push_str(&format!(
            "; the draft answer was {}",
            outcome.replace('_', " ")
        ));
        ledger
            .draft_outcomes
            .push((id.clone(), outcome.to_string()));
    }
    let change = ledger.threads.entry(ticket.clone()).or_default();
    change.human_reply = true;
    change.since_human_reset = Some(0);
    change.due = None;
    if let Some(id) = &m.message_id {
        ledger.ids.insert(id.clone(), ticket.clone());
        ledger.staff_ids.insert(id.clone());
    }
    let verdict = Verdict::Staff {
        ticket: ticket.clone(),
        by,
    };
    let folder = crate::pipeline::folder_for(&verdict, k, mailbox_folders);
    let mut decision = decide::park(String::new());
    decision.verdict = verdict;
    decision.reasons = vec![why.clone()];
    Planned {
        decision,
        reply: None,
        draft: None,
        ticket: Some(ticket),
        assignment: None,
        folder,
        queue: None,
        rep: None,
        human_replied: true,
        why,
    }
}

/// How a person's answer relates to the draft we wrote: `sent_unchanged`
/// (practically all of the draft's words and little else), `edited`
/// (a good part of it), or `not_used`.
pub fn draft_outcome(draft: &str, answer: &str) -> &'static str {
    let words = |t: &str| -> HashSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (d, a) = (words(draft), words(answer));
    if d.is_empty() || a.is_empty() {
        return "not_used";
    }
    let common = d.intersection(&a).count() as f64;
    let kept = common / d.len() as f64;
    let extra = 1.0 - common / a.len() as f64;
    if kept >= 0.95 && extra <= 0.1 {
        "sent_unchanged"
    } else if kept >= 0.4 {
        "edited"
    } else {
        "not_used"
    }
}

/// What is known about a message before it is decided.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prior<'a> {
    /// The ticket an earlier attempt gave it (a retried reply keeps its
    /// conversation).
    pub ticket: Option<&'a str>,
    /// Its FAQ result, scored ahead ([`classify::ahead`]).
    pub scored: Option<&'a crate::classify::FaqResult>,
    /// What the lookups found for it.
    pub lookups: Option<&'a crate::lookup::LookupFacts>,
    /// Its classification, made ahead (on the parsing threads) with the
    /// default [`Context`]: used when the message turns out to continue
    /// no known conversation and has no lookups, as the same pure
    /// function would give the same result.
    pub classified: Option<&'a Classification>,
    /// What the rules' conditions gave ahead ([`classify::Ahead::held`]),
    /// reused when the message has to be classified again.
    pub held: &'a [bool],
}

/// Decides one message.
pub fn plan(
    m: &Message,
    k: &Knowledge,
    facts: &Facts,
    ledger: &mut Ledger,
    prior: Prior<'_>,
    mailbox_folders: &crate::config::Folders,
    now: i64,
) -> Planned {
    // The conversation: a reply in a known thread, or a ticket tag typed
    // by the same customer (a tag from another address cannot hijack).
    let sender = sender_key(m);
    let refs = references(m);
    let mut ticket = refs
        .iter()
        .rev()
        .take(50)
        .find_map(|id| ledger.ticket_of(facts, id));
    if ticket.is_none() {
        ticket = crate::act::reply::ticket_tags(&m.subject)
            .into_iter()
            .find(|tag| {
                ledger
                    .thread(facts, tag)
                    .is_some_and(|t| t.customer == sender)
            });
    }
    // A person's answer in a known conversation (a representative's
    // reply with the shared address in Cc or Bcc): recorded, not decided.
    if let Some(by) = staff_sender(m, k) {
        let known = ticket.clone().or_else(|| {
            // A representative's own address may name the conversation by
            // its tag alone; our shared address must refer to it.
            (by != "team")
                .then(|| {
                    crate::act::reply::ticket_tags(&m.subject)
                        .into_iter()
                        .find(|t| ledger.thread(facts, t).is_some())
                })
                .flatten()
        });
        if let Some(t) = known {
            return staff_reply(m, k, ledger, facts, t, by, mailbox_folders);
        }
    }
    let existing = ticket.as_deref().and_then(|t| ledger.thread(facts, t));
    let ctx = Context {
        follow_up: ticket.is_some(),
        lookups: prior.lookups.cloned().unwrap_or_default(),
    };
    let c: Classification = match prior.classified {
        Some(c) if !ctx.follow_up && ctx.lookups == crate::lookup::LookupFacts::default() => {
            c.clone()
        }
        _ => classify::classify_again(m, k, &ctx, prior.scored, prior.held),
    };
    let proposed = decide::proposed_reply(&c, k);
    let recipient = decide::reply_address(m, k.policy.reply.address, &k.policy.our_addresses)
        .map(|a| a.key())
        .unwrap_or_default();
    let answers_auto = refs.iter().take(50).any(|r| facts.auto_replies.contains(r));
    let h = history(
        facts,
        ledger,
        &recipient,
        &sender,
        proposed.as_ref().map(|p| p.0.as_str()),
        answers_auto,
        now,
    );
    let mut d = decide::decide(m, c, k, &h, now);
    // A follow-up: has a person answered since the customer last wrote?
    // (The customer answers a message that is neither theirs nor ours.)
    // (It answers a person's reply we saw, or a message we never saw —
    // a reply a person sent without copying the shared address.)
    let human_replied = existing.is_some()
        && !m.in_reply_to.is_empty()
        && m.in_reply_to.iter().all(|id| {
            facts.staff_replies.contains(id)
                || ledger.staff_ids.contains(id)
                || ledger.ticket_of(facts, id).is_none()
        });
    if let (Some(t), Some(tk)) = (&existing, &ticket) {
        let since_human = if human_replied { 1 } else { t.since_human + 1 };
        decide::escalate_unanswered(&mut d, k, t.queue.as_deref(), tk, since_human);
    }
    if ticket.is_none()
        && matches!(
            d.verdict,
            Verdict::Reply { .. } | Verdict::Route { .. } | Verdict::Escalate { .. }
        )
    {
        ticket = Some(match prior.ticket.map(str::to_string) {
            Some(t) => t,
            None => {
                ledger.tickets_taken += 1;
                let n = facts.last_ticket.unwrap_or(1000) + ledger.tickets_taken;
                format!("{}-{n}", k.policy.reply.ticket_prefix)
            }
        });
    }
    // A reply whose template cannot be rendered goes to a person.
    let mut reply = None;
    if matches!(d.verdict, Verdict::Reply { .. }) {
        match crate::pipeline::build_reply(m, &d, k, ticket.as_deref()) {
            Ok((_, out)) => reply = Some(out),
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
    // A draft for the person: rendered like a reply, never sent.
    let draft = match (&d.verdict, &d.draft) {
        (Verdict::Route { .. } | Verdict::Escalate { .. }, Some((faq, template))) => {
            decide::reply_address(m, k.policy.reply.address, &k.policy.our_addresses)
                .ok()
                .and_then(|to| {
                    let mut as_reply = d.clone();
                    as_reply.verdict = Verdict::Reply {
                        template: template.clone(),
                        to,
                        faq: Some(faq.clone()),
                    };
                    crate::pipeline::build_reply(m, &as_reply, k, ticket.as_deref())
                        .ok()
                        .map(|(r, out)| (r.text, out))
                })
        }
        _ => None,
    };
    if d.draft.is_some() && draft.is_none() {
        d.draft = None;
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
            let target = assign::route_target(k, queue);
            let mut team = facts.team.clone();
            team.now = now;
            for (q, pos) in &ledger.rotation {
                team.rotation.insert(q.clone(), *pos);
            }
            for (r, n) in &ledger.loads {
                if let Some(l) = team.loads.get_mut(r) {
                    *l += n;
                }
            }
            let a = assign::assign(k, &target, sticky.as_deref().zip(ticket.as_deref()), &team);
            if a.rep.is_some() || !k.reps.is_empty() {
                d.reasons.push(a.why.clone());
            }
            if let Some(pos) = a.rotation {
                ledger.rotation.insert(a.queue.clone(), pos);
            }
            if let Some(r) = &a.rep {
                *ledger.loads.entry(r.clone()).or_default() += 1;
            }
            Some(a)
        }
        _ => None,
    };
    let folder = assignment.as_ref().map_or_else(
        || crate::pipeline::folder_for(&d.verdict, k, mailbox_folders),
        |a| a.folder.clone(),
    );
    let queue = assignment
        .as_ref()
        .map(|a| a.queue.clone())
        .or(d.verdict.queue().map(str::to_string));
    let rep = assignment.as_ref().and_then(|a| a.rep.clone());
    // What the batch now knows.
    if let Some(t) = &ticket {
        let change = ledger
            .threads
            .entry(t.clone())
            .or_insert_with(|| ThreadChange {
                customer: sender.clone(),
                subject: m.subject.clone(),
                new: existing.is_none(),
                ..ThreadChange::default()
            });
        change.messages += 1;
        change.customer_wrote = true;
        if human_replied {
            change.since_human_reset = Some(1);
            change.human_reply = true;
            change.due = None;
        } else if let Some(n) = change.since_human_reset.as_mut() {
            *n += 1;
        }
        if queue.is_some() {
            change.queue = queue.clone();
            change.rep = rep.clone().or(change.rep.take());
        }
        // A person is to answer: the queue's service level starts (or
        // keeps) its deadline.
        if matches!(d.verdict, Verdict::Route { .. } | Verdict::Escalate { .. })
            && let Some(q) = queue.as_deref().and_then(|q| k.queues.get(q))
            && q.sla.has_deadlines()
        {
            let answered = change.human_reply
                || existing
                    .as_ref()
                    .is_some_and(|t| t.first_response_at.is_some());
            let open = !change.human_reply
                && (change.due.is_some() || existing.as_ref().is_some_and(|t| t.due_at.is_some()));
            let (limit, kind) = if answered {
                (q.sla.follow_up, crate::decide::sla::DueKind::FollowUp)
            } else {
                (
                    q.sla.first_response,
                    crate::decide::sla::DueKind::FirstResponse,
                )
            };
            if let (false, Some(limit)) = (open, limit) {
                change.due = Some((
                    crate::decide::sla::due(now, limit, &q.sla.calendar),
                    kind.as_str(),
                ));
            }
        }
        change.escalated |= matches!(d.verdict, Verdict::Escalate { .. });
        if let Some(id) = &m.message_id {
            ledger.ids.insert(id.clone(), t.clone());
        }
    }
    if let Verdict::Reply { template, to, .. } = &d.verdict {
        ledger
            .replies
            .push((to.key(), sender.clone(), template.clone()));
    }
    let why = match assignment
        .as_ref()
        .filter(|a| a.rep.is_some() || !k.reps.is_empty())
    {
        Some(a) => format!("{main_reason} → {}", a.why),
        None => main_reason,
    };
    Planned {
        decision: d,
        reply,
        draft,
        ticket,
        assignment,
        folder,
        queue,
        rep,
        human_replied,
        why,
    }
}
