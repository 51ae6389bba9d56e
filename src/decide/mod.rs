//! Stage 4 — **decide**: pure policy. Classification + what the store
//! knows ([`History`]) → a [`Decision`] with its reasons.
//!
//! Auto-replies are the dangerous action, so every path to one passes the
//! same checks in [`decide`]: the loop guard (never answer machines or
//! ourselves), a usable reply address (RFC 3834 §4), the "reply to our own
//! auto-reply" rule, suggest mode, the per-sender interval and the global
//! circuit breaker. Anything that fails a check goes to a person.

use serde::Serialize;

pub mod assign;
pub mod plan;
pub mod sla;

use crate::classify::{Classification, Finding};
use crate::config::ReplyAddress;
use crate::knowledge::rules::ReplyWith;
use crate::knowledge::{Knowledge, RuleAction};
use crate::parse::{Mailbox, Message, ReturnPath};

/// What happens to a message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Verdict {
    /// Send an automatic reply, then file the original as answered.
    Reply {
        template: String,
        to: Mailbox,
        faq: Option<String>,
    },
    /// Move to a queue's folder for a person.
    Route { queue: String },
    /// Move to a queue's supervisor folder.
    Escalate { queue: String },
    /// File away: nobody needs to see it (automatic mail).
    Ignore { reason: String },
    /// Put aside for an admin: it could not be processed.
    Park { reason: String },
    /// A person's answer in a known conversation (a representative's
    /// reply with the shared address in Cc/Bcc): recorded as the
    /// conversation's answer and filed with the answered mail.
    Staff { ticket: String, by: String },
}

impl Verdict {
    /// `reply`, `route`, `escalate`, `ignore` or `park`.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Reply { .. } => "reply",
            Verdict::Route { .. } => "route",
            Verdict::Escalate { .. } => "escalate",
            Verdict::Ignore { .. } => "ignore",
            Verdict::Park { .. } => "park",
            Verdict::Staff { .. } => "staff_reply",
        }
    }

    pub fn queue(&self) -> Option<&str> {
        match self {
            Verdict::Route { queue } | Verdict::Escalate { queue } => Some(queue),
            _ => None,
        }
    }

    pub fn template(&self) -> Option<&str> {
        match self {
            Verdict::Reply { template, .. } => Some(template),
            _ => None,
        }
    }
}

/// Facts from the state store that the policy needs. Every rate limit is
/// keyed by the address that would be mailed *and* by the From address,
/// so a forged Reply-To cannot multiply replies to a victim.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    /// When the address we would mail last got the proposed template
    /// (ms since the epoch).
    pub last_reply_to_recipient: Option<i64>,
    /// When mail from this From address last got the proposed template,
    /// whatever address was mailed.
    pub last_reply_from_sender: Option<i64>,
    /// When the address we would mail last got any automatic reply.
    pub last_any_reply_to_recipient: Option<i64>,
    /// Automatic replies in the last hour to the recipient's domain.
    pub recipient_domain_last_hour: u32,
    /// Automatic replies in the last hour to mail from the From domain.
    pub sender_domain_last_hour: u32,
    /// Distinct recipients of automatic replies in the last hour.
    pub replies_last_hour: u32,
    /// The message answers one of our automatic replies.
    pub answers_auto_reply: bool,
}
/// A decision with everything that explains it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// The rule that decided, if a rule did.
    pub rule: Option<String>,
    /// IMAP keywords to set on the message.
    pub flags: Vec<String>,
    /// Why, in order, as sentences.
    pub reasons: Vec<String>,
    /// The reply that would have been sent when a check stopped it.
    pub suggested_template: Option<String>,
    /// Which check stopped that reply (a short name for metrics):
    /// automatic, not_addressed, reply_to_automatic, subject_marker,
    /// auth_failed, not_authenticated, answers_auto_reply, follow_up,
    /// no_reply_address, auto_reply_off, language, rate_limit,
    /// domain_limit, circuit_breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<&'static str>,
    /// A draft answer for the person (FAQ entry, template) when the FAQ
    /// match was close but not confident (`[faq] suggest_threshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<(String, String)>,
    pub evidence: Classification,
}

