//! The long-running process: one task per mailbox, the current knowledge
//! snapshot in a `watch` channel (swapped on reload), and graceful
//! shutdown that waits for tasks to finish the message in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub mod health;
pub mod lease;
use health::Health;

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{Config, ImapConfig, MailboxConfig, MailboxKind};
use crate::fetch::MsgRef;
use crate::fetch::imap::{Imap, Wake};
use crate::fetch::maildir::Maildir;
use crate::fetch::{FetchError, MailSource};
use crate::knowledge::Knowledge;
use crate::pipeline::{
    Filing, MailboxInfo, Outcome, Pipeline, PipelineError, Prepared, prepare_batch,
};
use crate::record::StoreError;

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
    /// Flags and moves for a backlog are sent this many messages at a
    /// time ([`FILE_EVERY`] by default), over a second connection when
    /// the backend has one; more wait while that connection is still busy
    /// with the previous ones.
    pub file_every: usize,
    pub health: Health,
    /// How often service-level deadlines are checked.
    pub sla_check: Duration,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The default of [`Shared::file_every`].
pub const FILE_EVERY: usize = 2_000;
/// …or after this long, so that representatives see a backlog's mail
/// arrive in their folders steadily.
const FILE_AFTER: Duration = Duration::from_secs(2);

/// Processes the messages that are pending right now, in batches, and
/// hands each outcome to `seen`. Stops between batches on shutdown.
/// Returns how many messages were filed.
pub async fn drain_once_with<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
    seen: &mut (dyn FnMut(Outcome) + Send),
) -> Result<usize, PipelineError> {
    drain_pass(src, shared, mb, seen).await.map(|p| p.filed)
}

/// What one pass did.
struct Pass {
    filed: usize,
    /// Every pending message was fetched and processed (not stopped
    /// early by a shutdown or a batch that could not be prepared).
    complete: bool,
}

async fn drain_pass<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
    seen: &mut (dyn FnMut(Outcome) + Send),
) -> Result<Pass, PipelineError> {
    let pending = src.pending().await?;
    // Mail is filed over a second connection to the mailbox, so that the
    // server moves mail while this one fetches the next batches of a
    // backlog, or sends and copies the replies of a pass. A backlog waits
    // for it to connect (it connects while the first batches are read);
    // other passes use one kept from an earlier pass, if any, and one is
    // opened in the background for the next. Without one, filing goes
    // over this connection.
    // (A message alone has nothing to be filed alongside.)
    let opening = match pending.len() {
        0 | 1 => None,
        n => src.second(n > shared.file_every),
    };
    let Some(opening) = opening else {
        return work(src, shared, mb, seen, &pending, None).await;
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let second = Second::default();
    let (worked, behind) = tokio::join!(
        work(src, shared, mb, seen, &pending, Some((tx, &second))),
        file_behind(opening, &shared.pipeline, rx, &second),
    );
    // What it filed is gone from the inbox, also when it failed later.
    if behind.used {
        src.moved_behind();
    }
    match behind.result {
        Ok(()) => {
            if let Some(c) = behind.conn {
                src.keep(c, behind.used);
            }
        }
        // Nothing is lost: the messages it did not file are still in the
        // inbox, decided, and are filed by the next pass.
        Err(e) => {
            warn!(mailbox = %mb.name, "filing over the second connection failed: {e}");
            metrics::counter!("switchboard_errors_total", "kind" => "second_connection", "mailbox" => mb.name.clone())
                .increment(1);
        }
    }
    // What it received but could not file (it never connected), unless
    // this connection failed too: then the next pass files it.
    if !matches!(worked, Err(PipelineError::Source(_))) {
        for mut f in behind.left {
            f.flush(&shared.pipeline, src).await?;
        }
    }
    worked
}

/// Where a pass sends the filings that are due: the second connection's
/// queue, and what it and the pass share.
type Filer<'a> = Option<(tokio::sync::mpsc::Sender<Filing>, &'a Second)>;

/// What a pass and its second connection share.
#[derive(Default)]
struct Second {
    /// Not connected, or failed: the pass files over its own connection.
    down: AtomicBool,
    /// Filings handed over that [`file_behind`] has not finished with
    /// (filed, failed, or set aside while it had no connection).
    pending: std::sync::atomic::AtomicUsize,
}

