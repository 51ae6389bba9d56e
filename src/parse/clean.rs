//! Body cleaning: what the customer actually wrote, without quoted replies,
//! forwarded history, signatures and mobile footers. Rules and the FAQ
//! matcher look at this text, so an old answer quoted below a new question
//! cannot trigger the wrong reply.

/// Converts HTML to plain text (tags dropped, entities decoded, block
/// elements on their own lines).
pub fn html_to_text(html: &str) -> String {
    mail_parser::decoders::html::html_to_text(html)
}

/// Returns the customer's own words from a plain-text body.
pub fn clean_body(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept: Vec<&str> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim();
        // Everything from a reply or forward header on is history.
        if starts_history(
            t,
            lines.get(i + 1).map(|l| l.trim()),
            lines.get(i + 2).map(|l| l.trim()),
        ) {
            break;
        }
        // The signature delimiter "-- " (RFC 3676 §4.3); many clients trim it to "--".
        if t == "--" || line == "-- " {
            break;
        }
        if t.starts_with('>') || is_footer(t) {
            i += 1;
            continue;
        }
        kept.push(line.trim_end());
        i += 1;
    }
    strip_sign_off(&mut kept);
    // Collapse blank-line runs and trim.
    let mut out = String::new();
    let mut blank = 0;
    for l in kept {
        if l.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(l);
    }
    out
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// Lines that begin quoted history: "On … wrote:", Outlook's header
/// block, "-----Original Message-----", forwarded-message markers, and
/// their German, French, Spanish, Dutch and Italian equivalents.
fn starts_history(t: &str, next: Option<&str>, next2: Option<&str>) -> bool {
    let l = lower(t);
    const MARKERS: &[&str] = &[
        "-----original message-----",
        "----- original message -----",
        "-----ursprüngliche nachricht-----",
        "-----message d'origine-----",
        "-----mensaje original-----",
        "begin forwarded message",
        "---------- forwarded message",
        "-------- forwarded message",
        "-------- original message --------",
        "---------- weitergeleitete nachricht",
        "-------- message transféré",
        "________________________________",
    ];
    if MARKERS.iter().any(|m| l.starts_with(m)) {
        return true;
    }
    // "On Mon, 18 Nov 2026, Jane <j@x> wrote:" possibly wrapped over two lines.
    let wrote = |s: &str| {
        let s = lower(s);
        s.trim_end().ends_with(':')
            && [
                "wrote",
                "schrieb",
                "a écrit",
                "escribió",
                "schreef",
                "ha scritto",
                "skrev",
            ]
            .iter()
            .any(|v| s.contains(v))
    };
    let opener = ["on ", "am ", "le ", "el ", "op ", "il "]
        .iter()
        .any(|p| l.starts_with(p));
    if opener && (wrote(t) || next.is_some_and(|n| wrote(&format!("{t} {n}")))) {
        return true;
    }
    if wrote(t) && t.len() < 200 && t.contains('@') {
        return true;
    }
    // Outlook: "From: X" followed by "Sent:"/"Date:" within two lines.
    let header = |s: Option<&str>| {
        s.is_some_and(|s| {
            let s = lower(s);
            s.starts_with("sent:")
                || s.starts_with("date:")
                || s.starts_with("gesendet:")
                || s.starts_with("envoyé :")
                || s.starts_with("to:")
        })
    };
    if (l.starts_with("from:")
        || l.starts_with("von:")
        || l.starts_with("de :")
        || l.starts_with("de:"))
        && (header(next) || header(next2))
    {
        return true;
    }
    false
}

/// Mobile and webmail footers that carry no content.
fn is_footer(t: &str) -> bool {
    let l = lower(t);
    l.starts_with("sent from my ")
        || l.starts_with("get outlook for ")
        || l.starts_with("von meinem iphone gesendet")
        || l.starts_with("envoyé de mon ")
        || l.starts_with("enviado desde mi ")
        || (l.starts_with("[cid:") && l.ends_with(']'))
}

/// Removes a closing formula and the short lines after it ("Best regards,
/// / Jane Doe / ACME Ltd") when it sits near the end of the text.
fn strip_sign_off(lines: &mut Vec<&str>) {
    const SIGN_OFFS: &[&str] = &[
        "best regards",
        "kind regards",
        "warm regards",
        "regards",
        "best wishes",
        "best,",
        "best",
        "thanks",
        "thank you",
        "thanks in advance",
        "many thanks",
        "cheers",
        "sincerely",
        "yours sincerely",
        "yours faithfully",
        "mit freundlichen grüßen",
        "mit freundlichen grüssen",
        "viele grüße",
        "beste grüße",
        "liebe grüße",
        "gruß",
        "cordialement",
        "bien cordialement",
        "saludos",
        "un saludo",
        "atentamente",
        "met vriendelijke groet",
        "cordiali saluti",
    ];
    let content: Vec<usize> = (0..lines.len())
        .filter(|&i| !lines[i].trim().is_empty())
        .collect();
    if content.len() < 2 {
        return;
    }
    // Look at the last few non-empty lines only.
    let window = content.len().saturating_sub(6);
    for &idx in &content[window..] {
        let l = lower(lines[idx].trim())
            .trim_end_matches([',', '!', '.', ' '])
            .to_string();
        if SIGN_OFFS.contains(&l.as_str()) && idx > 0 {
            let after = content.iter().filter(|&&j| j > idx).count();
            let short = content
                .iter()
                .filter(|&&j| j > idx)
                .all(|&j| lines[j].trim().chars().count() <= 60);
            if after <= 5 && short && content.iter().any(|&j| j < idx) {
                lines.truncate(idx);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_quotes_signature_and_footer() {
        let body = "Hi,\n\nwhere is my refund?\n\nThanks,\nJane\n-- \nJane Doe\nACME Ltd\n\nOn Mon, 18 Nov 2026, Support <s@x> wrote:\n> Your order shipped.\n";
        assert_eq!(clean_body(body), "Hi,\n\nwhere is my refund?");
    }

    #[test]
    fn wrapped_on_wrote_and_outlook_blocks() {
        let body = "Still nothing.\nOn Tue, 19 Nov 2026 at 10:00, Northwind Support <\nsupport@northwind.example> wrote:\nold text";
        assert_eq!(clean_body(body), "Still nothing.");
        let body =
            "Please cancel.\n\nFrom: Support <s@x>\nSent: Monday\nTo: me\nSubject: old\n\nold";
        assert_eq!(clean_body(body), "Please cancel.");
        let body =
            "Wo bleibt meine Bestellung?\n\nAm 18.11.2026 um 10:00 schrieb Support <s@x>:\n> alt";
        assert_eq!(clean_body(body), "Wo bleibt meine Bestellung?");
        let body = "FYI\n\n---------- Forwarded message ---------\nFrom: x\nold";
        assert_eq!(clean_body(body), "FYI");
    }

    #[test]
    fn keeps_ordinary_text() {
        let body = "I would like to return the lamp.\nIt arrived broken.\n\nSent from my iPhone";
        assert_eq!(
            clean_body(body),
            "I would like to return the lamp.\nIt arrived broken."
        );
        // "thanks" in the middle of a long text is not a sign-off.
        let body =
            "Thanks for the quick help last time.\nNow my password reset link does not work.";
        assert_eq!(clean_body(body), body);
    }

    #[test]
    fn html_conversion() {
        let t = html_to_text("<p>Hello&nbsp;there</p><p>Where is <b>my</b> order?</p>");
        assert!(t.contains("Where is my order?"), "{t}");
    }
}
