//! Follow-through against real Dovecot and Postfix: a representative's
//! answer (sent by SMTP with the shared address in Cc) is recognised and
//! stops the conversation's clock; a conversation nobody answers gets
//! the `$Overdue` reminder after its first-response deadline, and is
//! escalated to the queue's supervisor folder after `escalate_overdue`.

use std::time::{Duration, Instant};

use crate::mailserver::{Client, Daemon, Servers, customer_mail, smtp_send, wait_for};

const SUPPORT: &str = "support@example.test";

use crate::common::cli_status as cli;

/// The daemon config (deadlines checked every second) with these rules.
fn setup(
    srv: &Servers,
    dir: &std::path::Path,
    mailbox_extra: &str,
    rules: &str,
) -> std::path::PathBuf {
    let config = srv.write_config(dir, mailbox_extra);
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(
        &config,
        text.replace("[daemon]\n", "[daemon]\nsla_check = \"1s\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    crate::common::write(&dir.join("rules/rules.toml"), rules);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_reminders_escalation_and_a_reps_answer() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = setup(
        &srv,
        dir.path(),
        "",
        r#"
[[queue]]
name = "support"
folder = "Queues/Support"
escalation_folder = "Queues/Support/Supervisor"
strategy = "round_robin"
first_response = "4s"
follow_up = "1h"
escalate_overdue = "4s"
close_after = "8s"
check_in = "check-in"
remind_by_mail = true

[[rep]]
id = "ann"
name = "Ann Lee"
email = "ann@example.test"
queues = ["support"]
folder = "Reps/Ann"

[[rule]]
name = "automatic"
when = { auto_generated = true }
ignore = "automatic message"
"#,
    );
    crate::common::write(
        &dir.path().join("templates/check-in.txt.j2"),
        "Hello,\n\nwas your question answered? Just reply if anything is still open.\nReference: {{ ticket }}\n",
    );
    let mut daemon = Daemon::spawn(&config);
    // Two customers write; both go to Ann (the only member).
    for (who, id) in [
        ("alice", "q-alice@customer.test"),
        ("bob", "q-bob@customer.test"),
    ] {
        let from = format!("{who}@customer.test");
        let raw = customer_mail(
            &from,
            SUPPORT,
            "Request for a quote",
            "Could you send me a quote for 20 chairs?",
            id,
            "",
        );
        smtp_send(srv.smtp_port, &from, SUPPORT, &raw).await;
    }
    let sent = Instant::now();
    wait_for(Duration::from_secs(30), "both routed to Ann", || {
        let p = srv.imap_port;
        async move { Client::login(p, SUPPORT).await.count("Reps/Ann").await == 2 }
    })
    .await;
    // Ann answers Bob from her own mail client, copying the shared address.
    let answer = format!(
        "From: Ann Lee <ann@example.test>\r\nTo: bob@customer.test\r\nCc: {SUPPORT}\r\nSubject: Re: Request for a quote\r\nMessage-ID: <ann-1@example.test>\r\nIn-Reply-To: <q-bob@customer.test>\r\nReferences: <q-bob@customer.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nHi Bob, here is your quote.\r\n"
    );
    smtp_send(
        srv.smtp_port,
        "ann@example.test",
        SUPPORT,
        answer.as_bytes(),
    )
    .await;
    wait_for(Duration::from_secs(30), "Ann's answer recorded", || {
        let p = srv.imap_port;
        async move { Client::login(p, SUPPORT).await.count("Answered").await == 1 }
    })
    .await;
    // Alice's conversation passes its deadline: the reminder flag.
    let flagged = |p: u16| async move {
        Client::login(p, SUPPORT)
            .await
            .messages("Reps/Ann")
            .await
            .iter()
            .filter(|m| m.flags.iter().any(|f| f.contains("$Overdue")))
            .map(|m| m.header("Message-ID").unwrap_or_default())
            .collect::<Vec<_>>()
    };
    wait_for(Duration::from_secs(30), "the $Overdue reminder", || {
        let p = srv.imap_port;
        async move { !flagged(p).await.is_empty() }
    })
    .await;
    let reminded_after = sent.elapsed();
    assert_eq!(flagged(srv.imap_port).await, ["<q-alice@customer.test>"]);
    // Then escalated to the supervisor; Bob's stays with Ann.
    wait_for(Duration::from_secs(30), "the escalation", || {
        let p = srv.imap_port;
        async move {
            Client::login(p, SUPPORT)
                .await
                .count("Queues/Support/Supervisor")
                .await
                == 1
        }
    })
    .await;
    let escalated_after = sent.elapsed();
    let mut c = Client::login(srv.imap_port, SUPPORT).await;
    let left = c.messages("Reps/Ann").await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].header("Message-ID").as_deref(),
        Some("<q-bob@customer.test>")
    );
    let up = c.messages("Queues/Support/Supervisor").await;
    assert_eq!(
        up[0].header("Message-ID").as_deref(),
        Some("<q-alice@customer.test>")
    );
    eprintln!(
        "deadline 4 s: reminded after {reminded_after:?}, escalated after {escalated_after:?} (escalate_overdue 4 s)"
    );
    assert!(
        reminded_after < Duration::from_secs(4 + 20),
        "{reminded_after:?}"
    );

    // What the tools show.
    let (code, out) = cli(&config, &["overdue"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("alice@customer.test") && out.contains("overdue, reminded"),
        "{out}"
    );
    assert!(!out.contains("bob@customer.test"), "{out}");
    wait_for(Duration::from_secs(20), "service levels in status", || {
        let c = config.clone();
        async move {
            cli(&c, &["status", "--offline"])
                .1
                .contains("service levels (30 days): 50.0% of first responses in time (1/2)")
        }
    })
    .await;
    let (_, stats) = cli(&config, &["stats", "--offline", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&stats).unwrap_or_else(|e| panic!("{e}: {stats}"));
    let sl = &v["service_levels"][0];
    assert_eq!(sl["queue"], "support", "{stats}");
    assert_eq!(sl["conversations_with_deadline"], 2, "{stats}");
    assert_eq!(sl["first_response_in_time"], 1, "{stats}");
    let (_, log) = cli(&config, &["log", "--format", "json"]);
    for needle in ["sla_overdue", "sla_escalated", "a person's answer in"] {
        assert!(log.contains(needle), "missing {needle} in the log:\n{log}");
    }
    // Bob stays silent after Ann's answer: solved after close_after, with
    // one check-in message; Alice's unanswered conversation is not.
    let solved = |p: u16| async move {
        Client::login(p, SUPPORT)
            .await
            .messages("Reps/Ann")
            .await
            .iter()
            .filter(|m| m.flags.iter().any(|f| f.contains("$Solved")))
            .count()
    };
    wait_for(Duration::from_secs(40), "Bob's conversation solved", || {
        let p = srv.imap_port;
        async move { solved(p).await == 1 }
    })
    .await;
    srv.wait_postfix_queue_empty(Duration::from_secs(30));
    let check_ins = |srv: &Servers| {
        srv.maildir_files("bob@customer.test", "INBOX")
            .iter()
            .filter(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .contains("was your question answered?")
            })
            .count()
    };
    assert_eq!(check_ins(&srv), 1);
    let bob_mail = srv
        .maildir_files("bob@customer.test", "INBOX")
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .find(|t| t.contains("was your question answered?"))
        .unwrap_or_default();
    for h in [
        "Auto-Submitted: auto-replied",
        "In-Reply-To: <q-bob@customer.test>",
    ] {
        assert!(bob_mail.contains(h), "missing {h} in\n{bob_mail}");
    }
    // Ann got one reminder mail, about Alice's conversation.
    let reminders = |srv: &Servers| -> Vec<String> {
        srv.maildir_files("ann@example.test", "INBOX")
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .filter(|t| t.contains("Subject: Overdue: "))
            .collect()
    };
    let mail = reminders(&srv);
    assert_eq!(mail.len(), 1, "{mail:?}");
    for h in [
        "Auto-Submitted: auto-generated",
        "alice@customer.test",
        "$Overdue",
    ] {
        assert!(mail[0].contains(h), "missing {h} in\n{}", mail[0]);
    }
    // A restart sends no second reminder, escalation or check-in.
    let (st, _) = daemon.terminate();
    assert!(st.success());
    let mut daemon = Daemon::spawn(&config);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, log) = cli(&config, &["log", "--format", "json"]);
    assert_eq!(log.matches("\"sla_overdue\"").count(), 1, "{log}");
    assert_eq!(log.matches("\"sla_escalated\"").count(), 1, "{log}");
    assert_eq!(log.matches("\"solved\"").count(), 1, "{log}");
    srv.wait_postfix_queue_empty(Duration::from_secs(30));
    assert_eq!(check_ins(&srv), 1);
    assert_eq!(reminders(&srv).len(), 1);
    let (st, _) = daemon.terminate();
    assert!(st.success(), "{}", daemon.log_text());
}

