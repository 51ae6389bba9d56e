//! Several instances on one store: mailbox leases, fencing tokens,
//! fail-over and hand-over, on SQLite and on a real PostgreSQL; and a
//! chaos run of three daemons over six mailboxes on real Dovecot, Postfix
//! and PostgreSQL.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::record::lease::{Fence, Instance};
use switchboard::record::{AuditEvent, Commit, CounterWrite, Store, StoreError};

use crate::mailserver::{Daemon, Servers, customer_mail, smtp_send};
use crate::postgres::Postgres;

fn instance(name: &str) -> Instance {
    Instance {
        id: format!("{name}/1/0"),
        name: name.into(),
        host: "elsewhere".into(),
        pid: 1,
    }
}

/// A write for the mailbox: one counter, as a batch commit writes it.
fn commit(n: i64) -> Commit {
    Commit {
        counters: vec![CounterWrite {
            name: format!("test-{n}"),
            expected: None,
            value: n,
        }],
        ..Commit::default()
    }
}

/// The lease protocol: one holder at a time, expiry, a new token for
/// every new holder, and writes of a former holder refused.
async fn lease_protocol(url: &str) {
    let store = Store::open(url).await.unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (instance("a"), instance("b"));
    store
        .register_instance(&a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .register_instance(&b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.heartbeat(&a, 60_000).await.ok(), Some(2));

    let ta = store
        .claim_lease("support", &a.id, 300)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a free mailbox is claimed"));
    assert_eq!(
        store.claim_lease("support", &b.id, 300).await.ok(),
        Some(None),
        "a held lease cannot be claimed"
    );
    let fa = Fence {
        mailbox: "support".into(),
        holder: a.id.clone(),
        token: ta,
    };
    let as_a = store.fenced(fa.clone());
    as_a.commit(&commit(1), 0)
        .await
        .unwrap_or_else(|e| panic!("the holder writes: {e}"));
    assert_eq!(store.renew_lease(&fa, 300).await.ok(), Some(true));

    // A stops renewing (paused); the lease expires and B takes it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let tb = store
        .claim_lease("support", &b.id, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("an expired lease is claimed"));
    assert!(tb > ta, "a new holder gets a higher token ({tb} > {ta})");
    // A wakes up: every write is refused, and so is its renewal.
    match as_a.commit(&commit(2), 0).await {
        Err(StoreError::Fenced(m)) => assert_eq!(m, "support"),
        other => panic!("a former holder's commit must be fenced off: {other:?}"),
    }
    assert!(matches!(
        as_a.audit(&AuditEvent::default()).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        as_a.finish(&["k".to_string()], 0).await,
        Err(StoreError::Fenced(_))
    ));
    assert_eq!(store.renew_lease(&fa, 60_000).await.ok(), Some(false));
    assert_eq!(store.release_lease(&fa).await.ok(), Some(false));
    let fb = Fence {
        mailbox: "support".into(),
        holder: b.id.clone(),
        token: tb,
    };
    store
        .fenced(fb.clone())
        .commit(&commit(3), 0)
        .await
        .unwrap_or_else(|e| panic!("the new holder writes: {e}"));
    // The refused write left nothing behind.
    let counters: Vec<String> = sqlx::query_scalar("SELECT name FROM counters ORDER BY name")
        .fetch_all(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counters, ["test-1", "test-3"]);

    // A clean hand-over: released, then claimable at once.
    assert_eq!(store.release_lease(&fb).await.ok(), Some(true));
    let ta2 = store
        .claim_lease("support", &a.id, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ta2, Some(tb + 1));
    let rows = store.leases().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1);
    assert!(rows[0].live());
    assert_eq!(rows[0].holder_name.as_deref(), Some("a"));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_protocol_on_sqlite() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    lease_protocol(&format!("sqlite://{}/state.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_protocol_on_postgresql() {
    let pg = Postgres::start();
    lease_protocol(&pg.url).await;
}

/// Two instances claiming the same free mailboxes at the same moment:
/// every mailbox gets exactly one holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_on_postgresql_have_one_winner() {
    let pg = Postgres::start();
    let store = Store::open(&pg.url).await.unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = (0..40).map(|i| format!("mb{i}")).collect();
    let mut tasks = Vec::new();
    for who in ["a", "b", "c"] {
        let store = store.clone();
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for m in &names {
                if let Ok(Some(_)) = store.claim_lease(m, who, 60_000).await {
                    won.push(m.clone());
                }
            }
            won
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort();
    assert_eq!(all, {
        let mut n = names.clone();
        n.sort();
        n
    });
}

const MAILBOXES: usize = 6;
/// The chaos run's lease time: short, to keep the test quick (the
/// default is 15 s; `CHAOS_LEASE_TTL=15` measures fail-over with it).
fn chaos_ttl() -> Duration {
    let secs = std::env::var("CHAOS_LEASE_TTL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    Duration::from_secs(secs)
}

/// One kind of customer mail per message number: an answerable question,
/// a quote request (round robin over three people) or a complaint.
fn chaos_mail(mailbox: usize, tag: &str, i: usize) -> (String, String, Vec<u8>) {
    let from = format!("c{mailbox}{tag}{i}@customer.test");
    let id = format!("{tag}{i}.mb{mailbox}@customer.test");
    let (subject, body) = match i % 3 {
        0 => ("What are your opening hours?", "When are you open?"),
        1 => (
            "Request for a quote",
            "Could you send me a quote for 20 chairs?",
        ),
        _ => ("Complaint", "My parcel arrived damaged."),
    };
    let to = format!("s{mailbox}@example.test");
    let raw = customer_mail(&from, &to, subject, body, &id, "");
    (id, from, raw)
}

const CHAOS_RULES: &str = r#"
[[queue]]
name = "support"
folder = "Queues/Support"

[[queue]]
name = "complaints"
folder = "Queues/Complaints"

[[queue]]
name = "sales"
folder = "Queues/Sales"
strategy = "round_robin"

[[rep]]
id = "ann"
folder = "Reps/Ann"
queues = ["sales"]

[[rep]]
id = "ben"
folder = "Reps/Ben"
queues = ["sales"]

[[rep]]
id = "cat"
folder = "Reps/Cat"
queues = ["sales"]

[[rule]]
name = "automatic"
when = { auto_generated = true }
ignore = "automatic message"

[[rule]]
name = "complaints"
when = { body = { contains = "arrived damaged" } }
route = "complaints"

[[rule]]
name = "sales"
when = { subject = { contains = "quote" } }
route = "sales"

[[rule]]
name = "opening-hours"
when = { subject = { contains = "opening hours" } }
reply = "hours"
"#;

/// Message-IDs of the mail files under `dir` (recursively, `cur`/`new`
/// only), with the folder each is in.
fn message_ids(dir: &Path, header: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let prefix = format!("{}:", header.to_ascii_lowercase());
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let parent = p.parent().and_then(|x| x.file_name()).unwrap_or_default();
            if parent != "cur" && parent != "new" {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
            let head = text.split("\r\n\r\n").next().unwrap_or("");
            if let Some(v) = head
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
                .map(|l| {
                    l[prefix.len()..]
                        .trim()
                        .trim_matches(['<', '>'])
                        .to_string()
                })
            {
                out.push((
                    v,
                    p.parent()
                        .and_then(Path::parent)
                        .unwrap_or(&p)
                        .to_path_buf(),
                ));
            }
        }
    }
    out
}

/// Watches the lease table: per mailbox, each stretch of time in which no
/// living instance held it.
struct Monitor {
    stop: Arc<AtomicBool>,
    /// (mailbox, when the gap started, how long it lasted)
    gaps: Arc<Mutex<Vec<(String, Instant, Duration)>>>,
    /// Holder names seen per mailbox, in order.
    holders: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(url: String, alive: Arc<Mutex<HashSet<u32>>>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let gaps = Arc::new(Mutex::new(Vec::new()));
        let holders = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, a, g, h) = (stop.clone(), alive, gaps.clone(), holders.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            rt.block_on(async move {
                let mut store = None;
                let mut since: HashMap<String, Instant> = HashMap::new();
                while !s.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if store.is_none() {
                        store = Store::open(&url).await.ok();
                    }
                    let Some(st) = &store else { continue };
                    let Ok(rows) = st.leases().await else {
                        // PostgreSQL restarting: reconnect.
                        store = None;
                        continue;
                    };
                    let now = Instant::now();
                    let alive = a.lock().map(|x| x.clone()).unwrap_or_default();
                    for i in 1..=MAILBOXES {
                        let m = format!("s{i}");
                        let row = rows.iter().find(|r| r.mailbox == m);
                        let served = row.is_some_and(|r| {
                            let pid = r.holder.split('/').nth(1).and_then(|p| p.parse().ok());
                            r.live() && pid.is_some_and(|p: u32| alive.contains(&p))
                        });
                        if let Some(r) = row.filter(|_| served) {
                            let name = r.holder_name.clone().unwrap_or_default();
                            if let Ok(mut h) = h.lock() {
                                let seen: &mut Vec<String> = h.entry(m.clone()).or_default();
                                if seen.last() != Some(&name) {
                                    seen.push(name);
                                }
                            }
                        }
                        match (served, since.get(&m)) {
                            (true, Some(start)) => {
                                if let Ok(mut g) = g.lock() {
                                    g.push((m.clone(), *start, now - *start));
                                }
                                since.remove(&m);
                            }
                            (false, None) => {
                                since.insert(m, now);
                            }
                            _ => {}
                        }
                    }
                }
                let now = Instant::now();
                if let Ok(mut g) = g.lock() {
                    for (m, start) in since {
                        g.push((m, start, now - start));
                    }
                }
            });
        });
        Monitor {
            stop,
            gaps,
            holders,
            thread: Some(thread),
        }
    }

    fn finish(&mut self) -> Vec<(String, Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.gaps.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

fn spawn_instance(config: &Path, name: &str, alive: &Mutex<HashSet<u32>>) -> Daemon {
    let d = Daemon::spawn_with(config, &[("SWITCHBOARD_INSTANCE", name)]);
    if let Ok(mut a) = alive.lock() {
        a.insert(d.child.id());
    }
    d
}

fn kill_instance(d: &mut Daemon, alive: &Mutex<HashSet<u32>>) {
    if let Ok(mut a) = alive.lock() {
        a.remove(&d.child.id());
    }
    d.kill9();
}

/// Three instances share six mailboxes on one PostgreSQL; instances are
/// SIGKILLed and restarted at random, PostgreSQL restarts once, new mail
/// arrives throughout, and one instance is stopped cleanly at the end.
/// Afterwards every message is in exactly one folder, no customer got two
/// automatic replies to one message, the round robin gave nobody a double
/// turn, and every mailbox was worked again within the lease time.
#[test]
fn three_instances_six_mailboxes_survive_kills_and_a_postgresql_restart() {
    use rand::{Rng, SeedableRng};
    let ttl = chaos_ttl();
    let pg = Postgres::start();
    let users: Vec<String> = (1..=MAILBOXES)
        .map(|i| format!("s{i}@example.test"))
        .collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let srv = Servers::start_with(&user_refs);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut blocks = String::new();
    for i in 1..=MAILBOXES {
        let address = format!("[\"s{i}@example.test\"]");
        blocks.push_str(&srv.mailbox(
            &format!("s{i}"),
            &format!("s{i}@example.test"),
            &[("batch_size", "20"), ("addresses", &address)],
        ));
    }
    let config = srv.write_config_with(dir.path(), &blocks, "");
    crate::common::write(&dir.path().join("rules/rules.toml"), CHAOS_RULES);
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    assert!(text.contains("url = \"sqlite://state.db\"") && text.contains("retry_max = \"3s\""));
    let text = text
        .replace(
            "url = \"sqlite://state.db\"",
            &format!("url = {:?}", pg.url),
        )
        .replace(
            "retry_max = \"3s\"",
            &format!("retry_max = \"3s\"\nlease_ttl = \"{}s\"", ttl.as_secs()),
        );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));

    // A backlog in every mailbox before the instances start.
    let mut expected: HashMap<String, usize> = HashMap::new();
    let mut questions: HashSet<String> = HashSet::new();
    let per_mailbox = 40;
    for mb in 1..=MAILBOXES {
        let new = srv.maildir_root.join(format!("example.test/s{mb}/new"));
        std::fs::create_dir_all(&new).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..per_mailbox {
            let (id, _, raw) = chaos_mail(mb, "b", i);
            std::fs::write(new.join(format!("1732350000.M{i}P{mb}.seed")), raw)
                .unwrap_or_else(|e| panic!("{e}"));
            if i % 3 == 0 {
                questions.insert(id.clone());
            }
            expected.insert(id, mb);
        }
    }
    let _ = std::process::Command::new("chown")
        .args(["-R", "mail:mail"])
        .arg(&srv.maildir_root)
        .status();

    let alive = Arc::new(Mutex::new(HashSet::new()));
    let names = ["node-a", "node-b", "node-c"];
    let mut nodes: Vec<Daemon> = names
        .iter()
        .map(|n| spawn_instance(&config, n, &alive))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let leases_now = |url: &str| {
        rt.block_on(async {
            let s = Store::open(url).await.ok()?;
            let rows = s.leases().await.ok();
            s.close().await;
            rows
        })
    };
    // Every mailbox held, spread evenly (two each) once all three run.
    let start = Instant::now();
    loop {
        let rows = leases_now(&pg.url).unwrap_or_default();
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in rows.iter().filter(|r| r.live()) {
            *per.entry(r.holder_name.clone().unwrap_or_default())
                .or_default() += 1;
        }
        if per.len() == 3 && per.values().all(|n| *n == 2) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "leases not spread over the three instances: {per:?}\n{}",
            nodes[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let spread_after = start.elapsed();
    let mut monitor = Monitor::start(pg.url.clone(), alive.clone());

    let seed: u64 = rand::random();
    eprintln!("chaos seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    let mut sent = 0;
    for round in 0..6 {
        // New mail by SMTP while the instances come and go.
        for _ in 0..10 {
            let mb = rng.random_range(1..=MAILBOXES);
            let (id, from, raw) = chaos_mail(mb, &format!("r{round}x"), sent);
            rt.block_on(smtp_send(
                srv.smtp_port,
                &from,
                &format!("s{mb}@example.test"),
                &raw,
            ));
            if sent % 3 == 0 {
                questions.insert(id.clone());
            }
            expected.insert(id, mb);
            sent += 1;
        }
        // A burst straight into the inboxes, so that the kill lands while
        // batches are in flight.
        for j in 0..30 {
            let mb = rng.random_range(1..=MAILBOXES);
            let (id, _, raw) = chaos_mail(mb, &format!("k{round}x"), j);
            let new = srv.maildir_root.join(format!("example.test/s{mb}/new"));
            std::fs::write(new.join(format!("1732360000.M{j}R{round}.burst")), raw)
                .unwrap_or_else(|e| panic!("{e}"));
            if j % 3 == 0 {
                questions.insert(id.clone());
            }
            expected.insert(id, mb);
        }
        let _ = std::process::Command::new("chown")
            .args(["-R", "mail:mail"])
            .arg(&srv.maildir_root)
            .status();
        std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
        let victim = rng.random_range(0..nodes.len());
        kill_instance(&mut nodes[victim], &alive);
        kills += 1;
        if round == 2 {
            pg.script("restart");
        }
        // Half the time the instance comes back at once (it takes its
        // mailboxes back from the dead process); otherwise the others
        // take them over when the leases expire.
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(rng.random_range(500..2500)));
        } else {
            std::thread::sleep(ttl + Duration::from_secs(3));
        }
        nodes[victim] = spawn_instance(&config, names[victim], &alive);
        std::thread::sleep(Duration::from_secs(2));
    }
    // A clean stop hands the mailboxes over at once.
    std::thread::sleep(Duration::from_secs(4));
    let stopped = Instant::now();
    let pid = nodes[0].child.id();
    let (status, took) = nodes[0].terminate();
    if let Ok(mut a) = alive.lock() {
        a.remove(&pid);
    }
    assert!(status.success(), "{status:?}\n{}", nodes[0].log_text());

    // Everything is worked off.
    let inbox_empty = || {
        (1..=MAILBOXES).all(|mb| {
            ["new", "cur"].iter().all(|d| {
                std::fs::read_dir(srv.maildir_root.join(format!("example.test/s{mb}/{d}")))
                    .map(|r| r.count() == 0)
                    .unwrap_or(true)
            })
        })
    };
    let start = Instant::now();
    while !inbox_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the inboxes are not worked off:\n{}\n{}",
            nodes[1].log_text(),
            nodes[2].log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(2));
    srv.wait_postfix_queue_empty(Duration::from_secs(60));
    let gaps = monitor.finish();
    let holders = monitor
        .holders
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    for n in nodes.iter_mut().skip(1) {
        let (st, _) = n.terminate();
        assert!(st.success(), "{st:?}\n{}", n.log_text());
    }
    let logs: String = nodes
        .iter()
        .map(|n| n.log_text())
        .collect::<Vec<_>>()
        .join("\n---\n");

    // Every customer message in exactly one folder of its own mailbox,
    // none in an INBOX.
    let mut found: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for mb in 1..=MAILBOXES {
        for (id, folder) in message_ids(
            &srv.maildir_root.join(format!("example.test/s{mb}")),
            "Message-ID",
        ) {
            if expected.contains_key(&id) {
                found.entry(id).or_default().push(folder);
            }
        }
    }
    let lost: Vec<&String> = expected
        .keys()
        .filter(|id| !found.contains_key(*id))
        .collect();
    assert!(lost.is_empty(), "lost messages: {lost:?}\n{logs}");
    let doubled: Vec<_> = found.iter().filter(|(_, f)| f.len() != 1).collect();
    assert!(
        doubled.is_empty(),
        "messages in more than one folder: {doubled:?}"
    );
    for (id, f) in &found {
        let mb = expected.get(id).copied().unwrap_or(0);
        let home = srv.maildir_root.join(format!("example.test/s{mb}"));
        assert!(
            f[0].starts_with(&home) && f[0] != home,
            "{id} filed in {:?}",
            f[0]
        );
    }

    // One automatic reply per question, none to anything else.
    let mut replies: HashMap<String, usize> = HashMap::new();
    for (irt, _) in message_ids(&srv.maildir_root.join("customer.test"), "In-Reply-To") {
        *replies.entry(irt).or_default() += 1;
    }
    let twice: Vec<_> = replies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "customers got two replies to one message: {twice:?}"
    );
    let unasked: Vec<_> = replies
        .keys()
        .filter(|id| !questions.contains(*id))
        .collect();
    assert!(
        unasked.is_empty(),
        "replies to mail that is not a question: {unasked:?}"
    );
    // A question whose reply may have gone out when its instance was
    // killed goes to a person instead (never twice); all others answered.
    let unanswered = questions
        .iter()
        .filter(|q| !replies.contains_key(*q))
        .count();

    // The store: every message done; the round robin fair.
    let (states, turns) = rt.block_on(async {
        let s = Store::open(&pg.url).await.unwrap_or_else(|e| panic!("{e}"));
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM messages GROUP BY state")
                .fetch_all(s.pool())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        let turns: Vec<(String, i64)> = sqlx::query_as(
            "SELECT rep, COUNT(*) FROM messages WHERE queue = 'sales' AND rep IS NOT NULL GROUP BY rep ORDER BY rep",
        )
        .fetch_all(s.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let verdicts: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT verdict, COALESCE(last_error, ''), COUNT(*) FROM messages GROUP BY verdict, last_error ORDER BY 3 DESC",
        )
        .fetch_all(s.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("verdicts: {verdicts:?}");
        (states, turns)
    });
    assert!(states.iter().all(|(s, _)| s == "done"), "{states:?}");
    assert_eq!(
        states.iter().map(|(_, n)| *n as usize).sum::<usize>(),
        expected.len()
    );
    let quotes = expected.keys().filter(|id| {
        let n: usize = id
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        n % 3 == 1
    });
    let quotes = quotes.count();
    let counts: Vec<i64> = turns.iter().map(|t| t.1).collect();
    assert_eq!(counts.iter().sum::<i64>() as usize, quotes, "{turns:?}");
    let (min, max) = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    assert!(
        turns.len() == 3 && max - min <= 1,
        "round robin turns: {turns:?}"
    );

    // Fail-over: no mailbox went unworked longer than the lease time plus
    // one heartbeat (and a little for connecting).
    let worst = gaps.iter().map(|g| g.2).max().unwrap_or_default();
    let handover = gaps
        .iter()
        .filter(|g| g.1 + Duration::from_millis(500) >= stopped)
        .map(|g| g.2)
        .max()
        .unwrap_or_default();
    eprintln!(
        "chaos: {} messages ({} questions, {unanswered} sent to a person instead), {kills} SIGKILLs, \
         1 PostgreSQL restart; leases spread in {spread_after:?}; {} gaps, longest {worst:?}; \
         clean stop took {took:?}, hand-over gap {handover:?}; round robin {turns:?}; holders {holders:?}",
        expected.len(),
        questions.len(),
        gaps.len()
    );
    assert!(
        worst <= ttl + ttl / 3 + Duration::from_secs(3),
        "a mailbox went unworked for {worst:?} (lease time {ttl:?}): {gaps:?}\n{logs}"
    );
    assert!(
        handover <= ttl / 3 + Duration::from_secs(2),
        "a clean stop must hand its mailboxes over at once, took {handover:?}"
    );
}
