//! What the running daemon knows about itself: per-mailbox connection
//! state, last successful check, backlog and last error; reloads. It feeds
//! the Prometheus metrics, systemd's `STATUS=` line and the status file
//! read by `switchboard status`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::util::now_ms;

/// One mailbox as seen by its task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MailboxHealth {
    pub connected: bool,
    /// Connected at least once since start.
    pub ever_connected: bool,
    /// Last time the mailbox was checked successfully (ms).
    pub last_check: Option<i64>,
    /// Messages waiting at the last check.
    pub backlog: u64,
    pub handled: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// This instance holds the mailbox's lease (with several instances on
    /// one store, the others work the mailboxes it does not hold).
    #[serde(default = "yes")]
    pub held: bool,
    /// Since when this instance holds it (ms).
    #[serde(default)]
    pub held_since: Option<i64>,
}

fn yes() -> bool {
    true
}

/// The last reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReloadHealth {
    pub at: i64,
    pub ok: bool,
    /// Problems of a failed reload (`path:line:col: message`).
    pub problems: Vec<String>,
}

/// The whole picture, as written to the status file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub pid: u32,
    pub version: String,
    pub started: i64,
    pub updated: i64,
    pub mailboxes: BTreeMap<String, MailboxHealth>,
    pub replies_sent: u64,
    pub last_reload: Option<ReloadHealth>,
    /// Set when the daemon stopped (ms).
    #[serde(default)]
    pub stopped: Option<i64>,
    /// This instance's name among the instances sharing the store.
    #[serde(default)]
    pub instance: String,
    /// The first round of lease claims is done (until then, which
    /// mailboxes this instance works is not known).
    #[serde(default)]
    pub leases_settled: bool,
}

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<Snapshot>>,
    /// Where the status file goes (None: nowhere).
    pub file: Option<PathBuf>,
}