/// Hands `due` to the second connection when it can take it, and counts
/// it in `handed` then. Returns what is left to do here: nothing, or
/// `due` itself when there is no second connection (any more). When the
/// second connection is still busy with an earlier filing, `due` goes
/// back into `filing` to grow (fewer, larger moves while the server is
/// slow).
fn hand_over(
    filer: &Filer<'_>,
    due: Filing,
    filing: &mut Filing,
    handed: &mut HashMap<String, u32>,
) -> Filing {
    let Some((tx, second)) = filer else {
        return due;
    };
    if second.down.load(Ordering::Relaxed) {
        return due;
    }
    let counts: Vec<(String, u32)> = due.per_folder().map(|(f, n)| (f.to_string(), n)).collect();
    second.pending.fetch_add(1, Ordering::Relaxed);
    match tx.try_send(due) {
        Ok(()) => {
            count_in(handed, counts);
            Filing::default()
        }
        Err(tokio::sync::mpsc::error::TrySendError::Full(due)) => {
            second.pending.fetch_sub(1, Ordering::Relaxed);
            filing.merge(due);
            Filing::default()
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(due)) => {
            second.pending.fetch_sub(1, Ordering::Relaxed);
            due
        }
    }
}

fn count_in(handed: &mut HashMap<String, u32>, counts: impl IntoIterator<Item = (String, u32)>) {
    for (folder, n) in counts {
        *handed.entry(folder).or_default() += n;
    }
}

