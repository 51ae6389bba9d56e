//! An IMAP mailbox (async-imap on tokio, TLS with rustls).
//!
//! * UIDs only, never sequence numbers. The inbox holds only unprocessed
//!   work, so "pending" is simply `UID SEARCH UNDELETED` — no UID is cached
//!   between rounds, which makes a UIDVALIDITY change harmless (messages
//!   are de-duplicated by Message-ID in the state store).
//! * `BODY.PEEK[]`: fetching never marks customer mail as seen. Messages
//!   over the size limit are fetched as a bounded prefix.
//! * Moves use `UID MOVE` (RFC 6851), one command per destination; without
//!   MOVE: `UID COPY` + `\Deleted` + `UID EXPUNGE` (UIDPLUS) — never a bare
//!   EXPUNGE, which would also remove other clients' deleted mail.
//! * Every command runs under a timeout (async-imap has none of its own).
//! * IDLE when the server has it (re-issued well before 29 minutes),
//!   polling otherwise.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::Fetch;
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, info, warn};

use super::{FetchError, Fetched, Flag, FolderAction, MailSource, MsgRef};
use crate::config::{AuthMechanism, ImapConfig, Tls};
use crate::secret::ExposeSecret;

/// Bytes fetched of a message over the size limit: enough for the headers
/// and the first text part of any real message.
pub const PREFIX_BYTES: u64 = 256 * 1024;

/// A TCP connection, with or without TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Session = async_imap::Session<Stream>;

/// What the server can do.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    pub idle: bool,
    pub mv: bool,
    pub uidplus: bool,
    /// MULTIAPPEND (RFC 3502) and LITERAL+ (RFC 7888): several messages
    /// stored by one command without waiting for continuations.
    pub multiappend: bool,
}

/// Why waiting for new mail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The server announced a change (or the poll interval passed).
    Changed,
    /// Nothing happened within the IDLE period.
    Timeout,
    /// Shutdown was requested.
    Shutdown,
}

/// A connected IMAP mailbox.
pub struct Imap {
    cfg: ImapConfig,
    /// `None` while IDLE owns the session (or after a failure).
    session: Option<Session>,
    pub caps: Caps,
    /// Hierarchy separator of the server (`/`, `.`).
    pub delimiter: String,
    pub uid_validity: Option<u32>,
    /// Folders known to exist.
    folders: HashSet<String>,
    /// A second connection for filing ([`MailSource::second`]): kept
    /// between passes, or being opened.
    spare: Spare,
    /// As a second connection: when it was opened, or last used for
    /// filing ([`MailSource::keep`]).
    used: Instant,
    /// A second connection was refused: none is tried before then.
    no_second_until: Option<Instant>,
    /// The second connection moved mail out of this mailbox since the
    /// last search: this session learns of it at its next `NOOP` (a
    /// `UID SEARCH` may not report expunges, RFC 3501 §7.4.1, and would
    /// list the moved messages again).
    moved_behind: bool,
    /// When a pass last asked for a second connection: one is opened in
    /// the background only when passes come within [`SPARE_FOR`] of each
    /// other (a quiet mailbox does not open one per pass for nothing).
    asked: Option<Instant>,
}

impl Drop for Imap {
    fn drop(&mut self) {
        // A second connection still being opened is not left behind.
        if let Spare::Opening(h) = &self.spare {
            h.abort();
        }
    }
}

/// [`Imap::spare`].
#[derive(Default)]
enum Spare {
    #[default]
    None,
    Opening(tokio::task::JoinHandle<Result<Imap, FetchError>>),
    Ready(Box<Imap>),
}

/// A second connection unused for this long is logged out rather than
/// used: servers and firewalls drop idle connections, and a dead one
/// would cost a command timeout.
const SPARE_FOR: Duration = Duration::from_secs(120);

/// After the server refused a second connection, none is tried for this
/// long (it may limit connections per user).
const SECOND_REFUSED_FOR: Duration = Duration::from_secs(600);

fn server(cfg: &ImapConfig) -> String {
    format!("{}:{}", cfg.host, cfg.port)
}

