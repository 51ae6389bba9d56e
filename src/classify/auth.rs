//! Sender authentication: what the receiving mail server found out about
//! the sender (RFC 8601 `Authentication-Results`, RFC 7208 `Received-SPF`).
//!
//! Two different levels of trust:
//!
//! * **A failure is believed from any header.** Whoever wrote a "fail"
//!   into the message can only hurt themselves: the message merely loses
//!   its automatic reply and goes to a person.
//! * **A pass is believed only from our own MTA**, named by its authserv-id
//!   in `[reply] trusted_authserv_ids`. Anyone can write
//!   `Authentication-Results: x; dmarc=pass` into a forged message; our
//!   MTA must remove such headers carrying its own id (RFC 8601 §5, which
//!   OpenDMARC, rspamd and Exchange do).
//!
//! A pass counts when it is aligned with the From domain (DMARC
//! alignment, relaxed): `dmarc=pass`, or `dkim=pass` with `header.d`, or
//! `spf=pass` with `smtp.mailfrom` in the From's organisational domain.

use serde::Serialize;

use crate::parse::Message;

/// What the authentication headers say about the sender.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SenderAuth {
    /// Failed checks, e.g. `dmarc=fail (mx.shop.example)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// The first pass from a trusted server that is aligned with From,
    /// e.g. `dkim=pass header.d=customer.example (mx.shop.example)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passed: Option<String>,
}

/// One `method=result` with its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MethodResult {
    method: String,
    result: String,
    props: Vec<(String, String)>,
}