/// Files what the pass hands over, one filing after the other, over the
/// second connection once `opening` has connected it; gives the
/// connection back, and what it received while it had none (`down` tells
/// the pass to stop handing over: it then files over its own
/// connection). After a failure nothing more is sent on it: what it was
/// filing stays in the inbox, decided, for the next pass.
async fn file_behind<S: MailSource>(
    opening: impl Future<Output = Option<S>>,
    p: &Pipeline,
    mut rx: tokio::sync::mpsc::Receiver<Filing>,
    second: &Second,
) -> Behind<S> {
    let down = &second.down;
    let mut b = Behind {
        conn: opening.await,
        used: false,
        result: Ok(()),
        left: Vec::new(),
    };
    down.store(b.conn.is_none(), Ordering::Relaxed);
    while let Some(mut filing) = rx.recv().await {
        let Some(c) = b.conn.as_mut() else {
            b.left.push(filing);
            second.pending.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        debug!(messages = filing.len(), "filing over the second connection");
        b.used = true;
        if let Err(e) = filing.flush(p, c).await {
            down.store(true, Ordering::Relaxed);
            b.conn = None;
            b.result = Err(e);
        }
        second.pending.fetch_sub(1, Ordering::Relaxed);
    }
    b
}

/// What [`file_behind`] did.
struct Behind<S> {
    /// The connection, to keep (`None` after a failure).
    conn: Option<S>,
    /// It filed something.
    used: bool,
    result: Result<(), PipelineError>,
    /// Filings it received while it had no connection.
    left: Vec<Filing>,
}

/// One pass over `pending`: fetch, prepare, decide, act, in batches, with
/// filing handed to `filer` when there is one.
async fn work<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
    seen: &mut (dyn FnMut(Outcome) + Send),
    pending: &[MsgRef],
    filer: Filer<'_>,
) -> Result<Pass, PipelineError> {
    let mut complete = true;
    let mut filing = Filing::default();
    let mut filed = 0;
    let mut result = Ok(());
    let mut chunks = Chunks::new(pending, shared.batch_size);
    let mut since_trim = 0;
    // Open loads: what the server counted at the first batch, plus what
    // this pass has decided for each folder (filed or still waiting).
    let mut counted = HashMap::new();
    let mut handed: HashMap<String, u32> = HashMap::new();
    // Pipelined: while batch n is decided and committed, batch n+1 is
    // fetched and parsed and scored on the parsing threads, and earlier
    // batches are filed over IMAP.
    let mut next = match chunks.next() {
        Some(c) if !shared.stopping() => Some(fetch_prepare(src, shared, mb, c).await),
        _ => None,
    };
    while let Some(current) = next.take() {
        let (k, fetched, prepared) = match current {
            Ok(p) => p,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        // The open loads are read from the server while the batch is
        // parsed.
        let p = &shared.pipeline;
        let added = |f: &str| {
            let n = handed.get(f).copied().unwrap_or(0);
            filing.waiting_for(f).saturating_add(n)
        };
        let loads = match p.loads(src, &k, fetched, &mut counted, added).await {
            Ok(l) => l,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let prepared = match prepared.await {
            // Messages whose parsing failed stay in the inbox: the pass
            // is not complete (nothing is settled as filed after it).
            Ok(p) => {
                complete &= p.complete;
                p
            }
            // The messages stay in the inbox for the next pass.
            Err(e) => {
                error!(mailbox = %mb.name, "preparing a batch failed: {e}");
                complete = false;
                break;
            }
        };
        since_trim += prepared.len();
        // Earlier batches are filed while this one is decided and
        // committed: the server moves mail while switchboard thinks.
        let mut due = if filing.len() >= shared.file_every || filing.age() >= FILE_AFTER {
            let due = std::mem::take(&mut filing);
            let here = hand_over(&filer, due, &mut filing, &mut handed);
            count_in(
                &mut handed,
                here.per_folder().map(|(f, n)| (f.to_string(), n)),
            );
            here
        } else {
            Filing::default()
        };
        // The next batch is fetched (after the filing due, on the same
        // connection) and starts being parsed while this one is decided
        // and committed, which mostly waits for the store.
        let chunk = chunks.next().filter(|_| !shared.stopping());
        let mut ahead = None;
        let (staged, filed_due) = tokio::join!(p.stage(mb, &k, prepared, loads), async {
            due.flush(p, src).await?;
            if let Some(c) = chunk {
                ahead = Some(fetch_prepare(src, shared, mb, c).await);
            }
            Ok(())
        });
        let staged = match (staged, filed_due) {
            (Ok(s), Ok(())) => s,
            // A decided batch that was not acted on is resumed from its
            // recorded state in the next pass. A failed mail source is
            // reported first: nothing more is sent on it.
            (_, Err(e @ PipelineError::Source(_))) | (Err(e), _) | (_, Err(e)) => {
                result = Err(e);
                break;
            }
        };
        if since_trim >= FILE_EVERY {
            since_trim = 0;
            release_freed_memory();
        }
        // In the pass's last batch, what needs no reply is filed over the
        // second connection while the replies are sent and copied; a large
        // filing (the end of a backlog) only half of it: the other half is
        // filed over this connection at the same time, after the replies.
        let last = ahead.is_none();
        let early = |f: &mut Filing| {
            if last && !f.is_empty() {
                let second_up = filer
                    .as_ref()
                    .is_some_and(|(_, s)| !s.down.load(Ordering::Relaxed));
                let due = share(f, second_up);
                let here = hand_over(&filer, due, f, &mut handed);
                f.merge(here);
            }
        };
        match p.finish(src, mb, &k, staged, &mut filing, early).await {
            Ok(outcomes) => {
                for o in outcomes {
                    filed += usize::from(o.folder.is_some());
                    seen(o);
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        next = ahead;
    }
    // What was decided is filed even when a later batch failed: over the
    // second connection when it is free, else over this one, both at once
    // (the pass's last replies need not wait behind the filing handed
    // over before them, nor a backlog's last filing behind the one
    // before) — unless this one failed: a timed-out command may leave the
    // connection mid-command, so nothing more is sent on it; what is left
    // then waits for the second connection (or is filed on resume, from
    // its recorded state).
    // A large last filing (the end of a backlog) is shared: about half
    // over each connection, at the same time.
    let failed_here = matches!(result, Err(PipelineError::Source(_)));
    if let Some((tx, second)) = &filer
        && !second.down.load(Ordering::Relaxed)
        && !filing.is_empty()
        && (failed_here || second.pending.load(Ordering::Relaxed) == 0)
    {
        let there = share(&mut filing, !failed_here);
        if !there.is_empty() {
            second.pending.fetch_add(1, Ordering::Relaxed);
            if let Err(refused) = tx.send(there).await {
                second.pending.fetch_sub(1, Ordering::Relaxed);
                filing.merge(refused.0);
            }
        }
    }
    let flushed = if failed_here {
        Ok(())
    } else {
        filing.flush(&shared.pipeline, src).await
    };
    result?;
    flushed?;
    Ok(Pass {
        filed,
        complete: complete && !shared.stopping(),
    })
}

/// A pass's last filing from this many messages on is shared between
/// both connections ([`Filing::split`]).
const SHARE_FROM: usize = 200;

/// What of `f` goes to the second connection: about half when `f` is
/// large and this connection files the rest at the same time
/// (`both`), else all of it.
fn share(f: &mut Filing, both: bool) -> Filing {
    if both && f.len() >= SHARE_FROM {
        f.split()
    } else {
        std::mem::take(f)
    }
}

/// The batches of a pass: the first as configured, so that a message
/// that arrives alone is handled at once; in a backlog, twice that (at
/// most 1,000), which halves the per-batch round trips and statements.
struct Chunks<'a> {
    rest: &'a [MsgRef],
    size: usize,
    max: usize,
}

impl<'a> Chunks<'a> {
    fn new(pending: &'a [MsgRef], batch_size: usize) -> Self {
        let size = batch_size.max(1);
        Chunks {
            rest: pending,
            size,
            max: (size * 2).min(1_000).max(size),
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [MsgRef];

    fn next(&mut self) -> Option<&'a [MsgRef]> {
        if self.rest.is_empty() {
            return None;
        }
        let (chunk, rest) = self.rest.split_at(self.size.min(self.rest.len()));
        self.rest = rest;
        self.size = self.max;
        Some(chunk)
    }
}

/// Fixes glibc's trim and mmap thresholds at their initial 128 KiB and
/// caps its arenas at two. By default glibc raises both thresholds after
/// a large block is freed (up to 32 MiB for the trim threshold), so each
/// thread's arena then keeps that much freed memory: about 1 MiB of a
/// backlog's peak, measured. And it gives each thread its own arena, each
/// with its own free memory: two arenas took 2–4 MB off a 10,000-message
/// backlog's peak RSS with no measurable cost in time. An admin's own
/// `MALLOC_TRIM_THRESHOLD_` / `MALLOC_MMAP_THRESHOLD_` /
/// `MALLOC_ARENA_MAX`, or any `glibc.malloc.*` in `GLIBC_TUNABLES`, win.
/// Call before any thread is started.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
            return;
        }
        for (var, param, value) in [
            ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 128 * 1024),
            ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 * 1024),
            ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ] {
            if std::env::var_os(var).is_none() {
                // SAFETY: mallopt only sets an allocator parameter; called
                // before other threads exist.
                unsafe {
                    libc::mallopt(param, value);
                }
            }
        }
    }
}

