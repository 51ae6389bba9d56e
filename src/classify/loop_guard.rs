//! The loop and abuse guard: is this message written by a machine, or by
//! us? (RFC 3834, RFC 5230 §4.5–4.6, and what real mail systems send.)
//!
//! A pure function of the message and our addresses. Its findings are
//! evidence; the decide stage turns them into "never auto-reply".

use serde::Serialize;

use crate::parse::{Message, ReturnPath};

/// One reason not to send an automatic reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Finding {
    /// `Auto-Submitted` other than `no` (RFC 3834 §5).
    AutoSubmitted(String),
    /// `Precedence: bulk | list | junk | auto_reply`.
    Precedence(String),
    /// A `List-*` header (RFC 2369/2919): a mailing-list post.
    ListHeader(String),
    /// `Return-Path: <>`: a bounce or other automatic message.
    NullReturnPath,
    /// MAILER-DAEMON, postmaster, no-reply, `owner-*`, `*-request`, … in
    /// From, Sender or Return-Path.
    DaemonSender(String),
    /// `multipart/report` or a failed-recipients header: a delivery report.
    DeliveryReport,
    /// `X-Auto-Response-Suppress` asks for no auto-replies.
    SuppressHeader(String),
    /// Vendor out-of-office markers (`X-Autoreply`, `X-Autorespond`, …), an
    /// anchored auto-responder subject ("Automatic reply: …"), or a
    /// weaker subject marker together with another sign of automation.
    VendorAutoReply(String),
    /// The message comes from one of our own addresses (or carries our
    /// loop marker): answering would talk to ourselves.
    OwnAddress(String),
    /// None of our addresses is in To/Cc (RFC 5230 §4.5): Bcc, a list or a
    /// forward. Not automatic, but not for an automatic answer either.
    NotAddressedToUs,
    /// The Reply-To is an automatic or our own address (MAILER-DAEMON,
    /// no-reply, support@ …) while the sender looks like a person: a
    /// person answers, an automatic reply would go to a machine.
    ReplyToDaemon(String),
    /// The subject looks like an auto-responder's ("Out of office …",
    /// "Auto: …") but nothing else says so: possibly a customer's words.
    /// Not ignored, not auto-answered: a person looks.
    SubjectMarker(String),
}

impl Finding {
    /// Whether the finding means the message was sent by a machine (and so
    /// needs nobody), as opposed to "a person, but do not auto-answer".
    pub fn is_automatic(&self) -> bool {
        !matches!(
            self,
            Finding::NotAddressedToUs | Finding::ReplyToDaemon(_) | Finding::SubjectMarker(_)
        )
    }

    /// A short name for metrics and explanations.
    pub fn check(&self) -> &'static str {
        match self {
            Finding::NotAddressedToUs => "not_addressed",
            Finding::ReplyToDaemon(_) => "reply_to_automatic",
            Finding::SubjectMarker(_) => "subject_marker",
            _ => "automatic",
        }
    }

    /// One line for explanations.
    pub fn describe(&self) -> String {
        match self {
            Finding::AutoSubmitted(v) => format!("Auto-Submitted: {v}"),
            Finding::Precedence(v) => format!("Precedence: {v}"),
            Finding::ListHeader(h) => format!("mailing-list header {h}"),
            Finding::NullReturnPath => "null Return-Path <> (bounce)".into(),
            Finding::DaemonSender(a) => format!("automatic sender {a}"),
            Finding::DeliveryReport => "delivery status report".into(),
            Finding::SuppressHeader(v) => format!("X-Auto-Response-Suppress: {v}"),
            Finding::VendorAutoReply(v) => format!("auto-reply marker {v}"),
            Finding::OwnAddress(a) => format!("sent by our own address {a}"),
            Finding::NotAddressedToUs => "none of our addresses is in To/Cc".into(),
            Finding::ReplyToDaemon(a) => {
                format!("the Reply-To {a} is an automatic or our own address")
            }
            Finding::SubjectMarker(s) => {
                format!(
                    "the subject starts like an auto-responder's ({s}) but nothing else says so"
                )
            }
        }
    }
}

/// Header name marking our own replies; seeing it on incoming mail is a loop.
pub const LOOP_HEADER: &str = "X-Switchboard-Loop";

