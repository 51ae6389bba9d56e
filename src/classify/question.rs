//! Finding the question in an e-mail.
//!
//! Customers wrap their question in greetings, their name, sign-offs,
//! context ("I'm on holiday in Portugal"), mobile footers and signatures.
//! None of that says what they want, and all of it would dilute the match.
//! This module turns a parsed message into the *request*: the subject when
//! it says something, and the sentences of the body, with every line and
//! phrase that carries no request removed. The FAQ matcher then scores the
//! request and, separately, each sentence (see [`crate::classify::faq`]),
//! so one context sentence cannot sink a clear question.
//!
//! Pure functions of the message; what was dropped and why is kept for
//! `switchboard test --explain`.

use serde::Serialize;

use crate::parse::Message;

/// The request extracted from a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Question {
    /// The subject, when it says something (not "Question", "Help", "Re:").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The body's sentences that may carry the request, in order.
    pub sentences: Vec<String>,
    /// What was removed, for explanations: (text, why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<(String, &'static str)>,
}

impl Question {
    /// Everything kept, as one text: subject first, then the sentences.
    pub fn text(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if let Some(s) = &self.subject {
            parts.push(s);
        }
        parts.extend(self.sentences.iter().map(String::as_str));
        parts.join("\n")
    }

    /// A plain question (a line of a CSV file, an example): the same
    /// cleaning, with no subject and no sender.
    pub fn from_text(text: &str) -> Question {
        extract(None, text, "")
    }

    /// The request of a message.
    pub fn from_message(m: &Message) -> Question {
        let subject = crate::act::reply::strip_reply_prefixes(&m.subject);
        let subject = crate::act::reply::strip_ticket_tags(subject);
        let body = crate::util::truncate_str(&m.body, crate::classify::MAX_QUESTION_BYTES);
        extract(Some(&subject), body, m.customer_name())
    }
}

/// Subjects that say nothing about the request.
const VAGUE_SUBJECTS: &[&str] = &[
    "question",
    "questions",
    "quick question",
    "a question",
    "help",
    "help needed",
    "need help",
    "please help",
    "hi",
    "hello",
    "hey",
    "problem",
    "issue",
    "urgent",
    "important",
    "support",
    "support request",
    "request",
    "inquiry",
    "enquiry",
    "query",
    "account",
    "my account",
    "info",
    "information",
    "contact",
    "contact form",
    "feedback",
    "no subject",
    "(no subject)",
    "hello there",
    "good morning",
    "customer service",
    "assistance",
    "help please",
    "follow up",
    "follow-up",
];

/// Greetings, alone on a line or at the start of one.
const GREETINGS: &[&str] = &[
    "hello",
    "hi",
    "hey",
    "hiya",
    "dear",
    "good morning",
    "good afternoon",
    "good evening",
    "greetings",
    "to whom it may concern",
    "hallo",
    "guten tag",
    "bonjour",
    "hola",
    "buongiorno",
];

/// Who a greeting may address (the rest of a greeting line).
const ADDRESSEES: &[&str] = &[
    "there",
    "team",
    "all",
    "everyone",
    "support",
    "support team",
    "customer service",
    "customer support",
    "customer care",
    "customer service team",
    "sir",
    "madam",
    "sir or madam",
    "sir/madam",
    "sirs",
    "friends",
    "folks",
    "guys",
];

/// Closing formulas (a line starting with one, followed at most by a name).
const SIGN_OFFS: &[&str] = &[
    "thanks in advance",
    "thank you in advance",
    "thanks for your help",
    "thank you for your help",
    "thanks a lot",
    "thanks so much",
    "thank you so much",
    "thank you very much",
    "many thanks",
    "thanks again",
    "thanks",
    "thank you",
    "thx",
    "ty",
    "best regards",
    "kind regards",
    "warm regards",
    "warmest regards",
    "with regards",
    "regards",
    "best wishes",
    "all the best",
    "best",
    "cheers",
    "sincerely",
    "yours sincerely",
    "yours faithfully",
    "yours truly",
    "respectfully",
    "cordially",
    "looking forward to your reply",
    "looking forward to hearing from you",
    "i look forward to your reply",
    "i look forward to hearing from you",
    "hope to hear from you soon",
    "have a nice day",
    "have a great day",
    "take care",
    "mit freundlichen grüßen",
    "viele grüße",
    "cordialement",
    "saludos",
];

