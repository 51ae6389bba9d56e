//! Golden corpus: the demo mailbox plus `tests/golden/extra/*.eml`, run
//! through the dry-run pipeline (what `switchboard test` shows) with the
//! demo configuration, compared line by line with
//! `tests/golden/expected.tsv`.
//!
//! Every message is decided twice, once with LF and once with CRLF line
//! endings; both must give the same line. The dry run keeps no state
//! (empty history, no conversation), so each message is decided on its
//! own and the order of the corpus does not matter.
//!
//! To accept new results: `UPDATE_GOLDEN=1 cargo test --test it golden`,
//! then review the diff of `tests/golden/expected.tsv`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use switchboard::config::Config;
use switchboard::decide::Decision;
use switchboard::knowledge::Knowledge;
use switchboard::pipeline::dry_run;

const EXPECTED: &str = "tests/golden/expected.tsv";
const HEADER: &str = "# file\tdecision\trule\tfaq\ttemplate\tqueue\n\
# Regenerate: UPDATE_GOLDEN=1 cargo test --test it golden (then review the diff).\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (display name, path) of every fixture, sorted by name.
fn fixtures() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (prefix, dir) in [
        ("demo", root().join("examples/demo/Maildir/new")),
        ("extra", root().join("tests/golden/extra")),
    ] {
        let rd = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !entry.path().is_file() {
                continue;
            }
            out.push((format!("{prefix}/{name}"), entry.path()));
        }
    }
    out.sort();
    out
}

/// LF-only and CRLF versions of a message.
fn line_endings(raw: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lf = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        lf.push(raw[i]);
        i += 1;
    }
    let mut crlf = Vec::with_capacity(lf.len() + lf.len() / 40);
    for &b in &lf {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    (lf, crlf)
}

fn or_dash(s: Option<&str>) -> &str {
    match s {
        Some(s) if !s.is_empty() => s,
        _ => "-",
    }
}

/// The columns after the file name.
fn columns(d: &Decision) -> String {
    let faq = d.evidence.faq.best().map(|b| b.id.as_str());
    [
        d.verdict.kind(),
        or_dash(d.rule.as_deref()),
        or_dash(faq),
        or_dash(d.verdict.template()),
        or_dash(d.verdict.queue()),
    ]
    .join("\t")
}

/// name → columns, for one line-ending variant.
type Results = BTreeMap<String, String>;

