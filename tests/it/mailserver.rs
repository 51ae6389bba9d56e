//! Real Dovecot + Postfix for the daemon tests (tests/harness/mailservers.sh),
//! a small IMAP client for assertions, SMTP injection, and the switchboard
//! binary as a child process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/harness/mailservers.sh");

/// A private Dovecot + Postfix pair on loopback ports, stopped on drop.
pub struct Servers {
    pub dir: PathBuf,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub smtp_port: u16,
    pub maildir_root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Servers {
    pub fn start() -> Servers {
        Servers::start_with(&[])
    }

    /// Starts the servers with these IMAP users (none: the default set).
    pub fn start_with(users: &[&str]) -> Servers {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::Builder::new()
            .prefix("sb-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755));
        let dir = tmp.path().to_path_buf();
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .arg(&dir)
            .args(users)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        assert!(
            out.status.success(),
            "mail servers did not start (run scripts/install-test-deps.sh first):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env: HashMap<String, String> = std::fs::read_to_string(dir.join("env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            })
            .collect();
        let port = |k: &str| -> u16 {
            env.get(k)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} missing in env"))
        };
        Servers {
            imap_port: port("IMAP_PORT"),
            imaps_port: port("IMAPS_PORT"),
            smtp_port: port("SMTP_PORT"),
            maildir_root: env
                .get("MAILDIR_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("mail")),
            dir,
            _tmp: tmp,
        }
    }

    pub fn script(&self, cmd: &str) {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg(cmd)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "mailservers.sh {cmd} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs doveadm against this instance.
    pub fn doveadm(&self, args: &[&str]) -> String {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("doveadm: {e}"));
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until Postfix has delivered everything it queued.
    pub fn wait_postfix_queue_empty(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let out = Command::new("postqueue")
                .arg("-c")
                .arg(self.dir.join("postfix"))
                .arg("-p")
                .stdin(Stdio::null())
                .output();
            let text = out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if text.contains("Mail queue is empty") {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "postfix queue not empty:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Files in a user's folder on disk (for users that cannot log in).
    pub fn maildir_files(&self, user: &str, folder: &str) -> Vec<PathBuf> {
        let (local, domain) = user.split_once('@').unwrap_or((user, ""));
        let base = self.maildir_root.join(domain).join(local);
        let base = if folder == "INBOX" {
            base
        } else {
            base.join(folder)
        };
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(base.join(sub)) {
                v.extend(rd.flatten().map(|e| e.path()));
            }
        }
        v
    }

    /// A `[[mailbox]]` block for `user` over plaintext IMAP; `settings`
    /// may add or override keys (later keys are written instead of the defaults).
    pub fn mailbox(&self, name: &str, user: &str, settings: &[(&str, &str)]) -> String {
        let mut keys: Vec<(String, String)> = vec![
            ("name".into(), format!("{name:?}")),
            ("kind".into(), "\"imap\"".into()),
            ("host".into(), "\"127.0.0.1\"".into()),
            ("port".into(), self.imap_port.to_string()),
            ("tls".into(), "\"none\"".into()),
            ("username".into(), format!("{user:?}")),
            ("password_file".into(), "\"pw\"".into()),
            ("poll_interval".into(), "\"300s\"".into()),
            ("timeout".into(), "\"10s\"".into()),
        ];
        for (k, v) in settings {
            match keys.iter_mut().find(|(x, _)| x == k) {
                Some(slot) => slot.1 = (*v).to_string(),
                None => keys.push(((*k).to_string(), (*v).to_string())),
            }
        }
        let mut out = String::from("\n[[mailbox]]\n");
        for (k, v) in keys {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    }

    /// Writes switchboard.toml (one support mailbox with `mailbox_extra`
    /// keys) and the knowledge used by the daemon tests.
    pub fn write_config(&self, dir: &Path, mailbox_extra: &str) -> PathBuf {
        let mut settings = Vec::new();
        for line in mailbox_extra.lines() {
            if let Some((k, v)) = line.split_once('=') {
                settings.push((k.trim(), v.trim()));
            }
        }
        let mailboxes = self.mailbox("support", "support@example.test", &settings);
        self.write_config_with(dir, &mailboxes, "")
    }

    /// Writes switchboard.toml with the given mailbox blocks and extra
    /// top-level settings.
    pub fn write_config_with(&self, dir: &Path, mailboxes: &str, top: &str) -> PathBuf {
        let w = |p: &str, t: &str| crate::common::write(&dir.join(p), t);
        w("pw", "secret\n");
        w(
            "rules/rules.toml",
            r#"
[[queue]]
name = "support"
folder = "Queues/Support"

[[queue]]
name = "complaints"
folder = "Queues/Complaints"

[[rule]]
name = "automatic"
when = { auto_generated = true }
ignore = "automatic message"

[[rule]]
name = "complaints"
when.any = [ { subject = { contains = ["complaint", "damaged"] } }, { body = { contains = ["complaint", "arrived damaged"] } } ]
route = "complaints"

[[rule]]
name = "opening-hours"
when = { subject = { contains = "opening hours" } }
reply = "hours"
flag = ["hours"]
"#,
        );
        w(
            "templates/hours.txt.j2",
            "{% if customer.name %}Hello {{ customer.name }},{% else %}Hello,{% endif %}\n\nwe are open Monday to Friday, 9:00 to 17:00.\nYour reference: {{ ticket }}\n\n{{ company.name }}\n",
        );
        let cfg = format!(
            r#"
{top}
domain = "example.test"
our_addresses = ["support@example.test", "billing@example.test"]
default_queue = "support"

[company]
name = "Example Shop"

[reply]
from = "Example Shop Support <support@example.test>"

[store]
url = "sqlite://state.db"

[limits]
# Many test customers share one domain; the per-domain share of the
# breaker has its own tests.
per_domain_per_hour = 10000

[daemon]
retry_initial = "1s"
retry_max = "3s"

[outbound]
kind = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
timeout = "10s"
{mailboxes}
"#,
            smtp = self.smtp_port,
        );
        w("switchboard.toml", &cfg);
        dir.join("switchboard.toml")
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

/// One message in a folder.
#[derive(Debug, Clone)]
pub struct Msg {
    pub flags: Vec<String>,
    pub raw: String,
}

impl Msg {
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or("");
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// An IMAP client for assertions.
pub struct Client {
    session: async_imap::Session<tokio::net::TcpStream>,
}

impl Client {
    pub async fn login(port: u16, user: &str) -> Client {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let mut client = async_imap::Client::new(tcp);
        let _ = client.read_response().await;
        let session = client
            .login(user, "secret")
            .await
            .unwrap_or_else(|(e, _)| panic!("login {user}: {e}"));
        Client { session }
    }

    /// All messages of a folder (empty when the folder does not exist).
    pub async fn messages(&mut self, folder: &str) -> Vec<Msg> {
        let Ok(mb) = self.session.examine(folder).await else {
            return Vec::new();
        };
        if mb.exists == 0 {
            return Vec::new();
        }
        let fetches: Vec<async_imap::types::Fetch> = match self
            .session
            .uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])")
            .await
        {
            Ok(s) => s.try_collect().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let msgs = fetches
            .iter()
            .map(|f| Msg {
                flags: f.flags().map(|fl| format!("{fl:?}")).collect(),
                raw: String::from_utf8_lossy(f.body().unwrap_or_default()).into_owned(),
            })
            .collect();
        // Leave the folder (read-only, so nothing is expunged): STATUS on a
        // selected folder may report the session's stale view.
        let _ = self.session.close().await;
        msgs
    }

    pub async fn count(&mut self, folder: &str) -> usize {
        match self.session.status(folder, "(MESSAGES)").await {
            Ok(m) => m.exists as usize,
            Err(_) => 0,
        }
    }

    /// Appends a message, creating the folder when it is missing.
    pub async fn append(&mut self, folder: &str, raw: &[u8]) {
        let _ = self.session.create(folder).await;
        self.session
            .append(folder, None, None, raw)
            .await
            .unwrap_or_else(|e| panic!("append: {e}"));
    }

    pub async fn folders(&mut self) -> Vec<String> {
        let names: Vec<async_imap::types::Name> = match self.session.list(Some(""), Some("*")).await
        {
            Ok(s) => s.try_collect().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        names.iter().map(|n| n.name().to_string()).collect()
    }
}

/// Sends a raw message over SMTP.
pub async fn smtp_send(port: u16, from: &str, to: &str, raw: &[u8]) {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build();
    let env = lettre::address::Envelope::new(
        from.parse().ok(),
        vec![to.parse().unwrap_or_else(|e| panic!("{to}: {e}"))],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    t.send_raw(&env, raw)
        .await
        .unwrap_or_else(|e| panic!("smtp send: {e}"));
}

/// A customer message.
pub fn customer_mail(
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
    id: &str,
    extra: &str,
) -> Vec<u8> {
    format!(
        "From: Alice Customer <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The switchboard binary running as a daemon.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(config: &Path) -> Daemon {
        Daemon::spawn_with(config, &[])
    }

    /// Spawns with extra environment variables.
    pub fn spawn_with(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = config.with_file_name(format!("daemon-{}.log", rand_suffix()));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = file.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        Daemon { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGTERM and wait; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        self.signal("-TERM");
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (st, start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(30) {
                self.signal("-KILL");
                panic!(
                    "daemon did not stop within 30 s after SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    pub fn hup(&self) {
        self.signal("-HUP");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-KILL");
            let _ = self.child.wait();
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs `switchboard run --once`.
pub fn run_once(config: &Path) -> std::process::Output {
    run_once_with(config, "info")
}

/// Runs `switchboard run --once` with a `RUST_LOG` setting.
pub fn run_once_with(config: &Path, rust_log: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("run")
        .arg("--once")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `f` until it returns true or the timeout passes.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
