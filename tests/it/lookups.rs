//! Lookups of the customer's own data, against real backends: a local
//! HTTP server (slow, failing, malformed and foreign answers), SQL on
//! SQLite and PostgreSQL, a program; the owner check; and a backend that
//! hangs or answers garbage during a full pipeline run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard::decide::{Decision, Verdict};
use switchboard::knowledge::Knowledge;
use switchboard::pipeline;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, Setup};

const JANE: &str = "jane@customer.example";

/// A small HTTP/1.1 server on loopback: path → (delay, raw response).
/// Requests without the right `X-Api-Key` get 401.
async fn http_server(routes: HashMap<String, (Duration, String)>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let authorised = req
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case("x-api-key: s3cret-key"));
                let (delay, resp) = if !authorised {
                    (
                        Duration::ZERO,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_string(),
                    )
                } else {
                    routes.get(&path).cloned().unwrap_or((
                        Duration::ZERO,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                    ))
                };
                tokio::time::sleep(delay).await;
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

fn json_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn order(id: u32, status: &str, email: &str) -> String {
    format!(
        r#"{{"id": {id}, "status": "{status}", "carrier": "DHL", "tracking": "JD{id}", "customer": {{"email": "{email}"}}}}"#
    )
}

const ORDER_RULES: &str = r#"
[[rule]]
name = "order-delayed"
when = { lookup.order.status = { in = ["delayed"] } }
route = "billing"

[[rule]]
name = "order-status"
when = { subject = { contains = "order" } }
needs = ["order"]
reply = "order-answer"
"#;

/// A setup whose `order` lookup is `lookup` (the rest of the table).
fn setup_with(lookup: &str) -> Setup {
    let s = Setup::new(&format!(
        "[[lookup]]\nname = \"order\"\nextract = {{ regex = '(?i)order\\s*#?(\\S+)' }}\n{lookup}\n{ORDER_RULES}"
    ));
    common::write(
        &s.path("templates/order-answer.txt.j2"),
        "Your order {{ lookup.order.id }} is {{ lookup.order.status }}, tracking {{ lookup.order.tracking }}.\n",
    );
    s
}

async fn decide(k: &Knowledge, subject: &str, from: &str) -> Decision {
    let raw = common::message("", subject, "Please tell me.")
        .into_iter()
        .collect::<Vec<u8>>();
    let raw = String::from_utf8_lossy(&raw).replace(JANE, from);
    pipeline::dry_run_looked_up(raw.as_bytes(), None, k).await.1
}