/// The reply a classification leads to before any check: (template, FAQ
/// id). The caller uses it to look up the [`History`].
pub fn proposed_reply(c: &Classification, k: &Knowledge) -> Option<(String, Option<String>)> {
    let faq_reply = || {
        let best = c.faq.best()?;
        let e = k.faq.entry(&best.id)?;
        Some((e.template.clone(), Some(e.id.clone())))
    };
    match &c.rules.action {
        Some((_, RuleAction::Reply(ReplyWith::Template(t)))) => Some((t.clone(), None)),
        Some((_, RuleAction::Reply(ReplyWith::Faq))) => faq_reply(),
        Some((_, RuleAction::Stop)) | None if c.faq.confident => faq_reply(),
        _ => None,
    }
}

/// Where an answer to `m` goes (RFC 3834 §4), or why there is none.
pub fn reply_address(m: &Message, how: ReplyAddress, ours: &[String]) -> Result<Mailbox, String> {
    if m.return_path == Some(ReturnPath::Null) {
        return Err("the return path is null (<>)".into());
    }
    let candidates: Vec<Mailbox> = match how {
        ReplyAddress::ReplyTo => m.reply_to.iter().chain(m.from.iter()).cloned().collect(),
        ReplyAddress::From => m.from.iter().cloned().collect(),
        ReplyAddress::ReturnPath => match &m.return_path {
            Some(ReturnPath::Addr(a)) => vec![Mailbox {
                name: m.customer_name().to_string(),
                addr: a.clone(),
            }],
            _ => m.from.iter().cloned().collect(),
        },
    };
    for c in candidates {
        if c.addr.parse::<lettre::Address>().is_err() {
            continue;
        }
        if crate::classify::loop_guard::is_ours(&c.addr, ours) {
            return Err(format!("the reply address {} is one of ours", c.addr));
        }
        return Ok(c);
    }
    Err("no valid address to reply to".into())
}