/// Sentences that are politeness only.
const PLEASANTRIES: &[&str] = &[
    "i hope you are well",
    "i hope you're well",
    "hope you are well",
    "hope you're well",
    "hope you are doing well",
    "i hope this email finds you well",
    "i hope this finds you well",
    "hope this finds you well",
    "i hope you can help",
    "i hope you can help me",
    "hope you can help",
    "hope you can help me",
    "can you help",
    "can you help me",
    "could you help me",
    "please help",
    "please help me",
    "please advise",
    "any help would be appreciated",
    "any help is appreciated",
    "any help would be greatly appreciated",
    "i would appreciate your help",
    "i'd appreciate your help",
    "thanks for your time",
    "thank you for your time",
    "sorry to bother you",
    "sorry for the trouble",
    "sorry for the long message",
    "i hope this is the right address",
    "i hope this is the right place",
    "i need your help",
    "i need help",
    "i have a question",
    "i have a quick question",
    "quick question",
    "please get back to me",
    "please get back to me asap",
    "please reply asap",
    "please respond asap",
];

/// Lower-case, letters, digits and single spaces only.
fn norm(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    let mut add = |c: char| {
        if c.is_alphanumeric() || c == '\'' || c == '’' || c == '/' {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(if c == '’' { '\'' } else { c });
        } else {
            space = true;
        }
    };
    for c in s.chars() {
        // (ASCII lower-cases to one ASCII character.)
        if c.is_ascii() {
            add(c.to_ascii_lowercase());
        } else {
            c.to_lowercase().for_each(&mut add);
        }
    }
    out
}

/// Whether `words` (normalised) are only a name: the sender's, or one to
/// three capitalised words that are not sentence words.
fn is_name(line: &str, sender: &[String]) -> bool {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() || words.len() > 4 {
        return false;
    }
    let lower: Vec<String> = words
        .iter()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    if !sender.is_empty() && lower.iter().all(|w| w.is_empty() || sender.contains(w)) {
        return true;
    }
    // "Jane Doe", "J. Smith", "Mary-Ann O'Brien": capitalised, no digits,
    // no question mark, not a sentence word.
    words.len() <= 3
        && !line.contains('?')
        && words.iter().all(|w| {
            let w = w.trim_end_matches(['.', ',']);
            let mut chars = w.chars();
            chars.next().is_some_and(char::is_uppercase)
                && w.chars()
                    .all(|c| c.is_alphabetic() || matches!(c, '.' | '-' | '\'' | '’'))
        })
        && lower.iter().all(|w| !COMMON_WORDS.contains(&w.as_str()))
}

/// Words that start sentences and are never names.
const COMMON_WORDS: &[&str] = &[
    "i", "my", "the", "a", "an", "it", "is", "are", "was", "this", "that", "what", "where", "when",
    "why", "how", "can", "could", "would", "please", "thanks", "thank", "yes", "no", "ok", "okay",
    "hello", "hi", "dear", "help", "urgent", "card", "order", "account", "refund", "payment",
    "money", "transfer", "still", "not", "again", "we", "you", "your", "our", "do", "does", "did",
    "have", "has", "had", "will", "should", "best", "regards", "cheers", "sent",
];

/// Lines that carry no words of a request at all.
fn is_noise_line(l: &str) -> Option<&'static str> {
    let n = norm(l);
    if n.is_empty() {
        return Some("empty");
    }
    if n.starts_with("sent from my ")
        || n.starts_with("sent from mail for ")
        || n.starts_with("get outlook for ")
        || n.starts_with("sent via ")
        || n.starts_with("sent with ")
        || n.starts_with("von meinem ")
        || n.starts_with("envoyé de mon ")
        || n.starts_with("enviado desde mi ")
    {
        return Some("mobile footer");
    }
    let lower = l.to_lowercase();
    if (lower.contains("confidential") || lower.contains("intended recipient"))
        && (lower.contains("intended") || lower.contains("disclos") || lower.contains("notify"))
    {
        return Some("disclaimer");
    }
    // Contact details: phone numbers, addresses, links and nothing else.
    let letters = l.chars().filter(|c| c.is_alphabetic()).count();
    let digits = l.chars().filter(|c| c.is_ascii_digit()).count();
    if digits >= 6 && letters <= 6 {
        return Some("contact details");
    }
    let tokens: Vec<&str> = l.split_whitespace().collect();
    if !tokens.is_empty()
        && tokens.iter().all(|t| {
            t.contains("://") || t.starts_with("www.") || (t.contains('@') && t.contains('.'))
        })
    {
        return Some("contact details");
    }
    None
}

