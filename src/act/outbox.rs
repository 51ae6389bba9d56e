//! Where replies go: an SMTP server or a directory of `.eml` files
//! (lettre's file transport, the embedded default). Failures are
//! classified for the crash-safety protocol:
//!
//! * **temporary**: nothing was accepted (no connection, a 4xx answer,
//!   a timeout before the message content was sent): retry later;
//! * **permanent**: a 5xx answer: a person takes over;
//! * **ambiguous**: the connection failed or timed out *after* the message
//!   content was sent and before the server confirmed it. The server may
//!   have accepted it, so it is never sent again (RFC 5321 §6.1 puts the
//!   responsibility on the server once it said 250; a client that did
//!   not hear the 250 cannot know).
//!
//! SMTP uses lettre's protocol implementation on connections this module
//! manages itself: `TCP_NODELAY` (lettre writes the final `.` in a write
//! of its own, which Nagle's algorithm would hold back for a delayed ACK),
//! no `NOOP` before each message, and a small pool of idle connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};
use tokio::net::TcpStream;

use crate::act::reply::Outgoing;
use crate::config::{AuthMechanism, OutboundConfig, SmtpConfig, Tls};
use crate::secret::{ExposeSecret, SecretSource};

/// Why a reply could not be handed over.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Try again later: connection refused, timeout, 4xx.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Will never work: 5xx, invalid recipient.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The message content was sent but the server's confirmation never
    /// came (timeout, connection lost, TLS failure): it may have been
    /// accepted. Never send it again.
    #[error("outcome unknown: {0}")]
    Ambiguous(String),
}

/// The outbound transport.
#[derive(Clone)]
pub enum Outbox {
    File(FileOutbox),
    Smtp(SmtpOutbox),
}

#[derive(Clone)]
pub struct FileOutbox {
    pub dir: PathBuf,
    transport: AsyncFileTransport<Tokio1Executor>,
}

impl Outbox {
    /// Creates the transport for a config. Reads the SMTP password.
    pub async fn open(cfg: &OutboundConfig) -> Result<Outbox, String> {
        match cfg {
            OutboundConfig::File { dir } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create outbox {}: {e}", dir.display()))?;
                Ok(Outbox::File(FileOutbox {
                    dir: dir.clone(),
                    transport: AsyncFileTransport::new(dir),
                }))
            }
            OutboundConfig::Smtp(s) => Ok(Outbox::Smtp(SmtpOutbox::open(s).await?)),
        }
    }

    /// Hands one message over.
    pub async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        match self {
            Outbox::File(f) => f
                .transport
                .send_raw(&m.envelope, &m.raw)
                .await
                .map(|_| ())
                .map_err(|e| SendError::Temporary(format!("cannot write to the outbox: {e}"))),
            Outbox::Smtp(s) => s.send(m).await,
        }
    }

    /// How many replies one batch hands over at once: as many as the SMTP
    /// pool keeps connections (`pool_size`), so that a batch's burst of
    /// replies does not open connections the pool then closes. (Mailboxes
    /// share the pool: when several answer at the same moment, `pool_size`
    /// replies are sent at once in all and the others wait for a free
    /// connection.)
    pub fn parallel(&self) -> usize {
        match self {
            Outbox::File(_) => FILE_PARALLEL,
            Outbox::Smtp(s) => (s.cfg.pool_size as usize).max(1),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outbox::File(f) => format!("file outbox {}", f.dir.display()),
            Outbox::Smtp(s) => format!("SMTP {}", s.server),
        }
    }
}

/// Replies written to the file outbox at once.
const FILE_PARALLEL: usize = 4;

/// How long a `RSET` after a refused envelope may take before the
/// connection is dropped instead (the refusal itself is already known).
const RSET_TIMEOUT: Duration = Duration::from_secs(2);

/// After the server could not be reached, sends that need a new
/// connection are deferred without trying for this long.
const UNREACHABLE_HOLD: Duration = Duration::from_secs(10);

/// An SMTP server, with a pool of idle connections.
#[derive(Clone)]
pub struct SmtpOutbox {
    cfg: Arc<SmtpConfig>,
    idle: Arc<tokio::sync::Mutex<Vec<AsyncSmtpConnection>>>,
    /// One permit per connection the pool may have open (`pool_size`),
    /// shared by every mailbox: a relay that allows so many connections
    /// from us never sees more, however many mailboxes answer at once.
    slots: Arc<tokio::sync::Semaphore>,
    /// When (and why) the last attempt to reach the server failed.
    unreachable: Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>,
    timeout: Duration,
    /// `host:port`, for messages.
    pub server: String,
}

/// How far one send got: decides whether a failure is safe to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connecting, greeting, TLS, authentication.
    Connect,
    /// MAIL, RCPT, DATA: nothing can have been accepted yet.
    Envelope,
    /// The content is being written or its confirmation awaited.
    Content,
}

