//! The dashboards and alerts in deploy/monitoring/ and the metric list in
//! the README name only metrics the daemon exports: renaming a metric in
//! the code without updating them fails here.

use std::collections::BTreeSet;
use std::path::Path;

/// `switchboard_…` names in a text (histogram series suffixes removed).
fn names_in(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"switchboard_[a-z_]+[a-z]").unwrap_or_else(|e| panic!("{e}"));
    re.find_iter(text)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

/// Metric names used in `metrics::counter!/gauge!/histogram!` in src/.
fn exported() -> BTreeSet<String> {
    fn walk(dir: &Path, re: &regex::Regex, out: &mut BTreeSet<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, re, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.extend(re.captures_iter(&text).map(|c| c[1].to_string()));
            }
        }
    }
    let re =
        regex::Regex::new(r#"metrics::(?:counter|gauge|histogram)!\(\s*"(switchboard_[a-z_]+)""#)
            .unwrap_or_else(|e| panic!("{e}"));
    let mut out = BTreeSet::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &re,
        &mut out,
    );
    out
}

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn dashboards_alerts_and_readme_name_exported_metrics() {
    let exported = exported();
    assert!(
        exported.len() >= 10 && exported.contains("switchboard_messages_total"),
        "the metric scan found too little: {exported:?}"
    );
    for file in [
        "deploy/monitoring/alerts.yml",
        "deploy/monitoring/grafana-dashboard.json",
        "README.md",
    ] {
        let used = names_in(&read(file));
        assert!(!used.is_empty(), "{file} names no metric");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the daemon does not export: {unknown:?}"
        );
    }
    // Every exported metric is documented and on the dashboard.
    for file in ["README.md", "deploy/monitoring/grafana-dashboard.json"] {
        let used = names_in(&read(file));
        let missing: Vec<&String> = exported.difference(&used).collect();
        assert!(missing.is_empty(), "{file} does not show {missing:?}");
    }
}

#[test]
fn dashboard_is_valid_grafana_json() {
    let v: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json"))
            .unwrap_or_else(|e| panic!("grafana-dashboard.json: {e}"));
    let panels = v["panels"].as_array().cloned().unwrap_or_default();
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for p in &panels {
        assert!(
            ids.insert(p["id"].as_i64()),
            "duplicate panel id {}",
            p["id"]
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().unwrap_or_default();
            assert_eq!(
                e.matches('(').count(),
                e.matches(')').count(),
                "unbalanced parentheses in {e}"
            );
        }
    }
}
