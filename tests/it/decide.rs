//! The decide stage's checks before an automatic reply, one by one.

use switchboard::classify::{Context, classify};
use switchboard::decide::{History, Verdict, decide};
use switchboard::parse::{ParseOptions, parse};

use crate::common::{BASE_CONFIG, BASE_RULES, Setup, message};

const NOW: i64 = 1_800_000_000_000;

fn verdict_with(setup: &Setup, raw: &[u8], h: &History) -> (Verdict, Vec<String>) {
    let k = setup.knowledge();
    let m = parse(raw, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let c = classify(&m, &k, &Context::default());
    let d = decide(&m, c, &k, h, NOW);
    (d.verdict, d.reasons)
}

fn question() -> Vec<u8> {
    message(
        "",
        "Opening hours",
        "What are your opening hours? Are you open on Saturday?\n",
    )
}

#[test]
fn confident_faq_answer_without_rules() {
    let s = Setup::new("");
    let (v, r) = verdict_with(&s, &question(), &History::default());
    assert!(
        matches!(&v, Verdict::Reply { template, faq: Some(f), .. } if template == "faq/opening-hours" && f == "opening-hours"),
        "{v:?} {r:?}"
    );
}

#[test]
fn per_sender_interval() {
    let s = Setup::new("");
    let h = History {
        last_reply_to_recipient: Some(NOW - 3_600_000),
        ..History::default()
    };
    let (v, r) = verdict_with(&s, &question(), &h);
    assert_eq!(
        v,
        Verdict::Route {
            queue: "support".into()
        }
    );
    assert!(
        r.iter().any(|x| x.contains(
            "already got the automatic reply faq/opening-hours 1h ago (limit: one per 1d)"
        )),
        "{r:?}"
    );
    // After the interval, replying is fine again.
    let h = History {
        last_reply_to_recipient: Some(NOW - 2 * 86_400_000),
        ..History::default()
    };
    assert!(matches!(
        verdict_with(&s, &question(), &h).0,
        Verdict::Reply { .. }
    ));
}

#[test]
fn circuit_breaker() {
    let s = Setup::with(
        &format!("{BASE_CONFIG}\n[limits]\nmax_replies_per_hour = 5\n"),
        BASE_RULES,
    );
    let h = History {
        replies_last_hour: 5,
        ..History::default()
    };
    let (v, r) = verdict_with(&s, &question(), &h);
    assert_eq!(v.kind(), "route");
    assert!(r.iter().any(|x| x.contains("circuit breaker")), "{r:?}");
}

#[test]
fn suggest_mode_routes_and_names_the_reply() {
    let s = Setup::with(&format!("auto_reply = false\n{BASE_CONFIG}"), BASE_RULES);
    let (v, r) = verdict_with(&s, &question(), &History::default());
    assert_eq!(v.kind(), "route");
    assert!(
        r.iter()
            .any(|x| x.contains("switched off (suggested template: faq/opening-hours)")),
        "{r:?}"
    );
}

#[test]
fn follow_ups_and_replies_to_auto_replies_go_to_people() {
    let s = Setup::new("");
    let h = History {
        answers_auto_reply: true,
        ..History::default()
    };
    assert_eq!(verdict_with(&s, &question(), &h).0.kind(), "route");
    // Answering one of our Message-IDs, or carrying our ticket tag.
    let raw = message(
        "In-Reply-To: <sb.1.2@shop.example>",
        "Re: Opening hours",
        "Are you open on Saturday?\n",
    );
    let (v, r) = verdict_with(&s, &raw, &History::default());
    assert_eq!(v.kind(), "route");
    assert!(
        r.iter().any(|x| x.contains("existing conversation")),
        "{r:?}"
    );
    let raw = message(
        "",
        "Opening hours [#SB-1042]",
        "Are you open on Saturday?\n",
    );
    assert_eq!(
        verdict_with(&s, &raw, &History::default()).0.kind(),
        "route"
    );
}

#[test]
fn language_without_template_variant_goes_to_a_person() {
    let s = Setup::new(
        "[[rule]]\nname = \"hours\"\nwhen = { subject = { contains = \"öffnungszeiten\" } }\nreply = \"faq/opening-hours\"\n",
    );
    let raw = message(
        "",
        "Öffnungszeiten",
        "Wann haben Sie am Samstag geöffnet? Ich möchte gerne vorbeikommen.\n",
    );
    let (v, r) = verdict_with(&s, &raw, &History::default());
    assert_eq!(v.kind(), "route");
    assert!(
        r.iter()
            .any(|x| x.contains("in de and faq/opening-hours has no de version")),
        "{r:?}"
    );
}

#[test]
fn reply_address_policy() {
    let s = Setup::with(
        &BASE_CONFIG.replace("[reply]\n", "[reply]\naddress = \"return-path\"\n"),
        BASE_RULES,
    );
    let raw = message(
        "Return-Path: <jane.envelope@customer.example>\nReply-To: other@customer.example",
        "Opening hours",
        "What are your opening hours on Saturday?\n",
    );
    match verdict_with(&s, &raw, &History::default()).0 {
        Verdict::Reply { to, .. } => assert_eq!(to.addr, "jane.envelope@customer.example"),
        v => panic!("{v:?}"),
    }
}

/// Issue: a forged Reply-To aimed auto-replies at a victim; the limit
/// looked up the From address but recorded the Reply-To.
#[test]
fn backscatter_is_limited_by_from_and_by_recipient() {
    let s = Setup::new("");
    let forged = message(
        "Reply-To: victim@elsewhere.example",
        "Opening hours",
        "What are your opening hours? Are you open on Saturday?\n",
    );
    // The From address already got this template (to any address).
    let h = History {
        last_reply_from_sender: Some(NOW - 60_000),
        ..History::default()
    };
    let (v, r) = verdict_with(&s, &forged, &h);
    assert_eq!(v.kind(), "route", "{r:?}");
    assert!(
        r.iter()
            .any(|x| x.contains("mail from jane@customer.example already got")),
        "{r:?}"
    );
    // A Reply-To in another domain got any reply this week: no second one.
    let h = History {
        last_any_reply_to_recipient: Some(NOW - 3 * 86_400_000),
        ..History::default()
    };
    let (v, r) = verdict_with(&s, &forged, &h);
    assert_eq!(v.kind(), "route", "{r:?}");
    assert!(
        r.iter().any(|x| x.contains("another domain than From")),
        "{r:?}"
    );
    // The same history for a Reply-To in the sender's own domain is fine.
    let own = message(
        "Reply-To: jane.private@customer.example",
        "Opening hours",
        "What are your opening hours? Are you open on Saturday?\n",
    );
    assert_eq!(verdict_with(&s, &own, &h).0.kind(), "reply");
}

#[test]
fn one_domain_cannot_use_up_the_breaker() {
    let s = Setup::with(
        &format!("{BASE_CONFIG}\n[limits]\nmax_replies_per_hour = 100\nper_domain_per_hour = 10\n"),
        BASE_RULES,
    );
    for h in [
        History {
            recipient_domain_last_hour: 10,
            ..History::default()
        },
        History {
            sender_domain_last_hour: 10,
            ..History::default()
        },
    ] {
        let (v, r) = verdict_with(&s, &question(), &h);
        assert_eq!(v.kind(), "route");
        assert!(r.iter().any(|x| x.contains("limit per domain 10")), "{r:?}");
    }
    let h = History {
        recipient_domain_last_hour: 9,
        sender_domain_last_hour: 9,
        replies_last_hour: 99,
        ..History::default()
    };
    assert_eq!(verdict_with(&s, &question(), &h).0.kind(), "reply");
}

/// Issue: a forged PayPal From with `dmarc=fail` got an answer.
#[test]
fn failed_sender_authentication_goes_to_a_person() {
    let s = Setup::new("");
    let raw = message(
        "Authentication-Results: mx.shop.example; dmarc=fail (p=reject) header.from=customer.example",
        "Opening hours",
        "What are your opening hours? Are you open on Saturday?\n",
    );
    let (v, r) = verdict_with(&s, &raw, &History::default());
    assert_eq!(v.kind(), "route", "{r:?}");
    assert!(
        r.iter()
            .any(|x| x.contains("failed authentication (dmarc=fail")),
        "{r:?}"
    );
}

#[test]
fn require_authenticated_needs_a_trusted_pass() {
    let s = Setup::with(
        &BASE_CONFIG.replace(
            "[reply]\n",
            "[reply]\ntrusted_authserv_ids = [\"mx.shop.example\"]\nrequire_authenticated = true\n",
        ),
        BASE_RULES,
    );
    let (v, r) = verdict_with(&s, &question(), &History::default());
    assert_eq!(v.kind(), "route");
    assert!(
        r.iter().any(|x| x.contains("require_authenticated")),
        "{r:?}"
    );
    // A pass written by someone else's server is not believed.
    let forged = message(
        "Authentication-Results: mx.evil.example; dmarc=pass",
        "Opening hours",
        "What are your opening hours? Are you open on Saturday?\n",
    );
    assert_eq!(
        verdict_with(&s, &forged, &History::default()).0.kind(),
        "route"
    );
    let good = message(
        "Authentication-Results: mx.shop.example; dkim=pass header.d=customer.example; dmarc=pass",
        "Opening hours",
        "What are your opening hours? Are you open on Saturday?\n",
    );
    assert_eq!(
        verdict_with(&s, &good, &History::default()).0.kind(),
        "reply"
    );
}

/// Issue: "Out of office chairs – where is my order?" was filed in Ignored
/// by its subject alone, while "Out-of-office notice" was not recognised.
#[test]
fn subject_markers_need_another_signal_to_be_ignored() {
    let s = Setup::new("");
    let customer = message(
        "",
        "Out of office chairs - where is my order?",
        "What are your opening hours? Are you open on Saturday?\n",
    );
    let (v, r) = verdict_with(&s, &customer, &History::default());
    assert_eq!(v.kind(), "route", "a person looks: {r:?}");
    let customer = message(
        "",
        "Auto: parts for my car",
        "What are your opening hours?\n",
    );
    assert_eq!(
        verdict_with(&s, &customer, &History::default()).0.kind(),
        "route"
    );
    let bot = message(
        "In-Reply-To: <x@customer.example>",
        "Out-of-office notice",
        "I am out of the office until Monday with limited access to email.\n",
    );
    assert_eq!(
        verdict_with(&s, &bot, &History::default()).0.kind(),
        "ignore"
    );
    let bot = message(
        "",
        "Out-of-office notice",
        "I am out of the office until Monday with limited access to email.\n",
    );
    assert_eq!(
        verdict_with(&s, &bot, &History::default()).0.kind(),
        "ignore"
    );
    let anchored = message(
        "",
        "Automatic reply: Opening hours",
        "Thanks for your mail.\n",
    );
    assert_eq!(
        verdict_with(&s, &anchored, &History::default()).0.kind(),
        "ignore"
    );
}

/// Issue: the README listed the checks in another order than the code.
#[test]
fn checks_run_in_the_documented_order() {
    // Auto-replies off *and* a German mail without a German template: the
    // switch is checked first (README: 5 before 6).
    let s = Setup::with(
        &format!("auto_reply = false\n{BASE_CONFIG}"),
        &format!(
            "{BASE_RULES}\n[[rule]]\nname = \"hours\"\nwhen = {{ subject = {{ contains = \"öffnungszeiten\" }} }}\nreply = \"faq/opening-hours\"\n"
        ),
    );
    let raw = message(
        "",
        "Öffnungszeiten",
        "Wann haben Sie am Samstag geöffnet? Ich möchte gerne vorbeikommen.\n",
    );
    let (_, r) = verdict_with(&s, &raw, &History::default());
    assert!(r.iter().any(|x| x.contains("switched off")), "{r:?}");
}
