//! Building an auto-reply: threading headers, loop-safety headers and a
//! subject that does not stack "Re: Re:". Customer text reaches headers
//! only through lettre's encoder after [`single_line`], so CR/LF in a
//! subject or name can never start a new header.

use std::sync::LazyLock;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox as LettreMailbox, MultiPart, SinglePart};
use regex::Regex;

use crate::classify::loop_guard::LOOP_HEADER;
use crate::knowledge::templates::Rendered;
use crate::parse::{Mailbox, Message, single_line};

static REPLY_PREFIX: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:(?:re|aw|sv|antw|vs|ref|rif|odp|r|res)(?:\[\d+\]|\(\d+\))?\s*:\s*)+")
        .ok()
});
static TICKET_TAG: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\s*\[#([A-Za-z0-9]{1,8}-\d{1,12})\]").ok());

/// Removes leading reply prefixes ("Re:", "AW:", "Re\[2\]:", …), repeated or not.
pub fn strip_reply_prefixes(s: &str) -> &str {
    match REPLY_PREFIX.as_ref().and_then(|r| r.find(s)) {
        Some(m) => &s[m.end()..],
        None => s.trim_start(),
    }
}

/// Removes ticket tags such as `[#SB-1042]`.
pub fn strip_ticket_tags(s: &str) -> String {
    match TICKET_TAG.as_ref() {
        Some(r) => r.replace_all(s, "").trim().to_string(),
        None => s.to_string(),
    }
}

/// Ticket references found in a subject, e.g. `SB-1042`.
pub fn ticket_tags(s: &str) -> Vec<String> {
    TICKET_TAG
        .as_ref()
        .map(|r| {
            r.captures_iter(s)
                .filter_map(|c| c.get(1).map(|m| m.as_str().to_ascii_uppercase()))
                .collect()
        })
        .unwrap_or_default()
}

/// Most characters of the customer's subject echoed in a reply subject.
pub const MAX_SUBJECT_ECHO: usize = 200;
/// Most characters of the customer's display name echoed in a reply.
pub const MAX_NAME_ECHO: usize = 64;
/// Message-IDs longer than this are not repeated in our headers (real
/// ones are well under 100 characters; RFC 5322 lines end at 998).
const MAX_ID_LEN: usize = 250;
/// Budget for the `References:` line, below the 998-character limit.
const MAX_REFERENCES_LEN: usize = 900;

/// The reply subject: one "Re:", the original text (at most
/// [`MAX_SUBJECT_ECHO`] characters), the ticket tag once.
pub fn reply_subject(original: &str, ticket: Option<&str>) -> String {
    let base = single_line(strip_reply_prefixes(original));
    let base = crate::util::ellipsize(&strip_ticket_tags(&base), MAX_SUBJECT_ECHO);
    let base = if base.is_empty() {
        "Your message".to_string()
    } else {
        base
    };
    match ticket {
        Some(t) => format!("Re: {base} [#{t}]"),
        None => format!("Re: {base}"),
    }
}

/// A message ready to be sent.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Message-ID without angle brackets.
    pub message_id: String,
    pub envelope: lettre::address::Envelope,
    /// The formatted message (CRLF line endings).
    pub raw: Vec<u8>,
    pub to: String,
    pub subject: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// Everything a reply is made of.
pub struct ReplyParts<'a> {
    /// `From:` of the reply (`Name <addr>`).
    pub from: &'a str,
    pub to: &'a Mailbox,
    pub original: &'a Message,
    pub ticket: Option<&'a str>,
    /// Domain for our Message-ID.
    pub domain: &'a str,
    pub body: &'a Rendered,
    /// Send with `MAIL FROM:<>`.
    pub null_sender: bool,
}

/// A Message-ID fit to repeat in our headers: one line, no brackets, not
/// absurdly long.
fn clean_id(id: &str) -> Option<String> {
    let id = single_line(id).replace(['<', '>', ' '], "");
    (!id.is_empty() && id.len() <= MAX_ID_LEN).then_some(id)
}