const VENDOR_HEADERS: &[&str] = &[
    "x-autoreply",
    "x-autorespond",
    "x-auto-reply",
    "x-autoresponder",
    "x-autoresponse",
    "x-mail-autoreply",
    "x-autoreply-from",
    "x-fc-machinegenerated",
    "x-cr-hashedpuzzle-autoreply",
];

/// Local parts of automatic senders, compared after lower-casing and
/// removing `+tag`, `-`, `_` and `.` (`Mailer_Daemon`, `no.reply` and
/// `do-not-reply` are all caught).
const DAEMON_LOCALS: &[&str] = &[
    "mailerdaemon",
    "postmaster",
    "listserv",
    "majordomo",
    "mailman",
    "noreply",
    "donotreply",
    "dontreply",
    "bounce",
    "bounces",
    "nobody",
    "notifications",
    "notification",
    "autoreply",
    "autoresponder",
    "autorespond",
];

/// Normalised fragments that make a local part automatic wherever they
/// stand at its start or end: `shop-noreply`, `noreply-orders`,
/// `alerts.donotreply`, `bounce-123`, `list-bounces`.
const DAEMON_AFFIXES: &[&str] = &["noreply", "donotreply", "mailerdaemon", "autoreply"];

/// Subjects that only auto-responders and bounce generators write: an
/// anchored prefix, with its colon. Enough on their own.
const STRONG_SUBJECTS: &[&str] = &[
    "automatic reply:",
    "auto reply:",
    "autoreply:",
    "auto-reply:",
    "auto response:",
    "autoresponse:",
    "auto-response:",
    "out of office:",
    "out-of-office:",
    "out of the office:",
    "out of office reply:",
    "out of office autoreply:",
    "out-of-office reply:",
    "abwesenheitsnotiz:",
    "automatische antwort:",
    "réponse automatique:",
    "respuesta automática:",
    "risposta automatica:",
    "automatisch antwoord:",
    "undeliverable:",
    "undelivered mail returned to sender",
    "delivery status notification (failure)",
    "delivery status notification (delay)",
    "mail delivery failed",
    "mail delivery failure",
    "returned mail:",
    "failure notice",
];

/// Subject beginnings that auto-responders use, but that a customer may
/// write too ("Out of office chairs – where is my order?", "Auto: parts").
/// Automatic only together with another sign (the message answers another
/// message, or its text reads like an absence notice); alone they keep
/// the message from an automatic reply and a person looks at it.
const WEAK_SUBJECTS: &[&str] = &[
    "out of office",
    "out-of-office",
    "out of the office",
    "ooo ",
    "auto:",
    "autoreply",
    "auto-reply",
    "automatic reply",
    "abwesenheit",
];

/// Phrases of absence notices.
const ABSENCE_PHRASES: &[&str] = &[
    "out of the office",
    "out of office",
    "out-of-office",
    "i am away",
    "i'm away",
    "i am currently away",
    "i am on vacation",
    "i am on holiday",
    "i am on leave",
    "limited access to e-mail",
    "limited access to email",
    "will respond to your message",
    "will reply to your message",
    "will get back to you when i return",
    "back in the office",
    "returning on",
    "i will return on",
    "nicht im büro",
    "bin ich nicht erreichbar",
    "abwesend",
    "absent du bureau",
    "je suis absent",
];

/// Removes `+tag`, separators and case from a local part.
fn normalise_local(local: &str) -> String {
    let base = local.split('+').next().unwrap_or(local);
    base.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether an address's local part belongs to a machine.
pub fn daemon_address(addr: &str) -> bool {
    let lower = addr.trim().to_lowercase();
    let local = lower.rsplit_once('@').map_or(lower.as_str(), |(l, _)| l);
    if local.starts_with("owner-")
        || local.ends_with("-request")
        || local.ends_with("-bounces")
        || local.ends_with("-owner")
    {
        return true;
    }
    // `bounce`, `bounces+123`, `bounce-abc`, but not `bouncer`.
    let bounce = ["bounces", "bounce"].iter().any(|p| {
        local
            .strip_prefix(p)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphabetic()))
    });
    let n = normalise_local(local);
    bounce
        || DAEMON_LOCALS.contains(&n.as_str())
        || DAEMON_AFFIXES
            .iter()
            .any(|a| n.starts_with(a) || n.ends_with(a))
}

