//! Trust and safety: one regression test per class of attack or failure
//! found in the red-team review (see SECURITY.md). Each runs the real
//! pipeline on a Maildir with a real SQLite store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard::act::outbox::Outbox;
use switchboard::act::reply::Outgoing;
use switchboard::config::{OutboundConfig, SmtpConfig, Tls};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::{Setup, message};
use crate::pipeline::{Env, question};

const REPLY_TO_ALL: &str = r#"
[[rule]]
name = "reply-to-everything"
reply = "ack"
"#;

fn forged(id: &str, from: &str, reply_to: &str) -> Vec<u8> {
    let raw = String::from_utf8_lossy(&question(id, from)).into_owned();
    raw.replacen("Subject:", &format!("Reply-To: {reply_to}\r\nSubject:"), 1)
        .into_bytes()
}

fn outbox_files(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.setup.path("outbox"))
        .map(|r| {
            r.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Issue: five messages From eve@attacker with Reply-To victim@elsewhere
/// gave the victim five automatic replies (the limit looked up the From
/// address but recorded the Reply-To).
#[tokio::test]
async fn a_forged_reply_to_gets_at_most_one_reply() {
    let mut env = Env::new().await;
    for i in 0..5 {
        env.deliver(
            &format!("{i}.a"),
            &forged(
                &format!("eve{i}"),
                "eve@attacker.test",
                "victim@elsewhere.test",
            ),
        );
    }
    // Other attacker addresses, same victim.
    for i in 0..5 {
        env.deliver(
            &format!("{i}.b"),
            &forged(
                &format!("mallory{i}"),
                &format!("mallory{i}@attacker{i}.test"),
                "victim@elsewhere.test",
            ),
        );
    }
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out.len(), 10);
    assert_eq!(
        env.sent_files(),
        1,
        "{:#?}",
        out.iter().map(|o| &o.why).collect::<Vec<_>>()
    );
    let routed = out.iter().filter(|o| o.verdict == "route").count();
    assert_eq!(routed, 9, "the rest goes to a person, never lost");
    // A real customer still gets an answer: the breaker was not used up.
    env.deliver("c.1", &question("real", "jane@customer.example"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "reply", "{}", out[0].why);
}

/// Issue: an 86 KB display name and a 1 MB subject were echoed to the
/// victim; header lines over 998 characters were written.
#[tokio::test]
async fn sender_text_echoed_into_a_reply_is_bounded() {
    let mut env = Env::with_setup(Setup::new(REPLY_TO_ALL)).await;
    let name = "Buy cheap pills now ".repeat(4300);
    let subject = "free money ".repeat(100_000);
    let long_id = format!("{}@attacker.test", "x".repeat(5000));
    let raw = format!(
        "From: \"{name}\" <eve@attacker.test>\r\nTo: support@shop.example\r\nSubject: {subject}\r\nMessage-ID: <{long_id}>\r\nReferences: <a@b> <{long_id}>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nhello\r\n"
    );
    env.deliver("big.eml", raw.as_bytes());
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "reply", "{}", out[0].why);
    let files = outbox_files(&env);
    assert_eq!(files.len(), 1);
    let reply = &files[0];
    assert!(reply.len() < 10_000, "the reply is {} bytes", reply.len());
    for line in reply.lines() {
        assert!(
            line.len() <= 998,
            "header line of {} characters",
            line.len()
        );
    }
    assert!(
        !reply.contains(&"x".repeat(300)),
        "the absurd Message-ID is not repeated"
    );
}

/// Issue: bidi and zero-width characters reached reply subjects and logs.
#[tokio::test]
async fn invisible_characters_never_reach_headers() {
    let mut env = Env::with_setup(Setup::new(REPLY_TO_ALL)).await;
    let raw = message(
        "",
        "=?UTF-8?Q?Invoice_=E2=80=AEfdp.exe=E2=80=8B=EF=BB=BF=E2=81=A6?=",
        "hello\n",
    );
    env.deliver("bidi.eml", &raw);
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "reply", "{}", out[0].why);
    assert!(
        !out[0].subject.chars().any(switchboard::parse::is_invisible),
        "{:?}",
        out[0].subject
    );
    let reply = &outbox_files(&env)[0];
    let subject = reply
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .unwrap_or_default()
        .to_string();
    // lettre encodes non-ASCII subjects; decode by parsing the reply.
    let parsed = switchboard::parse::parse(reply.as_bytes(), &Default::default())
        .unwrap_or_else(|e| panic!("{e}: {subject}"));
    assert_eq!(
        parsed
            .subject
            .chars()
            .filter(|c| switchboard::parse::is_invisible(*c))
            .count(),
        0
    );
    assert!(
        parsed.subject.contains("Invoice fdp.exe"),
        "{}",
        parsed.subject
    );
}

