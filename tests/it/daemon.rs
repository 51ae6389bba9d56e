//! `switchboard run` against real Dovecot and Postfix.

use std::time::Duration;

use crate::mailserver::{
    Client, Daemon, Servers, customer_mail, run_once, run_once_with, smtp_send, wait_for,
};

const SUPPORT: &str = "support@example.test";
const ALICE: &str = "alice@customer.test";
const LONG: Duration = Duration::from_secs(60);

fn hours_question(id: &str, from: &str) -> Vec<u8> {
    customer_mail(
        from,
        SUPPORT,
        "Opening hours?",
        "Hello, what are your opening hours on Saturday?",
        id,
        "",
    )
}

/// How many times each Message-ID is filed, over every folder but the
/// inbox and Sent.
async fn filed_ids(c: &mut Client) -> std::collections::BTreeMap<String, usize> {
    let mut ids = std::collections::BTreeMap::new();
    for folder in c.folders().await {
        if folder == "INBOX" || folder == "Sent" {
            continue;
        }
        for m in c.messages(&folder).await {
            let id = m.header("Message-ID").unwrap_or_default();
            *ids.entry(id).or_insert(0) += 1;
        }
    }
    ids
}

/// Replies in a mailbox that answer `id`.
fn replies_to(msgs: &[crate::mailserver::Msg], id: &str) -> usize {
    msgs.iter()
        .filter(|m| m.header("In-Reply-To").is_some_and(|v| v.contains(id)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routine_question_is_answered_threaded_and_filed() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config(dir.path(), "");
    smtp_send(
        srv.smtp_port,
        ALICE,
        SUPPORT,
        &hours_question("q1@customer.test", ALICE),
    )
    .await;
    srv.wait_postfix_queue_empty(LONG);
    // Everything logged, at every level: the IMAP library's protocol
    // trace would show `LOGIN "user" "password"`.
    let out = run_once_with(&config, "trace");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("decided"), "the trace log was written: {log}");
    assert!(!log.contains("secret"), "the password was logged");
    srv.wait_postfix_queue_empty(LONG);

    let mut alice = Client::login(srv.imap_port, ALICE).await;
    let inbox = alice.messages("INBOX").await;
    assert_eq!(inbox.len(), 1, "alice got {} messages", inbox.len());
    let reply = &inbox[0];
    assert_eq!(
        reply.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(
        reply.header("X-Auto-Response-Suppress").as_deref(),
        Some("All")
    );
    assert_eq!(
        reply.header("In-Reply-To").as_deref(),
        Some("<q1@customer.test>")
    );
    assert!(
        reply
            .header("References")
            .is_some_and(|r| r.contains("<q1@customer.test>"))
    );
    assert!(
        reply
            .header("Subject")
            .is_some_and(|s| s.starts_with("Re: Opening hours? [#SB-")),
        "{:?}",
        reply.header("Subject")
    );
    assert!(
        reply
            .header("Message-ID")
            .is_some_and(|m| m.ends_with("@example.test>"))
    );
    assert!(reply.raw.contains("we are open Monday to Friday"));

    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    assert_eq!(support.count("INBOX").await, 0);
    let sent = support.messages("Sent").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("Message-ID"), reply.header("Message-ID"));
    let answered = support.messages("Answered").await;
    assert_eq!(answered.len(), 1);
    assert!(
        answered[0].flags.iter().any(|f| f.contains("Answered")),
        "{:?}",
        answered[0].flags
    );
    // Issue: rule flags were dropped on messages that got a reply.
    assert!(
        answered[0].flags.iter().any(|f| f.contains("hours")),
        "the rule's flag: {:?}",
        answered[0].flags
    );
    // Fetching never marked the customer's mail as seen.
    assert!(
        !answered[0].flags.iter().any(|f| f.contains("Seen")),
        "{:?}",
        answered[0].flags
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaints_and_automatic_mail_get_no_reply() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config(dir.path(), "");
    let complaint = customer_mail(
        ALICE,
        SUPPORT,
        "Complaint: parcel arrived damaged",
        "The vase arrived damaged. Opening hours? I want a refund!",
        "c1@customer.test",
        "",
    );
    let oof = customer_mail(
        ALICE,
        SUPPORT,
        "Automatic reply: Opening hours?",
        "I am out of the office until Monday.",
        "o1@customer.test",
        "Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n",
    );
    let list = customer_mail(
        "ops@lists.customer.test",
        SUPPORT,
        "[ops] Opening hours? thread",
        "What opening hours do you all use?",
        "l1@customer.test",
        "List-Id: <ops.lists.customer.test>\r\nList-Unsubscribe: <mailto:leave@lists.customer.test>\r\nPrecedence: list\r\n",
    );
    for m in [&complaint, &oof, &list] {
        smtp_send(srv.smtp_port, ALICE, SUPPORT, m).await;
    }
    srv.wait_postfix_queue_empty(LONG);
    let out = run_once(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.wait_postfix_queue_empty(LONG);

    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    assert_eq!(support.count("INBOX").await, 0);
    let complaints = support.messages("Queues/Complaints").await;
    assert_eq!(complaints.len(), 1);
    assert!(complaints[0].raw.contains("c1@customer.test"));
    assert_eq!(support.count("Ignored").await, 2);
    assert_eq!(support.count("Sent").await, 0);
    let mut alice = Client::login(srv.imap_port, ALICE).await;
    assert_eq!(
        alice.count("INBOX").await,
        0,
        "no reply to complaints, auto-replies or lists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_picks_up_new_mail_and_sigterm_stops_cleanly() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Poll interval 300 s: only IDLE can explain a quick pick-up.
    let config = srv.write_config(dir.path(), "");
    let mut daemon = Daemon::spawn(&config);
    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    wait_for(LONG, "the daemon to connect and IDLE", || {
        let log = daemon.log_text();
        async move { log.contains("connected") }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    smtp_send(
        srv.smtp_port,
        ALICE,
        SUPPORT,
        &hours_question("idle1@customer.test", ALICE),
    )
    .await;
    // Far below the 300 s poll interval.
    wait_for(
        Duration::from_secs(20),
        "the IDLE wake-up to file the message",
        || {
            let port = srv.imap_port;
            async move { Client::login(port, SUPPORT).await.count("Answered").await == 1 }
        },
    )
    .await;
    assert_eq!(support.count("INBOX").await, 0);
    let (status, took) = daemon.terminate();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        daemon.log_text()
    );
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
}

/// Several messages at once: those that need no reply are filed over a
/// second connection (kept between passes) while the replies are sent.
/// Every message ends in one folder, every question is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_are_filed_over_a_kept_second_connection() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config(dir.path(), "");
    let mut daemon = Daemon::spawn_with(&config, &[("RUST_LOG", "info,switchboard=debug")]);
    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    wait_for(LONG, "the daemon to connect and IDLE", || {
        let log = daemon.log_text();
        async move { log.contains("connected mailbox") }
    })
    .await;
    let mut expected = 0;
    for burst in 0..4 {
        for i in 0..6 {
            let from = format!("b{burst}-{i}@customer.test");
            let id = format!("b{burst}-{i}@customer.test");
            let raw = if i % 2 == 0 {
                hours_question(&id, &from)
            } else {
                customer_mail(
                    &from,
                    SUPPORT,
                    "Complaint",
                    "My parcel arrived damaged.",
                    &id,
                    "",
                )
            };
            support.append("INBOX", &raw).await;
        }
        expected += 6;
        wait_for(LONG, "the burst to be filed", || {
            let port = srv.imap_port;
            async move {
                let mut c = Client::login(port, SUPPORT).await;
                c.count("INBOX").await == 0 && c.count("Answered").await == expected / 2
            }
        })
        .await;
        if burst == 0 {
            // A first pass of several messages opens no second connection:
            // a quiet mailbox does not open one per pass for nothing.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let log = daemon.log_text();
            assert!(!log.contains("second connection for filing"), "{log}");
        }
    }
    // Opened once (in the background during the second burst: passes
    // come close together), then kept and used for the later bursts.
    let log = daemon.log_text();
    assert_eq!(
        log.matches("second connection for filing").count(),
        1,
        "{log}"
    );
    assert!(
        log.matches("filing over the second connection").count() >= 2,
        "{log}"
    );
    let ids = filed_ids(&mut support).await;
    assert_eq!(ids.len(), expected, "every message is filed: {ids:?}");
    assert!(
        ids.values().all(|c| *c == 1),
        "a message is in two folders: {ids:?}"
    );
    srv.wait_postfix_queue_empty(LONG);
    for burst in 0..4 {
        for i in 0..6 {
            let user = format!("b{burst}-{i}@customer.test");
            let got = srv.maildir_files(&user, "INBOX").len();
            // Questions get one reply, complaints none.
            assert_eq!(got, usize::from(i % 2 == 0), "{user} got {got} replies");
        }
    }
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{}", daemon.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_restart_and_postfix_outage() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config(dir.path(), "");
    let mut daemon = Daemon::spawn(&config);
    wait_for(LONG, "connect", || {
        let log = daemon.log_text();
        async move { log.contains("connected") }
    })
    .await;

    // Dovecot goes away while the daemon IDLEs; mail queues in Postfix.
    srv.script("stop-dovecot");
    for i in 0..3 {
        let from = format!("c{i}@customer.test");
        smtp_send(
            srv.smtp_port,
            &from,
            SUPPORT,
            &hours_question(&format!("dr{i}@customer.test"), &from),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    srv.script("start-dovecot");
    wait_for(LONG, "all three answered after Dovecot is back", || {
        let port = srv.imap_port;
        async move { Client::login(port, SUPPORT).await.count("Answered").await == 3 }
    })
    .await;

    // Postfix goes away: the reply waits in the inbox, then goes out once.
    srv.script("stop-postfix");
    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    support
        .append("INBOX", &hours_question("pf1@customer.test", ALICE))
        .await;
    wait_for(LONG, "the daemon to defer the reply", || {
        let log = daemon.log_text();
        async move { log.contains("reply deferred") }
    })
    .await;
    assert_eq!(
        support.count("INBOX").await,
        1,
        "the message waits in the inbox"
    );
    srv.script("start-postfix");
    wait_for(LONG, "the deferred reply to be sent", || {
        let port = srv.imap_port;
        async move { Client::login(port, SUPPORT).await.count("Answered").await == 4 }
    })
    .await;
    // Give a duplicate every chance to appear, then count.
    tokio::time::sleep(Duration::from_secs(4)).await;
    srv.wait_postfix_queue_empty(LONG);
    let mut alice = Client::login(srv.imap_port, ALICE).await;
    let inbox = alice.messages("INBOX").await;
    assert_eq!(
        replies_to(&inbox, "pf1@customer.test"),
        1,
        "exactly one reply after the outage"
    );
    for i in 0..3 {
        let files = srv.maildir_files(&format!("c{i}@customer.test"), "INBOX");
        assert_eq!(files.len(), 1, "c{i} got {} replies", files.len());
    }
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{}", daemon.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_loses_nothing_and_never_replies_twice() {
    use std::os::unix::fs::chown;
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Filed 50 at a time over a second connection, so that the kill may
    // also land in the middle of a move there.
    let config = srv.write_config(dir.path(), "batch_size = 20\nfile_every = 50\n");
    // 240 messages straight into the inbox: 200 questions from distinct
    // customers, 40 complaints.
    let new = srv.maildir_root.join("example.test/support/new");
    std::fs::create_dir_all(&new).unwrap_or_else(|e| panic!("{e}"));
    let n = 240;
    for i in 0..n {
        let from = format!("k{i}@customer.test");
        let raw = if i % 6 == 5 {
            customer_mail(
                &from,
                SUPPORT,
                "Complaint",
                "My parcel arrived damaged.",
                &format!("k{i}@customer.test"),
                "",
            )
        } else {
            hours_question(&format!("k{i}@customer.test"), &from)
        };
        let path = new.join(format!("1732350000.M{i}P1.seed"));
        std::fs::write(&path, raw).unwrap_or_else(|e| panic!("{e}"));
        let _ = chown(&path, Some(8), Some(8));
    }
    let _ = std::process::Command::new("chown")
        .args(["-R", "mail:mail"])
        .arg(&srv.maildir_root)
        .status();

    let mut daemon = Daemon::spawn(&config);
    // Replies are sent and copied to Sent batch by batch; the filing
    // follows every 50 messages: killed now, some messages are answered
    // but not yet filed.
    wait_for(LONG, "some progress", || {
        let port = srv.imap_port;
        async move { Client::login(port, SUPPORT).await.count("Sent").await >= 30 }
    })
    .await;
    daemon.kill9();
    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    let left = support.count("INBOX").await;
    assert!(
        left > 0,
        "the kill came too late to test anything (inbox already empty)"
    );

    let out = run_once(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.wait_postfix_queue_empty(LONG);

    assert_eq!(support.count("INBOX").await, 0);
    let ids = filed_ids(&mut support).await;
    assert_eq!(ids.len(), n, "every message is filed");
    assert!(
        ids.values().all(|c| *c == 1),
        "a message is in two folders: {:?}",
        ids.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>()
    );
    let mut answered = 0;
    for i in 0..n {
        let got = srv
            .maildir_files(&format!("k{i}@customer.test"), "INBOX")
            .len();
        assert!(got <= 1, "k{i} got {got} automatic replies");
        answered += got;
    }
    assert!(answered >= 150, "only {answered} questions were answered");
    // One copy of each reply in Sent (several stored per command), none
    // twice after the kill.
    let copies: Vec<String> = support
        .messages("Sent")
        .await
        .iter()
        .map(|m| m.header("Message-ID").unwrap_or_default())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = copies.iter().collect();
    // A reply whose send was cut by the kill is never sent again and gets
    // no Sent copy (it may not have left): copies ≤ replies received.
    assert!(
        copies.len() <= answered && copies.len() + 40 >= answered,
        "{} Sent copies for {answered} replies received",
        copies.len()
    );
    assert_eq!(
        distinct.len(),
        copies.len(),
        "a reply is stored twice in Sent"
    );
    eprintln!(
        "kill -9: {left} of {n} messages still in the inbox at the kill; after the restart \
         {} filed once each, {answered} answered once each, {} copies in Sent",
        ids.len(),
        copies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uidvalidity_reset_answers_nothing_twice() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config(dir.path(), "");
    let q = hours_question("uv1@customer.test", ALICE);
    smtp_send(srv.smtp_port, ALICE, SUPPORT, &q).await;
    srv.wait_postfix_queue_empty(LONG);
    assert!(run_once(&config).status.success());
    srv.wait_postfix_queue_empty(LONG);
    // The same message shows up again under new UIDs (as after a mailbox
    // rebuild), and the mailbox gets a new UIDVALIDITY.
    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    support.append("INBOX", &q).await;
    srv.doveadm(&[
        "mailbox",
        "update",
        "-u",
        SUPPORT,
        "--uid-validity",
        "424242",
        "INBOX",
    ]);
    let out = run_once(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.wait_postfix_queue_empty(LONG);
    assert_eq!(support.count("INBOX").await, 0);
    assert_eq!(support.count("Answered").await, 2);
    let mut alice = Client::login(srv.imap_port, ALICE).await;
    assert_eq!(
        replies_to(&alice.messages("INBOX").await, "uv1@customer.test"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_old_rules_on_error_and_applies_good_ones() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config(dir.path(), "");
    let mut daemon = Daemon::spawn(&config);
    wait_for(LONG, "connect", || {
        let log = daemon.log_text();
        async move { log.contains("connected") }
    })
    .await;
    // A broken edit: the error is logged with its position, the old rules stay.
    let rules = dir.path().join("rules/rules.toml");
    let good = std::fs::read_to_string(&rules).unwrap_or_default();
    std::fs::write(&rules, format!("{good}\n[[rule]]\nname = \"bad\"\nwhen = {{ body = {{ regex = '(' }} }}\nroute = \"nowhere\"\n")).unwrap_or_else(|e| panic!("{e}"));
    daemon.hup();
    wait_for(LONG, "the reload error", || {
        let log = daemon.log_text();
        async move { log.contains("reload failed") }
    })
    .await;
    let log = daemon.log_text();
    assert!(
        log.contains("rules/rules.toml:28:27: invalid regex"),
        "{log}"
    );
    assert!(
        log.contains("rules/rules.toml:29:9: queue \"nowhere\" is not defined"),
        "{log}"
    );
    smtp_send(
        srv.smtp_port,
        ALICE,
        SUPPORT,
        &hours_question("hup1@customer.test", ALICE),
    )
    .await;
    wait_for(LONG, "the old rules to answer", || {
        let port = srv.imap_port;
        async move { Client::login(port, SUPPORT).await.count("Answered").await == 1 }
    })
    .await;
    // A good edit: opening-hours questions now go to a person.
    std::fs::write(
        &rules,
        good.replace("reply = \"hours\"", "route = \"support\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    daemon.hup();
    wait_for(LONG, "the reload", || {
        let log = daemon.log_text();
        async move { log.contains("reloaded") }
    })
    .await;
    smtp_send(
        srv.smtp_port,
        "bob@customer.test",
        SUPPORT,
        &hours_question("hup2@customer.test", "bob@customer.test"),
    )
    .await;
    wait_for(LONG, "the new rules to route", || {
        let port = srv.imap_port;
        async move {
            Client::login(port, SUPPORT)
                .await
                .count("Queues/Support")
                .await
                == 1
        }
    })
    .await;
    let (status, _) = daemon.terminate();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_auth_mechanisms_and_a_failing_mailbox_does_not_stall_the_others() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let imaps = srv.imaps_port.to_string();
    let mailboxes = [
        // STARTTLS on the plain port, self-signed certificate accepted explicitly.
        srv.mailbox(
            "support",
            SUPPORT,
            &[
                ("tls", "\"starttls\""),
                ("danger_accept_invalid_certs", "true"),
            ],
        ),
        // Implicit TLS with AUTHENTICATE PLAIN.
        srv.mailbox(
            "billing",
            "billing@example.test",
            &[
                ("tls", "\"implicit\""),
                ("port", &imaps),
                ("auth", "\"plain\""),
                ("danger_accept_invalid_certs", "true"),
            ],
        ),
        // Certificate verification on (the default): the self-signed
        // certificate is refused and only this mailbox fails.
        srv.mailbox(
            "sales",
            "sales@example.test",
            &[("tls", "\"implicit\""), ("port", &imaps)],
        ),
        // A wrong password: fails alone as well.
        srv.mailbox(
            "sales-2",
            "sales@example.test",
            &[("password_env", "\"SB_TEST_WRONG_PASSWORD\"")],
        )
        .replace("password_file = \"pw\"\n", ""),
    ]
    .concat();
    let config = srv.write_config_with(dir.path(), &mailboxes, "");
    smtp_send(
        srv.smtp_port,
        ALICE,
        SUPPORT,
        &hours_question("tls1@customer.test", ALICE),
    )
    .await;
    let bob = "bob@customer.test";
    smtp_send(
        srv.smtp_port,
        bob,
        "billing@example.test",
        &customer_mail(
            bob,
            "billing@example.test",
            "Opening hours",
            "When are you open? opening hours please",
            "tls2@customer.test",
            "",
        ),
    )
    .await;
    srv.wait_postfix_queue_empty(LONG);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--once", "--config"])
        .arg(&config)
        .env("SB_TEST_WRONG_PASSWORD", "not-the-password")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let log = String::from_utf8_lossy(&out.stderr);
    // The failing mailboxes make --once exit 1 …
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("mailbox=sales") && log.contains("certificate"),
        "{log}"
    );
    assert!(
        log.contains("login to 127.0.0.1") && log.contains("as sales@example.test failed"),
        "{log}"
    );
    // … and never shows the password.
    assert!(
        !log.contains("not-the-password") && !log.contains("secret"),
        "{log}"
    );
    // … while the healthy ones did their work.
    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    assert_eq!(support.count("Answered").await, 1, "{log}");
    let mut billing = Client::login(srv.imap_port, "billing@example.test").await;
    assert_eq!(billing.count("Answered").await, 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_messages_permanent_smtp_refusal_and_move_fallback() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config_with(
        dir.path(),
        &srv.mailbox("support", SUPPORT, &[("use_move", "false")]),
        "",
    );
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    let text = text.replacen("[limits]\n", "[limits]\nmax_message_size = \"64KB\"\n", 1);
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));

    // 1. A 400 KB message: the question is in the first text part.
    let blob = "QUJD".repeat(100_000);
    let big = format!(
        "From: Alice <{ALICE}>\r\nTo: {SUPPORT}\r\nSubject: Opening hours and a photo\r\nMessage-ID: <big1@customer.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nWhat are your opening hours?\r\n--b\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n{blob}\r\n--b--\r\n"
    );
    smtp_send(srv.smtp_port, ALICE, SUPPORT, big.as_bytes()).await;
    // 2. A customer whose address the SMTP server refuses (550).
    let refused = customer_mail(
        "dave@elsewhere.invalid",
        SUPPORT,
        "Opening hours",
        "What are your opening hours?",
        "ref1@elsewhere.invalid",
        "",
    );
    smtp_send(srv.smtp_port, ALICE, SUPPORT, &refused).await;
    srv.wait_postfix_queue_empty(LONG);
    let out = run_once(&config);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    srv.wait_postfix_queue_empty(LONG);
    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    // Without MOVE the originals were copied, flagged and UID-EXPUNGEd.
    assert_eq!(support.count("INBOX").await, 0, "{log}");
    let answered = support.messages("Answered").await;
    assert_eq!(answered.len(), 1, "{log}");
    // The whole message is still there, untouched.
    assert!(answered[0].raw.len() > 400_000);
    let queued = support.messages("Queues/Support").await;
    assert_eq!(queued.len(), 1, "{log}");
    assert!(queued[0].raw.contains("ref1@elsewhere.invalid"));
    assert!(log.contains("reply refused"), "{log}");
    let mut alice = Client::login(srv.imap_port, ALICE).await;
    assert_eq!(
        replies_to(&alice.messages("INBOX").await, "big1@customer.test"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_longer_than_the_first_fetch_is_read_whole() {
    // The first FETCH reads 256 KiB of each message; this one is longer
    // (but within max_message_size) and what decides it comes after a
    // 300 KB attachment: it goes to the complaints queue only if it was
    // fetched whole (a prefix would leave it with the default queue).
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = srv.write_config(dir.path(), "");
    let blob = "QUJD".repeat(75_000);
    let long = format!(
        "From: Alice <{ALICE}>\r\nTo: {SUPPORT}\r\nSubject: Photo\r\nMessage-ID: <long1@customer.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n{blob}\r\n--b\r\nContent-Type: text/plain\r\n\r\nHello, my parcel arrived damaged, see the photo.\r\n--b--\r\n"
    );
    assert!(long.len() > 300_000);
    smtp_send(srv.smtp_port, ALICE, SUPPORT, long.as_bytes()).await;
    srv.wait_postfix_queue_empty(LONG);
    let out = run_once(&config);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let mut support = Client::login(srv.imap_port, SUPPORT).await;
    assert_eq!(support.count("INBOX").await, 0, "{log}");
    let complaints = support.messages("Queues/Complaints").await;
    assert_eq!(complaints.len(), 1, "{log}");
    assert!(complaints[0].raw.len() > 300_000, "stored whole");
}
