//! Stage 2 — **parse**: raw bytes → an owned, cleaned [`Message`].
//!
//! Parsing is best-effort (mail-parser recovers from most malformed mail)
//! and isolated: a panic inside the MIME parser is caught and turned into a
//! [`ParseError`], so one hostile message can never stop a mailbox. What
//! cannot be parsed at all is parked by the caller, never dropped.

pub mod clean;

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
use serde::Serialize;

use crate::util::truncate_str;

/// Longest header value kept (subject, any other header): longer ones are
/// cut. RFC 5322 lines end at 998 characters; nothing real is longer.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Most text of a message body that is read (1 MiB).
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// An e-mail address with its display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    /// Display name, decoded, with control characters removed ("" if none).
    pub name: String,
    /// The address itself, as written (`local@domain`).
    pub addr: String,
}

impl Mailbox {
    /// The lower-cased address, for comparisons and rate-limit keys.
    pub fn key(&self) -> String {
        self.addr.trim().to_lowercase()
    }

    /// The domain part, lower-cased ("" when the address has no `@`).
    pub fn domain(&self) -> String {
        self.addr
            .rsplit_once('@')
            .map(|(_, d)| d.trim().trim_end_matches('>').to_lowercase())
            .unwrap_or_default()
    }

    /// The local part, lower-cased.
    pub fn local(&self) -> String {
        self.addr
            .rsplit_once('@')
            .map_or(self.addr.as_str(), |(l, _)| l)
            .trim()
            .to_lowercase()
    }
}

/// What the `Return-Path` header says (RFC 5321 §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnPath {
    /// `Return-Path: <>` — a bounce or other automatic message; never answer.
    Null,
    /// A normal envelope sender.
    Addr(String),
}

/// A parsed message: everything later stages need, owned and cleaned.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Message {
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    /// `In-Reply-To` ids without angle brackets.
    pub in_reply_to: Vec<String>,
    /// `References` ids without angle brackets, oldest first.
    pub references: Vec<String>,
    pub from: Option<Mailbox>,
    pub sender: Option<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    /// `None` when the header is absent (common for mail read from a
    /// Maildir that was not delivered by an MTA).
    pub return_path: Option<ReturnPath>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    /// Decoded subject with line breaks and control characters removed.
    pub subject: String,
    /// `Date` as a Unix timestamp, if it could be read.
    pub date: Option<i64>,
    /// Every header as (lower-case name, decoded single-line value), in order.
    pub headers: Vec<(String, String)>,
    /// Top-level MIME type, lower-case, e.g. `multipart/report`.
    pub content_type: String,
    /// The customer's own words: text (HTML converted), without quoted
    /// replies, forwarded history and signature. What rules and the FAQ see.
    pub body: String,
    /// The whole text body before cleaning (for previews and audit).
    pub body_full: String,
    pub has_attachment: bool,
    pub attachment_names: Vec<String>,
    /// Size of the raw message in bytes (of the whole message, even when
    /// only a prefix was fetched).
    pub size: u64,
    /// Detected language (ISO 639-1 where one exists, e.g. `en`, `de`).
    pub language: Option<String>,
    /// Problems noticed while parsing that did not prevent it.
    pub warnings: Vec<String>,
    /// Signs of a broken message (no sender, MIME structure that does not
    /// match its headers, undecodable header bytes). Rules can park these
    /// with `malformed = true`.
    pub malformed: Vec<String>,
}

impl Message {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Customer name for templates: the From display name, or "".
    pub fn customer_name(&self) -> &str {
        self.from.as_ref().map_or("", |m| m.name.as_str())
    }

    /// A stable identity for de-duplication: the Message-ID, or for mail
    /// without one a hash of the headers that identify it.
    pub fn dedupe_key(&self, raw: &[u8]) -> String {
        match &self.message_id {
            Some(id) if !id.trim().is_empty() => format!("mid:{}", id.trim()),
            _ => format!("sha256:{}", crate::util::sha256_hex(raw)),
        }
    }
}

/// Why a message could not be parsed at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("the message has no header section that could be read")]
    NoHeaders,
    #[error("the MIME parser failed on this message")]
    ParserPanicked,
    #[error("the message has no sender (no From, Sender, Reply-To or Return-Path)")]
    NoSender,
}

