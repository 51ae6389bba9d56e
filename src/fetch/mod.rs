//! Stage 1 — **fetch**: mailbox backends behind one trait.
//!
//! A [`MailSource`] lists the unprocessed messages of one mailbox (its
//! inbox holds only unprocessed work: everything processed is moved out),
//! fetches them without marking them seen, sets flags, moves messages to
//! folders (creating folders when missing) and appends copies of our
//! replies. Implementations: [`maildir::Maildir`] (the embedded default,
//! and Dovecot's on-disk format) and the IMAP client.

pub mod imap;
pub mod maildir;

use std::future::Future;

/// A message's handle inside its source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MsgRef {
    /// IMAP UID (within the current UIDVALIDITY).
    Uid(u32),
    /// Maildir file, relative to the maildir root (`new/…` or `cur/…`).
    /// File names are bytes: they need not be UTF-8.
    File(std::path::PathBuf),
}

impl std::fmt::Display for MsgRef {
    /// File names are shown with control and invisible characters escaped,
    /// so a file name cannot forge a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MsgRef::Uid(u) => write!(f, "UID {u}"),
            MsgRef::File(p) => {
                for c in p.to_string_lossy().chars() {
                    if c.is_control() || crate::parse::is_invisible(c) {
                        write!(f, "{}", c.escape_unicode())?;
                    } else {
                        write!(f, "{c}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A fetched message.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub id: MsgRef,
    /// The raw message, or its beginning when it is over the size limit.
    pub raw: Vec<u8>,
    /// The full size on the server.
    pub size: u64,
    /// Whether `raw` is only a prefix (headers and first text part).
    pub truncated: bool,
    /// Why the message could not be read (a symbolic link in a Maildir,
    /// a file that vanished half-way): the pipeline parks it with this
    /// reason instead of processing it.
    pub unreadable: Option<String>,
}

/// A flag to set on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    Answered,
    Seen,
    /// A draft (a proposed answer for a person to review and send).
    Draft,
    /// An IMAP keyword set by a rule's `flag`.
    Keyword(String),
}

/// What [`MailSource::in_folder`] does to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderAction {
    Flag(Flag),
    MoveTo(String),
}

/// Errors of a mailbox backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {server}: {message}")]
    Connect { server: String, message: String },
    #[error("login to {server} as {user} failed: {message}")]
    Auth {
        server: String,
        user: String,
        message: String,
    },
    #[error("IMAP: {0}")]
    Protocol(String),
    #[error("the server did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("cannot read the password: {0}")]
    Secret(#[from] crate::secret::SecretError),
    #[error("shutting down")]
    Shutdown,
}

impl FetchError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> FetchError {
        FetchError::Io {
            context: context.into(),
            source,
        }
    }

    /// A short kind for metrics and de-duplicated logging.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Io { .. } => "io",
            FetchError::Connect { .. } => "connect",
            FetchError::Auth { .. } => "auth",
            FetchError::Protocol(_) => "protocol",
            FetchError::Timeout(_) => "timeout",
            FetchError::Secret(_) => "secret",
            FetchError::Shutdown => "shutdown",
        }
    }
}

/// One mailbox backend.
pub trait MailSource: Send + Sized + 'static {
    /// Another connection to the same mailbox, so that mail is filed over
    /// it while this one fetches and answers. `None` when the backend has
    /// no use for one or none is ready: the caller then files over this
    /// one. With `wait`, a connection is opened if none is ready (for a
    /// backlog); without, only one kept from an earlier pass
    /// ([`MailSource::keep`]) is given, and one may be opened in the
    /// background for the next. The future yields `None` when the
    /// connection could not be opened. Default: `None`.
    fn second(
        &mut self,
        wait: bool,
    ) -> Option<impl Future<Output = Option<Self>> + Send + 'static> {
        let _ = wait;
        None::<std::future::Ready<Option<Self>>>
    }

    /// Keeps a connection from [`MailSource::second`] for the next pass;
    /// `used`: it carried commands in this one (else it is as old as
    /// before). Default: dropped.
    fn keep(&mut self, second: Self, used: bool) {
        let _ = (second, used);
    }

    /// Another connection ([`MailSource::second`]) moved messages out of
    /// this mailbox: the next [`MailSource::pending`] must not list them.
    /// Default: nothing to do.
    fn moved_behind(&mut self) {}

    /// Unprocessed messages, oldest first.
    fn pending(&mut self) -> impl Future<Output = Result<Vec<MsgRef>, FetchError>> + Send;

    /// Fetches messages without marking them seen. Messages larger than
    /// `max_size` are fetched as a prefix (headers and first text part).
    fn fetch(
        &mut self,
        ids: &[MsgRef],
        max_size: u64,
    ) -> impl Future<Output = Result<Vec<Fetched>, FetchError>> + Send;

    /// Adds the same flags to messages (one command where the backend
    /// allows).
    fn add_flags(
        &mut self,
        ids: &[MsgRef],
        flags: &[Flag],
    ) -> impl Future<Output = Result<(), FetchError>> + Send;

    /// Moves messages into a folder (created when missing). Never deletes.
    fn move_to(
        &mut self,
        folder: &str,
        ids: &[MsgRef],
    ) -> impl Future<Output = Result<(), FetchError>> + Send;

    /// Number of messages in a folder (0 when it does not exist), e.g. a
    /// representative's open load.
    fn count(&mut self, folder: &str) -> impl Future<Output = Result<u32, FetchError>> + Send;

    /// Whether a folder holds a message with this Message-ID (without
    /// angle brackets). Used only when resuming after a crash, to never
    /// store a second copy of a reply.
    fn has_message(
        &mut self,
        folder: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<bool, FetchError>> + Send;

    /// Acts on the message with this Message-ID (without angle brackets)
    /// in another folder than the inbox: sets a flag (a reminder's
    /// `$Overdue`) or moves it (an escalation). `false` when it is not
    /// there (a person moved it) or the backend cannot do it.
    fn in_folder(
        &mut self,
        folder: &str,
        message_id: &str,
        action: &FolderAction,
    ) -> impl Future<Output = Result<bool, FetchError>> + Send {
        let _ = (folder, message_id, action);
        async { Ok(false) }
    }

    /// The headers of the messages that arrived in `folder` since
    /// `cursor` (an opaque position this method returned before; `None`:
    /// start from now), and the new position. Default: nothing.
    fn since_in_folder(
        &mut self,
        folder: &str,
        cursor: Option<i64>,
    ) -> impl Future<Output = Result<(Vec<Vec<u8>>, Option<i64>), FetchError>> + Send {
        let _ = folder;
        async move { Ok((Vec::new(), cursor)) }
    }

    /// Stores a copy of a message (our reply) in a folder.
    fn append(
        &mut self,
        folder: &str,
        raw: &[u8],
        flags: &[Flag],
    ) -> impl Future<Output = Result<(), FetchError>> + Send;

    /// Stores copies of several messages in one folder, all with the same
    /// flags: in one command where the server allows it (IMAP
    /// MULTIAPPEND with non-synchronising literals), else one by one.
    fn append_all(
        &mut self,
        folder: &str,
        raws: &[&[u8]],
        flags: &[Flag],
    ) -> impl Future<Output = Result<(), FetchError>> + Send
    where
        Self: Send,
    {
        async move {
            for raw in raws {
                self.append(folder, raw, flags).await?;
            }
            Ok(())
        }
    }
}
