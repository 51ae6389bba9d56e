//! `switchboard test`: classify and decide messages without side effects.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use switchboard::decide::{Decision, Verdict};
use switchboard::knowledge::Knowledge;
use switchboard::parse::Message;
use switchboard::pipeline;

use super::ConfigArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// One JSON object per message and line.
    #[arg(long)]
    pub json: bool,
    /// Show all evidence and a preview of the reply.
    #[arg(long)]
    pub explain: bool,
    /// Do not run the `[[lookup]]`s (no requests to the shop's systems):
    /// decide as if no value was found in the messages.
    #[arg(long)]
    pub no_lookups: bool,
    /// .eml files, directories of them, or Maildirs (new/ and cur/).
    #[arg(required = true, value_name = "FILE.eml|DIR|MAILDIR")]
    pub inputs: Vec<PathBuf>,
}

/// Expands inputs into message files, in a stable order.
pub fn message_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_file() {
            out.push(p.clone());
        } else if p.is_dir() {
            let maildir = p.join("new").is_dir() || p.join("cur").is_dir();
            let dirs: Vec<PathBuf> = if maildir {
                vec![p.join("new"), p.join("cur")]
            } else {
                vec![p.clone()]
            };
            let mut files = Vec::new();
            for d in dirs {
                let Ok(rd) = std::fs::read_dir(&d) else {
                    continue;
                };
                files.extend(rd.flatten().map(|e| e.path()).filter(|f| {
                    f.is_file()
                        && !f
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                        && (maildir
                            || f.extension().is_none_or(|e| {
                                !["toml", "md", "json", "label"]
                                    .iter()
                                    .any(|x| e.eq_ignore_ascii_case(x))
                            }))
                }));
            }
            files.sort();
            out.extend(files);
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(out)
}

fn faq_json(d: &Decision) -> serde_json::Value {
    match d.evidence.faq.best() {
        Some(b) => {
            json!({"id": b.id, "score": (b.score * 1000.0).round() / 1000.0, "confident": d.evidence.faq.confident})
        }
        None => serde_json::Value::Null,
    }
}

/// The JSON line of one message.
pub fn json_line(
    file: &Path,
    m: Option<&Message>,
    d: &Decision,
    k: &Knowledge,
) -> serde_json::Value {
    json!({
        "file": file.display().to_string(),
        "message_id": m.and_then(|m| m.message_id.clone()),
        "from": m.and_then(|m| m.from.as_ref().map(|f| f.addr.clone())),
        "subject": m.map(|m| m.subject.clone()),
        "language": m.and_then(|m| m.language.clone()),
        "decision": d.verdict.kind(),
        "rule": d.rule,
        "faq": faq_json(d),
        "template": d.verdict.template(),
        "queue": d.verdict.queue(),
        "folder": pipeline::folder_for(&d.verdict, k, &k.policy.folders),
        "flags": d.flags,
        "reasons": d.reasons,
        "guard": d.evidence.guard.iter().map(|g| g.describe()).collect::<Vec<_>>(),
        "lookups": d.evidence.lookups.results.iter().map(|r| json!({
            "name": r.name,
            "value": r.value,
            "state": r.outcome.describe(),
            "fields": match &r.outcome {
                switchboard::lookup::Outcome::Found { data } => data.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                _ => Vec::new(),
            },
            "source": r.source,
            "cached": r.cached,
            "ms": (r.millis * 100.0).round() / 100.0,
        })).collect::<Vec<_>>(),
    })
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Reply { template, to, .. } => format!("reply {template} → {}", to.addr),
        Verdict::Route { queue } => format!("route → {queue}"),
        Verdict::Escalate { queue } => format!("escalate → {queue}"),
        Verdict::Ignore { reason } => format!("ignore ({reason})"),
        Verdict::Park { reason } => format!("park ({reason})"),
        Verdict::Staff { ticket, by } => format!("a person's answer in {ticket} ({by})"),
    }
}