impl Health {
    pub fn new(mailboxes: impl IntoIterator<Item = String>, file: Option<PathBuf>) -> Health {
        let snap = Snapshot {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            started: now_ms(),
            updated: now_ms(),
            mailboxes: mailboxes
                .into_iter()
                .map(|m| (m, MailboxHealth::default()))
                .collect(),
            ..Default::default()
        };
        for m in snap.mailboxes.keys() {
            metrics::gauge!("switchboard_mailbox_connected", "mailbox" => m.clone()).set(0.0);
        }
        Health {
            inner: Arc::new(Mutex::new(snap)),
            file,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.updated = now_ms();
        f(&mut g)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.with(|s| s.clone())
    }

    pub fn connected(&self, mailbox: &str) {
        self.with(|s| {
            let m = s.mailboxes.entry(mailbox.into()).or_default();
            if m.ever_connected && !m.connected {
                m.reconnects += 1;
                metrics::counter!("switchboard_imap_reconnects_total", "mailbox" => mailbox.to_string())
                    .increment(1);
            }
            m.connected = true;
            m.ever_connected = true;
        });
        metrics::gauge!("switchboard_mailbox_connected", "mailbox" => mailbox.to_string()).set(1.0);
    }

    /// A connection or processing failure (`kind` as in metrics).
    pub fn failed(&self, mailbox: &str, kind: &'static str, error: &str, disconnected: bool) {
        self.with(|s| {
            let m = s.mailboxes.entry(mailbox.into()).or_default();
            if disconnected {
                m.connected = false;
            }
            m.last_error = Some(error.to_string());
            m.last_error_at = Some(now_ms());
        });
        metrics::counter!("switchboard_errors_total", "kind" => kind, "mailbox" => mailbox.to_string())
            .increment(1);
        if disconnected {
            metrics::gauge!("switchboard_mailbox_connected", "mailbox" => mailbox.to_string())
                .set(0.0);
        }
    }

    /// A successful check: `backlog` messages were waiting, `handled` filed.
    pub fn checked(&self, mailbox: &str, backlog: u64, handled: u64) {
        let now = now_ms();
        self.with(|s| {
            let m = s.mailboxes.entry(mailbox.into()).or_default();
            m.last_check = Some(now);
            m.backlog = backlog.saturating_sub(handled);
            m.handled += handled;
        });
        metrics::gauge!("switchboard_mailbox_backlog", "mailbox" => mailbox.to_string())
            .set(backlog.saturating_sub(handled) as f64);
        metrics::gauge!("switchboard_mailbox_last_check_timestamp_seconds", "mailbox" => mailbox.to_string())
            .set(now as f64 / 1000.0);
    }

    pub fn reply_sent(&self) {
        self.with(|s| s.replies_sent += 1);
    }

    pub fn reloaded(&self, ok: bool, problems: Vec<String>) {
        self.with(|s| {
            s.last_reload = Some(ReloadHealth {
                at: now_ms(),
                ok,
                problems,
            })
        });
        metrics::gauge!("switchboard_config_last_reload_successful").set(if ok {
            1.0
        } else {
            0.0
        });
        if ok {
            metrics::gauge!("switchboard_config_last_reload_success_timestamp_seconds")
                .set(now_ms() as f64 / 1000.0);
        }
    }

    /// Marks the daemon as stopped (written with the last status file).
    pub fn stopped(&self) {
        self.with(|s| s.stopped = Some(now_ms()));
    }

    /// The first round of lease claims is done; `instance` is this
    /// instance's name.
    pub fn leases_settled(&self, instance: &str) {
        self.with(|s| {
            s.leases_settled = true;
            s.instance = instance.to_string();
        });
    }

    /// The lease on `mailbox` was acquired (`true`) or given up.
    pub fn lease(&self, mailbox: &str, instance: &str, held: bool) {
        self.with(|s| {
            let m = s.mailboxes.entry(mailbox.into()).or_default();
            m.held = held;
            m.held_since = held.then(now_ms);
            if !held {
                m.connected = false;
            }
        });
        metrics::gauge!("switchboard_mailbox_lease_held", "mailbox" => mailbox.to_string(), "instance" => instance.to_string())
            .set(if held { 1.0 } else { 0.0 });
        if !held {
            metrics::gauge!("switchboard_mailbox_connected", "mailbox" => mailbox.to_string())
                .set(0.0);
            metrics::gauge!("switchboard_mailbox_backlog", "mailbox" => mailbox.to_string())
                .set(0.0);
        }
    }

    /// Whether every mailbox this instance holds has connected at least
    /// once.
    pub fn all_connected_once(&self) -> bool {
        self.with(|s| s.leases_settled && s.mailboxes.values().all(|m| !m.held || m.ever_connected))
    }

    /// One line for systemd's `STATUS=`.
    pub fn status_line(&self) -> String {
        self.with(|s| {
            let total = s.mailboxes.values().filter(|m| m.held).count();
            let elsewhere = s.mailboxes.len() - total;
            let up = s
                .mailboxes
                .values()
                .filter(|m| m.held && m.connected)
                .count();
            let handled: u64 = s.mailboxes.values().map(|m| m.handled).sum();
            let backlog: u64 = s.mailboxes.values().map(|m| m.backlog).sum();
            let mut line = format!(
                "{up}/{total} mailboxes up; {handled} handled, {} auto-replies, backlog {backlog}",
                s.replies_sent
            );
            if elsewhere > 0 {
                line.push_str(&format!("; {elsewhere} held by other instances"));
            }
            let down: Vec<String> = s
                .mailboxes
                .iter()
                .filter(|(_, m)| m.held && !m.connected)
                .map(|(n, m)| match &m.last_error {
                    Some(e) => format!("{n}: {}", crate::util::ellipsize(e, 80)),
                    None => format!("{n}: connecting"),
                })
                .collect();
            if !down.is_empty() {
                line.push_str("; DOWN ");
                line.push_str(&down.join(", "));
            }
            if let Some(r) = &s.last_reload
                && !r.ok
            {
                line.push_str(&format!(
                    "; last reload FAILED ({} problem(s)), running the previous rules",
                    r.problems.len()
                ));
            }
            line
        })
    }

    /// Writes the status file atomically (write + rename).
    pub fn write_file(&self) {
        let Some(path) = &self.file else { return };
        let snap = self.snapshot();
        let Ok(json) = serde_json::to_vec_pretty(&snap) else {
            return;
        };
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("json.{}.{n}.tmp", std::process::id()));
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Sends sd_notify states when running under systemd (`NOTIFY_SOCKET`).
pub fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, states);
    }
}

/// Where the daemon writes its status file: `$STATE_DIRECTORY` (systemd's
/// `StateDirectory=`), else next to the SQLite state, else next to the
/// config file.
pub fn status_path(cfg: &crate::config::Config) -> PathBuf {
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY")
        && let Some(first) = std::env::split_paths(&dirs).next()
        && !first.as_os_str().is_empty()
    {
        return first.join("status.json");
    }
    if let Some(p) = cfg.store.url.strip_prefix("sqlite://")
        && let Some(dir) = std::path::Path::new(p.split('?').next().unwrap_or(p)).parent()
    {
        return dir.join("status.json");
    }
    cfg.path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("status.json")
}
