//! Operations against real Dovecot and Postfix: the sd_notify protocol
//! (READY, STATUS, WATCHDOG, RELOADING + MONOTONIC_USEC, STOPPING),
//! Prometheus metrics, `switchboard status`, and reloads by SIGHUP and by
//! watching the rules directory.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::mailserver::{Client, Daemon, Servers, customer_mail, smtp_send, wait_for};

const SUPPORT: &str = "support@example.test";
const LONG: Duration = Duration::from_secs(60);

/// Collects sd_notify datagrams in the background.
struct NotifySocket {
    messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let sock = UnixDatagram::bind(path).unwrap_or_else(|e| panic!("bind: {e}"));
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let m = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Ok(mut g) = m.lock() {
                    g.push(text);
                }
            }
        });
        NotifySocket { messages }
    }

    fn all(&self) -> Vec<String> {
        self.messages.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Index of the first message after `from` containing `needle`.
    fn find(&self, from: usize, needle: &str) -> Option<usize> {
        self.all()
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, m)| m.lines().any(|l| l == needle || l.starts_with(needle)))
            .map(|(i, _)| i)
    }

    async fn wait(&self, from: usize, needle: &str) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = self.find(from, needle) {
                return i;
            }
            assert!(
                start.elapsed() < LONG,
                "no {needle:?} after #{from} in {:#?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

fn status(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["status", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_metrics_status_and_reloads() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config(dir.path(), "");
    let port = free_port();
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(
        &config,
        text.replace(
            "[daemon]\n",
            &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\nwatch = true\n"),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let (code, out) = status(&config);
    assert_eq!(code, 3, "not running yet: {out}");

    let sock_path = dir.path().join("notify.sock");
    let notes = NotifySocket::bind(&sock_path);
    let sock = sock_path.display().to_string();
    let mut daemon = Daemon::spawn_with(
        &config,
        &[
            ("NOTIFY_SOCKET", &sock),
            ("WATCHDOG_USEC", "1000000"),
            ("SWITCHBOARD_INSTANCE", "ops-node"),
        ],
    );

    // READY=1 once the mailbox is connected, with a STATUS= line.
    let ready = notes.wait(0, "READY=1").await;
    let msgs = notes.all();
    assert!(
        msgs[ready].contains("STATUS=1/1 mailboxes up"),
        "{msgs:#?}\n{}",
        daemon.log_text()
    );
    // Watchdog pings at half of WATCHDOG_USEC.
    let w = notes.wait(0, "WATCHDOG=1").await;
    notes.wait(w + 1, "WATCHDOG=1").await;

    // Mail flows; metrics and status show it.
    let q = customer_mail(
        "alice@customer.test",
        SUPPORT,
        "Opening hours?",
        "What are your opening hours?",
        "ops1@customer.test",
        "",
    );
    smtp_send(srv.smtp_port, "alice@customer.test", SUPPORT, &q).await;
    wait_for(LONG, "the reply", || {
        let p = srv.imap_port;
        async move { Client::login(p, SUPPORT).await.count("Answered").await == 1 }
    })
    .await;
    let m = metrics(port).await;
    for needle in [
        "switchboard_messages_total{mailbox=\"support\",decision=\"reply\"} 1",
        "switchboard_auto_replies_sent_total{template=\"hours\"} 1",
        "switchboard_mailbox_connected{mailbox=\"support\"} 1",
        "switchboard_mailbox_last_check_timestamp_seconds{mailbox=\"support\"}",
        "switchboard_classify_seconds_bucket",
        "switchboard_config_last_reload_successful 1",
        "switchboard_mailbox_lease_held{mailbox=\"support\",instance=\"ops-node\"} 1",
        "switchboard_lease_changes_total{mailbox=\"support\",change=\"acquired\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    wait_for(LONG, "a fresh status file", || {
        let c = config.clone();
        async move { status(&c).1.contains("auto-replies sent since start: 1") }
    })
    .await;
    let (code, out) = status(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("support") && out.contains("connected"),
        "{out}"
    );
    assert!(!out.contains("secret"), "{out}");
    // The lease table: this instance holds the mailbox.
    let lease = out
        .lines()
        .skip_while(|l| !l.starts_with("LEASE"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        lease.starts_with("support") && lease.contains("ops-node (pid ") && lease.contains("in "),
        "{out}"
    );
    assert!(out.contains("instances: ops-node (pid "), "{out}");

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    let before = notes.all().len();
    daemon.hup();
    let r = notes.wait(before, "RELOADING=1").await;
    assert!(
        notes.all()[r].contains("MONOTONIC_USEC="),
        "{:#?}",
        notes.all()
    );
    notes.wait(r, "READY=1").await;

    // A broken edit picked up by the file watch: old rules kept, the
    // failure visible in metrics, STATUS= and `switchboard status`.
    let rules = dir.path().join("rules/rules.toml");
    let good = std::fs::read_to_string(&rules).unwrap_or_default();
    let before = notes.all().len();
    std::fs::write(&rules, format!("{good}\n[[rule]]\nname = \"x\"\nwhen = {{ subject = {{ regex = '(' }} }}\nroute = \"support\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = notes.wait(before, "RELOADING=1").await;
    let ready = notes.wait(r, "READY=1").await;
    assert!(
        notes.all()[ready].contains("last reload FAILED"),
        "{:#?}",
        notes.all()
    );
    assert!(
        daemon.log_text().contains("rules/rules.toml:"),
        "{}",
        daemon.log_text()
    );
    assert!(
        metrics(port)
            .await
            .contains("switchboard_config_last_reload_successful 0")
    );
    wait_for(LONG, "the failed reload in status", || {
        let c = config.clone();
        async move { status(&c).1.contains("LAST RELOAD FAILED") }
    })
    .await;
    let (code, out) = status(&config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("invalid regex"), "{out}");

    // The old rules still answer.
    let q2 = customer_mail(
        "bob@customer.test",
        SUPPORT,
        "Opening hours?",
        "What are your opening hours?",
        "ops2@customer.test",
        "",
    );
    smtp_send(srv.smtp_port, "bob@customer.test", SUPPORT, &q2).await;
    wait_for(LONG, "the second reply", || {
        let p = srv.imap_port;
        async move { Client::login(p, SUPPORT).await.count("Answered").await == 2 }
    })
    .await;

    // Fixing the file reloads again, successfully.
    let before = notes.all().len();
    std::fs::write(&rules, &good).unwrap_or_else(|e| panic!("{e}"));
    let r = notes.wait(before, "RELOADING=1").await;
    let ready = notes.wait(r, "READY=1").await;
    assert!(!notes.all()[ready].contains("FAILED"), "{:#?}", notes.all());

    // SIGTERM: STOPPING=1 and a clean exit.
    let before = notes.all().len();
    let (st, _) = daemon.terminate();
    assert!(st.success(), "{}", daemon.log_text());
    assert!(
        notes.find(before, "STOPPING=1").is_some(),
        "{:#?}",
        notes.all()
    );
}

/// A second daemon on the same SQLite store is refused, naming the first;
/// once the first has stopped, the store is free again.
#[test]
fn second_daemon_on_one_sqlite_store_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = switchboard::demo::extract(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let mut first = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // The first one holds the lock once it has written its holder line.
    let lock = dir.path().join("examples/demo/state/switchboard.db.lock");
    let start = Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |t| !t.contains("pid=")) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no lock file {}",
            lock.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--once", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = first.kill();
    let _ = first.wait();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another switchboard daemon") && err.contains(&format!("pid={}", first.id())),
        "{err}"
    );
    // The kernel released the lock with the first process.
    let again = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--once", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
