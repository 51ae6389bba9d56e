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
    /// MAILER-DAEMON, postmaster, no-reply, `owner-*`, `*-request`, …
    DaemonSender(String),
    /// `multipart/report` or a failed-recipients header: a delivery report.
    DeliveryReport,
    /// `X-Auto-Response-Suppress` asks for no auto-replies.
    SuppressHeader(String),
    /// Vendor out-of-office markers (`X-Autoreply`, `X-Autorespond`, …) or
    /// an out-of-office subject.
    VendorAutoReply(String),
    /// The message comes from one of our own addresses (or carries our
    /// loop marker): answering would talk to ourselves.
    OwnAddress(String),
    /// None of our addresses is in To/Cc (RFC 5230 §4.5): Bcc, a list or a
    /// forward. Not automatic, but not for an automatic answer either.
    NotAddressedToUs,
}

impl Finding {
    /// Whether the finding means the message was sent by a machine (and so
    /// needs nobody), as opposed to "a person, but do not auto-answer".
    pub fn is_automatic(&self) -> bool {
        !matches!(self, Finding::NotAddressedToUs)
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

const DAEMON_LOCALS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "listserv",
    "majordomo",
    "mailman",
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
    "bounce",
    "bounces",
    "nobody",
    "notifications",
    "notification",
    "auto-reply",
    "autoreply",
];

const OOF_SUBJECTS: &[&str] = &[
    "automatic reply:",
    "auto reply:",
    "autoreply:",
    "auto-reply:",
    "auto:",
    "out of office",
    "out of the office",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
    "absence du bureau",
    "undeliverable:",
    "undelivered mail",
    "delivery status notification",
    "mail delivery failed",
    "returned mail:",
];

fn daemon_local(local: &str) -> bool {
    DAEMON_LOCALS.contains(&local)
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.ends_with("-bounces")
        || local.ends_with("-owner")
        || local.starts_with("noreply")
        || local.starts_with("no-reply")
        || local.starts_with("bounce")
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
    let subject = m.subject.to_lowercase();
    if let Some(s) = OOF_SUBJECTS.iter().find(|s| subject.starts_with(*s)) {
        f.push(Finding::VendorAutoReply(format!(
            "subject starts with {s:?}"
        )));
    }
    // Automatic senders, in From, Sender and Return-Path.
    let mut senders: Vec<String> = Vec::new();
    senders.extend(m.from.iter().map(|a| a.key()));
    senders.extend(m.sender.iter().map(|a| a.key()));
    if let Some(ReturnPath::Addr(a)) = &m.return_path {
        senders.push(a.to_lowercase());
    }
    for s in &senders {
        let local = s.rsplit_once('@').map_or(s.as_str(), |(l, _)| l);
        if daemon_local(local) {
            f.push(Finding::DaemonSender(s.clone()));
            break;
        }
    }
    if let Some(from) = &m.from {
        let k = from.key();
        if ours.contains(&k) {
            f.push(Finding::OwnAddress(k));
        }
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
        if !rcpts.iter().any(|r| ours.contains(r)) {
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
    fn titles() {
        assert_eq!(header_title("list-unsubscribe"), "List-Unsubscribe");
    }
}
