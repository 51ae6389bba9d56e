//! The state store on a real PostgreSQL (a private cluster started by
//! tests/harness/postgres.sh): the same decisions as on SQLite, and one
//! store shared by mailboxes working at the same time.

use std::process::{Command, Stdio};

use switchboard::daemon::drain;
use switchboard::pipeline::Outcome;

use crate::common;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/harness/postgres.sh");

/// A private PostgreSQL cluster on a loopback port, stopped on drop.
pub struct Postgres {
    pub url: String,
    dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("sb-pg-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
        let mut pg = Postgres {
            url: String::new(),
            dir,
        };
        pg.script("start");
        let env = std::fs::read_to_string(pg.dir.path().join("pg.env")).unwrap_or_default();
        let url = env
            .lines()
            .find_map(|l| l.strip_prefix("PG_URL="))
            .unwrap_or_else(|| panic!("no PG_URL in pg.env"))
            .to_string();
        pg.url = url;
        pg
    }

    pub fn script(&self, cmd: &str) {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg(cmd)
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        assert!(
            out.status.success(),
            "postgres.sh {cmd} failed (run scripts/install-test-deps.sh first):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output();
    }
}

/// (Message-ID, decision, folder) of each outcome, sorted.
fn summary(outcomes: &[Outcome]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = outcomes
        .iter()
        .map(|o| {
            (
                o.message_id.clone().unwrap_or_default(),
                o.verdict.clone(),
                o.folder.clone().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_store_decides_like_sqlite() {
    let pg = Postgres::start();
    let a = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let b = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (lite, mut lite_md, _, cfg) = common::demo_pipeline(a.path(), None).await;
    assert!(cfg.store.url.starts_with("sqlite:"));
    let (post, mut post_md, _, _) = common::demo_pipeline(b.path(), Some(&pg.url)).await;
    let info = switchboard::daemon::mailbox_info(&cfg.mailboxes[0]);
    let on_sqlite = drain(&mut lite_md, &lite, &info)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let on_postgres = drain(&mut post_md, &post, &info)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(on_postgres.len(), switchboard::demo::message_count());
    assert_eq!(summary(&on_postgres), summary(&on_sqlite));
    let tickets = |o: &[Outcome]| {
        let mut t: Vec<_> = o.iter().filter_map(|o| o.ticket.clone()).collect();
        t.sort();
        t
    };
    assert_eq!(tickets(&on_postgres), tickets(&on_sqlite));
    assert!(post_md.list("INBOX").is_empty());
    // The record is there and a second pass does nothing.
    let again = drain(&mut post_md, &post, &info)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.is_empty(), "second pass on PostgreSQL: {again:?}");
    let events = post
        .pipeline
        .store
        .audit_query(&switchboard::record::AuditQuery::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        events.len() >= on_postgres.len(),
        "{} audit events",
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mailboxes_share_one_postgresql_store() {
    let pg = Postgres::start();
    let a = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let b = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sa, mut ma, _, cfg) = common::demo_pipeline(a.path(), Some(&pg.url)).await;
    let (sb, mut mb, path_b, _) = common::demo_pipeline(b.path(), Some(&pg.url)).await;
    // Mailbox b holds different messages from the same customers: new
    // Message-IDs and one more header line.
    for entry in std::fs::read_dir(path_b.join("new"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let raw = std::fs::read(entry.path()).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&raw).replace("Message-ID: <", "Message-ID: <b-");
        std::fs::write(entry.path(), format!("X-Copy: b\n{text}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let info = switchboard::daemon::mailbox_info(&cfg.mailboxes[0]);
    let (ra, rb) = tokio::join!(drain(&mut ma, &sa, &info), drain(&mut mb, &sb, &info));
    let ra = ra.unwrap_or_else(|e| panic!("{e}"));
    let rb = rb.unwrap_or_else(|e| panic!("{e}"));
    let n = switchboard::demo::message_count();
    assert_eq!((ra.len(), rb.len()), (n, n));
    assert!(ma.list("INBOX").is_empty() && mb.list("INBOX").is_empty());
    // Ticket numbers come from one counter: never the same twice.
    let mut tickets: Vec<String> = ra
        .iter()
        .chain(&rb)
        .filter_map(|o| o.ticket.clone())
        .collect();
    let total = tickets.len();
    tickets.sort();
    tickets.dedup();
    assert_eq!(tickets.len(), total, "a ticket number was handed out twice");
    assert!(total >= n, "only {total} tickets");
    // No customer got the same answer twice although both mailboxes
    // decided at the same time (per-sender limit: one a day).
    let twice: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT recipient, template, COUNT(*) FROM replies GROUP BY recipient, template \
         HAVING COUNT(*) > 1",
    )
    .fetch_all(sa.pipeline.store.pool())
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(twice.is_empty(), "answered twice: {twice:?}");
    let replies = |o: &[Outcome]| o.iter().filter(|o| o.verdict == "reply").count();
    assert!(
        replies(&ra) + replies(&rb) >= 10,
        "too few replies to test anything"
    );
    eprintln!(
        "two mailboxes on one PostgreSQL store: {} + {} replies, {total} tickets",
        replies(&ra),
        replies(&rb)
    );
}

/// Messages in the top level of a Maildir (its inbox).
fn inbox_count(maildir: &std::path::Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|d| {
            std::fs::read_dir(maildir.join(d)).map_or(0, |r| {
                r.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
        })
        .sum()
}

#[test]
fn daemon_keeps_working_through_a_postgresql_restart() {
    use std::time::{Duration, Instant};
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = switchboard::demo::extract(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("url = \"sqlite://state/switchboard.db\""));
    let text = text.replace(
        "url = \"sqlite://state/switchboard.db\"",
        &format!("url = \"{}\"", pg.url),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let maildir = config
        .parent()
        .unwrap_or_else(|| panic!("config dir"))
        .join("Maildir");
    let originals: Vec<Vec<u8>> = std::fs::read_dir(maildir.join("new"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| std::fs::read(e.path()).unwrap_or_default())
        .collect();
    let n = originals.len();
    let log =
        std::fs::File::create(dir.path().join("daemon.log")).unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let wait_empty = |what: &str| {
        let start = Instant::now();
        while inbox_count(&maildir) > 0 {
            if start.elapsed() > Duration::from_secs(60) {
                let left: Vec<_> = ["new", "cur"]
                    .iter()
                    .flat_map(|d| {
                        std::fs::read_dir(maildir.join(d))
                            .into_iter()
                            .flatten()
                            .flatten()
                    })
                    .map(|e| e.path())
                    .collect();
                let log: Vec<String> = daemon_log(dir.path())
                    .lines()
                    .filter(|l| !l.contains(" INFO decided"))
                    .map(str::to_string)
                    .collect();
                panic!("{what}: left {left:?}\n{}", log.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_empty("first round");
    // PostgreSQL crashes and comes back; new mail arrives meanwhile.
    pg.script("restart");
    let id = regex::Regex::new(r"(?im)^message-id:\s*<").unwrap_or_else(|e| panic!("{e}"));
    for (i, raw) in originals.iter().enumerate() {
        let text = id
            .replace_all(&String::from_utf8_lossy(raw), "Message-ID: <r2-")
            .into_owned();
        let name = maildir.join("new").join(format!("1800000000.R2M{i}.test"));
        std::fs::write(&name, format!("X-Round: 2\n{text}")).unwrap_or_else(|e| panic!("{e}"));
    }
    wait_empty("after the PostgreSQL restart");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let status = daemon.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status:?}\n{}", daemon_log(dir.path()));
    // Everything is recorded as done in the store.
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let done: i64 = rt.block_on(async {
        let store = switchboard::record::Store::open(&pg.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM messages GROUP BY state")
                .fetch_all(store.pool())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            rows.iter().all(|r| r.0 == "done"),
            "messages not finished after the restart: {rows:?}"
        );
        rows.iter().map(|r| r.1).sum::<i64>()
    });
    assert_eq!(
        done as usize,
        2 * n,
        "every message recorded as done, none lost in the restart\n{}",
        daemon_log(dir.path())
    );
}

fn daemon_log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}