fn parse_expected(text: &str) -> Results {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('\t') {
            Some((name, rest)) => (name.to_string(), rest.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

fn render(r: &Results) -> String {
    let mut s = String::from(HEADER);
    for (name, cols) in r {
        s.push_str(&format!("{name}\t{cols}\n"));
    }
    s
}

/// The lines that differ between `a` and `b`, or `None` when equal.
fn diff(a_label: &str, a: &Results, b_label: &str, b: &Results) -> Option<String> {
    let mut out = String::new();
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (x, y) = (a.get(name), b.get(name));
        if x == y {
            continue;
        }
        out.push_str(&format!("{name}\n"));
        let show =
            |v: Option<&String>| v.map_or("(missing)".to_string(), |c| c.replace('\t', "  "));
        out.push_str(&format!("  - {a_label:<8} {}\n", show(x)));
        out.push_str(&format!("  + {b_label:<8} {}\n", show(y)));
    }
    (!out.is_empty()).then_some(out)
}

#[test]
fn golden_corpus() {
    let config = root().join("examples/demo/switchboard.toml");
    let (cfg, _) = Config::load(&config).unwrap_or_else(|d| panic!("{d}"));
    let (k, _) = Knowledge::load(&cfg).unwrap_or_else(|d| panic!("{d}"));

    let files = fixtures();
    assert!(
        files.iter().filter(|(n, _)| n.starts_with("demo/")).count() >= 30
            && files.iter().any(|(n, _)| n.starts_with("extra/")),
        "fixtures missing: {files:?}"
    );
    let (mut lf_results, mut crlf_results) = (Results::new(), Results::new());
    for (name, path) in &files {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (lf, crlf) = line_endings(&raw);
        lf_results.insert(name.clone(), columns(&dry_run(&lf, &k).1));
        crlf_results.insert(name.clone(), columns(&dry_run(&crlf, &k).1));
    }

    let mut failures = Vec::new();
    if let Some(d) = diff("LF", &lf_results, "CRLF", &crlf_results) {
        failures.push(format!("LF and CRLF versions decide differently:\n{d}"));
    }
    let expected_path = root().join(EXPECTED);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::write(&expected_path, render(&lf_results))
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        eprintln!(
            "wrote {} ({} lines)",
            expected_path.display(),
            lf_results.len()
        );
    } else {
        let text = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n(create it with UPDATE_GOLDEN=1 cargo test --test it golden)",
                expected_path.display()
            )
        });
        let expected = parse_expected(&text);
        for (label, actual) in [("LF", &lf_results), ("CRLF", &crlf_results)] {
            if let Some(d) = diff("expected", &expected, label, actual) {
                failures.push(format!("{label} results differ from {EXPECTED}:\n{d}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\ncolumns: decision rule faq template queue\n\
         If the change is intended: UPDATE_GOLDEN=1 cargo test --test it golden",
        failures.join("\n")
    );
}

#[test]
fn golden_line_endings_helper() {
    let (lf, crlf) = line_endings(b"a\r\nb\nc\r\n\r\n\rd");
    assert_eq!(lf, b"a\nb\nc\n\n\rd");
    assert_eq!(crlf, b"a\r\nb\r\nc\r\n\r\n\rd");
}

/// What the parsing threads work out ahead (`classify::ahead`) is exactly
/// what scoring the FAQ and then classifying give: the classification,
/// whether it holds the FAQ result, and the FAQ result kept aside for a
/// follow-up. Over every fixture with the demo knowledge, and over
/// messages for a rule set where only a follow-up needs the FAQ.
#[test]
fn classifying_ahead_equals_scoring_then_classifying() {
    let config = root().join("examples/demo/switchboard.toml");
    let (cfg, _) = Config::load(&config).unwrap_or_else(|d| panic!("{d}"));
    let (k, _) = Knowledge::load(&cfg).unwrap_or_else(|d| panic!("{d}"));
    let mut raws: Vec<(String, Vec<u8>)> = fixtures()
        .into_iter()
        .map(|(name, path)| {
            let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, raw)
        })
        .collect();
    let [scored, without, aside] = compare_ahead(&k, &raws);
    assert!(scored >= 10 && without >= 5, "{scored} {without} {aside}");

    // A first message about an invoice is routed by a rule; a follow-up
    // (answering one of our Message-IDs) falls through to the FAQ.
    let s = crate::common::Setup::with(
        crate::common::BASE_CONFIG,
        &format!(
            "{}\n[[rule]]\nname = \"new-invoices\"\nwhen = {{ follow_up = false, subject = {{ contains = [\"invoice\"] }} }}\nroute = \"billing\"\n\n[[rule]]\nname = \"answer\"\nwhen = {{ faq_confident = true }}\nreply = \"faq\"\n",
            crate::common::BASE_RULES
        ),
    );
    let k = s.knowledge();
    raws.clear();
    for (i, (subject, refs)) in [
        ("Invoice and opening hours", ""),
        (
            "Invoice: when are you open?",
            "In-Reply-To: <r1@shop.example>\r\n",
        ),
        ("When are you open on Saturday?", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let raw = format!(
            "From: Ann <ann@customer.example>\r\nTo: support@shop.example\r\nSubject: {subject}\r\n{refs}Message-ID: <m{i}@customer.example>\r\n\r\nWhat are your opening hours on Saturday?\r\n"
        );
        raws.push((format!("case {i}"), raw.into_bytes()));
    }
    let [scored, without, aside] = compare_ahead(&k, &raws);
    assert_eq!([scored, without, aside], [2, 1, 1]);
}

/// Compares `classify::ahead` with scoring the FAQ when the rules need it
/// (as things are, or for a follow-up) and then `classify_with`, and the
/// rules' outcome with running every rule afresh, for each
/// message; counts the messages whose classification holds the FAQ
/// result, those decided without it, and those with one kept aside.
fn compare_ahead(k: &Knowledge, raws: &[(String, Vec<u8>)]) -> [usize; 3] {
    use switchboard::classify::{self, Context};
    fn json<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap_or_else(|e| panic!("{e}"))
    }
    let mut counts = [0; 3];
    for (name, raw) in raws {
        let Some(m) = dry_run(raw, k).0 else { continue };
        let guard = classify::loop_guard::inspect(&m, &k.policy.our_addresses);
        let answers = classify::answers_us(&m, &k.policy.domain, &k.policy.reply.ticket_prefix);
        let ctx = Context {
            follow_up: answers,
            ..Context::default()
        };
        let mut f = classify::facts(&m, &Default::default(), &guard, &ctx);
        let mut needed = !classify::rules::decided_without_faq(&k.rules, &f);
        if !needed && !answers {
            f.follow_up = true;
            needed = !classify::rules::decided_without_faq(&k.rules, &f);
        }
        let faq = needed.then(|| {
            k.faq
                .query_question(&classify::question::Question::from_message(&m))
        });
        let (c, faq_in_c) = classify::classify_with(&m, k, &Context::default(), faq.as_ref());
        let a = classify::ahead(&m, k);
        assert_eq!(json(&a.classification), json(&c), "{name}: classification");
        assert_eq!(
            a.faq_in_classification, faq_in_c,
            "{name}: FAQ in the classification"
        );
        let kept = faq.filter(|_| !faq_in_c);
        assert_eq!(a.faq_aside, kept, "{name}: FAQ kept aside");
        // The rules' outcome, reusing what was judged before the FAQ, is
        // what running every rule on the final facts gives.
        let ctx = Context {
            follow_up: c.follow_up,
            ..Context::default()
        };
        let f = classify::facts(&m, &c.faq, &c.guard, &ctx);
        assert_eq!(
            json(&classify::rules::run(&k.rules, &f)),
            json(&c.rules),
            "{name}: rules"
        );
        // Classifying again in another context (the store knows the
        // conversation, or not), reusing what the conditions gave ahead,
        // is classifying afresh in that context.
        let scored = if a.faq_in_classification {
            Some(&a.classification.faq)
        } else {
            a.faq_aside.as_ref()
        };
        for follow_up in [false, true] {
            let ctx = Context {
                follow_up,
                ..Context::default()
            };
            assert_eq!(
                json(&classify::classify_again(&m, k, &ctx, scored, &a.held)),
                json(&classify::classify_scored(&m, k, &ctx, scored)),
                "{name}: classified again, follow-up {follow_up}"
            );
        }
        counts[0] += usize::from(faq_in_c);
        counts[1] += usize::from(!faq_in_c);
        counts[2] += usize::from(kept.is_some());
    }
    counts
}