/// An address without its `+tag`, lower-cased: `Support+x@Shop.example`
/// → `support@shop.example`.
pub fn base_address(addr: &str) -> String {
    let lower = addr.trim().to_lowercase();
    match base_parts(&lower) {
        (base, Some(domain)) => format!("{base}@{domain}"),
        (_, None) => lower,
    }
}

/// A lower-case address's local part without its `+tag`, and its domain
/// (`None` without an `@`: then the whole address).
fn base_parts(lower: &str) -> (&str, Option<&str>) {
    match lower.rsplit_once('@') {
        Some((local, domain)) => (local.split('+').next().unwrap_or(local), Some(domain)),
        None => (lower, None),
    }
}

/// Whether `addr` is one of ours (`ours` lower-case), sub-addresses
/// (`support+x@`) included: [`base_address`] of both compared, without
/// building either.
pub fn is_ours(addr: &str, ours: &[String]) -> bool {
    let lower = addr.trim().to_lowercase();
    let base = base_parts(&lower);
    ours.iter().any(|o| {
        let o = o.trim();
        if o.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
            base_parts(o) == base
        } else {
            base_parts(&o.to_lowercase()) == base
        }
    })
}

/// A subject's auto-responder marker: `(marker, strong)`.
pub fn subject_marker(subject: &str) -> Option<(&'static str, bool)> {
    let s = subject.trim_start().to_lowercase();
    if let Some(m) = STRONG_SUBJECTS.iter().find(|m| s.starts_with(*m)) {
        return Some((m, true));
    }
    WEAK_SUBJECTS
        .iter()
        .find(|m| s.starts_with(*m))
        .map(|m| (*m, false))
}

/// Whether a text reads like an absence notice.
fn reads_like_absence(body: &str) -> bool {
    let head: String = body.chars().take(2000).collect::<String>().to_lowercase();
    ABSENCE_PHRASES.iter().any(|p| head.contains(p))
}

/// Inspects a message. `ours` are our addresses, lower-case.
pub fn inspect(m: &Message, ours: &[String]) -> Vec<Finding> {
    let mut f = Vec::new();
    for (name, value) in &m.headers {
        let v = value.trim().to_ascii_lowercase();
        match name.as_str() {
            "auto-submitted" => {
                let token = v.split(';').next().unwrap_or("").trim();
                if token != "no" {
                    f.push(Finding::AutoSubmitted(value.trim().to_string()));
                }
            }
            "precedence" if ["bulk", "list", "junk", "auto_reply"].contains(&v.as_str()) => {
                f.push(Finding::Precedence(v));
            }
            "x-auto-response-suppress" => {
                let hit = v
                    .split([',', ' '])
                    .map(str::trim)
                    .any(|t| ["all", "autoreply", "oof"].contains(&t));
                if hit {
                    f.push(Finding::SuppressHeader(value.trim().to_string()));
                }
            }
            "x-failed-recipients" => f.push(Finding::DeliveryReport),
            n if n.starts_with("list-")
                // One finding is enough; report the first List-* header.
                && !f.iter().any(|x| matches!(x, Finding::ListHeader(_))) =>
            {
                f.push(Finding::ListHeader(header_title(n)));
            }
            n if VENDOR_HEADERS.contains(&n) => {
                f.push(Finding::VendorAutoReply(header_title(n)));
            }
            "x-autogenerated" if v.contains("reply") => {
                f.push(Finding::VendorAutoReply("X-Autogenerated".into()));
            }
            n if n.eq_ignore_ascii_case(LOOP_HEADER) => {
                f.push(Finding::OwnAddress(format!("{LOOP_HEADER} header")));
            }
            _ => {}
        }
    }
    if m.return_path == Some(ReturnPath::Null) {
        f.push(Finding::NullReturnPath);
    }
    if m.content_type == "multipart/report" && !f.contains(&Finding::DeliveryReport) {
        f.push(Finding::DeliveryReport);
    }
    match subject_marker(&m.subject) {
        Some((s, true)) => f.push(Finding::VendorAutoReply(format!(
            "subject starts with {s:?}"
        ))),
        Some((s, false)) => {
            // A weak marker counts when something else says "machine":
            // the message answers another one, reads like an absence
            // notice, or already has another finding.
            let signal = if !m.in_reply_to.is_empty() || !m.references.is_empty() {
                Some("the message answers another one")
            } else if reads_like_absence(&m.body_full) {
                Some("the text reads like an absence notice")
            } else if f.iter().any(Finding::is_automatic) {
                Some("other signs of automatic mail")
            } else {
                None
            };
            match signal {
                Some(why) => f.push(Finding::VendorAutoReply(format!(
                    "subject starts with {s:?} and {why}"
                ))),
                None => f.push(Finding::SubjectMarker(s.trim().to_string())),
            }
        }
        None => {}
    }
    // Automatic senders, in From, Sender and Return-Path.
    let mut senders: Vec<String> = Vec::new();
    senders.extend(m.from.iter().map(|a| a.key()));
    senders.extend(m.sender.iter().map(|a| a.key()));
    if let Some(ReturnPath::Addr(a)) = &m.return_path {
        senders.push(a.to_lowercase());
    }
    if let Some(s) = senders.iter().find(|s| daemon_address(s)) {
        f.push(Finding::DaemonSender(s.clone()));
    }
    if let Some(from) = &m.from {
        let k = from.key();
        if is_ours(&k, ours) {
            f.push(Finding::OwnAddress(k));
        }
    }
    if let Some(s) = &m.sender
        && is_ours(&s.key(), ours)
        && !f.iter().any(|x| matches!(x, Finding::OwnAddress(_)))
    {
        f.push(Finding::OwnAddress(s.key()));
    }
    // Reply-To: a machine's or our own address means an automatic reply
    // would go to a machine or to ourselves.
    if let Some(r) = m
        .reply_to
        .iter()
        .map(|a| a.key())
        .find(|r| daemon_address(r) || is_ours(r, ours))
    {
        f.push(Finding::ReplyToDaemon(r));
    }
    if !ours.is_empty() {
        let mut rcpts =
            m.to.iter()
                .chain(m.cc.iter())
                .map(|a| a.key())
                .collect::<Vec<_>>();
        for h in ["resent-to", "resent-cc"] {
            for v in m.header_all(h) {
                rcpts.extend(v.split(',').map(|a| {
                    crate::config::address_of(a)
                        .unwrap_or(a)
                        .trim()
                        .to_lowercase()
                }));
            }
        }
        if !rcpts.iter().any(|r| is_ours(r, ours)) {
            f.push(Finding::NotAddressedToUs);
        }
    }
    f
}

