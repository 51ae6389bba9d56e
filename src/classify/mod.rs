//! Stage 3 — **classify**: pure functions of (message, knowledge) →
//! [`Classification`] with evidence. No I/O.
//!
//! Order: the FAQ matcher and the loop guard run first, because rules can
//! test their results (`faq_id`, `faq_confident`, `auto_generated`); then
//! the rules run in order.

pub mod auth;
pub mod faq;
pub mod loop_guard;
pub mod question;
pub mod rules;

use serde::Serialize;

use crate::knowledge::Knowledge;
use crate::parse::Message;

pub use auth::SenderAuth;
pub use faq::{Candidate, FaqResult};
pub use loop_guard::Finding;
pub use rules::{Facts, RuleHit, RuleOutcome};

/// What the store knows about the message's conversation, given to the
/// pure stages as plain data.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Context {
    /// The message answers a conversation switchboard already handled.
    pub follow_up: bool,
    /// What the lookups found for the message.
    #[serde(skip)]
    pub lookups: crate::lookup::LookupFacts,
}

/// Everything classification found out.
#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    pub faq: FaqResult,
    pub guard: Vec<Finding>,
    /// What the receiving mail servers said about the sender.
    #[serde(default, skip_serializing_if = "is_default")]
    pub auth: SenderAuth,
    pub rules: RuleOutcome,
    /// The message continues a conversation (known to the store, or
    /// answering one of our Message-IDs, or tagged with our ticket prefix).
    pub follow_up: bool,
    /// What the lookups found (fields, not values).
    #[serde(default, skip_serializing_if = "lookups_empty")]
    pub lookups: crate::lookup::LookupFacts,
}

fn lookups_empty(l: &crate::lookup::LookupFacts) -> bool {
    l.results.is_empty()
}

impl Classification {
    /// Whether the loop guard says a machine sent this.
    pub fn automatic(&self) -> bool {
        self.guard.iter().any(Finding::is_automatic)
    }
}

fn is_default(a: &SenderAuth) -> bool {
    *a == SenderAuth::default()
}

/// The most text classification reads of one message: whatever the input,
/// the work per message is bounded (a question never needs more).
pub const MAX_QUESTION_BYTES: usize = 64 * 1024;

/// The text the FAQ matcher sees: the request found in the message (see
/// [`question`]): the subject when it says something and the body's
/// sentences, without greetings, names, sign-offs and footers, at most
/// [`MAX_QUESTION_BYTES`].
pub fn question_text(m: &Message) -> String {
    question::Question::from_message(m).text()
}

/// Classifies one message.
///
/// The FAQ is scored only when the outcome can depend on it: when a rule
/// decides (route, escalate, ignore, park, a fixed template) before any
/// rule that looks at the FAQ, the FAQ result is left empty with a
/// reason saying so.
pub fn classify(m: &Message, k: &Knowledge, ctx: &Context) -> Classification {
    classify_scored(m, k, ctx, None)
}

/// [`classify`] with the FAQ result computed beforehand (on the parsing
/// threads, see [`ahead`]); `None` scores here when needed.
pub fn classify_scored(
    m: &Message,
    k: &Knowledge,
    ctx: &Context,
    scored: Option<&FaqResult>,
) -> Classification {
    classify_with(m, k, ctx, scored).0
}

/// [`classify_scored`], and whether the classification's FAQ result is
/// `scored` (false when no rule needed the FAQ).
pub fn classify_with(
    m: &Message,
    k: &Knowledge,
    ctx: &Context,
    scored: Option<&FaqResult>,
) -> (Classification, bool) {
    classify_known(m, k, ctx, scored, &[])
}

/// [`classify_scored`] for a message classified ahead ([`ahead`]) that
/// turned out to continue a conversation or to have lookups: the rules'
/// conditions that look at neither are not tested again (`known`:
/// [`Ahead::held`]). The same result as [`classify_scored`].
pub fn classify_again(
    m: &Message,
    k: &Knowledge,
    ctx: &Context,
    scored: Option<&FaqResult>,
    known: &[bool],
) -> Classification {
    classify_known(m, k, ctx, scored, known).0
}

fn classify_known(
    m: &Message,
    k: &Knowledge,
    ctx: &Context,
    scored: Option<&FaqResult>,
    known: &[bool],
) -> (Classification, bool) {
    let i = Inspected::new(m, k, ctx, known);
    let faq = (!i.judged.decided).then(|| match scored {
        Some(f) => f.clone(),
        None => k.faq.query_question(&question::Question::from_message(m)),
    });
    let used = faq.is_some() && scored.is_some();
    (i.conclude(k, faq), used)
}

/// What the parsing threads work out for a message ahead of deciding
/// it ([`ahead`]).
#[derive(Debug, Clone)]
pub struct Ahead {
    /// The classification with the default [`Context`] (no known
    /// conversation, no lookups).
    pub classification: Classification,
    /// `classification.faq` is a scored FAQ result (a rule needed it).
    pub faq_in_classification: bool,
    /// A FAQ result the classification did not use but a follow-up of
    /// a known conversation would, kept aside.
    pub faq_aside: Option<FaqResult>,
    /// What the conditions of the rules judged before the FAQ gave (see
    /// [`classify_again`]).
    pub held: Vec<bool>,
}