fn reply_text(k: &Knowledge, subject: &str, d: &Decision) -> String {
    let raw = common::message("", subject, "Please tell me.");
    let m = switchboard::parse::parse(&raw, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    pipeline::build_reply(&m, d, k, Some("SB-1"))
        .map(|(r, _)| r.text)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn why(d: &Decision) -> String {
    d.reasons.join(" | ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_lookups_against_a_real_server() {
    let chunked = {
        let body = order(48214, "shipped", JANE);
        let (a, b) = body.split_at(10);
        format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
    };
    let mut routes = HashMap::new();
    let fast = Duration::ZERO;
    routes.insert(
        "/orders/48213".into(),
        (fast, json_response(&order(48213, "shipped", JANE))),
    );
    routes.insert("/orders/48214".into(), (fast, chunked));
    routes.insert(
        "/orders/48250".into(),
        (fast, json_response(&order(48250, "delayed", JANE))),
    );
    routes.insert(
        "/orders/66666".into(),
        (
            fast,
            json_response(&order(66666, "shipped", "mallory@elsewhere.example")),
        ),
    );
    routes.insert(
        "/orders/50000".into(),
        (
            fast,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".into(),
        ),
    );
    routes.insert(
        "/orders/77777".into(),
        (fast, json_response("<html>not json")),
    );
    routes.insert(
        "/orders/78787".into(),
        (fast, json_response(r#"{"id": 78787, "status": "shipped"}"#)),
    );
    routes.insert(
        "/orders/99999".into(),
        (Duration::from_secs(10), json_response("{}")),
    );
    let port = http_server(routes).await;
    let s = setup_with(&format!(
        r#"kind = "http"
url = "http://127.0.0.1:{port}/orders/{{value}}"
headers = {{ X-Api-Key = {{ file = "api-key" }}, Accept-Language = "en" }}
owner = "customer.email"
timeout = "500ms"
cache = "0s""#
    ));
    common::write(&s.path("api-key"), "s3cret-key\n");
    let k = s.knowledge();

    // Found, belongs to the sender: answered with the data.
    let d = decide(&k, "Where is order 48213", JANE).await;
    assert!(matches!(d.verdict, Verdict::Reply { .. }), "{}", why(&d));
    let text = reply_text(&k, "Where is order 48213", &d);
    assert!(
        text.contains("48213 is shipped, tracking JD48213"),
        "{text}"
    );
    let r = &d.evidence.lookups.results[0];
    eprintln!("http lookup on loopback: {:.2} ms", r.millis);
    // A chunked answer reads the same.
    let d = decide(&k, "Where is order 48214", JANE).await;
    assert!(matches!(d.verdict, Verdict::Reply { .. }), "{}", why(&d));
    // A rule on the data: a delayed order goes to a person.
    let d = decide(&k, "Where is order 48250", JANE).await;
    assert_eq!(d.verdict.queue(), Some("billing"), "{}", why(&d));
    // Someone else's order: no data, a person, and why.
    let d = decide(&k, "Where is order 66666", JANE).await;
    assert_eq!(d.verdict.kind(), "route", "{}", why(&d));
    assert!(why(&d).contains("belongs to someone else"), "{}", why(&d));
    // No such order, an error, garbage, a missing owner field, a backend
    // that hangs: never a reply, the reason says what happened.
    for (n, expect) in [
        ("40400", "no such record"),
        ("50000", "HTTP status 500"),
        ("77777", "not valid JSON"),
        ("78787", "no owner field customer.email"),
        ("99999", "no answer within 500ms"),
    ] {
        let started = std::time::Instant::now();
        let d = decide(&k, &format!("Where is order {n}"), JANE).await;
        assert_eq!(d.verdict.kind(), "route", "{n}: {}", why(&d));
        assert!(why(&d).contains(expect), "{n}: {}", why(&d));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{n} took {:?}",
            started.elapsed()
        );
    }
    // No order number in the message: the rule does not apply (the
    // default policy decides), nothing is asked.
    let d = decide(&k, "Your opening hours?", JANE).await;
    assert!(d.evidence.lookups.results.is_empty());
    assert_ne!(d.rule.as_deref(), Some("order-status"));
    // The secret header is required: without it the server says 401.
    common::write(&s.path("api-key"), "wrong\n");
    let k = s.knowledge();
    let d = decide(&k, "Where is order 48213", JANE).await;
    assert!(why(&d).contains("HTTP status 401"), "{}", why(&d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_not_asked_again_and_again() {
    let mut routes = HashMap::new();
    routes.insert(
        "/orders/99999".into(),
        (Duration::from_secs(10), json_response("{}")),
    );
    let port = http_server(routes).await;
    let s = setup_with(&format!(
        r#"kind = "http"
url = "http://127.0.0.1:{port}/orders/{{value}}"
headers = {{ X-Api-Key = {{ file = "api-key" }} }}
owner = "customer.email"
timeout = "200ms""#
    ));
    common::write(&s.path("api-key"), "s3cret-key\n");
    let k = s.knowledge();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let d = decide(&k, "Where is order 99999", JANE).await;
        assert_eq!(d.verdict.kind(), "route");
    }
    // Five timeouts, then the breaker answers at once.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "20 lookups of a hanging backend took {:?}",
        started.elapsed()
    );
    let d = decide(&k, "Where is order 99999", JANE).await;
    assert!(why(&d).contains("not asked"), "{}", why(&d));
}

async fn seed_orders(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    for q in [
        "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT, carrier TEXT, tracking TEXT, email TEXT, weight REAL, gift BOOLEAN)",
        "INSERT INTO orders VALUES ('48213', 'shipped', 'DHL', 'JD48213', 'jane@customer.example', 1.5, FALSE)",
        "INSERT INTO orders VALUES ('66666', 'shipped', 'UPS', 'UPS66666', 'mallory@elsewhere.example', NULL, TRUE)",
    ] {
        sqlx::query(q)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
    }
    pool.close().await;
}

async fn sql_checks(url: &str, shown: &str) {
    let s = setup_with(&format!(
        r#"kind = "sql"
url = "{url}"
query = "SELECT id, status, carrier, tracking, email, weight, gift FROM orders WHERE id = $1"
owner = "email"
fields = ["id", "status", "carrier", "tracking", "email", "weight", "gift"]"#
    ));
    let k = s.knowledge();
    let d = decide(&k, "Where is order 48213", JANE).await;
    assert!(
        matches!(d.verdict, Verdict::Reply { .. }),
        "{shown}: {}",
        why(&d)
    );
    let text = reply_text(&k, "Where is order 48213", &d);
    assert!(
        text.contains("48213 is shipped, tracking JD48213"),
        "{shown}: {text}"
    );
    let r = &d.evidence.lookups.results[0];
    assert!(r.source.starts_with("sql"), "{}", r.source);
    eprintln!("{shown} lookup: {:.2} ms", r.millis);
    // Cached the second time.
    let d = decide(&k, "Where is order 48213", JANE).await;
    let r = &d.evidence.lookups.results[0];
    assert!(r.cached, "{shown}: second lookup not cached");
    eprintln!("{shown} cached lookup: {:.3} ms", r.millis);
    let d = decide(&k, "Where is order 31337", JANE).await;
    eprintln!(
        "{shown} lookup on a warm connection: {:.2} ms",
        d.evidence.lookups.results[0].millis
    );
    // A guessed number: someone else's order.
    let d = decide(&k, "Where is order 66666", JANE).await;
    assert_eq!(d.verdict.kind(), "route", "{shown}: {}", why(&d));
    assert!(
        why(&d).contains("belongs to someone else"),
        "{shown}: {}",
        why(&d)
    );
    // The value is a parameter, never SQL: an injection finds nothing.
    let d = decide(&k, "Where is order 1'OR'1'='1", JANE).await;
    assert!(why(&d).contains("no such record"), "{shown}: {}", why(&d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_lookups_on_sqlite_and_postgresql() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("orders.db");
    seed_orders(&format!("sqlite://{}?mode=rwc", db.display())).await;
    sql_checks(&format!("sqlite://{}", db.display()), "sqlite").await;
    // The SQLite file is opened read-only.
    let s = setup_with(&format!(
        r#"kind = "sql"
url = "sqlite://{}"
query = "SELECT * FROM orders WHERE id = $1"
owner = "email""#,
        db.display()
    ));
    assert!(!s.knowledge().lookups.is_empty());

    let pg = crate::postgres::Postgres::start();
    seed_orders(&pg.url).await;
    sql_checks(&pg.url, "postgresql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_lookups_run_without_a_shell() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let prog = dir.path().join("order-lookup");
    common::write(
        &prog,
        "#!/bin/sh\ncase \"$2\" in\n  48213) echo '{\"id\": 48213, \"status\": \"shipped\", \"tracking\": \"JD48213\", \"customer\": {\"email\": \"jane@customer.example\"}}' ;;\n  50000) echo 'boom' >&2; exit 3 ;;\n  *) echo null ;;\nesac\n",
    );
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let s = setup_with(&format!(
        r#"kind = "command"
command = ["{}", "--order", "{{value}}"]
owner = "customer.email""#,
        prog.display()
    ));
    let k = s.knowledge();
    let d = decide(&k, "Where is order 48213", JANE).await;
    assert!(matches!(d.verdict, Verdict::Reply { .. }), "{}", why(&d));
    let d = decide(&k, "Where is order 50000", JANE).await;
    assert!(
        why(&d).contains("failed with exit status: 3"),
        "{}",
        why(&d)
    );
    let d = decide(&k, "Where is order 12345", JANE).await;
    assert!(why(&d).contains("no such record"), "{}", why(&d));
    // Shell syntax in the value is just an argument.
    let d = decide(&k, "Where is order $(touch${IFS}pwned)", JANE).await;
    assert_eq!(d.verdict.kind(), "route");
    assert!(!Path::new("pwned").exists());
}

#[test]
fn bad_lookup_definitions_are_check_errors_with_positions() {
    let s = Setup::new(
        r#"
[[lookup]]
name = "order"
extract = { regex = '(?i)order (\d+)' }
kind = "sql"
url = "sqlite://orders.db"
query = "DELETE FROM orders WHERE id = 1"

[[lookup]]
name = "parcel"
extract = { regex = '(\d+' }
kind = "http"
url = "https://shop.example/api/parcels"
headers = { Authorization = "Bearer abc" }
owner = "email"

[[lookup]]
name = "account"
extract = "sender"
kind = "carrier-pigeon"

[[rule]]
name = "uses-unknown"
when = { lookup.refund.status = { equals = "paid" } }
needs = ["refnud"]
route = "billing"
"#,
    );
    common::write(
        &s.path("templates/uses.txt.j2"),
        "{{ lookup.parcel.weight }}\n",
    );
    let errors = match Knowledge::load(&s.config()) {
        Ok(_) => panic!("bad lookups were accepted"),
        Err(d) => d.to_string(),
    };
    let errors = errors.replace(&s.dir.path().display().to_string(), "T");
    // Each problem at the line and column of what is wrong.
    let rules = std::fs::read_to_string(s.path("rules/00-rules.toml")).unwrap_or_default();
    let at = |needle: &str| -> String {
        let i = rules
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in the rules"));
        let line = rules[..i].matches('\n').count() + 1;
        let col = i - rules[..i].rfind('\n').map_or(0, |n| n + 1) + 1;
        format!("T/rules/00-rules.toml:{line}:{col}: ")
    };
    for (pos, message) in [
        (
            at("[[lookup]]\nname = \"order\""),
            "lookup \"order\" extracts its value from the text: add `owner",
        ),
        (at("\"DELETE"), "`query` must be one SELECT"),
        (at("'(\\d+'"), "invalid regex"),
        (
            at("\"https://shop.example/api/parcels\""),
            "`url` must contain {value}",
        ),
        (
            at("\"Bearer abc\""),
            "secrets are never written in the config",
        ),
        (at("\"carrier-pigeon\""), "`kind` is one of"),
        // A missing database is a warning (it may appear later), at the URL.
        (
            at("\"sqlite://orders.db\""),
            "warning: the database T/orders.db does not exist (yet)",
        ),
        (at("\"refnud\""), "lookup \"refnud\" is not defined"),
    ] {
        let needle = format!("{pos}{message}");
        assert!(errors.contains(&needle), "missing {needle:?} in\n{errors}");
    }
    assert!(
        errors.contains("lookup \"refund\" is not defined"),
        "{errors}"
    );
    assert!(
        errors.contains(
            "T/templates/uses.txt.j2:1:4: `lookup.parcel`: there is no [[lookup]] named \"parcel\""
        ),
        "{errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_garbage_backend_costs_no_message_and_sends_no_reply() {
    for (name, response, delay) in [
        ("hanging", json_response("{}"), Duration::from_secs(30)),
        (
            "garbage",
            "HTTP/1.1 200 OK\r\n\r\n\u{0}\u{1}<<<".to_string(),
            Duration::ZERO,
        ),
    ] {
        let port = {
            // Every path answers the same way.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            let response = response.clone();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let response = response.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf).await;
                        tokio::time::sleep(delay).await;
                        let _ = s.write_all(response.as_bytes()).await;
                    });
                }
            });
            port
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = switchboard::demo::extract(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let rules = config.with_file_name("rules/45-orders.toml");
        let text = std::fs::read_to_string(&rules)
            .unwrap_or_default()
            .replace("timeout = \"2s\"\n", "");
        let start = text
            .find("kind = \"sql\"")
            .unwrap_or_else(|| panic!("{text}"));
        let end = text.find("owner =").unwrap_or_else(|| panic!("{text}"));
        let text = format!(
            "{}kind = \"http\"\nurl = \"http://127.0.0.1:{port}/orders/{{value}}\"\ntimeout = \"300ms\"\n{}",
            &text[..start],
            &text[end..]
        );
        std::fs::write(&rules, text).unwrap_or_else(|e| panic!("{e}"));
        let (shared, mut md, _, cfg) = common::demo_pipeline_at(&config, None).await;
        let info = switchboard::daemon::mailbox_info(&cfg.mailboxes[0]);
        let started = std::time::Instant::now();
        let outcomes = switchboard::daemon::drain(&mut md, &shared, &info)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let took = started.elapsed();
        let total = switchboard::demo::message_count();
        assert_eq!(outcomes.len(), total, "{name}: every message handled");
        assert!(md.list("INBOX").is_empty(), "{name}: nothing left behind");
        for from in ["priya.nair@customer.test", "tom.hartley@gmail.example"] {
            let o = outcomes
                .iter()
                .find(|o| o.from == from)
                .unwrap_or_else(|| panic!("{name}: no outcome for {from}"));
            assert_eq!(o.verdict, "route", "{name}: {o:?}");
            assert!(o.why.contains("lookup order"), "{name}: {o:?}");
        }
        let sent: Vec<String> = std::fs::read_dir(config.with_file_name("outbox"))
            .map(|r| {
                r.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !sent
                .iter()
                .any(|m| m.contains("your order") && m.contains("priya")),
            "{name}: an order answer went out"
        );
        assert!(sent.len() >= 10, "{name}: the other answers still go out");
        eprintln!("{name} backend: {total} messages in {took:?}");
    }
}
