//! Representatives and queues against real Dovecot and Postfix: fair
//! distribution, least-loaded, availability, sticky follow-ups,
//! escalation and the interaction log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::mailserver::{Client, Servers, customer_mail, run_once, run_once_with, smtp_send};

const SUPPORT: &str = "support@example.test";
const LONG: Duration = Duration::from_secs(60);

/// Writes the daemon config with a team rule set replacing the default one.
fn setup(srv: &Servers, dir: &Path, team: &str) -> PathBuf {
    setup_with(srv, dir, team, "batch_size = 50\n")
}

/// [`setup`] with these settings for the mailbox.
fn setup_with(srv: &Servers, dir: &Path, team: &str, mailbox: &str) -> PathBuf {
    let config = srv.write_config(dir, mailbox);
    let rules = format!(
        r#"
[[queue]]
name = "support"
folder = "Queues/Support"
escalation_folder = "Queues/Support/Supervisor"

[[rule]]
name = "automatic"
when = {{ auto_generated = true }}
ignore = "automatic message"

[[rule]]
name = "vip"
when = {{ from = {{ ends_with = "@vip.test" }} }}
escalate = "sales"

[[rule]]
name = "opening-hours"
when = {{ subject = {{ contains = "opening hours" }} }}
reply = "hours"

[[rule]]
name = "sales"
when = {{ subject = {{ contains = "quote" }} }}
route = "sales"

{team}
"#
    );
    crate::common::write(&dir.join("rules/rules.toml"), &rules);
    config
}

