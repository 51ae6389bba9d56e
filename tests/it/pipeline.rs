//! The pipeline's crash-safety protocol and policies, end to end on a
//! Maildir with the file outbox and a real SQLite store.

use std::sync::Arc;
use std::time::Duration;

use switchboard::act::outbox::Outbox;
use switchboard::config::{OutboundConfig, SmtpConfig, Tls};
use switchboard::daemon::{Shared, drain, mailbox_info};
use switchboard::fetch::maildir::Maildir;
use switchboard::knowledge::Knowledge;
use switchboard::pipeline::{Outcome, Pipeline};
use switchboard::record::{Commit, MessageWrite, State, Store};

use crate::common::{Setup, message, write};

pub(crate) struct Env {
    pub(crate) setup: Setup,
    pub(crate) k: Arc<Knowledge>,
    pub(crate) store: Store,
    pub(crate) md: Maildir,
}

impl Env {
    pub(crate) async fn new() -> Env {
        Env::with_setup(Setup::new("")).await
    }

    pub(crate) async fn with_setup(setup: Setup) -> Env {
        let k = setup.knowledge();
        let cfg = setup.config();
        let store = Store::open(&cfg.store.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let md = Maildir::open(&setup.path("Maildir")).unwrap_or_else(|e| panic!("{e}"));
        Env {
            setup,
            k,
            store,
            md,
        }
    }

    pub(crate) async fn outbox(&self) -> Outbox {
        Outbox::open(&OutboundConfig::File {
            dir: self.setup.path("outbox"),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn shared(&self, outbox: Outbox, retry: Duration) -> Shared {
        let (_kt, kr) = tokio::sync::watch::channel(self.k.clone());
        let (_st, sr) = tokio::sync::watch::channel(false);
        Shared {
            pipeline: Pipeline {
                store: self.store.clone(),
                outbox,
                retry_initial: retry,
                retry_max: retry,
                clock: switchboard::pipeline::system_clock(),
            },
            knowledge: kr,
            shutdown: sr,
            max_size: 1 << 20,
            batch_size: 50,
            file_every: switchboard::daemon::FILE_EVERY,
            health: Default::default(),
            sla_check: std::time::Duration::from_secs(30),
        }
    }

    pub(crate) fn deliver(&self, name: &str, raw: &[u8]) {
        std::fs::write(self.setup.path("Maildir/new").join(name), raw)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub(crate) async fn run(&mut self, outbox: Outbox, retry: Duration) -> Vec<Outcome> {
        let shared = self.shared(outbox, retry);
        let cfg = self.setup.config();
        drain(&mut self.md, &shared, &mailbox_info(&cfg.mailboxes[0]))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn sent_files(&self) -> usize {
        std::fs::read_dir(self.setup.path("outbox"))
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// The Message-ID of a raw message, without angle brackets.
fn message_id(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .split("Message-ID: <")
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn question(id: &str, from: &str) -> Vec<u8> {
    let raw = message(
        "",
        "Opening hours",
        "What are your opening hours on Saturday?\n",
    );
    String::from_utf8_lossy(&raw)
        .replace("jane@customer.example", from)
        .replacen("Message-ID: <", &format!("Message-ID: <{id}."), 1)
        .into_bytes()
}

#[tokio::test]
async fn auto_reply_is_sent_threaded_and_filed() {
    let mut env = Env::new().await;
    env.deliver("1.q", &question("a1", "jane@customer.example"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, "reply", "{:?}", out[0].why);
    assert_eq!(env.sent_files(), 1);
    assert_eq!(env.md.list("Answered").len(), 1);
    assert_eq!(env.md.list("Sent").len(), 1);
    // The original carries \Answered (R); the copy in Sent is seen (S).
    let answered = env.md.list("Answered")[0].display().to_string();
    assert!(answered.ends_with(":2,R"), "{answered}");
    let sent = std::fs::read_to_string(&env.md.list("Sent")[0]).unwrap_or_default();
    for h in [
        "Auto-Submitted: auto-replied",
        "X-Auto-Response-Suppress: All",
        "In-Reply-To: <a1.",
        "References: <a1.",
        "Subject: Re: Opening hours [#SB-1001]",
        "To: \"Jane Doe\" <jane@customer.example>",
        "@shop.example>",
    ] {
        assert!(sent.contains(h), "missing {h:?} in\n{sent}");
    }
}

/// Records a reply decision for `key` in `state`, as a crash at that
/// point leaves it.
async fn crashed_in(store: &Store, key: &str, state: State, reply_id: &str, raw: &str) {
    let c = Commit {
        messages: vec![MessageWrite {
            key: key.into(),
            mailbox: "support".into(),
            state: Some(state),
            verdict: "reply".into(),
            folder: "Answered".into(),
            template: Some("faq/opening-hours".into()),
            reply_message_id: Some(reply_id.into()),
            reply_raw: Some(raw.into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    store.commit(&c, 1).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn crash_while_sending_never_sends_twice() {
    let mut env = Env::new().await;
    let raw = question("crash1", "jane@customer.example");
    env.deliver("1.q", &raw);
    // Simulate a crash right after the intent was recorded.
    let key = "mid:crash1.".to_string()
        + String::from_utf8_lossy(&raw)
            .split("Message-ID: <crash1.")
            .nth(1)
            .and_then(|s| s.split('>').next())
            .unwrap_or_default();
    crashed_in(&env.store, &key, State::Sending, "r@shop.example", "raw").await;
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out.len(), 1);
    assert_eq!(
        env.sent_files(),
        0,
        "a possibly-sent reply must not be sent again"
    );
    assert_eq!(env.md.list("Queues/Support").len(), 1);
    assert!(
        out[0].why.contains("may already have been sent"),
        "{}",
        out[0].why
    );
}

#[tokio::test]
async fn crash_after_sending_files_without_resending() {
    let mut env = Env::new().await;
    let raw = question("sent1", "jane@customer.example");
    env.deliver("1.q", &raw);
    let key = format!(
        "mid:{}",
        String::from_utf8_lossy(&raw)
            .split("Message-ID: <")
            .nth(1)
            .and_then(|s| s.split('>').next())
            .unwrap_or_default()
    );
    // A crash after the reply was accepted and recorded, before filing.
    crashed_in(
        &env.store,
        &key,
        State::Sent,
        "r2@shop.example",
        "Subject: the reply\r\n\r\nbody\r\n",
    )
    .await;
    env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(env.sent_files(), 0);
    assert_eq!(env.md.list("Answered").len(), 1);
    let sent = env.md.list("Sent");
    assert_eq!(sent.len(), 1);
    assert!(
        std::fs::read_to_string(&sent[0])
            .unwrap_or_default()
            .contains("the reply")
    );
}

#[tokio::test]
async fn smtp_outage_defers_then_sends_exactly_once() {
    let mut env = Env::new().await;
    env.deliver("1.q", &question("t1", "jane@customer.example"));
    // A port nobody listens on: connection refused is a temporary failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    let down = Outbox::open(&OutboundConfig::Smtp(SmtpConfig {
        host: "127.0.0.1".into(),
        port: closed,
        tls: Tls::None,
        username: None,
        auth: switchboard::config::AuthMechanism::Plain,
        secret: None,
        timeout: Duration::from_secs(5),
        pool_size: 1,
        danger_accept_invalid_certs: false,
    }))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let out = env.run(down.clone(), Duration::from_secs(3600)).await;
    assert_eq!(out[0].verdict, "deferred", "{:?}", out[0].why);
    assert_eq!(
        env.md.list("INBOX").len(),
        1,
        "the message stays in the inbox"
    );
    // Before the retry time nothing happens, even with a working transport.
    let out = env.run(env.outbox().await, Duration::from_secs(3600)).await;
    assert_eq!(out[0].verdict, "deferred");
    assert_eq!(env.sent_files(), 0);
    // Make the retry due and run with the working transport.
    sqlx::query("UPDATE messages SET retry_at = 0")
        .execute(env.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "reply");
    assert_eq!(env.sent_files(), 1);
    let again = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert!(again.is_empty());
    assert_eq!(env.sent_files(), 1);
}

#[tokio::test]
async fn duplicates_rate_limit_and_follow_ups() {
    let mut env = Env::new().await;
    // The same message delivered twice (e.g. to two aliases): one reply.
    let q = question("dup", "jane@customer.example");
    env.deliver("1.a", &q);
    env.deliver("2.b", &q);
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out.len(), 2);
    assert_eq!(env.sent_files(), 1);
    assert_eq!(env.md.list("Answered").len(), 2);

    // The same sender asks the same thing again the same day: a person answers.
    env.deliver("3.c", &question("again", "jane@customer.example"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "route", "{}", out[0].why);
    assert!(
        out[0].why.contains("already got the automatic reply"),
        "{}",
        out[0].why
    );
    assert_eq!(env.sent_files(), 1);

    // "That didn't help": a reply to our auto-reply goes to a person.
    let sent = std::fs::read_to_string(&env.md.list("Sent")[0]).unwrap_or_default();
    let our_id = sent
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap_or_default()
        .to_string();
    let follow = String::from_utf8_lossy(&message(
        &format!("In-Reply-To: {our_id}\nReferences: {our_id}"),
        "Re: Opening hours [#SB-1001]",
        "That did not help, what are your opening hours on Sunday?\n",
    ))
    .replace("Message-ID: <", "Message-ID: <fu.")
    .into_bytes();
    env.deliver("4.d", &follow);
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "route");
    assert_eq!(
        out[0].ticket.as_deref(),
        Some("SB-1001"),
        "follow-up keeps its ticket"
    );
    assert_eq!(env.sent_files(), 1);

    // Someone else typing the same ticket tag does not join that conversation.
    let hijack = String::from_utf8_lossy(&message(
        "",
        "Re: Opening hours [#SB-1001]",
        "Hi, when are you open?\n",
    ))
    .replace("jane@customer.example", "mallory@evil.example")
    .replace("Message-ID: <", "Message-ID: <hj.")
    .into_bytes();
    env.deliver("5.e", &hijack);
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_ne!(out[0].ticket.as_deref(), Some("SB-1001"));
}

/// The customer writes again in reply to their own earlier mail: only the
/// store knows the conversation (the message names none of our ids or
/// tickets). Classified ahead as a new question, it must still be decided
/// as the follow-up it is: the same ticket, and a person answers.
#[tokio::test]
async fn a_follow_up_only_the_store_knows_is_decided_as_one() {
    let mut env = Env::new().await;
    let first = message(
        "",
        "Broken lamp",
        "The lamp I ordered arrived broken. I would like to talk to someone.\n",
    );
    let first_id = message_id(&first);
    env.deliver("1.a", &first);
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "route", "{}", out[0].why);
    let ticket = out[0].ticket.clone();
    assert!(ticket.is_some());
    // Alone, this is a question the FAQ answers (see `question`).
    let again = message(
        &format!("In-Reply-To: <{first_id}>\nReferences: <{first_id}>"),
        "Opening hours",
        "What are your opening hours on Saturday?\n",
    );
    env.deliver("2.b", &again);
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].ticket, ticket, "{}", out[0].why);
    assert_eq!(out[0].verdict, "route", "{}", out[0].why);
    assert_eq!(env.sent_files(), 0);
}

#[tokio::test]
async fn unparseable_mail_is_parked_not_lost() {
    let mut env = Env::new().await;
    env.deliver("1.bad", b"\x00\x01\x02 not a message at all");
    write(&env.setup.path("Maildir/new/2.empty"), "");
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.verdict == "park"), "{out:?}");
    assert_eq!(env.md.list("Parked").len(), 2);
}

/// A question close to an FAQ entry but not confidently answered gets no
/// reply: a draft of the answer is stored next to it for a person.
#[tokio::test]
async fn close_matches_get_a_draft_for_the_person_not_a_reply() {
    let config = format!(
        "{}\n[faq]\nsuggest_threshold = 0.001\n",
        crate::common::BASE_CONFIG
    );
    let rules = format!(
        "{}\n[[rep]]\nid = \"ann\"\nname = \"Ann\"\nemail = \"ann@shop.example\"\n",
        crate::common::BASE_RULES
    );
    let mut env = Env::with_setup(Setup::with(&config, &rules)).await;
    let raw = crate::common::message(
        "",
        "Phone",
        "Hello, is somebody there on Saturday afternoons to talk to on the phone?",
    );
    env.deliver("1.q", &raw);
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, "route", "{}", out[0].why);
    assert_eq!(env.sent_files(), 0, "a draft is never sent");
    let folder = env.md.list("Queues/Support");
    assert_eq!(
        folder.len(),
        2,
        "the message and its draft: {folder:?}\n{:?}",
        out[0].decision
    );
    let draft = folder
        .iter()
        .find(|p| p.to_string_lossy().ends_with(":2,DS"))
        .unwrap_or_else(|| panic!("no draft (flag D) in {folder:?}"));
    let text = std::fs::read_to_string(draft).unwrap_or_default();
    assert!(text.contains("Subject: Re: Phone"), "{text}");
    assert!(
        text.contains("To: \"Jane Doe\" <jane@customer.example>"),
        "{text}"
    );
    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT event, detail FROM audit ORDER BY id")
            .fetch_all(env.store.pool())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        events
            .iter()
            .any(|(e, d)| e == "draft" && d.contains("for a person to review")),
        "{events:?}"
    );
    // Ann sends the draft as it was (Cc to the shared address): recorded.
    let body = text
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\r\n\r\n");
    let original_id = message_id(&raw);
    let answer = format!(
        "From: Ann <ann@shop.example>\r\nTo: jane@customer.example\r\nCc: support@shop.example\r\nSubject: Re: Phone\r\nMessage-ID: <ann-1@shop.example>\r\nIn-Reply-To: <{original_id}>\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\n\r\n{body}"
    );
    env.deliver("3.a", answer.as_bytes());
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(out[0].verdict, "staff_reply", "{}", out[0].why);
    assert!(
        out[0].why.contains("the draft answer was sent unchanged"),
        "{}",
        out[0].why
    );
    let outcome: Option<String> = sqlx::query_scalar("SELECT outcome FROM drafts")
        .fetch_one(env.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome.as_deref(), Some("sent_unchanged"));
    use switchboard::decide::plan::draft_outcome;
    let draft =
        "Hello Jane, we are open from nine to five on weekdays and ten to two on Saturdays.";
    assert_eq!(draft_outcome(draft, draft), "sent_unchanged");
    assert_eq!(
        draft_outcome(
            draft,
            "Hi Jane, we are open nine to five on weekdays; on Saturdays we are closed, sorry."
        ),
        "edited"
    );
    assert_eq!(draft_outcome(draft, "Please call our hotline."), "not_used");
    // Automatic mail never gets a draft.
    let auto = crate::common::message(
        "Auto-Submitted: auto-generated",
        "Phone 2",
        "Is somebody there on Saturday?",
    );
    env.deliver("2.q", &auto);
    env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert_eq!(env.md.list("Queues/Support").len(), 2);
    assert!(
        !env.md
            .list("Ignored")
            .iter()
            .any(|p| p.to_string_lossy().contains(":2,D")),
        "no draft for automatic mail"
    );
}

/// The test setup with these `[limits]`.
async fn with_limits(limits: &str) -> Env {
    let config = format!("{}\n[limits]\n{limits}\n", crate::common::BASE_CONFIG);
    Env::with_setup(Setup::with(&config, crate::common::BASE_RULES)).await
}

/// The hourly limits count the reply log (aggregated by the store for the
/// batch's recipients and domains) plus the replies the batch itself
/// already decided.
#[tokio::test]
async fn hourly_limits_count_the_log_and_the_batch() {
    let mut env = with_limits("max_replies_per_hour = 3\nper_domain_per_hour = 2").await;
    for (i, from) in [
        "a@one.example",
        "b@one.example",
        "c@two.example",
        "e@three.example",
    ]
    .iter()
    .enumerate()
    {
        env.deliver(&format!("{i}.q"), &question(&format!("h{i}"), from));
    }
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    let verdicts: Vec<(&str, &str)> = out
        .iter()
        .map(|o| (o.verdict.as_str(), o.why.as_str()))
        .collect();
    assert_eq!(
        verdicts.iter().filter(|(v, _)| *v == "reply").count(),
        3,
        "{verdicts:?}"
    );
    assert!(
        verdicts
            .iter()
            .any(|(v, why)| *v != "reply" && why.contains("circuit breaker")),
        "{verdicts:?}"
    );
    assert_eq!(env.sent_files(), 3);

    // Next batch: the log already holds two replies to one.example and
    // three recipients this hour.
    env.deliver("5.q", &question("h5", "f@one.example"));
    env.deliver("6.q", &question("h6", "g@four.example"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    let why = |addr: &str| {
        out.iter()
            .find(|o| o.from.contains(addr))
            .map(|o| (o.verdict.clone(), o.why.clone()))
    };
    let f = why("f@one.example").unwrap_or_else(|| panic!("{out:?}"));
    assert_ne!(f.0, "reply");
    assert!(
        f.1.contains("2 automatic replies to one.example"),
        "{}",
        f.1
    );
    let g = why("g@four.example").unwrap_or_else(|| panic!("{out:?}"));
    assert_ne!(g.0, "reply");
    assert!(
        g.1.contains("circuit breaker: automatic replies to 3 recipients"),
        "{}",
        g.1
    );
    assert_eq!(env.sent_files(), 3);
}

/// A recipient answered earlier this hour and again in this batch counts
/// once towards the breaker (distinct recipients).
#[tokio::test]
async fn a_recipient_answered_again_counts_once_towards_the_breaker() {
    let mut env = with_limits(
        "max_replies_per_hour = 3\nper_domain_per_hour = 100\nper_sender_interval = \"200ms\"",
    )
    .await;
    env.deliver("1.q", &question("r1", "a@one.example"));
    env.deliver("2.q", &question("r2", "b@two.example"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    assert!(out.iter().all(|o| o.verdict == "reply"), "{out:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // a again (allowed after the interval), then c: two distinct
    // recipients this hour before c, so c is still answered.
    env.deliver("3.q", &question("r3", "a@one.example"));
    env.deliver("4.q", &question("r4", "c@three.example"));
    let out = env.run(env.outbox().await, Duration::from_secs(1)).await;
    let verdicts: Vec<(&str, &str, &str)> = out
        .iter()
        .map(|o| (o.from.as_str(), o.verdict.as_str(), o.why.as_str()))
        .collect();
    assert!(
        verdicts.iter().all(|(_, v, _)| *v == "reply"),
        "{verdicts:?}"
    );
    assert_eq!(env.sent_files(), 4);
}