impl MethodResult {
    fn prop(&self, name: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Removes RFC 5322 comments `( … )`, nested ones included.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0u32;
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Parses an `Authentication-Results` value: (authserv-id, results).
fn parse_results(value: &str) -> (String, Vec<MethodResult>) {
    let clean = strip_comments(value).to_ascii_lowercase();
    let mut parts = clean.split(';');
    let id = parts
        .next()
        .and_then(|p| p.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    let mut results = Vec::new();
    for part in parts {
        let mut tokens = part.split_whitespace();
        let Some((method, result)) = tokens.next().and_then(|t| t.split_once('=')) else {
            continue;
        };
        // `dkim/1=pass` carries a version.
        let method = method.split('/').next().unwrap_or(method).to_string();
        let props = tokens
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        results.push(MethodResult {
            method,
            result: result.to_string(),
            props,
        });
    }
    (id, results)
}

/// The domain part of an address or a bare domain, lower-case.
fn domain_of(s: &str) -> &str {
    s.rsplit_once('@').map_or(s, |(_, d)| d).trim_matches('.')
}

/// Relaxed DMARC alignment: one domain is the other or a subdomain of it
/// (an approximation of "same organisational domain" that needs no
/// public-suffix list and errs on the strict side).
fn aligned(a: &str, b: &str) -> bool {
    let (a, b) = (domain_of(a), domain_of(b));
    !a.is_empty()
        && !b.is_empty()
        && (a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}")))
}

/// Inspects the authentication headers of a message. `trusted` are the
/// authserv-ids of our own MTAs, lower-case.
pub fn inspect(m: &Message, trusted: &[String]) -> SenderAuth {
    let mut auth = SenderAuth::default();
    let from_domain = m.from.as_ref().map(|f| f.domain()).unwrap_or_default();
    let mut dmarc_pass_anywhere = false;
    for value in m.header_all("authentication-results") {
        let (id, results) = parse_results(value);
        let has = |method: &str, result: &str| {
            results
                .iter()
                .any(|r| r.method == method && r.result == result)
        };
        let dmarc_pass = has("dmarc", "pass");
        dmarc_pass_anywhere |= dmarc_pass;
        for r in &results {
            // A failed DKIM signature next to a good one, or failed SPF on
            // forwarded mail that DMARC still passes, is not a failure of
            // the sender.
            let failed = match (r.method.as_str(), r.result.as_str()) {
                ("dmarc", "fail") => true,
                ("dkim", "fail") => !has("dkim", "pass") && !dmarc_pass,
                ("spf", "fail") => !dmarc_pass,
                _ => false,
            };
            if failed {
                auth.failed
                    .push(format!("{}={} ({id})", r.method, r.result));
            }
        }
        if auth.passed.is_some() || !trusted.contains(&id) {
            continue;
        }
        // DMARC first: it is the strongest statement about the From.
        let mut passes: Vec<&MethodResult> =
            results.iter().filter(|r| r.result == "pass").collect();
        passes.sort_by_key(|r| match r.method.as_str() {
            "dmarc" => 0,
            "dkim" => 1,
            _ => 2,
        });
        for r in passes {
            let evidence = match r.method.as_str() {
                "dmarc" => match r.prop("header.from") {
                    Some(d) if !aligned(d, &from_domain) => None,
                    _ => Some("dmarc=pass".to_string()),
                },
                "dkim" => r
                    .prop("header.d")
                    .or_else(|| r.prop("header.i"))
                    .filter(|d| aligned(d, &from_domain))
                    .map(|d| format!("dkim=pass header.d={}", domain_of(d))),
                "spf" => r
                    .prop("smtp.mailfrom")
                    .filter(|d| aligned(d, &from_domain))
                    .map(|d| format!("spf=pass smtp.mailfrom={d}")),
                _ => None,
            };
            if let Some(e) = evidence {
                auth.passed = Some(format!("{e} ({id})"));
                break;
            }
        }
    }
    for value in m.header_all("received-spf") {
        let result = strip_comments(value)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if result == "fail" && !dmarc_pass_anywhere {
            auth.failed.push("spf=fail (Received-SPF)".into());
        }
    }
    auth.failed.dedup();
    auth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ParseOptions, parse};

    fn auth(headers: &str) -> SenderAuth {
        let raw = format!(
            "{headers}From: Jane <jane@mail.customer.example>\r\nTo: support@shop.example\r\nSubject: x\r\n\r\nbody\r\n"
        );
        let m = parse(raw.as_bytes(), &ParseOptions::default())
            .unwrap_or_else(|e| panic!("parse: {e}"));
        inspect(&m, &["mx.shop.example".to_string()])
    }

    #[test]
    fn failures_count_from_anyone() {
        let a = auth(
            "Authentication-Results: evil.example; dmarc=fail (p=reject) header.from=paypal.com\r\n",
        );
        assert_eq!(a.failed, vec!["dmarc=fail (evil.example)"]);
        let a = auth("Received-SPF: Fail (mx: domain does not designate) client-ip=1.2.3.4\r\n");
        assert_eq!(a.failed, vec!["spf=fail (Received-SPF)"]);
        assert_eq!(auth("Received-SPF: softfail\r\n"), SenderAuth::default());
    }

    #[test]
    fn forwarded_mail_that_dmarc_passes_is_not_a_failure() {
        let a = auth(
            "Authentication-Results: mx.shop.example; spf=fail smtp.mailfrom=fwd.example; dkim=pass header.d=customer.example; dmarc=pass header.from=customer.example\r\n",
        );
        assert!(a.failed.is_empty(), "{a:?}");
        assert_eq!(a.passed.as_deref(), Some("dmarc=pass (mx.shop.example)"));
        let a = auth(
            "Authentication-Results: mx.shop.example; dkim=fail header.d=esp.example; dkim=pass header.d=customer.example\r\n",
        );
        assert!(a.failed.is_empty(), "{a:?}");
    }

    #[test]
    fn a_pass_needs_a_trusted_server_and_alignment() {
        let forged = auth("Authentication-Results: mx.evil.example; dmarc=pass\r\n");
        assert_eq!(forged.passed, None);
        let a = auth(
            "Authentication-Results: mx.shop.example (Postfix); dkim=pass (2048-bit key) header.d=customer.example header.s=s1\r\n",
        );
        assert_eq!(
            a.passed.as_deref(),
            Some("dkim=pass header.d=customer.example (mx.shop.example)")
        );
        let a = auth(
            "Authentication-Results: mx.shop.example; dkim=pass header.d=other.example; spf=pass smtp.mailfrom=bounce@other.example\r\n",
        );
        assert_eq!(a.passed, None, "not aligned with From");
        let a = auth(
            "Authentication-Results: mx.shop.example; spf=pass smtp.mailfrom=jane@customer.example\r\n",
        );
        assert!(a.passed.is_some());
        let a =
            auth("Authentication-Results: mx.shop.example; dmarc=pass header.from=paypal.com\r\n");
        assert_eq!(a.passed, None, "a DMARC pass for another From domain");
    }

    #[test]
    fn parsing() {
        let (id, r) = parse_results(
            "MX.Shop.example 1; dkim/1=pass (good (2048-bit) signature) header.d=a.example; none",
        );
        assert_eq!(id, "mx.shop.example");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].method, "dkim");
        assert_eq!(r[0].prop("header.d"), Some("a.example"));
        assert!(aligned("mail.customer.example", "customer.example"));
        assert!(!aligned("customer.example.evil", "customer.example"));
        assert!(!aligned("", "x"));
    }
}