/// A TLS connection for implicit TLS (port 465), handed to lettre.
#[derive(Debug)]
struct TlsTcp(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsTcp {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsTcp {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// A failure of one step, with whether it was authentication.
struct StepError {
    error: SendError,
    auth: bool,
}

impl StepError {
    fn temporary(text: String) -> StepError {
        StepError {
            error: SendError::Temporary(text),
            auth: false,
        }
    }
}

impl SmtpOutbox {
    async fn open(s: &SmtpConfig) -> Result<SmtpOutbox, String> {
        if s.username.is_some() && s.secret.is_none() {
            return Err(format!(
                "SMTP {}: a username needs a password source",
                s.host
            ));
        }
        Ok(SmtpOutbox {
            cfg: Arc::new(s.clone()),
            idle: Arc::new(tokio::sync::Mutex::new(Vec::new())),
            slots: Arc::new(tokio::sync::Semaphore::new(s.pool_size.max(1) as usize)),
            unreachable: Arc::new(std::sync::Mutex::new(None)),
            timeout: s.timeout,
            server: format!("{}:{}", s.host, s.port),
        })
    }

    fn tls_parameters(&self) -> Result<TlsParameters, String> {
        TlsParameters::builder(self.cfg.host.clone())
            .dangerous_accept_invalid_certs(self.cfg.danger_accept_invalid_certs)
            .build_rustls()
            .map_err(|e| format!("TLS setup for {}: {e}", self.cfg.host))
    }

    /// A new, authenticated connection.
    async fn connect(&self) -> Result<AsyncSmtpConnection, StepError> {
        let cfg = &self.cfg;
        let err = |what: &str, e: &dyn std::fmt::Display| {
            StepError::temporary(format!("SMTP {}: {what}: {e}", self.server))
        };
        let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| err("cannot connect", &e))?;
        // The reason this module manages its own sockets (see above).
        let _ = tcp.set_nodelay(true);
        let hello = ClientId::default();
        let stream: Box<dyn AsyncTokioStream> = match cfg.tls {
            Tls::Implicit => {
                let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
                    .map_err(|e| err("invalid host name", &e))?;
                let tls = crate::fetch::imap::tls_config(cfg.danger_accept_invalid_certs)
                    .map_err(|e| err("TLS", &e))?;
                let s = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| err("TLS", &e))?;
                Box::new(TlsTcp(s))
            }
            Tls::StartTls | Tls::None => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &hello)
            .await
            .map_err(|e| err("greeting", &e))?;
        if cfg.tls == Tls::StartTls {
            let params = self.tls_parameters().map_err(|e| err("TLS", &e))?;
            conn.starttls(params, &hello)
                .await
                .map_err(|e| err("STARTTLS", &e))?;
        }
        if let (Some(user), Some(secret)) = (&cfg.username, &cfg.secret) {
            let pw = read_secret(secret)
                .await
                .map_err(|e| err("cannot read the password", &e))?;
            let mechanism = match cfg.auth {
                AuthMechanism::Plain => Mechanism::Plain,
                AuthMechanism::Login => Mechanism::Login,
                AuthMechanism::XOAuth2 => Mechanism::Xoauth2,
            };
            if let Err(e) = conn
                .auth(&[mechanism], &Credentials::new(user.clone(), pw))
                .await
            {
                conn.abort().await;
                return Err(StepError {
                    error: SendError::Temporary(format!(
                        "SMTP {}: authentication failed: {e}",
                        self.server
                    )),
                    auth: true,
                });
            }
        }
        Ok(conn)
    }

    /// Sends one message on a connection, recording how far it got.
    async fn transact(
        conn: &mut AsyncSmtpConnection,
        m: &Outgoing,
        phase: &mut Phase,
    ) -> Result<(), lettre::transport::smtp::Error> {
        *phase = Phase::Envelope;
        let mut params = Vec::new();
        let non_ascii = m
            .envelope
            .from()
            .into_iter()
            .chain(m.envelope.to())
            .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii && conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            params.push(MailParameter::SmtpUtfEight);
        }
        if !m.raw.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(m.envelope.from().cloned(), params))
            .await?;
        for to in m.envelope.to() {
            conn.command(Rcpt::new(to.clone(), vec![])).await?;
        }
        conn.command(Data).await?;
        *phase = Phase::Content;
        conn.message(&m.raw).await?;
        Ok(())
    }

    /// Classifies a failure of [`Self::transact`].
    fn classify(&self, e: &lettre::transport::smtp::Error, phase: Phase) -> SendError {
        let text = format!("SMTP {}: {e}", self.server);
        match e.status() {
            // The server answered: it said what happened.
            Some(_) if e.is_permanent() => SendError::Permanent(text),
            Some(_) => SendError::Temporary(text),
            // No answer: a network, TLS or protocol failure.
            None if phase == Phase::Content => SendError::Ambiguous(text),
            None => SendError::Temporary(text),
        }
    }

    async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        // A free connection slot first, waiting at most the timeout: a
        // relay that accepts connections and then stalls holds every slot
        // for that long, and a reply not tried is deferred, not guessed
        // at. (The semaphore is never closed.)
        let Ok(slot) = tokio::time::timeout(self.timeout, self.slots.acquire()).await else {
            return Err(SendError::Temporary(format!(
                "not tried: all {} connections to SMTP {} stayed busy for {:?}",
                self.cfg.pool_size, self.server, self.timeout
            )));
        };
        let _slot = slot.ok();
        // The server could not be reached a moment ago: the messages behind
        // that one are deferred at once instead of each waiting out its
        // own timeout (a batch of replies to a dead relay would otherwise
        // take minutes).
        if let Ok(down) = self.unreachable.lock()
            && let Some((at, why)) = down.as_ref()
            && at.elapsed() < UNREACHABLE_HOLD
        {
            return Err(SendError::Temporary(format!("not tried: {why}")));
        }
        let mut phase = Phase::Connect;
        let result = tokio::time::timeout(self.timeout, self.send_inner(m, &mut phase)).await;
        let connect_failed = match &result {
            Ok(Err(SendError::Temporary(why))) if phase == Phase::Connect => Some(why.clone()),
            Err(_) if phase == Phase::Connect => Some(format!(
                "SMTP {} did not answer within {:?}",
                self.server, self.timeout
            )),
            _ => None,
        };
        if let Ok(mut down) = self.unreachable.lock() {
            *down = connect_failed.map(|why| (std::time::Instant::now(), why));
        }
        match result {
            Ok(r) => r,
            Err(_) if phase == Phase::Content => Err(SendError::Ambiguous(format!(
                "SMTP {} did not confirm the message within {:?}",
                self.server, self.timeout
            ))),
            Err(_) => Err(SendError::Temporary(format!(
                "SMTP {} did not answer within {:?}",
                self.server, self.timeout
            ))),
        }
    }

    async fn send_inner(&self, m: &Outgoing, phase: &mut Phase) -> Result<(), SendError> {
        // A pooled connection first; it may have been closed by the server
        // while idle, which shows as a network error before anything of
        // this message was accepted: then once more on a new connection.
        let pooled = self.idle.lock().await.pop();
        if let Some(mut conn) = pooled {
            match Self::transact(&mut conn, m, phase).await {
                Ok(()) => {
                    self.release(conn).await;
                    return Ok(());
                }
                Err(e) if e.status().is_none() && *phase == Phase::Envelope => {
                    tracing::debug!(server = %self.server, "idle SMTP connection was closed: {e}");
                    conn.abort().await;
                }
                Err(e) => {
                    let error = self.classify(&e, *phase);
                    self.reset_or_abort(conn, &e, *phase).await;
                    return Err(error);
                }
            }
        }
        *phase = Phase::Connect;
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(StepError { auth: true, .. }) if self.cfg.auth == AuthMechanism::XOAuth2 => {
                // An XOAUTH2 access token lives about an hour: the token
                // command gives a fresh one; try once more.
                tracing::warn!(server = %self.server, "SMTP refused the OAuth2 token; fetching a fresh one and retrying once");
                metrics::counter!("switchboard_oauth_token_refresh_total", "service" => "smtp")
                    .increment(1);
                self.connect().await.map_err(|e| self.auth_failed(e))?
            }
            Err(e) => return Err(self.auth_failed(e)),
        };
        match Self::transact(&mut conn, m, phase).await {
            Ok(()) => {
                self.release(conn).await;
                Ok(())
            }
            Err(e) => {
                let error = self.classify(&e, *phase);
                self.reset_or_abort(conn, &e, *phase).await;
                Err(error)
            }
        }
    }

    /// After a failed transaction: when the server refused the envelope
    /// (an unknown recipient, say), `RSET` makes the connection usable
    /// for the next message; anything else closes it.
    async fn reset_or_abort(
        &self,
        mut conn: AsyncSmtpConnection,
        e: &lettre::transport::smtp::Error,
        phase: Phase,
    ) {
        if phase == Phase::Envelope
            && e.status().is_some()
            && !conn.has_broken()
            && tokio::time::timeout(RSET_TIMEOUT, conn.command(Rset))
                .await
                .is_ok_and(|r| r.is_ok())
        {
            self.release(conn).await;
            return;
        }
        conn.abort().await;
    }

    /// Reports a connection failure; an authentication failure is ours to
    /// fix, never a reason to hand the customer's mail to a person.
    fn auth_failed(&self, e: StepError) -> SendError {
        if e.auth {
            tracing::error!(server = %self.server, "SMTP authentication failed ({})", e.error);
            metrics::counter!("switchboard_errors_total", "kind" => "auth", "mailbox" => "smtp")
                .increment(1);
        }
        match e.error {
            SendError::Permanent(t) | SendError::Ambiguous(t) => SendError::Temporary(t),
            t => t,
        }
    }

    async fn release(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().await;
        if idle.len() < self.cfg.pool_size as usize {
            idle.push(conn);
        }
    }
}

async fn read_secret(s: &SecretSource) -> Result<String, String> {
    s.read()
        .await
        .map(|p| p.expose_secret().to_string())
        .map_err(|e| e.to_string())
}