fn explain(m: Option<&Message>, d: &Decision, k: &Knowledge, lookups_run: bool) -> String {
    let mut s = String::new();
    let ev = &d.evidence;
    if let Some(m) = m {
        s.push_str(&format!(
            "  language: {}\n",
            m.language.as_deref().unwrap_or("unknown")
        ));
        s.push_str(&format!(
            "  cleaned text: {}\n",
            switchboard::util::ellipsize(&m.body, 160)
        ));
        let q = switchboard::classify::question::Question::from_message(m);
        s.push_str("  the question:\n");
        if let Some(subject) = &q.subject {
            s.push_str(&format!(
                "    subject: {}\n",
                switchboard::util::ellipsize(subject, 120)
            ));
        }
        for t in &q.sentences {
            s.push_str(&format!(
                "    sentence: {}\n",
                switchboard::util::ellipsize(t, 120)
            ));
        }
        for (t, why) in &q.dropped {
            s.push_str(&format!(
                "    dropped ({why}): {}\n",
                switchboard::util::ellipsize(t, 80)
            ));
        }
    }
    s.push_str("  rules matched:\n");
    if ev.rules.hits.is_empty() {
        s.push_str("    (none)\n");
    }
    for h in &ev.rules.hits {
        s.push_str(&format!(
            "    {} at {}{}{}\n",
            h.name,
            h.location,
            h.action
                .as_ref()
                .map(|a| format!(" → {a}"))
                .unwrap_or_default(),
            h.skipped
                .as_ref()
                .map(|a| format!(" (skipped: {a})"))
                .unwrap_or_default()
        ));
    }
    s.push_str("  FAQ candidates:\n");
    for c in &ev.faq.candidates {
        s.push_str(&format!("    {:<24} {:.3}\n", c.id, c.score));
    }
    if let Some(e) = &ev.faq.evidence {
        s.push_str(&format!(
            "    scored: {}\n",
            switchboard::util::ellipsize(&e.scored, 140)
        ));
        for t in &e.set_aside {
            s.push_str(&format!(
                "    set aside (resembles no example): {}\n",
                switchboard::util::ellipsize(t, 100)
            ));
        }
        if !e.corrected.is_empty() {
            let fixes: Vec<String> = e
                .corrected
                .iter()
                .map(|(a, b)| format!("{a} → {b}"))
                .collect();
            s.push_str(&format!("    read as: {}\n", fixes.join(", ")));
        }
        s.push_str(&format!(
            "    classifier {:.2}; nearest example {:.2} (this entry's examples typically {:.2}); {} content word(s)\n",
            e.model, e.similarity, e.typical, e.content_words
        ));
    }
    s.push_str(&format!("    → {}\n", ev.faq.reason));
    if !k.lookups.is_empty() {
        s.push_str("  lookups:\n");
        if !lookups_run {
            s.push_str("    not run (--no-lookups)\n");
        } else if ev.lookups.results.is_empty() {
            s.push_str("    none: no value for any lookup in the message (or automatic mail)\n");
        }
        for r in &ev.lookups.results {
            let fields = match &r.outcome {
                switchboard::lookup::Outcome::Found { data } => data
                    .as_object()
                    .map(|o| {
                        format!(
                            " (fields: {})",
                            o.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })
                    .unwrap_or_default(),
                _ => String::new(),
            };
            s.push_str(&format!(
                "    {} {:?} → {}{fields} from {} in {:.1} ms{}\n",
                r.name,
                r.value,
                r.outcome.describe(),
                r.source,
                r.millis,
                if r.cached { " (cached)" } else { "" }
            ));
        }
    }
    s.push_str("  loop guard:\n");
    if ev.guard.is_empty() {
        s.push_str("    nothing automatic found\n");
    }
    for g in &ev.guard {
        s.push_str(&format!("    {}\n", g.describe()));
    }
    s.push_str("  reasons:\n");
    for r in &d.reasons {
        s.push_str(&format!("    - {r}\n"));
    }
    if let (Some(m), Verdict::Reply { .. }) = (m, &d.verdict) {
        match pipeline::build_reply(m, d, k, Some("SB-0000")) {
            Ok((r, out)) => {
                s.push_str(&format!(
                    "  reply preview (To: {}, Subject: {}):\n",
                    out.to, out.subject
                ));
                for line in r.text.lines() {
                    s.push_str(&format!("    | {line}\n"));
                }
            }
            Err(e) => s.push_str(&format!("  reply cannot be rendered: {e}\n")),
        }
    }
    s
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let Some((_cfg, k, warnings)) = super::load_all(&a.config.path()) else {
        return Ok(ExitCode::from(2));
    };
    eprint!("{warnings}");
    let files = match message_files(&a.inputs) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for file in files {
        // The daemon's size limit applies here too: a message over
        // `max_message_size` is judged from its beginning, as in `run`.
        let max = k.policy.limits.max_message_size;
        let (raw, size) = match switchboard::fetch::maildir::read_message_file(&file, max) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", file.display());
                continue;
            }
        };
        let (m, d) = if a.no_lookups {
            pipeline::dry_run_sized(&raw, Some(size), &k)
        } else {
            pipeline::dry_run_looked_up(&raw, Some(size), &k).await
        };
        if a.json {
            let mut line = json_line(&file, m.as_ref(), &d, &k);
            if a.explain {
                line["evidence"] = serde_json::to_value(&d.evidence).unwrap_or_default();
            }
            println!("{line}");
        } else {
            println!("{}: {}", file.display(), verdict_text(&d.verdict));
            if a.explain {
                print!("{}", explain(m.as_ref(), &d, &k, !a.no_lookups));
            } else if let Some(r) = d.reasons.last() {
                println!("  why: {r}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