/// Hands memory freed by a batch back to the system. glibc keeps freed
/// memory in per-thread arenas (one per parsing thread, see
/// [`crate::pipeline::cpu`]); without this, a backlog's peak RSS grows by a few MiB per
/// thread for memory that is no longer used.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A batch being parsed: the knowledge it is parsed with, how many
/// messages were fetched, and the parsing.
type Preparing = (Arc<Knowledge>, usize, tokio::task::JoinHandle<Prepared>);

/// Fetches a chunk and starts parsing and scoring it (with the knowledge
/// of this moment) on the parsing threads.
async fn fetch_prepare<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
    chunk: &[MsgRef],
) -> Result<Preparing, PipelineError> {
    let k = shared.knowledge.borrow().clone();
    let t = std::time::Instant::now();
    let batch = src.fetch(chunk, shared.max_size).await?;
    let n = batch.len();
    debug!(mailbox = %mb.name, messages = n, fetch_ms = t.elapsed().as_millis() as u64, "fetched");
    Ok((k.clone(), n, tokio::spawn(prepare_batch(batch, k))))
}

/// [`drain_once_with`], collecting the outcomes.
pub async fn drain_once<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
) -> Result<Vec<Outcome>, PipelineError> {
    let mut out = Vec::new();
    drain_once_with(src, shared, mb, &mut |o| out.push(o)).await?;
    Ok(out)
}

/// Drains until a pass files nothing more (new mail may arrive while a
/// backlog is processed), handing each outcome to `seen`. After a
/// complete drain, messages recorded as on their way to a folder that
/// were not in the inbox any more are recorded as filed
/// ([`crate::record::Store::settle_filed`]): a crash between a move and
/// its record leaves no stale state behind.
pub async fn drain_with<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
    seen: &mut (dyn FnMut(Outcome) + Send),
) -> Result<(), PipelineError> {
    let started = shared.pipeline.now();
    loop {
        let pass = drain_pass(src, shared, mb, seen).await?;
        if shared.stopping() || !pass.complete {
            return Ok(());
        }
        if pass.filed == 0 {
            break;
        }
    }
    let p = &shared.pipeline;
    let n = p.store.settle_filed(&mb.name, started, p.now()).await?;
    if n > 0 {
        info!(mailbox = %mb.name, messages = n, "filed before an interruption but not recorded: recorded as filed now");
    }
    Ok(())
}

