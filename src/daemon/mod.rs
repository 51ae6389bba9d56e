//! The long-running process: one task per mailbox, the current knowledge
//! snapshot in a `watch` channel (swapped on reload), and graceful
//! shutdown that waits for tasks to finish the message in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, MailboxConfig, MailboxKind};
use crate::fetch::maildir::Maildir;
use crate::fetch::{FetchError, MailSource};
use crate::knowledge::Knowledge;
use crate::pipeline::{MailboxInfo, Outcome, Pipeline, PipelineError};

/// Everything a mailbox task shares with the others.
#[derive(Clone)]
pub struct Shared {
    pub pipeline: Pipeline,
    pub knowledge: watch::Receiver<Arc<Knowledge>>,
    pub shutdown: watch::Receiver<bool>,
    /// Messages larger than this are classified from a prefix.
    pub max_size: u64,
    /// Messages fetched and processed per round trip.
    pub batch_size: usize,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Processes the messages that are pending right now, in batches.
/// Returns what happened to each. Stops between batches on shutdown.
pub async fn drain_once<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
) -> Result<Vec<Outcome>, PipelineError> {
    let pending = src.pending().await?;
    let mut out = Vec::new();
    for chunk in pending.chunks(shared.batch_size.max(1)) {
        if shared.stopping() {
            break;
        }
        // A batch keeps the snapshot it started with.
        let k = shared.knowledge.borrow().clone();
        let batch = src.fetch(chunk, shared.max_size).await?;
        out.extend(shared.pipeline.process(src, mb, &k, batch).await?);
    }
    Ok(out)
}

/// Drains until a pass files nothing more (new mail may arrive while a
/// backlog is processed).
pub async fn drain<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
) -> Result<Vec<Outcome>, PipelineError> {
    let mut all = Vec::new();
    loop {
        let pass = drain_once(src, shared, mb).await?;
        let filed = pass.iter().filter(|o| o.folder.is_some()).count();
        all.extend(pass);
        if filed == 0 || shared.stopping() {
            return Ok(all);
        }
    }
}

/// Mailbox info for the pipeline from a mailbox config.
pub fn mailbox_info(m: &MailboxConfig) -> MailboxInfo {
    MailboxInfo {
        name: m.name.clone(),
        folders: m.folders.clone(),
    }
}

/// Runs a Maildir mailbox: drain, then poll until shutdown (or once).
pub async fn run_maildir(
    mb: MailboxConfig,
    path: std::path::PathBuf,
    mut shared: Shared,
    once: bool,
    poll: Duration,
) -> Result<usize, FetchError> {
    let mut src = Maildir::open(&path)?;
    let info = mailbox_info(&mb);
    let mut handled = 0;
    loop {
        match drain(&mut src, &shared, &info).await {
            Ok(o) => handled += o.iter().filter(|o| o.folder.is_some()).count(),
            Err(e) => error!(mailbox = %mb.name, "processing failed: {e}"),
        }
        if once || shared.stopping() {
            return Ok(handled);
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shared.shutdown.changed() => {}
        }
        if shared.stopping() {
            return Ok(handled);
        }
    }
}

/// Runs every configured mailbox until shutdown (or once through the
/// backlog with `once`). Returns the number of messages filed.
pub async fn run(
    cfg: Config,
    knowledge: watch::Receiver<Arc<Knowledge>>,
    pipeline: Pipeline,
    shutdown: watch::Receiver<bool>,
    once: bool,
) -> anyhow::Result<usize> {
    let shared = Shared {
        pipeline,
        knowledge,
        shutdown,
        max_size: cfg.limits.max_message_size,
        batch_size: 100,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for mb in cfg.mailboxes.clone() {
        let shared = shared.clone();
        match mb.kind.clone() {
            MailboxKind::Maildir { path } => {
                tasks.spawn(async move {
                    let name = mb.name.clone();
                    (
                        name,
                        run_maildir(mb, path, shared, once, Duration::from_secs(2)).await,
                    )
                });
            }
            MailboxKind::Imap(_) => {
                warn!(mailbox = %mb.name, "IMAP mailboxes are not supported by this build");
            }
        }
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((name, Ok(n))) => {
                info!(mailbox = %name, filed = n, "mailbox stopped");
                total += n;
            }
            Ok((name, Err(e))) => error!(mailbox = %name, "mailbox failed: {e}"),
            Err(e) => error!("mailbox task panicked: {e}"),
        }
    }
    Ok(total)
}