/// A representative's answer filed in a sent folder of the shared
/// account (not sent to it) is recognised, and the deadline stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_a_sent_folder_stops_the_clock() {
    let srv = Servers::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = setup(
        &srv,
        dir.path(),
        "sent_folders = [\"Outbox/Team\"]\n",
        r#"
[[queue]]
name = "support"
folder = "Queues/Support"
strategy = "round_robin"
first_response = "6s"

[[rep]]
id = "ann"
name = "Ann Lee"
email = "ann@example.test"
queues = ["support"]
folder = "Reps/Ann"
"#,
    );
    let mut daemon = Daemon::spawn(&config);
    let raw = customer_mail(
        "alice@customer.test",
        SUPPORT,
        "Request for a quote",
        "Could you send me a quote for 20 chairs?",
        "q-sent@customer.test",
        "",
    );
    smtp_send(srv.smtp_port, "alice@customer.test", SUPPORT, &raw).await;
    wait_for(Duration::from_secs(30), "routed to Ann", || {
        let p = srv.imap_port;
        async move { Client::login(p, SUPPORT).await.count("Reps/Ann").await == 1 }
    })
    .await;
    // Ann answers from the shared account; her client files the answer.
    let answer = "From: Ann Lee <ann@example.test>\r\nTo: alice@customer.test\r\nSubject: Re: Request for a quote\r\nMessage-ID: <ann-sent-1@example.test>\r\nIn-Reply-To: <q-sent@customer.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nHi Alice, here is your quote.\r\n";
    let filed = Instant::now();
    Client::login(srv.imap_port, SUPPORT)
        .await
        .append("Outbox/Team", answer.as_bytes())
        .await;
    wait_for(Duration::from_secs(20), "the answer recognised", || {
        let c = config.clone();
        async move {
            cli(&c, &["log", "--format", "json"])
                .1
                .contains("found in Outbox/Team")
        }
    })
    .await;
    eprintln!(
        "answer in a sent folder recognised after {:?}",
        filed.elapsed()
    );
    // Past the deadline: no reminder, and the answer counts as in time.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let msgs = Client::login(srv.imap_port, SUPPORT)
        .await
        .messages("Reps/Ann")
        .await;
    assert_eq!(msgs.len(), 1);
    assert!(
        !msgs[0].flags.iter().any(|f| f.contains("$Overdue")),
        "{:?}",
        msgs[0].flags
    );
    let (_, stats) = cli(&config, &["stats", "--offline", "--json"]);
    assert!(stats.contains("\"first_response_in_time\":1"), "{stats}");
    // The answer stays where the client put it.
    assert_eq!(
        Client::login(srv.imap_port, SUPPORT)
            .await
            .count("Outbox/Team")
            .await,
        1
    );
    let (st, _) = daemon.terminate();
    assert!(st.success(), "{}", daemon.log_text());
}
