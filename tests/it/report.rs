//! `switchboard report` on the demo's state: the page's content, the
//! FAQ gaps it suggests, and the page rendered by a real headless
//! browser (Chromium from Debian's packages) without any request leaving
//! the machine. The screenshot is kept in the test output directory.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common;

/// Questions no FAQ entry answers, to find as a gap.
const GIFT: &[&str] = &[
    "Do you offer gift wrapping for orders?",
    "Can I have my order gift wrapped with a card?",
    "Could you gift wrap my order and add a note?",
];

fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_page_with_faq_gaps_renders_in_a_browser_without_requests() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = switchboard::demo::extract(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let new = config.with_file_name("Maildir/new");
    for (i, q) in GIFT.iter().enumerate() {
        let raw = String::from_utf8_lossy(&common::message("", "A question", q))
            .replace(
                "jane@customer.example",
                &format!("gift{i}@customer.example"),
            )
            .replace("Message-ID: <", &format!("Message-ID: <gift{i}."));
        std::fs::write(new.join(format!("1732399999.M{i}P9.gift")), raw)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (shared, mut md, _, cfg) = common::demo_pipeline_at(&config, None).await;
    let info = switchboard::daemon::mailbox_info(&cfg.mailboxes[0]);
    let outcomes = switchboard::daemon::drain(&mut md, &shared, &info)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gifts: Vec<String> = outcomes
        .iter()
        .filter(|o| o.from.starts_with("gift"))
        .map(|o| format!("{} {} {}", o.from, o.verdict, o.why))
        .collect();
    assert_eq!(gifts.len(), GIFT.len(), "{gifts:?}");

    let out = out_dir();
    let page = out.join("report.html");
    let (code, log) = common::cli_status(
        &config,
        &[
            "report",
            "--since",
            "30d",
            "--out",
            &page.display().to_string(),
        ],
    );
    assert_eq!(code, 0, "{log}");
    let html = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{e}"));
    for needle in [
        "Northwind Goods support report",
        "answered automatically",
        "Volume per day",
        "Queues and service levels",
        "Load per representative",
        "Why mail went to a person",
        "What to add to the FAQ",
        "[[entry]]",
        "gift",
    ] {
        assert!(html.contains(needle), "missing {needle:?}");
    }
    // No scripts, no external resources: the only URL is the SVG namespace.
    assert!(!html.contains("<script"));
    assert_eq!(
        html.matches("http:").count() + html.matches("https:").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
    // The same data as JSON.
    let (code, json) = common::cli_status(&config, &["report", "--json"]);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert!(v["messages"].as_i64().unwrap_or(0) >= 40, "{json}");
    let gaps = v["gaps"].as_array().cloned().unwrap_or_default();
    let gift = gaps
        .iter()
        .find(|g| {
            g["terms"]
                .as_array()
                .is_some_and(|t| t.iter().any(|w| w == "gift"))
        })
        .unwrap_or_else(|| panic!("no gift-wrapping gap in {json}"));
    assert_eq!(
        gift["questions"], 3,
        "{gift}\n{gifts:?}\ngap questions: {}",
        v["gap_questions"]
    );

    // A real browser: renders the page, and the page asks for nothing.
    let shot = out.join("report.png");
    let netlog = out.join("report-netlog.json");
    let _ = std::fs::remove_file(&shot);
    let status = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-default-apps",
            "--window-size=1100,2400",
        ])
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium (run scripts/install-test-deps.sh first): {e}")
        });
    assert!(status.success(), "chromium failed: {status:?}");
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.len() > 20_000 && png.starts_with(b"\x89PNG"),
        "no screenshot at {}",
        shot.display()
    );
    let log = std::fs::read_to_string(&netlog).unwrap_or_default();
    let urls: Vec<&str> = log
        .split("\"url\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(log.contains("\"events\""), "no network log from chromium");
    // Chromium's own housekeeping (its update check and account list)
    // is not the page's doing; anything else would be.
    let browser_own = [
        "://update.googleapis.com/service/update2/",
        "://accounts.google.com/ListAccounts",
        "://clients2.google.com/time/",
    ];
    let from_page: Vec<&&str> = urls
        .iter()
        .filter(|u| !u.starts_with("file://") && !u.starts_with("data:"))
        .filter(|u| !browser_own.iter().any(|b| u.contains(b)))
        .collect();
    assert!(
        from_page.is_empty(),
        "the page made requests: {from_page:?}"
    );
    eprintln!("report screenshot: {}", shot.display());
}

/// The report over a large store: figures for the README (not asserted
/// beyond sanity; machines here are noisy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_over_100000_audit_events() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}/state.db", dir.path().display());
    let store = switchboard::record::Store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let now = switchboard::util::now_ms();
    let pool = store.pool();
    // 50,000 messages with a "decided" event each, and as many other events.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 49999) \
         INSERT INTO messages (key, mailbox, message_id, sender, subject, received_at, updated_at, \
         state, verdict, folder, queue, rep, template, rule, ticket, decision) \
         SELECT 'k' || i, 'support', 'm' || i, 's' || (i % 5000) || '@x.test', 'subject', \
         $1 - (i * 50000), $1, 'done', CASE WHEN i % 3 = 0 THEN 'reply' ELSE 'route' END, 'F', \
         'support', CASE WHEN i % 2 = 0 THEN 'ann' ELSE 'ben' END, NULL, NULL, 'SB-' || i, '{}' FROM n",
    )
    .bind(now)
    .execute(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let data =
        r#"{"rule":null,"evidence":{"faq":{"confident":false,"evidence":{"scored":"QUESTION"}}}}"#;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999) \
         INSERT INTO audit (at, event, mailbox, message_key, detail, data) \
         SELECT $1 - (i * 25000), CASE WHEN i % 2 = 0 THEN 'decided' ELSE 'sent' END, 'support', \
         'k' || (i / 2), 'route: no confident answer', \
         replace($2, 'QUESTION', CASE i % 4 WHEN 0 THEN 'gift wrapping for my order ' || i \
           WHEN 1 THEN 'do you sell gift cards ' || i WHEN 2 THEN 'opening on boxing day ' || i \
           ELSE 'can I pay in bitcoin ' || i END) FROM n",
    )
    .bind(now)
    .bind(data)
    .execute(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    let r = switchboard::report::gather(&store, "Shop", now - 30 * 86_400_000, now + 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let html = switchboard::report::render(&r);
    let took = started.elapsed();
    eprintln!(
        "report over 100,000 audit events / 50,000 messages: {took:?}, {} bytes, {} gaps",
        html.len(),
        r.gaps.len()
    );
    assert!(r.messages > 40_000 && !r.gaps.is_empty());
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
}
