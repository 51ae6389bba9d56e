//! Answer quality on real data: 5-fold cross-validation on BANKING77
//! (../shared/data/banking77/train.csv) plus out-of-scope questions, at the
//! default thresholds. Guards the matcher against regressions.

use std::path::Path;
use std::process::Command;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/banking77/train.csv"
);
const OOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/eval/out-of-scope.csv"
);

#[test]
fn banking77_cross_validation_meets_the_targets() {
    assert!(
        Path::new(DATA).exists(),
        "{DATA} is missing (the shared data folder must sit beside the repository)"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["eval", "--json", "--cross-validate", "5", DATA, OOS])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let get = |k: &str| r[k].as_f64().unwrap_or(-1.0);
    assert!(get("questions") > 10_000.0);
    assert!(
        get("top1_accuracy") >= 0.88,
        "top-1 accuracy {}",
        get("top1_accuracy")
    );
    assert!(get("precision") >= 0.98, "precision {}", get("precision"));
    assert!(get("coverage") >= 0.60, "coverage {}", get("coverage"));
    assert!(
        get("none_answered") <= 0.02,
        "out-of-scope answered {}",
        get("none_answered")
    );
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