/// Seeds `n` quote requests from distinct customers straight into the
/// support INBOX (fast, like a backlog).
fn seed(srv: &Servers, tag: &str, n: usize) {
    let new = srv.maildir_root.join("example.test/support/new");
    std::fs::create_dir_all(&new).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..n {
        let from = format!("{tag}{i}@customer.test");
        let raw = customer_mail(
            &from,
            SUPPORT,
            "Request for a quote",
            "Could you send me a quote for 20 chairs?",
            &format!("{tag}{i}@customer.test"),
            "",
        );
        std::fs::write(new.join(format!("1732350000.M{i}P1.{tag}")), raw)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let _ = Command::new("chown")
        .args(["-R", "mail:mail"])
        .arg(&srv.maildir_root)
        .status();
}

fn once(config: &Path) -> String {
    let out = run_once(config);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log
}

fn cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "switchboard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn counts(c: &mut Client, folders: &[&str]) -> Vec<usize> {
    let mut v = Vec::new();
    for f in folders {
        v.push(c.count(f).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_fair_over_300_messages_and_across_restarts() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = setup(
        &srv,
        dir.path(),
        r#"
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
"#,
    );
    // Two runs of 150: the rotation continues where it stopped.
    seed(&srv, "a", 150);
    once(&config);
    seed(&srv, "b", 150);
    once(&config);
    let mut c = Client::login(srv.imap_port, SUPPORT).await;
    let got = counts(&mut c, &["Reps/Ann", "Reps/Ben", "Reps/Cat"]).await;
    assert_eq!(got.iter().sum::<usize>(), 300, "{got:?}");
    let (min, max) = (got.iter().min(), got.iter().max());
    assert!(
        max.zip(min).is_some_and(|(a, b)| a - b <= 1),
        "unfair: {got:?}"
    );
    assert_eq!(c.count("INBOX").await, 0);
    assert_eq!(c.count("Queues/Sales").await, 0);

    // The record: every assignment is in the log, exportable as CSV.
    let csv = cli(
        &config,
        &[
            "log", "--rep", "ben", "--event", "decided", "--format", "csv",
        ],
    );
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("time,event,mailbox,message_id,sender,ticket,queue,rep,detail")
    );
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), got[1], "{csv}");
    assert!(
        rows.iter()
            .all(|r| r.contains(",sales,ben,") && r.contains("@customer.test")),
        "{csv}"
    );
    let json = cli(
        &config,
        &["log", "--sender", "a7@customer.test", "--format", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v["event"], "decided");
    assert_eq!(v["sender"], "a7@customer.test");
    assert!(v["ticket"].as_str().is_some_and(|t| t.starts_with("SB-")));

    let stats = cli(&config, &["stats"]);
    assert!(stats.contains("300 message(s)"), "{stats}");
    for (rep, n) in ["ann", "ben", "cat"].iter().zip(&got) {
        assert!(
            stats.lines().any(|l| l.starts_with(rep)
                && l.split_whitespace().filter(|w| *w == n.to_string()).count() == 2),
            "{rep} should show {n} assigned and {n} open:\n{stats}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_availability_and_the_shared_fallback() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Dan's working hours exclude the current time: a two-hour window
    // starting six hours from now.
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let start = now.hour() as i64 + 6;
    let window = format!("Daily {:02}:00-{:02}:00", start % 24, (start + 2) % 24);
    let config = setup(
        &srv,
        dir.path(),
        &format!(
            r#"
[[queue]]
name = "sales"
folder = "Queues/Sales"
strategy = "least_loaded"
members = ["ann", "ben", "cat", "dan"]

[[rep]]
id = "ann"
folder = "Reps/Ann"

[[rep]]
id = "ben"
folder = "Reps/Ben"

[[rep]]
id = "cat"
folder = "Reps/Cat"
away = true

[[rep]]
id = "dan"
folder = "Reps/Dan"
hours = ["{window}"]
timezone = "UTC"
"#
        ),
    );
    // Ann already has 4 open messages, Ben 1.
    let mut c = Client::login(srv.imap_port, SUPPORT).await;
    for i in 0..4 {
        let m = customer_mail(
            "x@customer.test",
            SUPPORT,
            "old",
            "old",
            &format!("old-a{i}@x"),
            "",
        );
        c.append("Reps/Ann", &m).await;
    }
    c.append(
        "Reps/Ben",
        &customer_mail("x@customer.test", SUPPORT, "old", "old", "old-b@x", ""),
    )
    .await;

    // Five new quote requests in one batch: Ben first until he has as
    // many as Ann, then they share; Cat (away) and Dan (off hours) get
    // nothing.
    seed(&srv, "l", 5);
    let log = once(&config);
    let got = counts(&mut c, &["Reps/Ann", "Reps/Ben", "Reps/Cat", "Reps/Dan"]).await;
    assert_eq!(got[2..], [0, 0], "{got:?}\n{log}");
    assert_eq!(got[0] + got[1], 10, "{got:?}");
    assert!(got[1] >= 4 && got[0].abs_diff(got[1]) <= 1, "{got:?}");
    let first = cli(
        &config,
        &["log", "--sender", "l0@customer.test", "--format", "json"],
    );
    assert!(first.contains("\"rep\":\"ben\""), "{first}");
    assert!(first.contains("least loaded in sales (1 open)"), "{first}");
    assert!(first.contains("cat skipped: away"), "{first}");
    assert!(
        first.contains("dan skipped: outside working hours"),
        "{first}"
    );

    // Everyone away (Ann and Ben marked with the command): the shared
    // folder, never the INBOX.
    cli(
        &config,
        &["rep", "away", "ann", "--until", "2h", "--note", "dentist"],
    );
    cli(&config, &["rep", "away", "ben"]);
    let list = cli(&config, &["rep", "list"]);
    assert!(list.contains("dentist"), "{list}");
    seed(&srv, "m", 2);
    once(&config);
    assert_eq!(c.count("Queues/Sales").await, 2);
    assert_eq!(c.count("INBOX").await, 0);

    // Ben back: he gets the next one.
    cli(&config, &["rep", "back", "ben"]);
    seed(&srv, "n", 1);
    once(&config);
    assert_eq!(c.count("Reps/Ben").await, got[1] + 1);
}

/// A backlog is read in several batches and filed a few thousand
/// messages at a time: the messages decided for someone but not moved
/// yet count towards their load, or the emptiest person would get every
/// batch until the next filing, past their `max_open`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_counts_the_messages_not_filed_yet() {
    // All filed at the end of the pass, over the one connection.
    least_loaded_backlog("batch_size = 50\n", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_filed_over_a_second_connection_counts_what_it_moves() {
    // Batches of 20, then 40, filed 30 at a time over a second connection
    // while the next batches are read and decided: the open loads count
    // both what was moved and what waits.
    least_loaded_backlog("batch_size = 20\nfile_every = 30\n", true).await;
}

/// Ann has 40 open, Ben none and `max_open = 60`; 150 requests arrive
/// in a backlog for a least-loaded queue.
async fn least_loaded_backlog(mailbox: &str, second_connection: bool) {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = setup_with(
        &srv,
        dir.path(),
        r#"
[[queue]]
name = "sales"
folder = "Queues/Sales"
strategy = "least_loaded"
members = ["ann", "ben"]

[[rep]]
id = "ann"
folder = "Reps/Ann"

[[rep]]
id = "ben"
folder = "Reps/Ben"
max_open = 60
"#,
        mailbox,
    );
    // Ann has 40 open messages, Ben none.
    let mut c = Client::login(srv.imap_port, SUPPORT).await;
    for i in 0..40 {
        let m = customer_mail(
            "x@customer.test",
            SUPPORT,
            "old",
            "old",
            &format!("old{i}@x"),
            "",
        );
        c.append("Reps/Ann", &m).await;
    }
    // 150 requests.
    seed(&srv, "q", 150);
    let out = run_once_with(&config, "info,switchboard=debug");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    if second_connection {
        assert!(log.contains("second connection for filing"), "{log}");
        // The first connection learns what the second moved before it
        // searches again: no later pass fetches moved messages in vain.
        assert!(!log.contains("messages=0 fetch_ms"), "{log}");
    }
    let got = counts(&mut c, &["Reps/Ann", "Reps/Ben", "Queues/Sales", "INBOX"]).await;
    // Ben gets the first 40 to catch up, then they alternate until Ben is
    // full at 60; the rest goes to Ann.
    assert_eq!(got, vec![130, 60, 0, 0], "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_follow_ups_replies_to_auto_replies_and_escalation() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = setup(
        &srv,
        dir.path(),
        r#"
[[queue]]
name = "sales"
folder = "Queues/Sales"
escalation_folder = "Queues/Sales/Supervisor"
strategy = "round_robin"
escalate_after = 3

[[rep]]
id = "ann"
folder = "Reps/Ann"
queues = ["sales", "support"]

[[rep]]
id = "ben"
folder = "Reps/Ben"
queues = ["sales", "support"]
"#,
    );
    let alice = "alice@customer.test";
    let bob = "bob@customer.test";
    let send =
        |from: &'static str, subject: &'static str, id: &'static str, extra: &'static str| {
            let port = srv.smtp_port;
            async move {
                let raw =
                    customer_mail(from, SUPPORT, subject, "Please see my question.", id, extra);
                smtp_send(port, from, SUPPORT, &raw).await;
            }
        };

    // Alice asks for a quote: Ann (first in turn).
    send(alice, "Request for a quote", "s1@customer.test", "").await;
    srv.wait_postfix_queue_empty(LONG);
    once(&config);
    let mut c = Client::login(srv.imap_port, SUPPORT).await;
    assert_eq!(counts(&mut c, &["Reps/Ann", "Reps/Ben"]).await, [1, 0]);
    let ticket = c.messages("Reps/Ann").await[0]
        .header("Message-ID")
        .unwrap_or_default();
    assert!(ticket.contains("s1@customer.test"));

    // Ann answers from her own mail client (we never see that message);
    // Alice replies to it. Round-robin would pick Ben; the follow-up
    // stays with Ann, and the customer answering a person restarts the
    // count towards escalation.
    send(
        alice,
        "Re: Request for a quote",
        "s2@customer.test",
        "In-Reply-To: <ann-reply-1@example.test>\r\nReferences: <s1@customer.test> <ann-reply-1@example.test>\r\n",
    )
    .await;
    // Bob types Alice's ticket into a brand-new mail: no hijack.
    let log = cli(&config, &["log", "--sender", alice, "--format", "json"]);
    let t: serde_json::Value = serde_json::from_str(log.lines().next().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}"));
    let tag = t["ticket"].as_str().unwrap_or_default().to_string();
    assert!(tag.starts_with("SB-"), "{log}");
    let subject: &'static str = Box::leak(format!("Request for a quote [#{tag}]").into_boxed_str());
    send(bob, subject, "h1@customer.test", "").await;
    srv.wait_postfix_queue_empty(LONG);
    let log = once(&config);
    assert_eq!(
        counts(&mut c, &["Reps/Ann", "Reps/Ben"]).await,
        [2, 1],
        "{log}\n{:?}\n{}",
        c.folders().await,
        cli(&config, &["log"])
    );
    let bob_log = cli(&config, &["log", "--sender", bob, "--format", "json"]);
    assert!(
        !bob_log.contains(&format!("\"ticket\":\"{tag}\"")),
        "{bob_log}"
    );
    assert!(bob_log.contains("\"rep\":\"ben\""), "{bob_log}");

    // Alice keeps writing without a human reply: the 3rd message since
    // Ann's reply goes to the supervisor.
    send(
        alice,
        "Re: Request for a quote",
        "s3@customer.test",
        "In-Reply-To: <s2@customer.test>\r\nReferences: <s1@customer.test> <s2@customer.test>\r\n",
    )
    .await;
    srv.wait_postfix_queue_empty(LONG);
    once(&config);
    assert_eq!(c.count("Reps/Ann").await, 3, "2nd message still with Ann");
    send(
        alice,
        "Re: Request for a quote",
        "s4@customer.test",
        "In-Reply-To: <s3@customer.test>\r\nReferences: <s1@customer.test> <s3@customer.test>\r\n",
    )
    .await;
    srv.wait_postfix_queue_empty(LONG);
    once(&config);
    assert_eq!(c.count("Queues/Sales/Supervisor").await, 1);
    let esc = cli(&config, &["log", "--ticket", &tag, "--format", "csv"]);
    assert!(
        esc.contains("customer messages in") && esc.contains("escalate_after = 3"),
        "{esc}"
    );

    // A rule escalation (VIP) goes to the queue's supervisor folder.
    send("boss@vip.test", "Hello", "v1@vip.test", "").await;
    srv.wait_postfix_queue_empty(LONG);
    once(&config);
    assert_eq!(c.count("Queues/Sales/Supervisor").await, 2);

    // A reply to our automatic reply ("that didn't help") goes to a
    // person, with no second automatic reply.
    let carol = "carol@customer.test";
    send(carol, "Opening hours", "c1@customer.test", "").await;
    srv.wait_postfix_queue_empty(LONG);
    once(&config);
    srv.wait_postfix_queue_empty(LONG);
    let mut cc = Client::login(srv.imap_port, carol).await;
    let inbox = cc.messages("INBOX").await;
    assert_eq!(inbox.len(), 1);
    let auto_id = inbox[0].header("Message-ID").unwrap_or_default();
    let extra: &'static str = Box::leak(
        format!("In-Reply-To: {auto_id}\r\nReferences: <c1@customer.test> {auto_id}\r\n")
            .into_boxed_str(),
    );
    send(carol, "Re: Opening hours", "c2@customer.test", extra).await;
    srv.wait_postfix_queue_empty(LONG);
    once(&config);
    srv.wait_postfix_queue_empty(LONG);
    assert_eq!(
        cc.messages("INBOX").await.len(),
        1,
        "no second automatic reply"
    );
    // The support queue is shared here: the message waits in its folder.
    assert_eq!(c.count("Queues/Support").await, 1);
    let why = cli(&config, &["log", "--sender", carol, "--format", "csv"]);
    assert!(
        why.contains("this answers one of our automatic replies"),
        "{why}"
    );
    assert_eq!(c.count("INBOX").await, 0);
}