/// The `References` value: all ids when they fit in one header line,
/// otherwise the first (the thread's root) and as many of the most recent
/// as fit (RFC 5322 §3.6.4 practice).
fn references_line(ids: &[String]) -> String {
    let fmt = |v: &[&String]| {
        v.iter()
            .map(|r| format!("<{r}>"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let all: Vec<&String> = ids.iter().collect();
    if fmt(&all).len() <= MAX_REFERENCES_LEN || ids.len() < 2 {
        return fmt(&all);
    }
    let first = &ids[0];
    let mut tail: Vec<&String> = Vec::new();
    let mut len = first.len() + 2;
    for r in ids[1..].iter().rev() {
        if len + r.len() + 3 > MAX_REFERENCES_LEN {
            break;
        }
        len += r.len() + 3;
        tail.push(r);
    }
    tail.reverse();
    let mut v = vec![first];
    v.extend(tail);
    fmt(&v)
}

/// A fresh Message-ID on our domain.
pub fn new_message_id(domain: &str, ticket: Option<&str>) -> String {
    let r: u64 = rand::random();
    let t = jiff::Timestamp::now().as_millisecond();
    match ticket {
        Some(tk) => format!("sb.{t:x}.{r:016x}.{}@{domain}", tk.to_ascii_lowercase()),
        None => format!("sb.{t:x}.{r:016x}@{domain}"),
    }
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// Builds the reply message.
pub fn build(p: &ReplyParts<'_>) -> Result<Outgoing, BuildError> {
    let from: LettreMailbox = p
        .from
        .parse()
        .map_err(|_| BuildError::Address(p.from.to_string()))?;
    let to_addr: lettre::Address =
        p.to.addr
            .parse()
            .map_err(|_| BuildError::Address(p.to.addr.clone()))?;
    let name = crate::util::ellipsize(&p.to.name, MAX_NAME_ECHO);
    let to = LettreMailbox::new((!name.is_empty()).then_some(name), to_addr.clone());
    let subject = reply_subject(&p.original.subject, p.ticket);
    let message_id = new_message_id(p.domain, p.ticket);

    let mut b = lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject.clone())
        .message_id(Some(format!("<{message_id}>")))
        .date_now()
        .raw_header(raw_header("Auto-Submitted", "auto-replied".into()))
        .raw_header(raw_header("X-Auto-Response-Suppress", "All".into()))
        .raw_header(raw_header(LOOP_HEADER, p.domain.to_string()));
    if let Some(t) = p.ticket {
        b = b.raw_header(raw_header("X-Switchboard-Ticket", t.to_string()));
    }
    if !p.body.language.is_empty() {
        b = b.raw_header(raw_header("Content-Language", p.body.language.clone()));
    }
    if let Some(id) = p.original.message_id.as_deref().and_then(clean_id) {
        b = b.in_reply_to(format!("<{id}>"));
        let mut refs: Vec<String> = p
            .original
            .references
            .iter()
            .filter_map(|r| clean_id(r))
            .filter(|r| *r != id)
            .collect();
        refs.push(id);
        b = b.references(references_line(&refs));
    }
    let sender = if p.null_sender {
        None
    } else {
        Some(from.email.clone())
    };
    let envelope = lettre::address::Envelope::new(sender, vec![to_addr.clone()])
        .map_err(|e| BuildError::Build(e.to_string()))?;
    b = b.envelope(envelope.clone());
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(p.body.text.clone());
    let msg = match &p.body.html {
        Some(html) => b.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => b.singlepart(text),
    }
    .map_err(|e| BuildError::Build(e.to_string()))?;
    Ok(Outgoing {
        message_id,
        envelope,
        raw: msg.formatted(),
        to: to_addr.to_string(),
        subject,
    })
}

/// A notice to one of our people (a service-level reminder): plain text,
/// marked as automatic (`Auto-Submitted: auto-generated`) so that no
/// auto-responder answers it, with our loop marker.
pub fn notice(
    from: &str,
    to: &str,
    subject: &str,
    text: &str,
    domain: &str,
    null_sender: bool,
) -> Result<Outgoing, BuildError> {
    let from_box: LettreMailbox = from
        .parse()
        .map_err(|_| BuildError::Address(from.to_string()))?;
    let to_addr: lettre::Address = to
        .parse()
        .map_err(|_| BuildError::Address(to.to_string()))?;
    let subject = crate::util::ellipsize(&single_line(subject), MAX_SUBJECT_ECHO + 40);
    let message_id = new_message_id(domain, None);
    let sender = (!null_sender).then(|| from_box.email.clone());
    let envelope = lettre::address::Envelope::new(sender, vec![to_addr.clone()])
        .map_err(|e| BuildError::Build(e.to_string()))?;
    let msg = lettre::Message::builder()
        .from(from_box)
        .to(LettreMailbox::new(None, to_addr.clone()))
        .subject(subject.clone())
        .message_id(Some(format!("<{message_id}>")))
        .date_now()
        .raw_header(raw_header("Auto-Submitted", "auto-generated".into()))
        .raw_header(raw_header("X-Auto-Response-Suppress", "All".into()))
        .raw_header(raw_header(LOOP_HEADER, domain.to_string()))
        .envelope(envelope.clone())
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text.to_string()),
        )
        .map_err(|e| BuildError::Build(e.to_string()))?;
    Ok(Outgoing {
        message_id,
        envelope,
        raw: msg.formatted(),
        to: to_addr.to_string(),
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_do_not_stack() {
        assert_eq!(
            reply_subject("Re: RE: Aw: where is it", Some("SB-1")),
            "Re: where is it [#SB-1]"
        );
        assert_eq!(
            reply_subject("Re: thing [#SB-7]", Some("SB-7")),
            "Re: thing [#SB-7]"
        );
        assert_eq!(reply_subject("", None), "Re: Your message");
        assert_eq!(reply_subject("Fwd: a", None), "Re: Fwd: a");
        assert_eq!(reply_subject("Reply needed", None), "Re: Reply needed");
        assert_eq!(
            ticket_tags("Re: x [#sb-12] [#SB-13]"),
            vec!["SB-12", "SB-13"]
        );
        let long = "x".repeat(1_000_000);
        let s = reply_subject(&long, Some("SB-1"));
        assert!(s.chars().count() <= MAX_SUBJECT_ECHO + 20, "{}", s.len());
        assert!(s.ends_with("… [#SB-1]"));
    }

    /// Issue: a 5,000-character Message-ID became a 5,029-character
    /// References line.
    #[test]
    fn references_fit_in_a_header_line() {
        assert_eq!(clean_id(&"a".repeat(5000)), None);
        assert_eq!(clean_id("<a@b>").as_deref(), Some("a@b"));
        let ids: Vec<String> = (0..100)
            .map(|i| format!("id{i:03}.{}@mail.example", "x".repeat(40)))
            .collect();
        let line = references_line(&ids);
        assert!(line.len() <= MAX_REFERENCES_LEN, "{}", line.len());
        assert!(line.starts_with("<id000."), "the root is kept");
        assert!(
            line.ends_with(&format!("<{}>", ids[99])),
            "the newest is kept"
        );
        assert_eq!(references_line(&ids[..2]).matches('<').count(), 2);
    }
}