/// [`drain_with`], collecting the outcomes.
pub async fn drain<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
) -> Result<Vec<Outcome>, PipelineError> {
    let mut all = Vec::new();
    drain_with(src, shared, mb, &mut |o| all.push(o)).await?;
    Ok(all)
}

/// What a pass did, for health and the daemon's loop.
#[derive(Debug, Default)]
struct Tally {
    checked: u64,
    filed: u64,
    deferred: bool,
}

impl Tally {
    fn see(&mut self, h: &Health, o: &Outcome) {
        self.checked += 1;
        self.filed += u64::from(o.folder.is_some());
        self.deferred |= o.verdict == "deferred";
        if o.replied {
            h.reply_sent();
        }
    }
}

/// Whether this mailbox has timed follow-through work: service-level
/// deadlines, or sent folders to look into.
fn follow_due(shared: &Shared, mb: &MailboxInfo) -> bool {
    !mb.sent_folders.is_empty()
        || crate::pipeline::follow::has_deadlines(&shared.knowledge.borrow())
}

/// When the follow-through check of a mailbox last ran: it runs every
/// `[daemon] sla_check`, not after every pass (a busy mailbox or a
/// Maildir poll would otherwise check on every new message).
#[derive(Debug, Default)]
struct FollowClock {
    last: Option<Instant>,
}

impl FollowClock {
    /// Whether the check is due now (and, if so, records it as run).
    fn due(&mut self, every: Duration) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < every) {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// How long until the check is due again.
    fn until_due(&self, every: Duration) -> Duration {
        self.last
            .map_or(Duration::ZERO, |l| every.saturating_sub(l.elapsed()))
    }
}

/// Reminds and escalates overdue conversations (see
/// [`crate::pipeline::follow`]), at most every `sla_check`.
async fn follow_up<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
    clock: &mut FollowClock,
) -> Result<(), PipelineError> {
    if !follow_due(shared, mb) || !clock.due(shared.sla_check) {
        return Ok(());
    }
    let r = follow_checks(src, shared, mb).await;
    if r.is_err() {
        // Try again at the next pass, not a whole period later.
        clock.last = None;
    }
    r
}

/// The checks themselves: answers in sent folders first (they stop
/// deadlines), then the deadlines.
async fn follow_checks<S: MailSource>(
    src: &mut S,
    shared: &Shared,
    mb: &MailboxInfo,
) -> Result<(), PipelineError> {
    let k = shared.knowledge.borrow().clone();
    // Answers filed in sent folders first: they stop deadlines.
    if !mb.sent_folders.is_empty() {
        let n = crate::pipeline::follow::sent_folders(&shared.pipeline, src, mb, &k).await?;
        if n > 0 {
            info!(mailbox = %mb.name, answers = n, "people's answers found in sent folders");
        }
    }
    let swept = crate::pipeline::follow::sweep(&shared.pipeline, src, mb, &k).await?;
    if swept != Default::default() {
        info!(mailbox = %mb.name, reminded = swept.reminded, escalated = swept.escalated, "service levels checked");
    }
    Ok(())
}