/// Decides what to do with a classified message.
pub fn decide(m: &Message, c: Classification, k: &Knowledge, h: &History, now_ms: i64) -> Decision {
    let p = &k.policy;
    let mut d = Decision {
        verdict: Verdict::Route {
            queue: p.default_queue.clone(),
        },
        rule: None,
        flags: c.rules.flags.clone(),
        reasons: Vec::new(),
        suggested_template: None,
        suppressed: None,
        draft: None,
        evidence: c.clone(),
    };
    let rule_name = c.rules.action.as_ref().map(|(n, _)| n.clone());
    match c.rules.action.as_ref().map(|(_, a)| a) {
        Some(RuleAction::Route(q)) => {
            d.reasons.push(format!(
                "rule {:?} routes to {q}",
                rule_name.clone().unwrap_or_default()
            ));
            d.verdict = Verdict::Route { queue: q.clone() };
            d.rule = rule_name;
            return d;
        }
        Some(RuleAction::Escalate(q)) => {
            let queue = q.clone().unwrap_or_else(|| p.default_queue.clone());
            d.reasons.push(format!(
                "rule {:?} escalates to the supervisor of {queue}",
                rule_name.clone().unwrap_or_default()
            ));
            d.verdict = Verdict::Escalate { queue };
            d.rule = rule_name;
            return d;
        }
        Some(RuleAction::Ignore(r)) => {
            d.reasons.push(format!(
                "rule {:?} ignores it: {r}",
                rule_name.clone().unwrap_or_default()
            ));
            d.verdict = Verdict::Ignore { reason: r.clone() };
            d.rule = rule_name;
            return d;
        }
        Some(RuleAction::Park(r)) => {
            d.reasons.push(format!(
                "rule {:?} parks it: {r}",
                rule_name.clone().unwrap_or_default()
            ));
            d.verdict = Verdict::Park { reason: r.clone() };
            d.rule = rule_name;
            return d;
        }
        Some(RuleAction::Reply(_)) => {
            d.rule = rule_name.clone();
            d.reasons.push(format!(
                "rule {:?} asks for an automatic reply",
                rule_name.unwrap_or_default()
            ));
        }
        Some(RuleAction::Stop) => {
            d.reasons.push(format!(
                "rule {:?} stops rule processing; the default policy decides",
                rule_name.unwrap_or_default()
            ));
        }
        None if c.rules.lookup_failed.is_none() => d.reasons.push("no rule decided".into()),
        None => {}
    }
    // A rule needed a lookup that gave no usable answer: never a reply
    // without the data (nor a half-filled one).
    if let Some(why) = &c.rules.lookup_failed {
        d.suppressed = Some("lookup");
        d.reasons.push(format!(
            "{why}; a person answers instead (queue {})",
            p.default_queue
        ));
        d.verdict = Verdict::Route {
            queue: p.default_queue.clone(),
        };
        return d;
    }

    let automatic: Vec<&Finding> = c.guard.iter().filter(|f| f.is_automatic()).collect();
    let Some((template, faq)) = proposed_reply(&c, k) else {
        // Nothing to answer with.
        if !automatic.is_empty() {
            d.reasons
                .push(format!("automatic message: {}", describe(&automatic)));
            d.verdict = Verdict::Ignore {
                reason: format!("automatic message ({})", describe(&automatic)),
            };
        } else {
            d.reasons.push(format!("FAQ: {}", c.faq.reason));
            d.reasons
                .push(format!("routed to the default queue {}", p.default_queue));
            // Close to an answer: a draft for the person, never sent.
            if let Some((entry, score)) = draft_candidate(m, &c, k) {
                d.reasons.push(format!(
                    "a draft answer ({}, score {score:.2}, suggest threshold {:.2}) is written for the person",
                    entry.template,
                    p.faq.suggest_threshold.unwrap_or(0.0)
                ));
                d.draft = Some((entry.id.clone(), entry.template.clone()));
            }
        }
        return d;
    };
    if faq.is_some() {
        d.reasons.push(format!("FAQ: {}", c.faq.reason));
    }
    d.suggested_template = Some(template.clone());

    // Checks before any automatic reply.
    if !automatic.is_empty() {
        d.suppressed = Some("automatic");
        d.reasons.push(format!(
            "no automatic reply to an automatic message: {}",
            describe(&automatic)
        ));
        d.verdict = Verdict::Ignore {
            reason: format!("automatic message ({})", describe(&automatic)),
        };
        return d;
    }
    let to_human = |d: &mut Decision, check: &'static str, why: String| {
        d.suppressed = Some(check);
        d.reasons.push(format!(
            "{why}; a person answers instead (queue {})",
            p.default_queue
        ));
        d.verdict = Verdict::Route {
            queue: p.default_queue.clone(),
        };
    };
    // Findings that are not automatic mail but rule out an automatic
    // answer: not addressed to us, a machine's Reply-To, an ambiguous
    // auto-responder subject.
    if let Some(f) = c.guard.iter().find(|f| !f.is_automatic()) {
        to_human(&mut d, f.check(), f.describe());
        return d;
    }
    if let Some(fail) = c.auth.failed.first() {
        to_human(
            &mut d,
            "auth_failed",
            format!("the sender failed authentication ({fail}): possibly forged"),
        );
        return d;
    }
    if p.reply.require_authenticated && c.auth.passed.is_none() {
        to_human(
            &mut d,
            "not_authenticated",
            "no trusted Authentication-Results header says the sender is authenticated \
             (require_authenticated = true)"
                .into(),
        );
        return d;
    }
    if h.answers_auto_reply {
        to_human(
            &mut d,
            "answers_auto_reply",
            "this answers one of our automatic replies".into(),
        );
        return d;
    }
    if c.follow_up {
        to_human(
            &mut d,
            "follow_up",
            "this continues an existing conversation".into(),
        );
        return d;
    }
    // Someone else's record (a mistyped or guessed number): no data in
    // any reply.
    if let Some(r) = c.lookups.not_owner() {
        to_human(
            &mut d,
            "lookup_owner",
            format!(
                "lookup {}: the record belongs to someone else than the sender (a mistyped or guessed number); no data is sent",
                r.name
            ),
        );
        return d;
    }
    if let Some(e) = faq.as_deref().and_then(|id| k.faq.entry(id))
        && !e.needs.is_empty()
    {
        let needs: Vec<String> = e.needs.iter().map(|n| n.0.clone()).collect();
        match c.lookups.unmet(&needs) {
            None => {}
            Some(None) => {
                to_human(
                    &mut d,
                    "lookup",
                    format!(
                        "FAQ entry {} needs {}: not found in the message",
                        e.id,
                        needs.join(", ")
                    ),
                );
                return d;
            }
            Some(Some(why)) => {
                to_human(&mut d, "lookup", format!("FAQ entry {} needs {why}", e.id));
                return d;
            }
        }
    }
    let to = match reply_address(m, p.reply.address, &p.our_addresses) {
        Ok(a) => a,
        Err(why) => {
            to_human(
                &mut d,
                "no_reply_address",
                format!("cannot auto-reply: {why}"),
            );
            return d;
        }
    };
    if k.templates.empty.contains(&template) {
        to_human(
            &mut d,
            "template_empty",
            format!("the answer template {template} has no text yet"),
        );
        return d;
    }
    if !p.auto_reply {
        to_human(
            &mut d,
            "auto_reply_off",
            format!("auto-replies are switched off (suggested template: {template})"),
        );
        return d;
    }
    if let Some(lang) = m.language.as_deref() {
        let has_variant = k
            .templates
            .sets
            .get(&template)
            .is_some_and(|s| s.text.contains_key(lang));
        if lang != p.reply.language && !has_variant {
            to_human(
                &mut d,
                "language",
                format!("the message is in {lang} and {template} has no {lang} version"),
            );
            return d;
        }
    }
    if let Some(why) = rate_limited(m, &to, &template, p, h, now_ms) {
        to_human(&mut d, why.0, why.1);
        return d;
    }
    d.reasons
        .push(format!("automatic reply with {template} to {}", to.addr));
    d.verdict = Verdict::Reply { template, to, faq };
    d
}