/// Options that shape parsing.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Total size of the message when only a prefix was fetched.
    pub full_size: Option<u64>,
    /// Languages the detector may answer (ISO 639-3 codes of whatlang).
    pub languages: Vec<whatlang::Lang>,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            full_size: None,
            languages: default_languages(),
        }
    }
}

/// The languages detected by default: the common ones of European and
/// North American support desks. Restricting the set makes short texts far
/// more reliable than an open-world guess.
pub fn default_languages() -> Vec<whatlang::Lang> {
    use whatlang::Lang::*;
    vec![
        Eng, Deu, Fra, Spa, Ita, Nld, Por, Pol, Swe, Dan, Nob, Fin, Ces, Tur,
    ]
}

/// Parses raw bytes into a [`Message`]. Never panics.
pub fn parse(raw: &[u8], opts: &ParseOptions) -> Result<Message, ParseError> {
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Empty);
    }
    match catch_unwind(AssertUnwindSafe(|| parse_inner(raw, opts))) {
        Ok(r) => r,
        Err(_) => Err(ParseError::ParserPanicked),
    }
}

fn parse_inner(raw: &[u8], opts: &ParseOptions) -> Result<Message, ParseError> {
    let parsed = MessageParser::default()
        .parse(raw)
        .ok_or(ParseError::NoHeaders)?;
    if parsed.headers().is_empty() {
        return Err(ParseError::NoHeaders);
    }
    let mut m = Message {
        size: opts.full_size.unwrap_or(raw.len() as u64),
        ..Message::default()
    };

    m.message_id = parsed
        .message_id()
        .map(|s| strip_id(s).to_string())
        .filter(|s| !s.is_empty());
    m.in_reply_to = ids(parsed.in_reply_to());
    m.references = ids(parsed.references());
    m.from = parsed.from().and_then(first_mailbox);
    m.sender = parsed.sender().and_then(first_mailbox);
    m.reply_to = parsed.reply_to().map(mailboxes).unwrap_or_default();
    m.to = parsed.to().map(mailboxes).unwrap_or_default();
    m.cc = parsed.cc().map(mailboxes).unwrap_or_default();
    m.subject = single_line(truncate_str(
        parsed.subject().unwrap_or_default(),
        MAX_HEADER_BYTES,
    ));
    m.date = parsed
        .date()
        .filter(|d| d.is_valid())
        .map(|d| d.to_timestamp());
    m.return_path = parsed.header_raw("Return-Path").map(return_path);

    m.headers.reserve_exact(parsed.headers().len());
    for h in parsed.headers() {
        let name = h.name().to_ascii_lowercase();
        let value = match h.value() {
            HeaderValue::Text(t) => single_line(truncate_str(t, MAX_HEADER_BYTES)),
            HeaderValue::TextList(l) => single_line(truncate_str(&l.join(", "), MAX_HEADER_BYTES)),
            _ => {
                let start = h.offset_start() as usize;
                let end = (h.offset_end() as usize).min(start + MAX_HEADER_BYTES);
                let bytes = raw.get(start..end).unwrap_or_default();
                match MessageStream::new(bytes).parse_unstructured() {
                    HeaderValue::Text(t) => single_line(&t),
                    _ => single_line(&String::from_utf8_lossy(bytes)),
                }
            }
        };
        m.headers.push((name, value));
    }

    m.content_type = parsed
        .root_part()
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "text/plain".to_string())
        .to_ascii_lowercase();

    // Text: every text/plain body; for HTML-only mail mail-parser converts
    // the HTML to text. Parts that fail to decode are skipped, not fatal.
    // At most MAX_TEXT_BYTES of text are kept: enough for any question,
    // and a bound on the work and memory one message can cause.
    let mut text = String::new();
    for i in 0..parsed.text_body_count().max(1) {
        if text.len() >= MAX_TEXT_BYTES {
            m.warnings
                .push(format!("text beyond {MAX_TEXT_BYTES} bytes was not read"));
            break;
        }
        if let Some(t) = parsed.body_text(i) {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(truncate_str(&t, MAX_TEXT_BYTES - text.len()));
        }
    }
    if text.trim().is_empty()
        && parsed.html_body_count() > 0
        && let Some(h) = parsed.body_html(0)
    {
        text = clean::html_to_text(truncate_str(&h, 4 * MAX_TEXT_BYTES));
        text.truncate(truncate_str(&text, MAX_TEXT_BYTES).len());
    }
    m.body_full = text.replace("\r\n", "\n");
    m.body = clean::clean_body(&m.body_full);

    for a in parsed.attachments() {
        // Inline images of an HTML body are not attachments a human sent.
        let inline = a
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"))
            && a.content_type()
                .is_some_and(|c| c.ctype().eq_ignore_ascii_case("image"));
        if a.is_message() || !inline {
            m.has_attachment = true;
            if let Some(n) = a.attachment_name() {
                m.attachment_names.push(single_line(n));
            }
        }
    }

    let probe = format!(
        "{}\n{}",
        truncate_str(&m.subject, 1024),
        truncate_str(&m.body, 8 * 1024)
    );
    m.language = detect_language(&probe, &opts.languages);

    if m.content_type.starts_with("multipart/")
        && parsed.root_part().sub_parts().is_none_or(|p| p.is_empty())
    {
        m.malformed
            .push("multipart message whose parts cannot be found (boundary missing)".into());
    }
    if m.subject.contains('\u{FFFD}') {
        m.malformed.push("undecodable bytes in the subject".into());
    }
    if m.from.is_none() {
        m.malformed.push("no usable From header".into());
        m.warnings.push("no usable From header".into());
        if m.sender.is_none()
            && m.reply_to.is_empty()
            && !matches!(m.return_path, Some(ReturnPath::Addr(_)))
        {
            return Err(ParseError::NoSender);
        }
    }
    if m.message_id.is_none() {
        m.warnings.push("no Message-ID header".into());
    }
    Ok(m)
}