/// Removes a greeting at the start of a line: `(greeting, rest)`.
fn split_greeting(line: &str) -> Option<String> {
    let n = norm(line);
    let g = GREETINGS
        .iter()
        .filter(|g| {
            n.strip_prefix(**g)
                .is_some_and(|r| r.is_empty() || r.starts_with(' '))
        })
        .max_by_key(|g| g.len())?;
    // Where the greeting ends in the original text: after its words and
    // an optional addressee or name, at the first comma, colon, '!' or
    // line end.
    let words_in_greeting = g.split(' ').count();
    let rest_words: Vec<&str> = n.split(' ').skip(words_in_greeting).collect();
    let cut = line.find([',', ':', '!', '\n']);
    match cut {
        Some(i) => {
            let head = norm(&line[..i]);
            let addressee = head
                .split(' ')
                .skip(words_in_greeting)
                .collect::<Vec<_>>()
                .join(" ");
            // "Hi, ..." / "Hello team, ..." / "Dear Jane Doe, ..." / "Hi
            // Northwind, ...": the head is short.
            if addressee.split(' ').filter(|w| !w.is_empty()).count() <= 4 {
                return Some(line[i + 1..].trim().to_string());
            }
            None
        }
        None => {
            let addressee = rest_words.join(" ");
            if addressee.is_empty()
                || ADDRESSEES.contains(&addressee.as_str())
                || rest_words.len() <= 3 && !line.contains('?')
            {
                Some(String::new())
            } else {
                None
            }
        }
    }
}

/// Whether a line is a closing formula, possibly followed by a name
/// ("Thanks, Jane", "Best regards John Smith").
fn is_sign_off(line: &str, sender: &[String]) -> bool {
    let n = norm(line);
    SIGN_OFFS.iter().any(|s| {
        if n == *s {
            return true;
        }
        let Some(rest) = n.strip_prefix(*s).and_then(|r| r.strip_prefix(' ')) else {
            return false;
        };
        // The rest of the line is a name (after the formula's punctuation).
        let after = line
            .char_indices()
            .filter(|(_, c)| matches!(c, ',' | '!' | '.' | '-'))
            .map(|(i, _)| &line[i + 1..])
            .next()
            .unwrap_or(rest);
        rest.split(' ').count() <= 3
            && (is_name(after.trim(), sender)
                || rest.split(' ').all(|w| sender.contains(&w.to_string())))
    })
}

/// Whether normalised text ends with an abbreviation ("e.g." is "e g"
/// once normalised, "Mr." is "mr") as a word of its own: the full stop
/// after it does not end a sentence.
fn ends_with_abbreviation(n: &str) -> bool {
    [
        "e g", "i e", "mr", "mrs", "ms", "dr", "no", "nr", "etc", "st",
    ]
    .iter()
    .any(|a| {
        n.strip_suffix(a)
            .is_some_and(|head| head.is_empty() || head.ends_with(' '))
    })
}

/// Splits text into sentences: at line ends, and after `.`, `!` or `?`
/// followed by a space.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cur = String::new();
        let chars: Vec<char> = line.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            cur.push(c);
            let end = matches!(c, '.' | '!' | '?')
                && chars.get(i + 1).is_some_and(|n| n.is_whitespace())
                // "e.g. ", "Mr. ", "No. 5": not ends.
                && !cur.trim_end_matches('.').ends_with(|ch: char| ch.is_uppercase() && cur.trim().len() < 4)
                && !ends_with_abbreviation(&norm(&cur));
            if end {
                let t = cur.trim().to_string();
                if !t.is_empty() {
                    out.push(t);
                }
                cur.clear();
            }
        }
        let t = cur.trim().to_string();
        if !t.is_empty() {
            out.push(t);
        }
    }
    out
}