fn header_title(lower: &str) -> String {
    lower
        .split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(first) => first.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ParseOptions, parse};

    fn findings(headers: &str) -> Vec<Finding> {
        let raw = format!(
            "From: Jane <jane@customer.example>\r\nTo: support@shop.example\r\nSubject: Hello\r\nMessage-ID: <x@y>\r\n{headers}\r\nbody text\r\n"
        );
        let m = parse(raw.as_bytes(), &ParseOptions::default())
            .unwrap_or_else(|e| panic!("parse: {e}"));
        inspect(&m, &["support@shop.example".to_string()])
    }

    #[test]
    fn plain_customer_mail_is_clean() {
        assert_eq!(findings(""), vec![]);
        assert_eq!(findings("Auto-Submitted: no\r\n"), vec![]);
        assert_eq!(findings("Precedence: first-class\r\n"), vec![]);
        assert_eq!(findings("X-Auto-Response-Suppress: DR, RN\r\n"), vec![]);
    }

    #[test]
    fn ours_compares_base_addresses() {
        let ours = [
            "support@shop.example".to_string(),
            " Billing@Shop.Example ".to_string(),
            "nobody".to_string(),
        ];
        let addrs = [
            "support@shop.example",
            "Support+Urgent@SHOP.example",
            " support@shop.example ",
            "billing+x@shop.example",
            "BILLING@shop.example",
            "nobody",
            "Nobody",
            "nobody+x",
            "support@shop.example.org",
            "support@other.example",
            "sales@shop.example",
            "x@support@shop.example",
            "",
        ];
        for a in addrs {
            let expected = ours.iter().any(|o| base_address(o) == base_address(a));
            assert_eq!(is_ours(a, &ours), expected, "{a}");
        }
        assert!(is_ours("Support+Urgent@SHOP.example", &ours));
        assert!(is_ours("billing+x@shop.example", &ours));
        assert!(!is_ours("sales@shop.example", &ours));
    }

    #[test]
    fn titles() {
        assert_eq!(header_title("list-unsubscribe"), "List-Unsubscribe");
    }
}