fn strip_id(s: &str) -> &str {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    let list: Vec<&str> = match v {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|c| c.as_ref()).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
        .map(strip_id)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
        .collect()
}

fn first_mailbox(a: &Address<'_>) -> Option<Mailbox> {
    mailboxes(a).into_iter().next()
}

fn mailboxes(a: &Address<'_>) -> Vec<Mailbox> {
    a.iter()
        .filter_map(|addr| {
            let address = addr.address.as_deref().map(single_line)?;
            if address.is_empty() {
                return None;
            }
            Some(Mailbox {
                name: addr
                    .name
                    .as_deref()
                    .map(|n| single_line(truncate_str(n, 1024)))
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
                addr: address,
            })
        })
        .collect()
}

fn return_path(raw: &str) -> ReturnPath {
    let v = raw.trim();
    let inner = match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if b > a => &v[a + 1..b],
        _ => v,
    };
    let inner = inner.trim();
    if inner.is_empty() {
        ReturnPath::Null
    } else {
        ReturnPath::Addr(single_line(inner))
    }
}

/// Collapses a header value to one line: CR, LF and other control
/// characters become spaces, runs of whitespace one space, and invisible
/// formatting characters (bidi overrides, zero-width spaces, byte-order
/// marks) are removed. This is what makes customer text safe to reuse in
/// headers we write and in log lines.
pub fn single_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_control() || c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Characters that change how text is displayed without being visible:
/// bidirectional embeddings, overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069, U+061C, U+200E/F), zero-width characters (U+200B–U+200D,
/// U+2060–U+2064, U+FEFF, U+180E) and the soft hyphen. They can make a
/// subject or address read differently from what it is ("Trojan Source").
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Frequent function words of the languages support desks see most. On
/// short texts counting them is far more reliable than n-gram statistics
/// (which happily call "When are you open on Saturday?" Dutch).
const STOPWORDS: &[(whatlang::Lang, &[&str])] = &[
    (
        whatlang::Lang::Eng,
        &[
            "the", "and", "you", "your", "is", "are", "my", "to", "of", "what", "when", "where",
            "how", "it", "for", "can", "do", "i", "have", "has", "not", "please", "with", "this",
            "that", "would", "could", "order", "was", "am", "me",
        ],
    ),
    (
        whatlang::Lang::Deu,
        &[
            "der",
            "die",
            "das",
            "und",
            "ich",
            "ist",
            "nicht",
            "mein",
            "meine",
            "sie",
            "wann",
            "wo",
            "haben",
            "habe",
            "mit",
            "ein",
            "eine",
            "bitte",
            "ihr",
            "ihre",
            "wie",
            "auf",
            "für",
            "noch",
            "bei",
            "zu",
            "den",
            "dem",
            "es",
            "hallo",
            "bestellung",
        ],
    ),
    (
        whatlang::Lang::Fra,
        &[
            "le", "la", "les", "et", "je", "est", "pas", "mon", "ma", "mes", "vous", "votre",
            "une", "un", "pour", "avec", "des", "du", "que", "qui", "bonjour", "merci", "commande",
            "ne", "il", "sur", "au", "ai",
        ],
    ),
    (
        whatlang::Lang::Spa,
        &[
            "el", "la", "los", "las", "y", "yo", "es", "no", "mi", "mis", "usted", "su", "una",
            "un", "para", "con", "que", "por", "pedido", "hola", "gracias", "del", "está", "dónde",
            "cuándo", "tengo",
        ],
    ),
    (
        whatlang::Lang::Ita,
        &[
            "il",
            "lo",
            "la",
            "gli",
            "le",
            "e",
            "io",
            "è",
            "non",
            "mio",
            "mia",
            "una",
            "un",
            "per",
            "con",
            "che",
            "ordine",
            "buongiorno",
            "grazie",
            "del",
            "della",
            "sono",
            "quando",
            "dove",
        ],
    ),
    (
        whatlang::Lang::Nld,
        &[
            "de",
            "het",
            "een",
            "en",
            "ik",
            "is",
            "niet",
            "mijn",
            "u",
            "uw",
            "wanneer",
            "waar",
            "met",
            "voor",
            "van",
            "dat",
            "bestelling",
            "hallo",
            "bedankt",
            "graag",
            "nog",
            "heb",
        ],
    ),
    (
        whatlang::Lang::Por,
        &[
            "o", "os", "as", "e", "eu", "é", "não", "meu", "minha", "você", "uma", "um", "para",
            "com", "que", "pedido", "olá", "obrigado", "obrigada", "onde", "quando", "está",
        ],
    ),
];

