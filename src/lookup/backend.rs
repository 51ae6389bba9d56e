//! The three kinds of lookup backends: HTTP (a small HTTP/1.1 client for
//! JSON APIs: one GET per lookup, `Connection: close`), SQL (one
//! read-only query through sqlx) and a program (no shell).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OnceCell;

use super::def::{Backend, HeaderValue};
use crate::secret::ExposeSecret;

/// Answers larger than this are refused (a lookup answers one record).
const MAX_ANSWER: usize = 1024 * 1024;

/// A connection pool of the database's own driver (the generic one
/// cannot read every column type a shop's database has).
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Connections and resolved secrets of one lookup.
pub struct Runtime {
    pool: OnceCell<Pool>,
    headers: OnceCell<Vec<(String, String)>>,
    max_connections: u32,
}

impl Runtime {
    pub fn new(max_connections: usize) -> Runtime {
        Runtime {
            pool: OnceCell::new(),
            headers: OnceCell::new(),
            max_connections: max_connections.clamp(1, 64) as u32,
        }
    }

    /// Reads what the backend needs once (secrets for headers), with the
    /// secret sources' own time limits.
    pub async fn prepare(&self, b: &Backend) -> Result<(), String> {
        if let Backend::Http { headers, .. } = b {
            self.headers
                .get_or_try_init(|| resolve_headers(headers))
                .await?;
        }
        Ok(())
    }

    /// The record for `value`: `Ok(None)` when there is none.
    pub async fn query(&self, b: &Backend, value: &str) -> Result<Option<Value>, String> {
        match b {
            Backend::Http { url, headers } => {
                let resolved = self
                    .headers
                    .get_or_try_init(|| resolve_headers(headers))
                    .await?;
                http_get(url, value, resolved).await
            }
            Backend::Sql { url, query } => {
                let pool = self
                    .pool
                    .get_or_try_init(|| async {
                        let shown = |e: sqlx::Error| {
                            format!(
                                "cannot open {}: {}",
                                crate::record::redact_url(url),
                                scrub(&e.to_string())
                            )
                        };
                        if url.starts_with("sqlite:") {
                            sqlx::sqlite::SqlitePoolOptions::new()
                                .max_connections(self.max_connections)
                                .acquire_timeout(Duration::from_secs(5))
                                .connect(url)
                                .await
                                .map(Pool::Sqlite)
                                .map_err(shown)
                        } else {
                            sqlx::postgres::PgPoolOptions::new()
                                .max_connections(self.max_connections)
                                .acquire_timeout(Duration::from_secs(5))
                                .connect(url)
                                .await
                                .map(Pool::Postgres)
                                .map_err(shown)
                        }
                    })
                    .await?;
                sql_query(pool, query, value).await
            }
            Backend::Command { argv } => run_command(argv, value).await,
        }
    }
}

/// Error texts of drivers may quote connection strings: keep them short
/// and free of passwords.
fn scrub(e: &str) -> String {
    let e = if e.contains("://") {
        crate::record::redact_url(e)
    } else {
        e.to_string()
    };
    crate::util::ellipsize(&e, 200)
}

async fn resolve_headers(
    headers: &[(String, HeaderValue)],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (name, v) in headers {
        let value = match v {
            HeaderValue::Plain(s) => s.clone(),
            HeaderValue::Secret { source, prefix } => {
                let s = source
                    .read()
                    .await
                    .map_err(|e| format!("cannot read the secret for header {name}: {e}"))?;
                format!("{prefix}{}", s.expose_secret())
            }
        };
        if value.contains(['\r', '\n']) {
            return Err(format!("the value of header {name} contains a line break"));
        }
        out.push((name.clone(), value));
    }
    Ok(out)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("only http:// and https:// URLs".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port or [v6]
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad host in {authority}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port in {authority}"))?,
            None => default,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("bad port in {authority}"))?,
            ),
            None => (authority.to_string(), default),
        }
    };
    if host.is_empty() {
        return Err("no host in the URL".into());
    }
    Ok(Url {
        tls,
        host,
        port,
        path: path.to_string(),
    })
}

async fn http_get(
    template: &str,
    value: &str,
    headers: &[(String, String)],
) -> Result<Option<Value>, String> {
    let url = parse_url(&template.replace("{value}", &encode(value)))?;
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", url.host, url.port))?;
    let _ = tcp.set_nodelay(true);
    let default_port = if url.tls { 443 } else { 80 };
    let host = match (url.host.contains(':'), url.port == default_port) {
        (true, true) => format!("[{}]", url.host),
        (true, false) => format!("[{}]:{}", url.host, url.port),
        (false, true) => url.host.clone(),
        (false, false) => format!("{}:{}", url.host, url.port),
    };
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchboard/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let raw = if url.tls {
        let config = crate::fetch::imap::tls_config(false)?;
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("bad host name {}: {e}", url.host))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", url.host))?;
        exchange(stream, req.as_bytes()).await?
    } else {
        exchange(tcp, req.as_bytes()).await?
    };
    let (status, body) = parse_response(&raw)?;
    match status {
        200..=299 => parse_json(&body),
        404 | 410 => Ok(None),
        _ => Err(format!("HTTP status {status}")),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
) -> Result<Vec<u8>, String> {
    s.write_all(req)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    s.flush()
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::new();
    let mut limited = (&mut s).take((MAX_ANSWER + 64 * 1024) as u64);
    match limited.read_to_end(&mut buf).await {
        Ok(_) => {}
        // A server that closes a TLS connection without close_notify:
        // what arrived is complete when its length checks out below.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(format!("reading the answer: {e}")),
    }
    if buf.len() > MAX_ANSWER + 32 * 1024 {
        return Err("the answer is larger than 1 MiB".into());
    }
    Ok(buf)
}