/// The classification with the default context (as [`classify_with`]),
/// and the FAQ scored whenever the rules' outcome can depend on it,
/// whether or not the message turns out to continue a conversation:
/// the expensive part of classifying, done ahead on the parsing threads.
/// The loop guard, the facts and the rules before the FAQ are worked out
/// once for both.
pub fn ahead(m: &Message, k: &Knowledge) -> Ahead {
    let mut i = Inspected::new(m, k, &Context::default(), &[]);
    let without_faq = i.judged.decided;
    // Scored when the rules need it as things are, or would if the
    // message turned out to continue a conversation.
    let needed = !without_faq || {
        !i.follow_up && {
            i.facts.follow_up = true;
            let needed = !rules::decided_without_faq(&k.rules, &i.facts);
            i.facts.follow_up = false;
            needed
        }
    };
    let scored = needed.then(|| k.faq.query_question(&question::Question::from_message(m)));
    let (faq, faq_aside) = if without_faq {
        (None, scored)
    } else {
        (scored, None)
    };
    Ahead {
        faq_in_classification: faq.is_some(),
        faq_aside,
        held: i.judged.held.clone(),
        classification: i.conclude(k, faq),
    }
}

/// What classification finds before the FAQ: the loop guard, the sender
/// authentication, whether the message continues a conversation, the
/// facts the rules look at, and the rules judged without the FAQ.
struct Inspected {
    guard: Vec<Finding>,
    auth: SenderAuth,
    follow_up: bool,
    lookups: crate::lookup::LookupFacts,
    facts: Facts,
    judged: rules::Judged,
}

impl Inspected {
    /// `known`: what the rules' conditions gave for this message in
    /// another context (see [`rules::judge_again`]), or nothing.
    fn new(m: &Message, k: &Knowledge, ctx: &Context, known: &[bool]) -> Inspected {
        let guard = loop_guard::inspect(m, &k.policy.our_addresses);
        let auth = auth::inspect(m, &k.policy.reply.trusted_authserv_ids);
        let follow_up =
            ctx.follow_up || answers_us(m, &k.policy.domain, &k.policy.reply.ticket_prefix);
        let ctx = Context {
            follow_up,
            lookups: ctx.lookups.clone(),
        };
        let facts = facts(m, &FaqResult::default(), &guard, &ctx);
        let judged = rules::judge_again(&k.rules, &facts, known);
        Inspected {
            guard,
            auth,
            follow_up,
            lookups: ctx.lookups,
            facts,
            judged,
        }
    }

    /// Runs the rules with the FAQ's result (`None`: not scored, as a
    /// rule decided without it), reusing what was judged already.
    fn conclude(mut self, k: &Knowledge, faq: Option<FaqResult>) -> Classification {
        let faq = match faq {
            Some(faq) => {
                let best = faq.best();
                self.facts.faq_id = best.map(|c| c.id.clone()).unwrap_or_default();
                self.facts.faq_score = best.map_or(0.0, |c| c.score);
                self.facts.faq_confident = faq.confident;
                faq
            }
            None => FaqResult {
                reason: "not scored: a rule decided before any rule that looks at the FAQ".into(),
                ..FaqResult::default()
            },
        };
        Classification {
            rules: rules::run_judged(&k.rules, &self.facts, &self.judged.held),
            faq,
            guard: self.guard,
            auth: self.auth,
            follow_up: self.follow_up,
            lookups: self.lookups,
        }
    }
}

/// Whether a message answers us, judged from the message alone: it
/// refers to one of our Message-IDs, or its subject carries one of our
/// ticket tags.
pub fn answers_us(m: &Message, domain: &str, ticket_prefix: &str) -> bool {
    let ours = format!("@{}", domain.to_lowercase());
    let refers = m
        .in_reply_to
        .iter()
        .chain(m.references.iter())
        .any(|id| id.to_lowercase().ends_with(&ours));
    let prefix = format!("{}-", ticket_prefix.to_ascii_uppercase());
    refers
        || crate::act::reply::ticket_tags(&m.subject)
            .iter()
            .any(|t| t.starts_with(&prefix))
}

/// Builds the facts rules look at.
pub fn facts(m: &Message, faq: &FaqResult, guard: &[Finding], ctx: &Context) -> Facts {
    let best = faq.best();
    Facts {
        from: m.from.as_ref().map(|f| f.addr.clone()).unwrap_or_default(),
        from_name: m.customer_name().to_string(),
        from_domain: m.from.as_ref().map(|f| f.domain()).unwrap_or_default(),
        to: m
            .to
            .iter()
            .chain(m.cc.iter())
            .map(|a| a.addr.clone())
            .collect(),
        subject: m.subject.clone(),
        body: m.body.clone(),
        headers: m.headers.clone(),
        language: m.language.clone().unwrap_or_default(),
        faq_id: best.map(|c| c.id.clone()).unwrap_or_default(),
        faq_score: best.map_or(0.0, |c| c.score),
        faq_confident: faq.confident,
        size: m.size,
        has_attachment: m.has_attachment,
        auto_generated: guard.iter().any(Finding::is_automatic),
        follow_up: ctx.follow_up,
        malformed: !m.malformed.is_empty(),
        lookups: ctx.lookups.clone(),
        ..Facts::default()
    }
    .finish()
}
