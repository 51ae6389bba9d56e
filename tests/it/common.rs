//! Shared fixtures: small knowledge sets written into temporary dirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchboard::config::Config;
use switchboard::knowledge::Knowledge;

/// A directory with a config, rules and templates.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

pub const BASE_CONFIG: &str = r#"
domain = "shop.example"
our_addresses = ["support@shop.example"]
default_queue = "support"

[company]
name = "Shop"

[reply]
from = "Shop Support <support@shop.example>"

[store]
url = "sqlite://state.db"

[outbound]
kind = "file"
dir = "outbox"

[[mailbox]]
name = "support"
kind = "maildir"
path = "Maildir"
"#;

pub const BASE_RULES: &str = r#"
[[queue]]
name = "support"
folder = "Queues/Support"

[[queue]]
name = "billing"
folder = "Queues/Billing"
"#;

pub const FAQ: &str = r#"
[[entry]]
id = "opening-hours"
title = "Opening hours"
template = "faq/opening-hours"
keywords = ["opening hours"]
examples = [
  "What are your opening hours?",
  "When are you open?",
  "Are you open on Saturday?",
  "What time does customer service close?",
  "When can I call you?",
]

[[entry]]
id = "password-reset"
title = "Password reset"
template = "faq/password-reset"
keywords = ["forgot password", "reset password"]
examples = [
  "I forgot my password",
  "How do I reset my password?",
  "The password reset link does not work",
  "I cannot log in to my account",
  "Locked out of my account, need a new password",
]
"#;

impl Setup {
    /// A setup with the base config and rules plus `extra_rules`.
    pub fn new(extra_rules: &str) -> Setup {
        Setup::with(BASE_CONFIG, &format!("{BASE_RULES}\n{extra_rules}"))
    }

    pub fn with(config: &str, rules: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let p = dir.path();
        write(&p.join("switchboard.toml"), config);
        write(&p.join("rules/00-rules.toml"), rules);
        write(&p.join("rules/faq/faq.toml"), FAQ);
        write(
            &p.join("templates/faq/opening-hours.txt.j2"),
            "Hello {{ customer.name }}, we are open 9-5. Ref {{ ticket }}.\n{{ company.name }}\n",
        );
        write(
            &p.join("templates/faq/password-reset.txt.j2"),
            "Hello {{ customer.name }}, use the reset link. Ref {{ ticket }}.\n",
        );
        write(
            &p.join("templates/ack.txt.j2"),
            "We got your message {{ ticket }}.\n",
        );
        Setup { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> Config {
        match Config::load(&self.path("switchboard.toml")) {
            Ok((c, _)) => c,
            Err(d) => panic!("config errors:\n{d}"),
        }
    }

    pub fn knowledge(&self) -> Arc<Knowledge> {
        match Knowledge::load(&self.config()) {
            Ok((k, _)) => k,
            Err(d) => panic!("knowledge errors:\n{d}"),
        }
    }
}

pub fn write(path: &Path, text: &str) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A plain customer message with extra headers (CRLF line endings).
pub fn message(extra_headers: &str, subject: &str, body: &str) -> Vec<u8> {
    let mut s = format!(
        "From: Jane Doe <jane@customer.example>\r\nTo: support@shop.example\r\nSubject: {subject}\r\nMessage-ID: <{}@customer.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n",
        subject.len() * 7919 + body.len()
    );
    for h in extra_headers.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str(h.trim_end());
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(&body.replace('\n', "\r\n"));
    s.into_bytes()
}

/// Runs `switchboard ARGS --config CONFIG`: (exit code, stdout + stderr).
pub fn cli_status(config: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// What [`demo_pipeline`] gives: the shared daemon state, the demo's
/// Maildir, its path and the config.
pub type DemoPipeline = (
    switchboard::daemon::Shared,
    switchboard::fetch::maildir::Maildir,
    std::path::PathBuf,
    switchboard::config::Config,
);

/// The demo extracted into `dir`, its knowledge, and a pipeline on the
/// store at `url` (the demo's own SQLite file when `None`).
pub async fn demo_pipeline(dir: &Path, url: Option<&str>) -> DemoPipeline {
    let config = switchboard::demo::extract(dir).unwrap_or_else(|e| panic!("{e}"));
    demo_pipeline_at(&config, url).await
}

/// [`demo_pipeline`] on a demo already extracted (and maybe edited).
pub async fn demo_pipeline_at(config: &Path, url: Option<&str>) -> DemoPipeline {
    let (mut cfg, _) = Config::load(config).unwrap_or_else(|d| panic!("{d}"));
    if let Some(url) = url {
        cfg.store.url = url.to_string();
    }
    let (k, _) = Knowledge::load(&cfg).unwrap_or_else(|d| panic!("{d}"));
    let store = switchboard::record::Store::open(&cfg.store.url)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", cfg.store.url));
    let outbox = switchboard::act::outbox::Outbox::open(&cfg.outbound)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (kt, kr) = tokio::sync::watch::channel(k);
    let (st, sr) = tokio::sync::watch::channel(false);
    // The senders stay alive for the test (a closed channel reads as
    // shutdown).
    std::mem::forget((kt, st));
    let shared = switchboard::daemon::Shared {
        pipeline: switchboard::pipeline::Pipeline {
            store,
            outbox,
            retry_initial: cfg.daemon.retry_initial,
            retry_max: cfg.daemon.retry_max,
            clock: switchboard::pipeline::system_clock(),
        },
        knowledge: kr,
        shutdown: sr,
        max_size: cfg.limits.max_message_size,
        batch_size: 7,
        file_every: switchboard::daemon::FILE_EVERY,
        health: Default::default(),
        sla_check: std::time::Duration::from_secs(30),
    };
    let switchboard::config::MailboxKind::Maildir { path } = &cfg.mailboxes[0].kind else {
        panic!("demo mailbox is a maildir");
    };
    let md = switchboard::fetch::maildir::Maildir::open(path).unwrap_or_else(|e| panic!("{e}"));
    (shared, md, path.clone(), cfg)
}