/// Issue: symbolic links in `new/` were followed (a file outside the
/// Maildir got an auto-reply), and a file name that is not UTF-8 was
/// skipped without a word.
#[tokio::test]
async fn maildir_symlinks_are_parked_and_odd_names_processed() {
    use std::os::unix::ffi::OsStrExt;
    let mut env = Env::new().await;
    let outside = env.setup.path("outside.eml");
    std::fs::write(&outside, question("outside", "jane@customer.example"))
        .unwrap_or_else(|e| panic!("{e}"));
    let link = env.setup.path("Maildir/new/link.eml");
    std::os::unix::fs::symlink(&outside, &link).unwrap_or_else(|e| panic!("{e}"));
    let odd = env
        .setup
        .path("Maildir/new")
        .join(std::ffi::OsStr::from_bytes(
            b"caf\xe9\nINFO forged line.eml",
        ));
    std::fs::write(&odd, question("odd", "ann@customer.example")).unwrap_or_else(|e| panic!("{e}"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out.len(), 2, "{out:#?}");
    let parked = out
        .iter()
        .find(|o| o.verdict == "park")
        .unwrap_or_else(|| panic!("{out:#?}"));
    assert!(parked.why.contains("symbolic link"), "{}", parked.why);
    let answered = out
        .iter()
        .find(|o| o.verdict == "reply")
        .unwrap_or_else(|| panic!("{out:#?}"));
    assert!(
        !answered.id.contains('\n'),
        "a file name cannot forge a log line: {:?}",
        answered.id
    );
    assert_eq!(env.sent_files(), 1, "only the real message was answered");
    // The link itself was filed (not its target), the target is untouched.
    let parked_files = env.md.list("Parked");
    assert_eq!(parked_files.len(), 1);
    assert!(std::fs::symlink_metadata(&parked_files[0]).is_ok_and(|m| m.is_symlink()));
    assert!(outside.exists());
    assert!(env.md.list("INBOX").is_empty());
}

/// A loopback SMTP server that accepts every message but confirms it only
/// after `delay` (a slow relay, or a lost confirmation). Counts messages
/// whose content it received, and the most connections open at once.
async fn slow_relay(delay: Duration) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let accepted = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let most = peak.clone();
    let open = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let count = count.clone();
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let open = open.clone();
            tokio::spawn(async move {
                // Counted closed when this task ends, however it ends.
                struct Closed(Arc<AtomicUsize>);
                impl Drop for Closed {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _closed = Closed(open);
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 slow.test ESMTP\r\n").await;
                let mut data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = if data {
                        if line != "." {
                            continue;
                        }
                        data = false;
                        count.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        b"250 2.0.0 queued\r\n"
                    } else {
                        match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                            "EHLO" => b"250-slow.test\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                data = true;
                                b"354 go ahead\r\n"
                            }
                            "QUIT" => b"221 bye\r\n",
                            _ => b"250 ok\r\n",
                        }
                    };
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, accepted, peak)
}