/// For each stop word, the languages of [`STOPWORDS`] whose list holds it.
static STOPWORD_LANGS: std::sync::LazyLock<rustc_hash::FxHashMap<&'static str, u32>> =
    std::sync::LazyLock::new(|| {
        let mut m = rustc_hash::FxHashMap::default();
        for (i, (_, list)) in STOPWORDS.iter().enumerate() {
            for w in list.iter() {
                *m.entry(*w).or_insert(0u32) |= 1 << i;
            }
        }
        m
    });

const _: () = assert!(STOPWORDS.len() <= 32, "one bit per language");

/// Detects the language of a text among `allowed`. Returns `None` for
/// texts too short or too mixed to tell.
pub fn detect_language(text: &str, allowed: &[whatlang::Lang]) -> Option<String> {
    let lower = text.to_lowercase();
    // Letters and the stop words of each language counted in one pass: a
    // word's entry says which languages' lists hold it (bit i:
    // STOPWORDS[i]).
    let mut letters = 0;
    let mut counts = [0usize; STOPWORDS.len()];
    for w in lower
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
    {
        letters += w.chars().count();
        if let Some(&langs) = STOPWORD_LANGS.get(w) {
            for (i, c) in counts.iter_mut().enumerate() {
                *c += usize::from(langs & (1 << i) != 0);
            }
        }
    }
    if letters < 12 {
        return None;
    }
    let allowed_ok = |l: whatlang::Lang| allowed.is_empty() || allowed.contains(&l);
    let mut scores: Vec<(usize, whatlang::Lang)> = STOPWORDS
        .iter()
        .zip(counts)
        .filter(|((l, _), _)| allowed_ok(*l))
        .map(|((l, _), n)| (n, *l))
        .collect();
    scores.sort_by_key(|s| std::cmp::Reverse(s.0));
    let best = scores.first().copied().unwrap_or((0, whatlang::Lang::Eng));
    let second = scores.get(1).map_or(0, |s| s.0);
    if best.0 >= 2 && best.0 >= second * 2 {
        return Some(lang_code(best.1).into_owned());
    }
    // Not conclusive: ask the statistical detector, and trust it only
    // when it is sure.
    let detector = if allowed.is_empty() {
        whatlang::Detector::new()
    } else {
        whatlang::Detector::with_allowlist(allowed.to_vec())
    };
    let info = detector.detect(text)?;
    if !info.is_reliable() && (info.confidence() < 0.5 || letters < 60) {
        return None;
    }
    Some(lang_code(info.lang()).into_owned())
}