/// The FAQ entry to draft an answer with: the best candidate scored at
/// least `[faq] suggest_threshold`, for a message no check rules out
/// (nothing automatic or suspicious, a valid reply address, no lookup it
/// needs, a template in the message's language).
fn draft_candidate<'k>(
    m: &Message,
    c: &Classification,
    k: &'k Knowledge,
) -> Option<(&'k crate::knowledge::FaqEntry, f64)> {
    let floor = k.policy.faq.suggest_threshold?;
    let best = c.faq.best().filter(|b| b.score >= floor)?;
    let e = k.faq.entry(&best.id)?;
    let clean = c.guard.is_empty()
        && c.auth.failed.is_empty()
        && !c.follow_up
        && e.needs.is_empty()
        && !k.templates.empty.contains(&e.template)
        && reply_address(m, k.policy.reply.address, &k.policy.our_addresses).is_ok()
        && m.language.as_deref().is_none_or(|l| {
            l == k.policy.reply.language
                || k.templates
                    .sets
                    .get(&e.template)
                    .is_some_and(|s| s.text.contains_key(l))
        });
    clean.then_some((e, best.score))
}

/// The per-address, per-domain and global limits, in that order: a limit
/// that concerns one customer or one domain is checked before the global
/// breaker, so a flood aimed at one victim stops at the victim and never
/// uses up the replies every other customer is owed.
fn rate_limited(
    m: &Message,
    to: &Mailbox,
    template: &str,
    p: &crate::knowledge::Policy,
    h: &History,
    now_ms: i64,
) -> Option<(&'static str, String)> {
    let window = p.limits.per_sender_interval.as_millis() as i64;
    let ago = |t: i64| human_duration((now_ms - t).max(0) / 1000);
    if let Some(last) = h.last_reply_to_recipient
        && now_ms - last < window
    {
        return Some((
            "rate_limit",
            format!(
                "{} already got the automatic reply {template} {} ago (limit: one per {})",
                to.addr,
                ago(last),
                human_duration(window / 1000)
            ),
        ));
    }
    let from = m.from.as_ref();
    if let (Some(f), Some(last)) = (from, h.last_reply_from_sender)
        && now_ms - last < window
    {
        return Some((
            "rate_limit",
            format!(
                "mail from {} already got the automatic reply {template} {} ago (limit: one per {})",
                f.addr,
                ago(last),
                human_duration(window / 1000)
            ),
        ));
    }
    // A Reply-To in another domain than From: the classic way to aim
    // backscatter at a victim. One reply of any kind per window.
    let cross = from.is_some_and(|f| f.domain() != to.domain());
    if cross && let Some(last) = h.last_any_reply_to_recipient {
        let window = p.limits.cross_domain_interval.as_millis() as i64;
        if now_ms - last < window {
            return Some((
                "rate_limit",
                format!(
                    "the Reply-To {} is in another domain than From and already got an automatic \
                     reply {} ago (limit: one per {})",
                    to.addr,
                    ago(last),
                    human_duration(window / 1000)
                ),
            ));
        }
    }
    let per_domain = p.limits.per_domain_per_hour;
    if h.recipient_domain_last_hour >= per_domain {
        return Some((
            "domain_limit",
            format!(
                "{} automatic replies to {} in the last hour (limit per domain {per_domain})",
                h.recipient_domain_last_hour,
                to.domain()
            ),
        ));
    }
    if let Some(f) = from
        && h.sender_domain_last_hour >= per_domain
    {
        return Some((
            "domain_limit",
            format!(
                "{} automatic replies to mail from {} in the last hour (limit per domain {per_domain})",
                h.sender_domain_last_hour,
                f.domain()
            ),
        ));
    }
    if h.replies_last_hour >= p.limits.max_replies_per_hour {
        return Some((
            "circuit_breaker",
            format!(
                "circuit breaker: automatic replies to {} recipients in the last hour (limit {})",
                h.replies_last_hour, p.limits.max_replies_per_hour
            ),
        ));
    }
    None
}