/// An SMTP outbox to the relay on `port`, keeping two connections.
async fn relay_outbox(port: u16, timeout: Duration) -> Outbox {
    Outbox::open(&OutboundConfig::Smtp(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls: Tls::None,
        username: None,
        auth: switchboard::config::AuthMechanism::Plain,
        secret: None,
        timeout,
        pool_size: 2,
        danger_accept_invalid_certs: false,
    }))
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `pool_size` caps the connections to the relay for the whole process:
/// replies sent at the same moment (by several mailboxes) wait for a free
/// connection instead of opening more.
#[tokio::test]
async fn pool_size_caps_the_connections_of_all_senders() {
    let (port, accepted, peak) = slow_relay(Duration::from_millis(150)).await;
    let smtp = relay_outbox(port, Duration::from_secs(10)).await;
    let replies: Vec<Outgoing> = (0..6)
        .map(|i| {
            let to = format!("customer{i}@customer.example");
            let envelope = lettre::address::Envelope::new(
                Some(
                    "support@shop.example"
                        .parse()
                        .unwrap_or_else(|e| panic!("{e}")),
                ),
                vec![to.parse().unwrap_or_else(|e| panic!("{e}"))],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            Outgoing {
                message_id: format!("r{i}@shop.example"),
                envelope,
                raw: format!(
                    "From: support@shop.example\r\nTo: {to}\r\nSubject: Re: {i}\r\n\r\nHello\r\n"
                )
                .into_bytes(),
                to,
                subject: format!("Re: {i}"),
            }
        })
        .collect();
    // Two "mailboxes" each handing over three replies at once.
    let (a, b) = tokio::join!(
        futures::future::join_all(replies[..3].iter().map(|r| smtp.send(r))),
        futures::future::join_all(replies[3..].iter().map(|r| smtp.send(r))),
    );
    for r in a.iter().chain(&b) {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 6, "every reply was sent");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "never more connections than pool_size"
    );
}

/// Issue: a relay that confirms late (after the client's timeout) got the
/// same reply again on every retry: 4 copies in 40 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_the_relay_did_not_confirm_is_never_sent_again() {
    let (port, accepted, _) = slow_relay(Duration::from_secs(10)).await;
    let mut env = Env::new().await;
    env.deliver("1.q", &question("slow", "jane@customer.example"));
    let smtp = relay_outbox(port, Duration::from_secs(2)).await;
    let out = env.run(smtp.clone(), Duration::from_millis(100)).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, "route", "{}", out[0].why);
    assert!(out[0].why.contains("did not confirm"), "{}", out[0].why);
    assert_eq!(env.md.list("Queues/Support").len(), 1, "a person checks");
    // Nothing is left to retry; running again sends nothing.
    env.deliver("2.q", &question("slow", "jane@customer.example"));
    let again = env.run(smtp, Duration::from_millis(100)).await;
    assert!(again.iter().all(|o| o.verdict != "reply"), "{again:#?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the relay got the reply once"
    );
    // The uncertain reply counts for the limits and is in the audit log.
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE event = 'reply_uncertain'")
        .fetch_one(env.store.pool())
        .await
        .unwrap_or(0);
    assert_eq!(n, 1);
}

/// Issue: a crash between the APPEND to Sent and the `archived` write made
/// the restart append a second copy to Sent.
#[tokio::test]
async fn a_reply_already_in_sent_is_not_stored_twice() {
    let mut env = Env::new().await;
    let raw = question("once", "jane@customer.example");
    env.deliver("1.q", &raw);
    // Run once normally, then fake the crash: state back to `sent`.
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "reply");
    assert_eq!(env.md.list("Sent").len(), 1);
    sqlx::query("UPDATE messages SET state = 'sent'")
        .execute(env.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The original is back in the inbox, as after a crash before the move.
    let answered = env.md.list("Answered");
    std::fs::rename(&answered[0], env.setup.path("Maildir/cur/1.q:2,R"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out.len(), 1);
    assert_eq!(env.md.list("Sent").len(), 1, "no second copy in Sent");
    assert_eq!(env.sent_files(), 1, "and no second reply");
}
