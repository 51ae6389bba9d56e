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
        last_reply_same_template: Some(NOW - 3_600_000),
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
        last_reply_same_template: Some(NOW - 2 * 86_400_000),
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