/// The request of a body (and subject, and sender name).
fn extract(subject: Option<&str>, body: &str, sender_name: &str) -> Question {
    let sender: Vec<String> = norm(sender_name)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let mut q = Question::default();
    if let Some(s) = subject {
        let n = norm(s);
        if n.is_empty() {
            // nothing
        } else if VAGUE_SUBJECTS.contains(&n.as_str()) {
            q.dropped.push((s.to_string(), "vague subject"));
        } else {
            q.subject = Some(s.trim().to_string());
        }
    }
    let lines: Vec<&str> = body.lines().collect();
    let mut kept: Vec<String> = Vec::new();
    let last_content = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .unwrap_or(0);
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(why) = is_noise_line(line) {
            q.dropped.push((line.to_string(), why));
            continue;
        }
        if is_sign_off(line, &sender) {
            q.dropped.push((line.to_string(), "sign-off"));
            continue;
        }
        // A name alone on a line: the sender's, or near the end.
        if is_name(line, &sender) && (i + 3 > last_content || kept.is_empty()) {
            q.dropped.push((line.to_string(), "name"));
            continue;
        }
        match split_greeting(line) {
            Some(rest) if rest.is_empty() => {
                q.dropped.push((line.to_string(), "greeting"));
                continue;
            }
            Some(rest) => {
                let head = line[..line.len() - rest.len()].trim().to_string();
                q.dropped.push((head, "greeting"));
                kept.push(rest);
            }
            None => kept.push(line.to_string()),
        }
    }
    for s in sentences(&kept.join("\n")) {
        let n = norm(&s);
        if PLEASANTRIES.contains(&n.as_str()) || SIGN_OFFS.contains(&n.as_str()) {
            q.dropped.push((s, "pleasantry"));
        } else {
            q.sentences.push(s);
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(body: &str, name: &str) -> Vec<String> {
        extract(None, body, name).sentences
    }

    #[test]
    fn abbreviations_do_not_end_sentences() {
        assert_eq!(
            sentences(
                "Some items, e.g. the mugs, are missing. Mr. Lee knows. See order no. 5 please."
            ),
            vec![
                "Some items, e.g. the mugs, are missing.",
                "Mr. Lee knows.",
                "See order no. 5 please."
            ]
        );
    }

    #[test]
    fn greetings_names_and_sign_offs_go() {
        assert_eq!(
            kept(
                "Hello,\n\nwhere is my refund?\n\nThanks,\nJane Doe",
                "Jane Doe"
            ),
            vec!["where is my refund?"]
        );
        assert_eq!(
            kept(
                "Hi there, my card has not arrived yet.\nThanks, Jane",
                "Jane Doe"
            ),
            vec!["my card has not arrived yet."]
        );
        assert_eq!(
            kept(
                "Dear Sir or Madam,\nHow do I reset my password?\nKind regards\nJ. Smith",
                ""
            ),
            vec!["How do I reset my password?"]
        );
        assert_eq!(
            kept("hi, how long does a transfer take?\nmaria", "Maria Rossi"),
            vec!["how long does a transfer take?"]
        );
        assert_eq!(
            kept(
                "Where is my parcel?\n\nBest regards,\nAhmed Khan\nSent from my iPhone",
                "Ahmed Khan"
            ),
            vec!["Where is my parcel?"]
        );
    }

    #[test]
    fn context_sentences_are_separate() {
        assert_eq!(
            kept(
                "I'm on holiday in Portugal. My card was declined at a shop.",
                ""
            ),
            vec![
                "I'm on holiday in Portugal.",
                "My card was declined at a shop."
            ]
        );
        assert_eq!(
            kept("I hope you can help me. Why was I charged twice?", ""),
            vec!["Why was I charged twice?"]
        );
    }

    #[test]
    fn real_words_are_kept() {
        // A sentence that starts with a capital letter is not a name.
        assert_eq!(kept("Card declined", ""), vec!["Card declined"]);
        assert_eq!(kept("Refund please", ""), vec!["Refund please"]);
        assert_eq!(
            kept(
                "Thanks for the quick help last time. Now the reset link fails.",
                ""
            ),
            vec![
                "Thanks for the quick help last time.",
                "Now the reset link fails."
            ]
        );
        assert_eq!(kept("Hi, is there a fee?", ""), vec!["is there a fee?"]);
    }

    #[test]
    fn vague_subjects_are_dropped() {
        let q = extract(Some("Question"), "where is my refund?", "");
        assert_eq!(q.subject, None);
        let q = extract(Some("Refund not received"), "where is it?", "");
        assert_eq!(q.subject.as_deref(), Some("Refund not received"));
        assert_eq!(q.text(), "Refund not received\nwhere is it?");
    }
}
