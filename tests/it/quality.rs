//! Answer quality on real data: BANKING77's training questions
//! (tests/data/banking77, CC BY 4.0) with 5-fold cross-validation, plus
//! 310 out-of-scope questions, at the default settings: as written, as
//! realistic e-mails (greeting, name line, sign-off, typo, context
//! sentence, vague subject), and with 10 intents left out of the FAQ
//! (in-domain questions it does not cover). Guards the matcher against
//! regressions; the figures are in the README's Answer quality section.

use std::process::Command;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/banking77/train.csv"
);
const OOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/eval/out-of-scope.csv"
);

fn eval(extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["eval", "--json", "--cross-validate", "5"])
        .args(extra)
        .args([DATA, OOS])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
}

fn get(r: &serde_json::Value, k: &str) -> f64 {
    r[k].as_f64().unwrap_or(-1.0)
}

#[test]
fn banking77_clean_questions() {
    let r = eval(&[]);
    assert!(get(&r, "questions") > 10_000.0);
    assert!(
        get(&r, "top1_accuracy") >= 0.905,
        "top-1 {}",
        get(&r, "top1_accuracy")
    );
    assert!(
        get(&r, "precision") >= 0.98,
        "precision {}",
        get(&r, "precision")
    );
    assert!(
        get(&r, "coverage") >= 0.72,
        "coverage {}",
        get(&r, "coverage")
    );
    assert!(
        get(&r, "recommended_coverage") >= 0.68,
        "coverage at 98% precision {}",
        get(&r, "recommended_coverage")
    );
    assert!(get(&r, "out_of_scope_answered") <= 0.02, "{r}");
}

#[test]
fn banking77_as_realistic_emails() {
    let r = eval(&["--realistic"]);
    assert!(
        get(&r, "top1_accuracy") >= 0.88,
        "top-1 {}",
        get(&r, "top1_accuracy")
    );
    assert!(
        get(&r, "precision") >= 0.98,
        "precision {}",
        get(&r, "precision")
    );
    assert!(
        get(&r, "coverage") >= 0.64,
        "coverage {}",
        get(&r, "coverage")
    );
    assert!(
        get(&r, "recommended_coverage") >= 0.60,
        "coverage at 98% precision {}",
        get(&r, "recommended_coverage")
    );
    assert!(get(&r, "out_of_scope_answered") <= 0.02, "{r}");
}

#[test]
fn banking77_with_intents_the_faq_does_not_cover() {
    let r = eval(&["--realistic", "--hold-out-intents", "10"]);
    assert_eq!(r["unsupported"].as_u64().map(|n| n > 1000), Some(true));
    // Today 13%: in-domain questions near a covered intent are the
    // matcher's weak spot; this guards against getting worse.
    assert!(
        get(&r, "unsupported_answered") <= 0.15,
        "unsupported answered {}",
        get(&r, "unsupported_answered")
    );
    assert!(get(&r, "out_of_scope_answered") <= 0.02, "{r}");
}