/// Mailbox info for the pipeline from a mailbox config.
pub fn mailbox_info(m: &MailboxConfig) -> MailboxInfo {
    MailboxInfo {
        name: m.name.clone(),
        folders: m.folders.clone(),
        sent_folders: m.sent_folders.clone(),
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
    shared.health.connected(&mb.name);
    let info = mailbox_info(&mb);
    let mut handled = 0;
    let mut follow = FollowClock::default();
    loop {
        let mut tally = Tally::default();
        let health = shared.health.clone();
        let mut r = drain_with(&mut src, &shared, &info, &mut |o| tally.see(&health, &o)).await;
        if r.is_ok() && !once {
            r = follow_up(&mut src, &shared, &info, &mut follow).await;
        }
        handled += tally.filed as usize;
        shared.health.checked(&mb.name, tally.checked, tally.filed);
        match r {
            Ok(()) => {}
            Err(PipelineError::Store(e @ StoreError::Fenced(_))) => {
                warn!(mailbox = %mb.name, "{e}");
                return Ok(handled);
            }
            Err(e) => {
                shared
                    .health
                    .failed(&mb.name, "processing", &e.to_string(), false);
                error!(mailbox = %mb.name, "processing failed: {e}");
            }
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

/// Exponential backoff with jitter, for reconnects.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay: doubles up to the maximum, with ±25 % jitter so
    /// many instances do not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.75;
        base.mul_f64(jitter).min(self.max)
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// How long one IDLE may last before it is re-issued (RFC 2177: clients
/// must re-issue at least every 29 minutes).
pub const IDLE_PERIOD: Duration = Duration::from_secs(25 * 60);

/// IMAP connections opened at start, while the rules and the FAQ were
/// loading (the server's first SELECT of a large inbox takes a while),
/// by mailbox name; see [`connect_early`].
pub type Early = HashMap<String, tokio::task::JoinHandle<Result<Imap, FetchError>>>;

/// Starts connecting to every IMAP mailbox of `cfg`, for [`run`].
pub fn connect_early(cfg: &Config) -> Early {
    cfg.mailboxes
        .iter()
        .filter_map(|m| match &m.kind {
            MailboxKind::Imap(icfg) => {
                let icfg = icfg.clone();
                Some((
                    m.name.clone(),
                    tokio::spawn(async move { Imap::connect(&icfg).await }),
                ))
            }
            MailboxKind::Maildir { .. } => None,
        })
        .collect()
}

/// Runs an IMAP mailbox: connect, drain the backlog, then IDLE (or poll)
/// and drain again on every change, reconnecting with backoff after any
/// failure. One failing mailbox never affects the others: each has its
/// own task and connection.
///
/// `early`: a connection already being opened ([`connect_early`]), used
/// first.
pub async fn run_imap(
    mb: MailboxConfig,
    icfg: ImapConfig,
    mut shared: Shared,
    once: bool,
    retry: (Duration, Duration),
    mut early: Option<tokio::task::JoinHandle<Result<Imap, FetchError>>>,
) -> Result<usize, FetchError> {
    let info = mailbox_info(&mb);
    shared.batch_size = icfg.batch_size as usize;
    shared.file_every = icfg.file_every as usize;
    let mut backoff = Backoff::new(retry.0.max(Duration::from_millis(200)), retry.1);
    // The last error logged: the same failure is logged once, not per retry.
    let mut last_error: Option<String> = None;
    let mut handled = 0;
    let mut uid_validity: Option<u32> = None;
    let mut follow = FollowClock::default();
    loop {
        if shared.stopping() {
            return Ok(handled);
        }
        let connected = match early.take() {
            Some(h) => match h.await {
                Ok(r) => r,
                Err(_) => Imap::connect(&icfg).await,
            },
            None => Imap::connect(&icfg).await,
        };
        let mut imap = match connected {
            Ok(c) => {
                shared.health.connected(&mb.name);
                if last_error.take().is_some() {
                    info!(mailbox = %mb.name, "connected again");
                } else {
                    info!(mailbox = %mb.name, idle = c.caps.idle, r#move = c.caps.mv, "connected");
                }
                backoff.reset();
                c
            }
            Err(e) => {
                let text = e.to_string();
                shared.health.failed(&mb.name, e.kind(), &text, true);
                if last_error.as_deref() != Some(text.as_str()) {
                    error!(mailbox = %mb.name, "{text}; retrying with backoff");
                    last_error = Some(text);
                }
                if once {
                    return Err(e);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shared.shutdown.changed() => {}
                }
                continue;
            }
        };
        if let (Some(old), Some(new)) = (uid_validity, imap.uid_validity)
            && old != new
        {
            warn!(mailbox = %mb.name, old, new, "UIDVALIDITY changed: rescanning (already handled messages are recognised by Message-ID)");
        }
        uid_validity = imap.uid_validity;
        // When the server last announced new mail (IDLE): the time from
        // there to the end of the pass it started is switchboard's own
        // share of the delivery latency.
        let mut woke: Option<Instant> = None;
        loop {
            let mut idle_for = IDLE_PERIOD;
            let mut tally = Tally::default();
            let health = shared.health.clone();
            let mut r =
                drain_with(&mut imap, &shared, &info, &mut |o| tally.see(&health, &o)).await;
            if let Some(at) = woke.take()
                && r.is_ok()
                && tally.filed > 0
            {
                let took = at.elapsed();
                metrics::histogram!("switchboard_wake_to_filed_seconds").record(took.as_secs_f64());
                debug!(
                    mailbox = %mb.name,
                    filed = tally.filed,
                    ms = took.as_secs_f64() * 1000.0,
                    "filed after the server's notification"
                );
            }
            if r.is_ok() && !once {
                r = follow_up(&mut imap, &shared, &info, &mut follow).await;
            }
            if follow_due(&shared, &info) {
                idle_for = idle_for.min(
                    follow
                        .until_due(shared.sla_check)
                        .max(Duration::from_millis(100)),
                );
            }
            handled += tally.filed as usize;
            shared.health.checked(&mb.name, tally.checked, tally.filed);
            match r {
                Ok(()) => {
                    if tally.deferred {
                        // Come back for deferred replies even without new mail.
                        idle_for = retry.0.max(Duration::from_secs(1));
                    }
                }
                Err(PipelineError::Source(e)) => {
                    let text = e.to_string();
                    shared.health.failed(&mb.name, e.kind(), &text, true);
                    if last_error.as_deref() != Some(text.as_str()) {
                        warn!(mailbox = %mb.name, "connection problem: {text}; reconnecting");
                        last_error = Some(text);
                    }
                    break;
                }
                Err(PipelineError::Store(e @ StoreError::Fenced(_))) => {
                    warn!(mailbox = %mb.name, "{e}");
                    imap.logout().await;
                    return Ok(handled);
                }
                Err(PipelineError::Store(e)) => {
                    shared
                        .health
                        .failed(&mb.name, "store", &e.to_string(), false);
                    error!(mailbox = %mb.name, "state store: {e}; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            if once || shared.stopping() {
                imap.logout().await;
                return Ok(handled);
            }
            match imap.wait(&mut shared.shutdown, idle_for).await {
                Ok(Wake::Shutdown) => {
                    imap.logout().await;
                    return Ok(handled);
                }
                Ok(Wake::Changed) => {
                    if imap.idles() {
                        debug!(mailbox = %mb.name, "woken by the server");
                    }
                    woke = Some(Instant::now());
                }
                Ok(Wake::Timeout) => {}
                Err(e) => {
                    let text = e.to_string();
                    shared.health.failed(&mb.name, e.kind(), &text, true);
                    if last_error.as_deref() != Some(text.as_str()) {
                        warn!(mailbox = %mb.name, "connection problem while waiting: {text}; reconnecting");
                        last_error = Some(text);
                    }
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shared.shutdown.changed() => {}
        }
    }
}

/// Records a successful check in the health state and metrics.
/// What a run did: messages filed, and mailboxes that failed.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub filed: usize,
    pub failed: Vec<String>,
}

/// Runs the configured mailboxes this instance holds the lease of, until
/// shutdown (or once through the backlog with `once`): the lease manager
/// ([`lease::Leases`]) beats every third of `[daemon] lease_ttl` and
/// starts, stops and hands over mailbox tasks as leases come and go.
/// `early` ([`connect_early`]): connections of mailboxes another instance
/// works are closed after the first lease round.
pub async fn run(
    cfg: Config,
    knowledge: watch::Receiver<Arc<Knowledge>>,
    pipeline: Pipeline,
    mut shutdown: watch::Receiver<bool>,
    once: bool,
    health: Health,
    mut early: Early,
) -> anyhow::Result<RunSummary> {
    let shared = Shared {
        pipeline,
        knowledge,
        shutdown: shutdown.clone(),
        max_size: cfg.limits.max_message_size,
        batch_size: 100,
        file_every: FILE_EVERY,
        health: health.clone(),
        sla_check: cfg.daemon.sla_check,
    };
    let configs: HashMap<String, MailboxConfig> = cfg
        .mailboxes
        .iter()
        .map(|m| (m.name.clone(), m.clone()))
        .collect();
    let mut leases = lease::Leases::start(
        &shared.pipeline.store,
        cfg.daemon.instance.as_deref(),
        cfg.mailboxes.iter().map(|m| m.name.clone()).collect(),
        cfg.daemon.lease_ttl,
        health.clone(),
    )
    .await?;
    let retry = (cfg.daemon.retry_initial, cfg.daemon.retry_max);
    let mut tasks = tokio::task::JoinSet::new();
    // Per running mailbox: its stop switch, task and lease token. A
    // mailbox has at most one task: it is not claimed again until its
    // task has ended.
    let mut running: HashMap<String, (watch::Sender<bool>, tokio::task::Id, i64)> = HashMap::new();
    let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
    // `--once`: mailboxes already worked through.
    let mut done_once: HashSet<String> = HashSet::new();
    let mut summary = RunSummary::default();
    let mut beat = tokio::time::interval(leases.every());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    let mut stopping = *shutdown.borrow();
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let busy: HashSet<String> =
                    running.keys().cloned().chain(done_once.iter().cloned()).collect();
                for change in leases.beat(once, stopping, &busy).await {
                    match change {
                        lease::Change::Acquired(fence) => {
                            let Some(mb) = configs.get(&fence.mailbox).cloned() else { continue };
                            let (tx, rx) = watch::channel(stopping);
                            let token = fence.token;
                            let mut mine = shared.clone();
                            mine.shutdown = rx;
                            mine.pipeline.store = mine.pipeline.store.fenced(fence);
                            let first = early.remove(&mb.name);
                            let id = spawn_mailbox(&mut tasks, mb.clone(), mine, once, retry, first);
                            names.insert(id, mb.name.clone());
                            running.insert(mb.name, (tx, id, token));
                        }
                        lease::Change::Lost(m) | lease::Change::HandOver(m) => {
                            if let Some((tx, _, _)) = running.get(&m) {
                                let _ = tx.send(true);
                            }
                        }
                    }
                }
                if first {
                    first = false;
                    // Connections to mailboxes other instances work.
                    for (_, h) in early.drain() {
                        h.abort();
                    }
                    health.leases_settled(&leases.instance().name);
                    let skipped = cfg.mailboxes.len() - leases.held();
                    if skipped > 0 {
                        info!(instance = %leases.instance().name, held = leases.held(), "{skipped} mailbox(es) are worked by other instances");
                    }
                }
                if (once || stopping) && running.is_empty() {
                    break;
                }
            }
            Some(r) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, outcome) = match r {
                    Ok((id, (_, outcome))) => (id, Ok(outcome)),
                    Err(e) => (e.id(), Err(e)),
                };
                let name = names.remove(&id).unwrap_or_else(|| "(unknown)".into());
                match outcome {
                    Ok(Ok(n)) => {
                        info!(mailbox = %name, filed = n, "mailbox stopped");
                        summary.filed += n;
                    }
                    Ok(Err(e)) => {
                        error!(mailbox = %name, "mailbox failed: {e}");
                        summary.failed.push(name.clone());
                    }
                    Err(e) => {
                        error!(mailbox = %name, "mailbox task panicked: {e}");
                        summary.failed.push(name.clone());
                    }
                }
                if let Some((task, token)) = running.get(&name).map(|(_, i, k)| (*i, *k))
                    && task == id
                {
                    running.remove(&name);
                    leases.finished(&name, token).await;
                }
                if once {
                    done_once.insert(name);
                }
                if (once || stopping) && running.is_empty() {
                    break;
                }
            }
            r = shutdown.changed(), if !stopping => {
                stopping = r.is_err() || *shutdown.borrow();
                if stopping {
                    for (tx, _, _) in running.values() {
                        let _ = tx.send(true);
                    }
                    if running.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    leases.shutdown().await;
    Ok(summary)
}

fn spawn_mailbox(
    tasks: &mut tokio::task::JoinSet<(String, Result<usize, FetchError>)>,
    mb: MailboxConfig,
    shared: Shared,
    once: bool,
    retry: (Duration, Duration),
    early: Option<tokio::task::JoinHandle<Result<Imap, FetchError>>>,
) -> tokio::task::Id {
    let handle = match mb.kind.clone() {
        MailboxKind::Maildir { path } => tasks.spawn(async move {
            let name = mb.name.clone();
            (
                name,
                run_maildir(mb, path, shared, once, Duration::from_secs(2)).await,
            )
        }),
        MailboxKind::Imap(icfg) => tasks.spawn(async move {
            let name = mb.name.clone();
            (name, run_imap(mb, icfg, shared, once, retry, early).await)
        }),
    };
    handle.id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_through_runs_once_per_period_not_per_pass() {
        let mut c = FollowClock::default();
        let every = Duration::from_secs(30);
        assert_eq!(c.until_due(every), Duration::ZERO, "due at start");
        assert!(c.due(every), "the first pass checks");
        assert!(!c.due(every), "a pass right after does not");
        let left = c.until_due(every);
        assert!(left > Duration::from_secs(20) && left <= every, "{left:?}");
        assert!(c.due(Duration::ZERO), "a zero period is always due");
    }
}
