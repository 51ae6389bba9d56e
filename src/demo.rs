//! `switchboard demo`: the whole pipeline on a bundled mailbox, with no
//! server. The demo mailbox, rules and templates are compiled into the
//! binary and copied into a fresh directory, so the demo runs the same
//! from anywhere and never touches the originals.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use include_dir::{Dir, include_dir};

static DEMO: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/examples/demo");
static RULES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/rules");
static TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// Writes the bundled demo into `root`: `rules/`, `templates/` and
/// `examples/demo/` (config + Maildir). Returns the config path.
pub fn extract(root: &Path) -> std::io::Result<PathBuf> {
    let demo = root.join("examples/demo");
    for (dir, dest) in [
        (&RULES, root.join("rules")),
        (&TEMPLATES, root.join("templates")),
        (&DEMO, demo.clone()),
    ] {
        std::fs::create_dir_all(&dest)?;
        dir.extract(&dest)?;
    }
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(demo.join("Maildir").join(sub))?;
    }
    Ok(demo.join("switchboard.toml"))
}

/// Names of the bundled demo messages, for tests.
pub fn message_count() -> usize {
    DEMO.get_dir("Maildir/new").map_or(0, |d| {
        d.files().filter(|f| !f.path().ends_with(".keep")).count()
    })
}

/// A row of the demo summary.
pub struct Row {
    pub n: usize,
    pub from: String,
    pub subject: String,
    pub decision: String,
    pub why: String,
}

/// Formats the outcome table.
pub fn table(rows: &[Row]) -> String {
    use crate::util::ellipsize;
    let mut out = String::new();
    out.push_str(&format!(
        "{:>3}  {:<26}  {:<34}  {:<28}  {}\n",
        "#", "from", "subject", "decision", "why"
    ));
    out.push_str(&format!("{}\n", "-".repeat(140)));
    for r in rows {
        out.push_str(&format!(
            "{:>3}  {:<26}  {:<34}  {:<28}  {}\n",
            r.n,
            ellipsize(&r.from, 26),
            ellipsize(&r.subject, 34),
            ellipsize(&r.decision, 28),
            ellipsize(&r.why, 60)
        ));
    }
    out
}

/// The knowledge check result in one line.
pub fn describe_knowledge(k: &Arc<crate::knowledge::Knowledge>) -> String {
    format!(
        "{} rules, {} queues, {} FAQ entries, {} templates",
        k.rules.len(),
        k.queues.len(),
        k.faq.entries().len(),
        k.templates.sets.len()
    )
}