#[test]
fn faq_import_then_check_and_eval() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path();
    let csv = p.join("history.csv");
    let mut rows = String::from("question,category\n");
    for (q, c) in [
        ("When are you open?", "Opening Hours"),
        ("What are your opening hours", "Opening Hours"),
        ("Are you open on Sunday?", "Opening Hours"),
        ("what time do you close today", "Opening Hours"),
        ("I forgot my password", "password_reset"),
        ("How do I reset my password?", "password_reset"),
        ("The password reset email never came", "password_reset"),
        ("cannot log in, password wrong", "password_reset"),
    ] {
        rows.push_str(&format!("{q},{c}\n"));
    }
    std::fs::write(&csv, rows).unwrap_or_else(|e| panic!("{e}"));
    crate::common::write(
        &p.join("switchboard.toml"),
        "[reply]\nfrom = \"S <s@shop.example>\"\n",
    );
    crate::common::write(
        &p.join("rules/queues.toml"),
        "[[queue]]\nname = \"support\"\nfolder = \"Queues/Support\"\n",
    );
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let out = Command::new(bin)
        .current_dir(p)
        .args([
            "faq",
            "import",
            "--from",
            "history.csv",
            "--label-column",
            "category",
            "--text-column",
            "question",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = std::fs::read_to_string(p.join("rules/faq/imported.toml")).unwrap_or_default();
    assert!(toml.contains("id = \"opening-hours\""), "{toml}");
    assert!(toml.contains("\"Are you open on Sunday?\""), "{toml}");
    assert!(p.join("templates/faq/password-reset.txt.j2").exists());
    // The stubs are valid but empty: check passes and warns about them.
    let out = Command::new(bin)
        .args(["check", "--config"])
        .arg(p.join("switchboard.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("templates/faq/opening-hours.txt.j2:1:1: warning: this template renders to an empty text"), "{err}");
    // A second import does not overwrite without --force.
    let out = Command::new(bin)
        .current_dir(p)
        .args([
            "faq",
            "import",
            "--from",
            "history.csv",
            "--label-column",
            "category",
            "--text-column",
            "question",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    // Evaluate the imported FAQ on labelled questions.
    let labelled = p.join("labelled.csv");
    std::fs::write(&labelled, "text,label\nwhen do you open on saturday,opening-hours\nreset password please,password-reset\nwhat's the weather tomorrow,none\n").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(bin)
        .args(["eval", "--json", "--config"])
        .arg(p.join("switchboard.toml"))
        .arg(&labelled)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r["questions"].as_u64(), Some(3));
    assert_eq!(r["top1_accuracy"].as_f64(), Some(1.0));
}

/// Issue: `faq import` silently reused an existing template of the same
/// name; "none" rows were dropped; `eval` rejected the labels `faq import`
/// had written (card_arrival vs card-arrival); `test DIR` read `.label`
/// sidecar files as messages; and a stale calibration went unnoticed.
#[test]
fn import_calibrate_and_evaluate_like_production() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path();
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let run = |args: &[&str]| {
        Command::new(bin)
            .current_dir(p)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // History: 120 questions of 3 categories plus "NO_NODES" rows (out of
    // scope), taken from BANKING77.
    let data = std::fs::read_to_string(DATA).unwrap_or_default();
    let mut rows = String::from("text,category\n");
    let mut per: std::collections::HashMap<&str, usize> = Default::default();
    for line in data.lines().skip(1) {
        let Some((text, cat)) = line.rsplit_once(',') else {
            continue;
        };
        if ["card_arrival", "exchange_rate", "lost_or_stolen_phone"].contains(&cat) {
            let n = per.entry(cat).or_default();
            if *n < 40 {
                *n += 1;
                rows.push_str(&format!("{text},{cat}\n"));
            }
        }
    }
    for q in [
        "what's the weather in Rome",
        "book me a table for two",
        "who won the match yesterday",
    ] {
        rows.push_str(&format!("{q},NO_NODES\n"));
    }
    crate::common::write(&p.join("history.csv"), &rows);
    crate::common::write(
        &p.join("switchboard.toml"),
        "[reply]\nfrom = \"S <s@shop.example>\"\n",
    );
    crate::common::write(
        &p.join("rules/queues.toml"),
        "[[queue]]\nname = \"support\"\nfolder = \"Queues/Support\"\n",
    );
    // Somebody else's answer already has the name of an imported entry.
    crate::common::write(
        &p.join("templates/faq/exchange-rate.txt.j2"),
        "Our rates are on the website.\n",
    );
    let out = run(&[
        "faq",
        "import",
        "--from",
        "history.csv",
        "--none-label",
        "NO_NODES",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("faq/imported/"), "{stdout}");
    assert!(stdout.contains("cross-validated: top-1"), "{stdout}");
    let toml = std::fs::read_to_string(p.join("rules/faq/imported.toml")).unwrap_or_default();
    assert!(
        toml.contains("template = \"faq/imported/exchange-rate\""),
        "{toml}"
    );
    assert!(
        toml.contains("[[out_of_scope]]") && toml.contains("book me a table"),
        "{toml}"
    );
    assert!(
        toml.contains("[calibration]") && toml.contains("fingerprint = "),
        "{toml}"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("templates/faq/exchange-rate.txt.j2")).unwrap_or_default(),
        "Our rates are on the website.\n",
        "the existing template is untouched"
    );
    let out = run(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("calibration was fitted"));

    // The labels as the CSV has them (underscores) are the imported ids.
    let out = run(&["eval", "--json", "history.csv", "--none-label", "NO_NODES"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(r["top1_accuracy"].as_f64().unwrap_or(0.0) > 0.9, "{r}");
    // The answer stubs are empty: production routes, so eval answers nothing.
    assert_eq!(r["coverage"].as_f64(), Some(0.0), "{r}");

    // A changed FAQ makes the calibration stale; a threshold below the
    // calibrated one is a warning.
    let toml = toml.replacen(
        "examples = [\n",
        "examples = [\n  \"a brand new example\",\n",
        1,
    );
    std::fs::write(p.join("rules/faq/imported.toml"), &toml).unwrap_or_else(|e| panic!("{e}"));
    crate::common::write(
        &p.join("switchboard.toml"),
        "[reply]\nfrom = \"S <s@shop.example>\"\n[faq]\nthreshold = 0.1\n",
    );
    let out = run(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the FAQ changed since this calibration was fitted"),
        "{err}"
    );
    assert!(
        err.contains("switchboard.toml:4:13: warning: [faq] threshold = 0.10 is below"),
        "{err}"
    );

    // Realistic e-mails with label sidecars: `test` reads only the mails.
    let out = run(&[
        "faq",
        "emails",
        "--from",
        "history.csv",
        "--out",
        "mails",
        "--limit",
        "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(p.join("mails/000000.eml.label").exists());
    let out = run(&["test", "--json", "mails"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    let out = run(&["eval", "--json", "mails"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