/// rustls client config: web PKI roots, or no verification when the
/// config explicitly says so (test servers with self-signed certificates).
pub fn tls_config(accept_invalid: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let cfg = if accept_invalid {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct PlainAuth {
    user: String,
    pass: String,
}

impl async_imap::Authenticator for PlainAuth {
    type Response = Vec<u8>;
    fn process(&mut self, _: &[u8]) -> Vec<u8> {
        format!("\0{}\0{}", self.user, self.pass).into_bytes()
    }
}

struct XOAuth2 {
    user: String,
    token: String,
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = Vec<u8>;
    fn process(&mut self, _: &[u8]) -> Vec<u8> {
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token).into_bytes()
    }
}

/// Encodes a folder name in IMAP's modified UTF-7 (RFC 3501 §5.1.3).
/// A folder name as an IMAP quoted string.
fn quote_folder(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn encode_folder(name: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Compact UID sets ("1:4,7,9:10"), split so each command stays well under
/// the ~8 KB line limits of common servers.
pub fn uid_sets(uids: &[u32]) -> Vec<String> {
    let mut sorted: Vec<u32> = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut sets = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        let part = if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        };
        if cur.len() + part.len() + 1 > 4000 {
            sets.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(',');
        }
        cur.push_str(&part);
        i += 1;
    }
    if !cur.is_empty() {
        sets.push(cur);
    }
    sets
}

fn uids(ids: &[MsgRef]) -> Vec<u32> {
    ids.iter()
        .filter_map(|i| match i {
            MsgRef::Uid(u) => Some(*u),
            MsgRef::File(_) => None,
        })
        .collect()
}

fn proto(e: impl std::fmt::Display) -> FetchError {
    FetchError::Protocol(e.to_string())
}

impl Imap {
    /// Headers of the messages after UID `last` in the selected folder
    /// (at most 200 a time) and the cursor after them.
    async fn headers_after(
        &mut self,
        last: u32,
        uv: i64,
        t: Duration,
    ) -> Result<(Vec<Vec<u8>>, Option<i64>), FetchError> {
        let s = self.session()?;
        let found =
            Self::timed(t, s.uid_search(format!("UID {}:*", last.saturating_add(1)))).await?;
        let mut list: Vec<u32> = found.into_iter().filter(|u| *u > last).collect();
        list.sort_unstable();
        list.truncate(200);
        let newest = list.last().copied().unwrap_or(last);
        let mut raws = Vec::new();
        for set in uid_sets(&list) {
            let s = self.session()?;
            let fetches: Vec<Fetch> = Self::timed(t, async {
                s.uid_fetch(&set, "(UID BODY.PEEK[HEADER])")
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
            raws.extend(
                fetches
                    .iter()
                    .filter_map(|f| f.header().map(<[u8]>::to_vec)),
            );
        }
        Ok((raws, Some((uv << 32) | i64::from(newest))))
    }

    /// Connects, authenticates and selects the configured folder. With
    /// XOAUTH2, a refused token is fetched again from the token command
    /// and tried once more (access tokens expire after about an hour).
    pub async fn connect(cfg: &ImapConfig) -> Result<Imap, FetchError> {
        match Self::connect_once(cfg).await {
            Err(FetchError::Auth { .. }) if cfg.auth == AuthMechanism::XOAuth2 => {
                warn!(server = %server(cfg), "the OAuth2 token was refused; fetching a fresh one and retrying once");
                metrics::counter!("switchboard_oauth_token_refresh_total", "service" => "imap")
                    .increment(1);
                Self::connect_once(cfg).await
            }
            other => other,
        }
    }

    async fn connect_once(cfg: &ImapConfig) -> Result<Imap, FetchError> {
        let t = cfg.timeout;
        let srv = server(cfg);
        let connect_err = |m: String| FetchError::Connect {
            server: srv.clone(),
            message: m,
        };
        let tcp = tokio::time::timeout(t, TcpStream::connect((cfg.host.as_str(), cfg.port)))
            .await
            .map_err(|_| FetchError::Timeout(t))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = |tcp: TcpStream| async {
            let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
                .map_err(|e| connect_err(format!("invalid host name: {e}")))?;
            let conn = TlsConnector::from(
                tls_config(cfg.danger_accept_invalid_certs).map_err(&connect_err)?,
            );
            tokio::time::timeout(t, conn.connect(name, tcp))
                .await
                .map_err(|_| FetchError::Timeout(t))?
                .map(|s| Stream::Tls(Box::new(s)))
                .map_err(|e| connect_err(format!("TLS: {e}")))
        };
        let stream = match cfg.tls {
            Tls::Implicit => tls(tcp).await?,
            Tls::None | Tls::StartTls => Stream::Plain(tcp),
        };
        let mut client = async_imap::Client::new(stream);
        let greeting = tokio::time::timeout(t, client.read_response())
            .await
            .map_err(|_| FetchError::Timeout(t))?
            .map_err(|e| connect_err(e.to_string()))?;
        if greeting.is_none() {
            return Err(connect_err("the server closed the connection".into()));
        }
        if cfg.tls == Tls::StartTls {
            tokio::time::timeout(t, client.run_command_and_check_ok("STARTTLS", None))
                .await
                .map_err(|_| FetchError::Timeout(t))?
                .map_err(|e| connect_err(format!("STARTTLS refused: {e}")))?;
            let Stream::Plain(tcp) = client.into_inner() else {
                return Err(connect_err("unexpected TLS state".into()));
            };
            client = async_imap::Client::new(tls(tcp).await?);
        }
        let secret = cfg.secret.read().await?;
        let auth_err = |e: async_imap::error::Error| FetchError::Auth {
            server: srv.clone(),
            user: cfg.username.clone(),
            message: e.to_string(),
        };
        let login = async {
            match cfg.auth {
                AuthMechanism::Login => client
                    .login(&cfg.username, secret.expose_secret())
                    .await
                    .map_err(|(e, _)| auth_err(e)),
                AuthMechanism::Plain => client
                    .authenticate(
                        "PLAIN",
                        PlainAuth {
                            user: cfg.username.clone(),
                            pass: secret.expose_secret().to_string(),
                        },
                    )
                    .await
                    .map_err(|(e, _)| auth_err(e)),
                AuthMechanism::XOAuth2 => client
                    .authenticate(
                        "XOAUTH2",
                        XOAuth2 {
                            user: cfg.username.clone(),
                            token: secret.expose_secret().to_string(),
                        },
                    )
                    .await
                    .map_err(|(e, _)| auth_err(e)),
            }
        };
        let mut session = tokio::time::timeout(t, login)
            .await
            .map_err(|_| FetchError::Timeout(t))??;
        let caps = tokio::time::timeout(t, session.capabilities())
            .await
            .map_err(|_| FetchError::Timeout(t))?
            .map_err(proto)?;
        let caps = Caps {
            idle: caps.has_str("IDLE"),
            mv: caps.has_str("MOVE") && cfg.use_move,
            uidplus: caps.has_str("UIDPLUS"),
            multiappend: caps.has_str("MULTIAPPEND") && caps.has_str("LITERAL+"),
        };
        let delimiter = {
            let names: Vec<_> = tokio::time::timeout(t, async {
                session
                    .list(Some(""), Some(""))
                    .await?
                    .try_collect::<Vec<_>>()
                    .await
            })
            .await
            .map_err(|_| FetchError::Timeout(t))?
            .map_err(proto)?;
            names
                .first()
                .and_then(|n| n.delimiter().map(str::to_string))
                .unwrap_or_else(|| "/".to_string())
        };
        let mailbox = tokio::time::timeout(t, session.select(encode_folder(&cfg.folder)))
            .await
            .map_err(|_| FetchError::Timeout(t))?
            .map_err(|e| proto(format!("cannot select {}: {e}", cfg.folder)))?;
        debug!(server = %srv, ?caps, delimiter = %delimiter, "connected");
        Ok(Imap {
            cfg: cfg.clone(),
            session: Some(session),
            caps,
            delimiter,
            uid_validity: mailbox.uid_validity,
            folders: HashSet::new(),
            spare: Spare::None,
            used: Instant::now(),
            no_second_until: None,
            moved_behind: false,
            asked: None,
        })
    }

    fn session(&mut self) -> Result<&mut Session, FetchError> {
        self.session
            .as_mut()
            .ok_or_else(|| FetchError::Protocol("not connected".into()))
    }

    async fn timed<F, T>(t: Duration, f: F) -> Result<T, FetchError>
    where
        F: std::future::Future<Output = Result<T, async_imap::error::Error>>,
    {
        tokio::time::timeout(t, f)
            .await
            .map_err(|_| FetchError::Timeout(t))?
            .map_err(proto)
    }

    /// Discards unsolicited responses (the channel holds 100 and drops the
    /// rest; we never depend on them).
    fn drain_unsolicited(&mut self) {
        if let Some(s) = self.session.as_mut() {
            while s.unsolicited_responses.try_recv().is_ok() {}
        }
    }

    /// The server's name of a folder written with `/` in the config.
    pub fn server_folder(&self, folder: &str) -> String {
        let name = if self.delimiter == "/" {
            folder.to_string()
        } else {
            folder.replace('/', &self.delimiter)
        };
        encode_folder(&name)
    }

    /// Creates a folder (and its parents) when it does not exist.
    async fn ensure_folder(&mut self, folder: &str) -> Result<String, FetchError> {
        let name = self.server_folder(folder);
        if self.folders.contains(&name) {
            return Ok(name);
        }
        let t = self.cfg.timeout;
        let exists = {
            let s = self.session()?;
            let found: Vec<_> = Self::timed(t, async {
                s.list(Some(""), Some(&name))
                    .await?
                    .try_collect::<Vec<_>>()
                    .await
            })
            .await?;
            !found.is_empty()
        };
        if !exists {
            // Parents first, for servers that do not create them implicitly.
            let parts: Vec<&str> = folder.split('/').filter(|p| !p.is_empty()).collect();
            for i in 1..=parts.len() {
                let partial = self.server_folder(&parts[..i].join("/"));
                let s = self.session()?;
                match Self::timed(t, s.create(&partial)).await {
                    Ok(()) => {
                        let _ = Self::timed(t, s.subscribe(&partial)).await;
                        info!(folder = %parts[..i].join("/"), "created folder");
                    }
                    // Already exists (e.g. created by a parallel client).
                    Err(FetchError::Protocol(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.folders.insert(name.clone());
        Ok(name)
    }

    /// Waits for new mail: IDLE (re-issued before the 29-minute limit) or
    /// the poll interval, whichever applies; returns early on shutdown.
    pub async fn wait(
        &mut self,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
        idle_period: Duration,
    ) -> Result<Wake, FetchError> {
        if *shutdown.borrow() {
            return Ok(Wake::Shutdown);
        }
        self.drain_unsolicited();
        if !(self.cfg.idle && self.caps.idle) {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => return Ok(Wake::Changed),
                _ = shutdown.changed() => return Ok(Wake::Shutdown),
            }
        }
        let t = self.cfg.timeout;
        let session = self
            .session
            .take()
            .ok_or_else(|| FetchError::Protocol("not connected".into()))?;
        let mut idle = session.idle();
        Self::timed(t, idle.init()).await?;
        let result = {
            let (fut, stop) = idle.wait_with_timeout(idle_period);
            tokio::select! {
                r = fut => r.map_err(proto).map(|r| match r {
                    IdleResponse::NewData(_) => Wake::Changed,
                    IdleResponse::Timeout => Wake::Timeout,
                    // A clean EOF looks like a manual interrupt: the caller
                    // finds out on the next command and reconnects.
                    IdleResponse::ManualInterrupt => Wake::Changed,
                }),
                _ = shutdown.changed() => {
                    drop(stop);
                    Ok(Wake::Shutdown)
                }
            }
        };
        let session = Self::timed(t, idle.done()).await?;
        self.session = Some(session);
        result
    }

    /// Whether this session waits with IDLE (configured and offered by
    /// the server), rather than polling.
    pub fn idles(&self) -> bool {
        self.cfg.idle && self.caps.idle
    }

    /// Logs out (best effort).
    pub async fn logout(mut self) {
        match std::mem::take(&mut self.spare) {
            Spare::Ready(c) => Box::pin(c.logout()).await,
            Spare::Opening(h) => h.abort(),
            Spare::None => {}
        }
        if let Some(mut s) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
        }
    }

    /// Number of messages in a folder (IMAP STATUS), e.g. a representative's open load.
    pub async fn status_count(&mut self, folder: &str) -> Result<u32, FetchError> {
        let name = self.server_folder(folder);
        let t = self.cfg.timeout;
        let s = self.session()?;
        match tokio::time::timeout(t, s.status(&name, "(MESSAGES)")).await {
            Err(_) => Err(FetchError::Timeout(t)),
            Ok(Ok(m)) => Ok(m.exists),
            // NO: the folder does not exist yet, so nothing is open in it.
            Ok(Err(async_imap::error::Error::No(_))) => Ok(0),
            Ok(Err(e)) => Err(proto(e)),
        }
    }
}

fn flag_list(flags: &[Flag]) -> String {
    flags
        .iter()
        .map(|f| match f {
            Flag::Answered => "\\Answered".to_string(),
            Flag::Seen => "\\Seen".to_string(),
            Flag::Draft => "\\Draft".to_string(),
            Flag::Keyword(k) => k.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl MailSource for Imap {
    fn second(
        &mut self,
        wait: bool,
    ) -> Option<impl Future<Output = Option<Self>> + Send + 'static> {
        use futures::FutureExt;
        let cfg = self.cfg.clone();
        if self.no_second_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let fresh = |c: &Imap| c.used.elapsed() < SPARE_FOR;
        let busy = wait || self.asked.is_some_and(|t| t.elapsed() < SPARE_FOR);
        self.asked = Some(Instant::now());
        let mut ready = None;
        let mut opening = None;
        match std::mem::take(&mut self.spare) {
            Spare::Ready(c) if fresh(&c) => ready = Some(*c),
            Spare::Opening(mut h) if h.is_finished() => match (&mut h).now_or_never() {
                Some(Ok(Ok(c))) if fresh(&c) => ready = Some(c),
                Some(Ok(Ok(c))) => {
                    tokio::spawn(c.logout());
                }
                Some(Ok(Err(e))) => {
                    warn!(server = %server(&cfg), "no second connection for filing ({e}); filing over the first, trying again in {} minutes", SECOND_REFUSED_FOR.as_secs() / 60);
                    self.no_second_until = Some(Instant::now() + SECOND_REFUSED_FOR);
                    return None;
                }
                Some(Err(_)) => {}
                None => self.spare = Spare::Opening(h),
            },
            Spare::Opening(h) if wait => opening = Some(h),
            Spare::Opening(h) => self.spare = Spare::Opening(h),
            // Stale: logged out in the background, replaced below.
            Spare::Ready(c) => {
                tokio::spawn(c.logout());
            }
            Spare::None => {}
        }
        if busy && ready.is_none() && opening.is_none() && matches!(self.spare, Spare::None) {
            let cfg = cfg.clone();
            let h = tokio::spawn(async move {
                let t = Instant::now();
                let c = Imap::connect(&cfg).await;
                if c.is_ok() {
                    debug!(server = %server(&cfg), connect_ms = t.elapsed().as_millis() as u64, "second connection for filing");
                }
                c
            });
            if wait {
                opening = Some(h);
            } else {
                self.spare = Spare::Opening(h);
            }
        }
        if ready.is_none() && opening.is_none() {
            return None;
        }
        Some(async move {
            if ready.is_some() {
                return ready;
            }
            match opening?.await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    warn!(server = %server(&cfg), "no second connection for filing ({e}); filing over the first");
                    None
                }
                Err(_) => None,
            }
        })
    }

    fn keep(&mut self, mut second: Self, used: bool) {
        if used {
            second.used = Instant::now();
        }
        self.spare = Spare::Ready(Box::new(second));
    }

    fn moved_behind(&mut self) {
        self.moved_behind = true;
    }

    async fn count(&mut self, folder: &str) -> Result<u32, FetchError> {
        self.status_count(folder).await
    }

    async fn pending(&mut self) -> Result<Vec<MsgRef>, FetchError> {
        let t = self.cfg.timeout;
        let moved = std::mem::take(&mut self.moved_behind);
        let s = self.session()?;
        if moved {
            Self::timed(t, s.noop()).await?;
        }
        let found = Self::timed(t, s.uid_search("UNDELETED")).await?;
        self.drain_unsolicited();
        let mut v: Vec<u32> = found.into_iter().collect();
        v.sort_unstable();
        Ok(v.into_iter().map(MsgRef::Uid).collect())
    }

    async fn fetch(&mut self, ids: &[MsgRef], max_size: u64) -> Result<Vec<Fetched>, FetchError> {
        let t = self.cfg.timeout.max(Duration::from_secs(60));
        let wanted = uids(ids);
        // One FETCH for size and the first `head` bytes: the whole message
        // for nearly all mail. A message longer than that but within
        // `max_size` is fetched whole by a second FETCH; a longer one
        // stays a prefix (headers and first text part).
        let head = PREFIX_BYTES.min(max_size);
        let first = format!("(UID RFC822.SIZE BODY.PEEK[]<0.{head}>)");
        let mut out = Vec::with_capacity(wanted.len());
        let mut rest: Vec<u32> = Vec::new();
        for set in uid_sets(&wanted) {
            let s = self.session()?;
            // A server may send a message's size and body in separate
            // responses (RFC 3501 allows it): gather both per UID. Each
            // response is copied and dropped as it arrives, so the
            // library's buffers do not hold the whole batch a second time.
            let mut got: std::collections::BTreeMap<u32, (Option<u64>, Option<Vec<u8>>)> =
                std::collections::BTreeMap::new();
            Self::timed(t, async {
                let mut stream = s.uid_fetch(&set, &first).await?;
                while let Some(f) = stream.try_next().await? {
                    let Some(uid) = f.uid else { continue };
                    let e = got.entry(uid).or_default();
                    if let Some(n) = f.size {
                        e.0 = Some(u64::from(n));
                    }
                    if let Some(b) = f.body() {
                        e.1 = Some(b.to_vec());
                    }
                }
                Ok(())
            })
            .await?;
            for (uid, (size, body)) in got {
                let Some(body) = body else { continue };
                let len = body.len() as u64;
                // Fewer bytes than asked for: that is the whole message.
                // All of them: it may be longer — fetched whole when its
                // size is known to be within max_size (also when the
                // server under-reports it), else kept as a prefix.
                if len < head {
                    out.push(Fetched {
                        id: MsgRef::Uid(uid),
                        raw: body,
                        size: size.unwrap_or(len).max(len),
                        truncated: false,
                        unreadable: None,
                    });
                } else if size.is_some_and(|n| n <= max_size) {
                    rest.push(uid);
                } else {
                    out.push(Fetched {
                        id: MsgRef::Uid(uid),
                        raw: body,
                        size: size.unwrap_or(len),
                        truncated: true,
                        unreadable: None,
                    });
                }
            }
        }
        for set in uid_sets(&rest) {
            let s = self.session()?;
            let fetches: Vec<Fetch> = Self::timed(t, async {
                s.uid_fetch(&set, "(UID BODY.PEEK[])")
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
            for f in fetches {
                let (Some(uid), Some(body)) = (f.uid, f.body()) else {
                    continue;
                };
                out.push(Fetched {
                    id: MsgRef::Uid(uid),
                    raw: body.to_vec(),
                    size: body.len() as u64,
                    truncated: false,
                    unreadable: None,
                });
            }
        }
        self.drain_unsolicited();
        // Keep the order of the request (oldest first).
        out.sort_by_key(|f| match f.id {
            MsgRef::Uid(u) => u,
            MsgRef::File(_) => 0,
        });
        Ok(out)
    }

    async fn add_flags(&mut self, ids: &[MsgRef], flags: &[Flag]) -> Result<(), FetchError> {
        let list = uids(ids);
        if list.is_empty() {
            return Ok(());
        }
        let t = self.cfg.timeout;
        let (system, keywords): (Vec<Flag>, Vec<Flag>) = flags
            .iter()
            .cloned()
            .partition(|f| !matches!(f, Flag::Keyword(_)));
        for set in uid_sets(&list) {
            for (flags, optional) in [(&system, false), (&keywords, true)] {
                if flags.is_empty() {
                    continue;
                }
                let q = format!("+FLAGS.SILENT ({})", flag_list(flags));
                let s = self.session()?;
                let r: Result<Vec<Fetch>, FetchError> = Self::timed(t, async {
                    s.uid_store(&set, &q).await?.try_collect().await
                })
                .await;
                match r {
                    Ok(_) => {}
                    // Servers may refuse custom keywords (PERMANENTFLAGS): not fatal.
                    Err(FetchError::Protocol(e)) if optional => debug!("keywords not stored: {e}"),
                    Err(e) => return Err(e),
                }
            }
        }
        self.drain_unsolicited();
        Ok(())
    }

    async fn move_to(&mut self, folder: &str, ids: &[MsgRef]) -> Result<(), FetchError> {
        let list = uids(ids);
        if list.is_empty() {
            return Ok(());
        }
        let dest = self.ensure_folder(folder).await?;
        let t = self.cfg.timeout.max(Duration::from_secs(60));
        for set in uid_sets(&list) {
            if self.caps.mv {
                let s = self.session()?;
                let started = Instant::now();
                Self::timed(t, s.uid_mv(&set, &dest)).await?;
                tracing::trace!(
                    folder,
                    messages = list.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "moved"
                );
            } else {
                let s = self.session()?;
                Self::timed(t, s.uid_copy(&set, &dest)).await?;
                let _: Vec<Fetch> = Self::timed(t, async {
                    s.uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                        .await?
                        .try_collect()
                        .await
                })
                .await?;
                if self.caps.uidplus {
                    let s = self.session()?;
                    let _: Vec<u32> =
                        Self::timed(t, async { s.uid_expunge(&set).await?.try_collect().await })
                            .await?;
                }
                // Without UIDPLUS the original stays, flagged \Deleted (and
                // skipped by `pending`), until a client expunges the folder.
            }
        }
        self.drain_unsolicited();
        Ok(())
    }

    async fn has_message(&mut self, folder: &str, message_id: &str) -> Result<bool, FetchError> {
        // SEARCH works on the selected mailbox only: look in the folder
        // read-only, then select the inbox again. Used only on resume.
        let name = self.server_folder(folder);
        let inbox = encode_folder(&self.cfg.folder);
        let t = self.cfg.timeout;
        let id = message_id.trim_matches(['<', '>']).replace(['"', '\\'], "");
        let s = self.session()?;
        let found = match Self::timed(t, s.examine(&name)).await {
            Ok(_) => {
                let s = self.session()?;
                Self::timed(t, s.uid_search(format!("HEADER Message-ID \"<{id}>\"")))
                    .await
                    .map(|r| !r.is_empty())
            }
            // The folder does not exist: nothing is in it.
            Err(FetchError::Protocol(_)) => Ok(false),
            Err(e) => Err(e),
        };
        let s = self.session()?;
        Self::timed(t, s.select(&inbox)).await?;
        self.drain_unsolicited();
        found
    }

    async fn in_folder(
        &mut self,
        folder: &str,
        message_id: &str,
        action: &FolderAction,
    ) -> Result<bool, FetchError> {
        // Select the folder, act on the message, select the inbox again —
        // also after a failure, so that nothing afterwards runs on the
        // wrong folder (a failure to go back drops the connection).
        let name = self.server_folder(folder);
        let inbox = encode_folder(&self.cfg.folder);
        let t = self.cfg.timeout;
        let id = message_id.trim_matches(['<', '>']).replace(['"', '\\'], "");
        let s = self.session()?;
        let result = match Self::timed(t, s.select(&name)).await {
            Ok(_) => {
                let s = self.session()?;
                match Self::timed(t, s.uid_search(format!("HEADER Message-ID \"<{id}>\""))).await {
                    Ok(found) => {
                        let refs: Vec<MsgRef> = found.into_iter().map(MsgRef::Uid).collect();
                        if refs.is_empty() {
                            Ok(false)
                        } else {
                            match action {
                                FolderAction::Flag(f) => {
                                    self.add_flags(&refs, std::slice::from_ref(f)).await
                                }
                                FolderAction::MoveTo(dest) => self.move_to(dest, &refs).await,
                            }
                            .map(|()| true)
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            Err(FetchError::Protocol(_)) => Ok(false),
            Err(e) => Err(e),
        };
        let s = self.session()?;
        Self::timed(t, s.select(&inbox)).await?;
        self.drain_unsolicited();
        result
    }

    async fn since_in_folder(
        &mut self,
        folder: &str,
        cursor: Option<i64>,
    ) -> Result<(Vec<Vec<u8>>, Option<i64>), FetchError> {
        // Read-only look into the folder, then the inbox again (also after
        // a failure: nothing afterwards may run on the wrong folder).
        let name = self.server_folder(folder);
        let inbox = encode_folder(&self.cfg.folder);
        let t = self.cfg.timeout;
        let s = self.session()?;
        let result = match Self::timed(t, s.examine(&name)).await {
            Ok(mb) => {
                let uv = i64::from(mb.uid_validity.unwrap_or(0));
                let next = i64::from(mb.uid_next.unwrap_or(1));
                match cursor {
                    // The folder did not exist at the last look: all of it is new.
                    Some(-1) => self.headers_after(0, uv, t).await,
                    Some(c) if c >> 32 == uv && next - 1 > (c & 0xffff_ffff) => {
                        let last = (c & 0xffff_ffff) as u32;
                        self.headers_after(last, uv, t).await
                    }
                    Some(c) if c >> 32 == uv => Ok((Vec::new(), Some(c))),
                    // First look (or the folder was recreated): from now on.
                    _ => Ok((Vec::new(), Some((uv << 32) | (next - 1).max(0)))),
                }
            }
            // The folder does not exist (yet): nothing to read; what
            // appears in it later is new.
            Err(FetchError::Protocol(_)) => Ok((Vec::new(), Some(cursor.unwrap_or(-1)))),
            Err(e) => Err(e),
        };
        let s = self.session()?;
        Self::timed(t, s.select(&inbox)).await?;
        self.drain_unsolicited();
        result
    }

    async fn append_all(
        &mut self,
        folder: &str,
        raws: &[&[u8]],
        flags: &[Flag],
    ) -> Result<(), FetchError> {
        // One command carries the messages as non-synchronising literals;
        // the command text must be UTF-8 for the client library, which our
        // own replies are. Otherwise (or without the extensions), one by one.
        let texts: Option<Vec<&str>> = raws.iter().map(|r| std::str::from_utf8(r).ok()).collect();
        let Some(texts) = texts.filter(|_| self.caps.multiappend && raws.len() > 1) else {
            for raw in raws {
                self.append(folder, raw, flags).await?;
            }
            return Ok(());
        };
        let dest = self.ensure_folder(folder).await?;
        let f = format!("({})", flag_list(flags));
        // Commands of a bounded size (servers limit a command's length).
        let mut start = 0;
        while start < texts.len() {
            let mut cmd = format!("APPEND {}", quote_folder(&dest));
            let mut end = start;
            while end < texts.len() && (end == start || cmd.len() + texts[end].len() < 8 << 20) {
                cmd.push_str(&format!(" {f} {{{}+}}\r\n", texts[end].len()));
                cmd.push_str(texts[end]);
                end += 1;
            }
            let t = self.cfg.timeout.max(Duration::from_secs(60));
            let s = self.session()?;
            Self::timed(t, s.run_command_and_check_ok(&cmd)).await?;
            start = end;
        }
        self.drain_unsolicited();
        Ok(())
    }

    async fn append(&mut self, folder: &str, raw: &[u8], flags: &[Flag]) -> Result<(), FetchError> {
        let dest = self.ensure_folder(folder).await?;
        let t = self.cfg.timeout;
        let f = format!("({})", flag_list(flags));
        let s = self.session()?;
        Self::timed(t, s.append(&dest, Some(&f), None, raw)).await?;
        self.drain_unsolicited();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf7_folder_names() {
        assert_eq!(encode_folder("Queues/Support"), "Queues/Support");
        assert_eq!(encode_folder("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(encode_folder("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode_folder("台北"), "&U,BTFw-");
    }

    #[test]
    fn compact_uid_sets() {
        assert_eq!(uid_sets(&[5, 1, 2, 3, 9, 10, 7]), vec!["1:3,5,7,9:10"]);
        assert!(uid_sets(&[]).is_empty());
        let many: Vec<u32> = (0..5000).map(|i| i * 2).collect();
        let sets = uid_sets(&many);
        assert!(sets.len() > 1);
        assert!(sets.iter().all(|s| s.len() <= 4000));
    }
}