/// ISO 639-1 code for common languages, ISO 639-3 otherwise.
pub fn lang_code(l: whatlang::Lang) -> Cow<'static, str> {
    use whatlang::Lang::*;
    let two = match l {
        Eng => "en",
        Deu => "de",
        Fra => "fr",
        Spa => "es",
        Ita => "it",
        Nld => "nl",
        Por => "pt",
        Pol => "pl",
        Swe => "sv",
        Dan => "da",
        Nob => "no",
        Fin => "fi",
        Ces => "cs",
        Tur => "tr",
        Rus => "ru",
        Ukr => "uk",
        Jpn => "ja",
        Cmn => "zh",
        Kor => "ko",
        Ara => "ar",
        Heb => "he",
        Ell => "el",
        Hun => "hu",
        Ron => "ro",
        _ => return Cow::Borrowed(l.code()),
    };
    Cow::Borrowed(two)
}

/// Parses a language code (`de`, `deu`, `german`) into whatlang's enum.
pub fn lang_from_code(code: &str) -> Option<whatlang::Lang> {
    let c = code.trim().to_ascii_lowercase();
    whatlang::Lang::all().iter().copied().find(|l| {
        lang_code(*l) == c.as_str() || l.code() == c || l.eng_name().eq_ignore_ascii_case(&c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Message {
        match parse(s.as_bytes(), &ParseOptions::default()) {
            Ok(m) => m,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    #[test]
    fn basic_fields() {
        let m = p(
            "From: \"Jane Doe\" <Jane@Example.com>\r\nTo: support@shop.example\r\nSubject: Where is\r\n my order?\r\nMessage-ID: <abc@x>\r\nIn-Reply-To: <p1@x>\r\nReferences: <p0@x> <p1@x>\r\nReturn-Path: <bounce@example.com>\r\n\r\nHello, where is my order #123?\r\n",
        );
        assert_eq!(m.message_id.as_deref(), Some("abc@x"));
        assert_eq!(m.in_reply_to, vec!["p1@x"]);
        assert_eq!(m.references, vec!["p0@x", "p1@x"]);
        let from = m.from.clone().unwrap_or_else(|| panic!("from"));
        assert_eq!(from.name, "Jane Doe");
        assert_eq!(from.key(), "jane@example.com");
        assert_eq!(from.domain(), "example.com");
        assert_eq!(m.subject, "Where is my order?");
        assert_eq!(
            m.return_path,
            Some(ReturnPath::Addr("bounce@example.com".into()))
        );
        assert_eq!(m.to[0].addr, "support@shop.example");
        assert!(m.body.contains("where is my order #123?"));
        assert_eq!(m.header("subject"), Some("Where is my order?"));
    }

    #[test]
    fn null_return_path_and_encoded_injection_are_neutralised() {
        let m = p(
            "From: a@b.example\nReturn-Path: <>\nSubject: =?UTF-8?Q?Hello=0D=0ABcc:_victim@evil.example?=\n\nhi\n",
        );
        assert_eq!(m.return_path, Some(ReturnPath::Null));
        assert!(!m.subject.contains('\n') && !m.subject.contains('\r'));
        assert_eq!(m.subject, "Hello Bcc: victim@evil.example");
    }

    #[test]
    fn empty_and_senderless_input_is_an_error_not_a_panic() {
        assert!(matches!(
            parse(b"", &ParseOptions::default()),
            Err(ParseError::Empty)
        ));
        assert!(parse(b"Subject: x\n\nbody", &ParseOptions::default()).is_err());
    }

    #[test]
    fn languages() {
        let de = detect_language(
            "Wann haben Sie geöffnet? Ich möchte gerne vorbeikommen und etwas abholen.",
            &default_languages(),
        );
        assert_eq!(de.as_deref(), Some("de"));
        assert_eq!(detect_language("hi", &default_languages()), None);
        let en = detect_language(
            "What are your opening hours?\nWhen are you open on Saturday?",
            &default_languages(),
        );
        assert_eq!(en.as_deref(), Some("en"));
        let fr = detect_language(
            "Bonjour, je voudrais retourner un article de ma commande.",
            &default_languages(),
        );
        assert_eq!(fr.as_deref(), Some("fr"));
        let es = detect_language(
            "Hola, ¿dónde está mi pedido? Gracias.",
            &default_languages(),
        );
        assert_eq!(es.as_deref(), Some("es"));
        assert_eq!(lang_from_code("de"), Some(whatlang::Lang::Deu));
        assert_eq!(lang_from_code("fra"), Some(whatlang::Lang::Fra));
        assert_eq!(lang_from_code("klingon"), None);
    }
}
