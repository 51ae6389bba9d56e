//! Where replies go: an SMTP server (lettre, pooled, with timeouts) or a
//! directory of `.eml` files (lettre's file transport, the embedded
//! default). Both classify failures the same way: temporary (retry later,
//! the message stays unprocessed) or permanent (a person takes over).

use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls as SmtpTls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

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

#[derive(Clone)]
pub struct SmtpOutbox {
    transport: std::sync::Arc<tokio::sync::RwLock<AsyncSmtpTransport<Tokio1Executor>>>,
    timeout: Duration,
    /// `host:port`, for messages.
    pub server: String,
    /// Kept for XOAUTH2: an expired access token means building the
    /// transport again with a fresh one from the token command.
    oauth: Option<SmtpConfig>,
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

    pub fn describe(&self) -> String {
        match self {
            Outbox::File(f) => format!("file outbox {}", f.dir.display()),
            Outbox::Smtp(s) => format!("SMTP {}", s.server),
        }
    }
}

impl SmtpOutbox {
    async fn open(s: &SmtpConfig) -> Result<SmtpOutbox, String> {
        Ok(SmtpOutbox {
            transport: std::sync::Arc::new(tokio::sync::RwLock::new(Self::transport(s).await?)),
            timeout: s.timeout,
            server: format!("{}:{}", s.host, s.port),
            oauth: (s.auth == AuthMechanism::XOAuth2).then(|| s.clone()),
        })
    }

    async fn transport(s: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let tls_params = || {
            TlsParameters::builder(s.host.clone())
                .dangerous_accept_invalid_certs(s.danger_accept_invalid_certs)
                .build_rustls()
                .map_err(|e| format!("TLS setup for {}: {e}", s.host))
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
            .port(s.port)
            .timeout(Some(s.timeout));
        b = match s.tls {
            Tls::Implicit => b.tls(SmtpTls::Wrapper(tls_params()?)),
            Tls::StartTls => b.tls(SmtpTls::Required(tls_params()?)),
            Tls::None => b.tls(SmtpTls::None),
        };
        if let (Some(user), Some(secret)) = (&s.username, &s.secret) {
            let pw = read_secret(secret).await?;
            b = b
                .credentials(Credentials::new(user.clone(), pw))
                .authentication(vec![match s.auth {
                    AuthMechanism::Plain => Mechanism::Plain,
                    AuthMechanism::Login => Mechanism::Login,
                    AuthMechanism::XOAuth2 => Mechanism::Xoauth2,
                }]);
        }
        let pool = lettre::transport::smtp::PoolConfig::new().max_size(s.pool_size);
        Ok(b.pool_config(pool).build())
    }

    async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        match self.send_once(m).await {
            Err((_, true)) if self.oauth.is_some() => {
                // An XOAUTH2 access token lives about an hour: get a fresh
                // one from the token command and try once more.
                tracing::warn!(server = %self.server, "SMTP refused the OAuth2 token; fetching a fresh one and retrying once");
                metrics::counter!("switchboard_oauth_token_refresh_total", "service" => "smtp")
                    .increment(1);
                if let Some(cfg) = &self.oauth {
                    match Self::transport(cfg).await {
                        Ok(t) => *self.transport.write().await = t,
                        Err(err) => {
                            return Err(SendError::Temporary(format!(
                                "SMTP {}: cannot get a fresh OAuth2 token: {err}",
                                self.server
                            )));
                        }
                    }
                }
                match self.send_once(m).await {
                    Ok(()) => Ok(()),
                    // Still refused: an authentication problem is ours to
                    // fix, not the customer's: retry later, loudly.
                    Err((e, true)) => {
                        tracing::error!(server = %self.server, "SMTP OAuth2 authentication failed with a fresh token ({e:?})");
                        metrics::counter!("switchboard_errors_total", "kind" => "auth", "mailbox" => "smtp")
                            .increment(1);
                        Err(SendError::Temporary(match e {
                            SendError::Temporary(t) | SendError::Permanent(t) => t,
                        }))
                    }
                    Err((e, false)) => Err(e),
                }
            }
            Err((e, _)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    /// One attempt; the flag says whether the failure was authentication.
    async fn send_once(&self, m: &Outgoing) -> Result<(), (SendError, bool)> {
        let transport = self.transport.read().await;
        // lettre's own timeout covers connecting only; bound the whole send.
        match tokio::time::timeout(self.timeout, transport.send_raw(&m.envelope, &m.raw)).await {
            Err(_) => Err((
                SendError::Temporary(format!(
                    "SMTP {} did not answer within {:?}",
                    self.server, self.timeout
                )),
                false,
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let auth = is_auth_failure(&e);
                let text = format!("SMTP {}: {e}", self.server);
                if e.is_permanent() && !auth {
                    Err((SendError::Permanent(text), false))
                } else if auth {
                    // Never a reason to hand the customer's mail to a
                    // person: our credentials need fixing. Retry later.
                    Err((SendError::Temporary(text), true))
                } else {
                    Err((SendError::Temporary(text), false))
                }
            }
        }
    }
}

/// An authentication failure: 530/534/535/454 replies, or lettre's client
/// error when a server answers XOAUTH2 with a challenge (how Gmail and
/// Microsoft 365 refuse an expired token).
fn is_auth_failure(e: &lettre::transport::smtp::Error) -> bool {
    if let Some(code) = e.status() {
        return matches!(u16::from(code), 530 | 534 | 535 | 454);
    }
    e.is_client() && {
        let t = e.to_string().to_lowercase();
        t.contains("challenge") || t.contains("mechanism")
    }
}

async fn read_secret(s: &SecretSource) -> Result<String, String> {
    s.read()
        .await
        .map(|p| p.expose_secret().to_string())
        .map_err(|e| e.to_string())
}