/// Status and body of an HTTP/1.x response (chunked or not).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP (no header end)")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err("the answer is not HTTP/1.x".into());
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("the answer has no status code")?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            let n = n.trim().to_ascii_lowercase();
            let v = v.trim();
            if n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if n == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    let body = &raw[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        if body.len() < n {
            return Err("the answer was cut short".into());
        }
        body[..n].to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunked encoding")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > MAX_ANSWER.saturating_sub(out.len()) {
            return Err("the answer is larger than 1 MiB".into());
        }
        if b.len() < size || b.len() - size < 2 || &b[size..size + 2] != b"\r\n" {
            return Err("bad chunked encoding".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn parse_json(body: &[u8]) -> Result<Option<Value>, String> {
    if body.len() > MAX_ANSWER {
        return Err("the answer is larger than 1 MiB".into());
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Null) => Ok(None),
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err("the answer is not a JSON object".into()),
        Err(e) => Err(format!("the answer is not valid JSON ({e})")),
    }
}

/// Runs the query read-only and returns its first row as an object.
/// On PostgreSQL the row is turned into JSON by the server
/// (`row_to_json`), so dates, numerics and JSON columns come out as JSON
/// too; SQLite values are integers, reals, text or NULL anyway.
async fn sql_query(pool: &Pool, query: &str, value: &str) -> Result<Option<Value>, String> {
    use sqlx::{Column, Row};
    let err = |e: sqlx::Error| scrub(&e.to_string());
    match pool {
        Pool::Postgres(pool) => {
            let mut tx = pool.begin().await.map_err(err)?;
            sqlx::query("SET TRANSACTION READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            let inner = query.trim().trim_end_matches(';');
            let sql = format!("SELECT row_to_json(q)::text FROM ({inner}) AS q LIMIT 1");
            let row: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(value.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
            let _ = tx.rollback().await;
            match row {
                None => Ok(None),
                Some(text) => parse_json(text.as_bytes()),
            }
        }
        Pool::Sqlite(pool) => {
            let row = sqlx::query(sqlx::AssertSqlSafe(query.to_string()))
                .bind(value.to_string())
                .fetch_optional(pool)
                .await
                .map_err(err)?;
            let Some(row) = row else { return Ok(None) };
            let mut map = serde_json::Map::new();
            for (i, c) in row.columns().iter().enumerate() {
                let v = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                    v.map_or(Value::Null, Value::from)
                } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                    v.map_or(Value::Null, Value::from)
                } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                    v.map_or(Value::Null, Value::from)
                } else {
                    Value::Null
                };
                map.insert(c.name().to_string(), v);
            }
            Ok(Some(Value::Object(map)))
        }
    }
}

async fn run_command(argv: &[String], value: &str) -> Result<Option<Value>, String> {
    let program = argv.first().ok_or("no program")?;
    // A value is never read as an option of the program.
    if value.starts_with('-') {
        return Err("the value starts with '-'; not passed to the program".into());
    }
    let mut args: Vec<String> = argv[1..]
        .iter()
        .map(|a| a.replace("{value}", value))
        .collect();
    if !argv[1..].iter().any(|a| a.contains("{value}")) {
        args.push(value.to_string());
    }
    let mut child = tokio::process::Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(MAX_ANSWER as u64 + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| format!("reading the output of {program}: {e}"))?;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    if !status.success() {
        return Err(format!("{program} failed with {status}"));
    }
    parse_json(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"a\": \"b\"}\r\nxx")
                .unwrap_or_default();
        assert_eq!((s, b.len()), (200, 13));
        let (s, b) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n6\r\n: \"b\"}\r\n0\r\n\r\n",
        )
        .unwrap_or_default();
        assert_eq!(
            (s, String::from_utf8_lossy(&b).as_ref()),
            (200, "{\"a\": \"b\"}")
        );
        assert!(parse_response(b"garbage").is_err());
        // A chunk size near usize::MAX after a good chunk: an error, not a panic.
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\nffffffffffffffff\r\nabc"
            )
            .is_err()
        );
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxyz\r\n0\r\n\r\n"
            )
            .is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}").is_err());
        assert_eq!(parse_json(b"null"), Ok(None));
        assert!(parse_json(b"[1]").is_err());
        assert!(parse_json(b"{not json").is_err());
        assert_eq!(encode("48 213/x"), "48%20213%2Fx");
        let u = parse_url("http://127.0.0.1:8080/orders/1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/orders/1")
        );
    }
}