fn describe(f: &[&Finding]) -> String {
    f.iter()
        .map(|f| f.describe())
        .collect::<Vec<_>>()
        .join(", ")
}

/// "3h 5m" style durations.
pub fn human_duration(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// A decision for a message that could not be parsed or processed.
pub fn park(reason: impl Into<String>) -> Decision {
    let reason = reason.into();
    Decision {
        verdict: Verdict::Park {
            reason: reason.clone(),
        },
        rule: None,
        flags: Vec::new(),
        reasons: vec![reason],
        suggested_template: None,
        suppressed: None,
        draft: None,
        evidence: Classification {
            lookups: Default::default(),
            faq: Default::default(),
            guard: Vec::new(),
            auth: Default::default(),
            rules: Default::default(),
            follow_up: false,
        },
    }
}

/// Automatic escalation: when a conversation has had `escalate_after`
/// customer messages without a reply from a person, a message that would
/// go to the queue goes to the queue's supervisor instead. `queue_hint` is
/// the queue the conversation belongs to, if known.
pub fn escalate_unanswered(
    d: &mut Decision,
    k: &Knowledge,
    queue_hint: Option<&str>,
    ticket: &str,
    since_human: i64,
) {
    let Verdict::Route { queue } = &d.verdict else {
        return;
    };
    let routed = if k.queues.contains_key(queue) {
        Some(queue.as_str())
    } else {
        k.reps
            .get(queue)
            .and_then(|r| r.queues.first())
            .map(|q| q.0.as_str())
    };
    let Some(q) = queue_hint
        .and_then(|h| k.queues.get(h))
        .or_else(|| routed.and_then(|r| k.queues.get(r)))
    else {
        return;
    };
    let Some(n) = q.escalate_after else {
        return;
    };
    if since_human >= i64::from(n) {
        d.reasons.push(format!(
            "{since_human} customer messages in {ticket} without a reply from a person \
             (escalate_after = {n} for queue {}): escalated to its supervisor",
            q.name
        ));
        d.verdict = Verdict::Escalate {
            queue: q.name.clone(),
        };
    }
}
