//! The pipeline: fetch → parse → classify → decide → act → record, for a
//! batch of messages from one mailbox. [`Pipeline::process`] reads like
//! the diagram:
//!
//! 1. **parse** the batch and score it against the FAQ where a decision
//!    can depend on it ([`prepare_batch`], on [`cpu`]'s threads, one
//!    per core: it is the CPU work);
//! 2. **gather the facts** its decisions depend on, in a few queries
//!    (`facts`);
//! 3. **decide** every message purely ([`crate::decide::plan`]);
//! 4. **commit** every decision, conversation, assignment, counter and
//!    audit record in one transaction, before any side effect;
//! 5. **act** (`act`): send the replies (a few at a time, recorded in
//!    one transaction) and store their copies (one `APPEND` for the
//!    batch where the server has MULTIAPPEND and LITERAL+);
//! 6. **file** ([`Filing`]): set flags (one command per flag set), file
//!    the messages (one move per folder) and mark the moved messages
//!    done in one transaction — gathered over the batches of a backlog, a couple of
//!    thousand messages or two seconds at a time, because a server's cost
//!    per `UID MOVE` grows with the size of the inbox.
//!
//! The daemon ([`crate::daemon::drain_once_with`]) overlaps the stages:
//! while one batch is decided and committed, the next is fetched, parsed
//! and scored, and earlier ones are filed.
//!
//! # Crash safety
//!
//! Every side effect is preceded by the state write it depends on, and
//! every message is looked up in the store before anything is done with
//! it:
//!
//! | state in the store   | what a restart does                                  |
//! |----------------------|------------------------------------------------------|
//! | none                 | classify and decide from scratch                     |
//! | `decided` (no reply) | file it into the recorded folder                     |
//! | `decided` (reply)    | nothing was sent yet: decide again                   |
//! | `sending`            | the reply *may* have gone out: never send again; file it for a person |
//! | `sent`               | store the copy in Sent (unless it is there), flag, file as answered |
//! | `archived`           | flag, file as answered                               |
//! | `deferred`           | wait until `retry_at`, then decide again             |
//! | `done`               | a duplicate (same Message-ID): file it like the first |
//!
//! A reply is committed in state `sending` together with its decision, so
//! the intent to send is durable before the reply is handed to SMTP. So
//! automatic replies are sent **at most once** per Message-ID, and every
//! message is filed **at least once** into exactly one folder (moves are
//! atomic renames or IMAP `UID MOVE`). Nothing is deleted.

mod act;
pub mod cpu;
mod facts;
pub mod follow;

pub use act::Filing;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::act::outbox::Outbox;
use crate::act::reply::{self, Outgoing, ReplyParts};
use crate::config::Folders;
use crate::decide::plan::{self, Ledger};
use crate::decide::{self, Decision, Verdict};
use crate::fetch::{FetchError, Fetched, Flag, MailSource, MsgRef};
use crate::knowledge::Knowledge;
use crate::knowledge::templates::Rendered;
use crate::parse::{self, Message, ParseOptions};
use crate::record::{AuditEvent, Commit, MessageRow, MessageWrite, State, Store, StoreError};

/// What the pipeline needs to know about the mailbox a batch comes from.
#[derive(Debug, Clone)]
pub struct MailboxInfo {
    pub name: String,
    pub folders: Folders,
    /// Folders checked for people's answers (`sent_folders`).
    pub sent_folders: Vec<String>,
}

/// What happened to one message.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub message_id: Option<String>,
    pub from: String,
    pub subject: String,
    /// `reply`, `route`, `escalate`, `ignore`, `park`, or `deferred`.
    pub verdict: String,
    /// The folder the message was filed into (`None`: left in the inbox).
    pub folder: Option<String>,
    pub ticket: Option<String>,
    /// One line: why.
    pub why: String,
    pub decision: Option<Decision>,
    /// An automatic reply was sent while handling it (this time).
    #[serde(skip)]
    pub replied: bool,
}

/// Errors that stop a batch. Per-message problems never do: they park
/// the message or defer it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The time in milliseconds since the Unix epoch; tests move it.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The stateful part of the pipeline, shared by all mailboxes.
#[derive(Clone)]
pub struct Pipeline {
    pub store: Store,
    pub outbox: Outbox,
    /// First retry delay after a temporary failure (doubles each attempt).
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// The clock every decision is made with.
    pub clock: Clock,
}

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(crate::util::now_ms)
}

/// Where a verdict files the message.
pub fn folder_for(v: &Verdict, k: &Knowledge, folders: &Folders) -> String {
    match v {
        Verdict::Reply { .. } => folders.answered.clone(),
        Verdict::Route { queue } => match (k.queues.get(queue), k.reps.get(queue)) {
            (Some(q), _) => q.folder.clone(),
            (None, Some(r)) => r.folder.clone(),
            (None, None) => folders.parked.clone(),
        },
        Verdict::Escalate { queue } => k
            .queues
            .get(queue)
            .map_or_else(|| folders.parked.clone(), |q| q.escalation_folder.clone()),
        Verdict::Ignore { .. } => folders.ignored.clone(),
        Verdict::Park { .. } => folders.parked.clone(),
        Verdict::Staff { .. } => folders.answered.clone(),
    }
}

/// Parse options from a snapshot.
pub fn parse_options(k: &Knowledge, full_size: Option<u64>) -> ParseOptions {
    ParseOptions {
        full_size,
        languages: k.policy.languages.clone(),
    }
}

/// Classifies and decides without any state: what `switchboard test` shows.
pub fn dry_run(raw: &[u8], k: &Knowledge) -> (Option<Message>, Decision) {
    dry_run_sized(raw, None, k)
}

/// [`dry_run`] for a message of which only a prefix was read. The same
/// decision as `run` makes for a first message from a new customer (a
/// reply that cannot be rendered goes to a person here too).
pub fn dry_run_sized(
    raw: &[u8],
    full_size: Option<u64>,
    k: &Knowledge,
) -> (Option<Message>, Decision) {
    match parse::parse(raw, &parse_options(k, full_size)) {
        Err(e) => (None, decide::park(format!("cannot parse: {e}"))),
        Ok(m) => {
            let d = plan_alone(&m, k, None);
            (Some(m), d)
        }
    }
}

/// Decides one message with no state (a first message from a new
/// customer).
fn plan_alone(
    m: &Message,
    k: &Knowledge,
    lookups: Option<&crate::lookup::LookupFacts>,
) -> Decision {
    plan::plan(
        m,
        k,
        &plan::Facts::default(),
        &mut Ledger::default(),
        plan::Prior {
            lookups,
            ..plan::Prior::default()
        },
        &k.policy.folders,
        crate::util::now_ms(),
    )
    .decision
}

/// [`dry_run_sized`] with the lookups run (as the daemon does for a new
/// message): `test` shows what they found.
pub async fn dry_run_looked_up(
    raw: &[u8],
    full_size: Option<u64>,
    k: &Knowledge,
) -> (Option<Message>, Decision) {
    match parse::parse(raw, &parse_options(k, full_size)) {
        Err(e) => (None, decide::park(format!("cannot parse: {e}"))),
        Ok(m) => {
            let automatic = crate::classify::loop_guard::inspect(&m, &k.policy.our_addresses)
                .iter()
                .any(|f| f.is_automatic());
            let lookups = if automatic {
                crate::lookup::LookupFacts::default()
            } else {
                crate::lookup::run_all(&k.lookups, &m, &plan::sender_key(&m)).await
            };
            let d = plan_alone(&m, k, Some(&lookups));
            (Some(m), d)
        }
    }
}

/// The variables of a reply template.
pub fn template_context(
    m: &Message,
    k: &Knowledge,
    faq: Option<&str>,
    ticket: &str,
    lookup: serde_json::Value,
) -> minijinja::Value {
    let entry = faq.and_then(|id| k.faq.entry(id));
    let date = m
        .date
        .and_then(|d| jiff::Timestamp::from_second(d).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    minijinja::context! {
        customer => minijinja::context! {
            name => crate::util::ellipsize(m.customer_name(), reply::MAX_NAME_ECHO),
            email => m.from.as_ref().map(|f| f.addr.as_str()).unwrap_or(""),
        },
        original => minijinja::context! {
            subject => crate::util::ellipsize(&m.subject, reply::MAX_SUBJECT_ECHO),
            date => date,
            message_id => m.message_id.as_deref().unwrap_or(""),
        },
        faq => minijinja::context! {
            id => entry.map(|e| e.id.as_str()).unwrap_or(""),
            title => entry.map(|e| e.title.as_str()).unwrap_or(""),
        },
        ticket => ticket,
        date => jiff::Zoned::now().strftime("%Y-%m-%d").to_string(),
        language => m.language.as_deref().unwrap_or(""),
        company => minijinja::Value::from(k.policy.company.clone()),
        lookup => crate::lookup::to_template(&lookup),
    }
}

/// Renders and builds the reply a decision asks for.
pub fn build_reply(
    m: &Message,
    d: &Decision,
    k: &Knowledge,
    ticket: Option<&str>,
) -> Result<(Rendered, Outgoing), String> {
    let Verdict::Reply { template, to, faq } = &d.verdict else {
        return Err("not a reply".into());
    };
    // The customer's own data goes only to the customer: the lookups'
    // owner check compares with From, so a reply to another address
    // (Reply-To) gets none.
    let own = to.key() == crate::decide::plan::sender_key(m);
    let lookup = match &d.evidence.lookups {
        l if own => l.template_value(),
        _ => serde_json::Value::Object(serde_json::Map::new()),
    };
    let ctx = template_context(m, k, faq.as_deref(), ticket.unwrap_or(""), lookup);
    let rendered = k
        .templates
        .render(template, m.language.as_deref(), &ctx)
        .map_err(|e| e.to_string())?;
    let out = reply::build(&ReplyParts {
        from: &k.policy.reply.from,
        to,
        original: m,
        ticket,
        domain: &k.policy.domain,
        body: &rendered,
        null_sender: k.policy.reply.null_sender,
    })
    .map_err(|e| e.to_string())?;
    Ok((rendered, out))
}

/// Flags for a message that got a reply: `\Answered` plus the keywords
/// of every matching rule.
fn reply_flags(keywords: &[String]) -> Vec<Flag> {
    std::iter::once(Flag::Answered)
        .chain(keywords.iter().map(|k| Flag::Keyword(k.clone())))
        .collect()
}

/// A fetched message after parsing.
struct Item {
    id: MsgRef,
    /// Identity in the store: the Message-ID, or a hash.
    key: String,
    parsed: Result<Message, String>,
    /// The FAQ result, scored ahead when the decision can depend on it,
    /// unless it is the one in `classified` (see [`Item::scored`]).
    faq: Option<crate::classify::FaqResult>,
    faq_in_classified: bool,
    /// The classification, made ahead for the common case: a message that
    /// continues no conversation the store knows and has no lookups (see
    /// [`plan::Prior::classified`]).
    classified: Option<crate::classify::Classification>,
    /// What the rules' conditions gave ahead (see [`plan::Prior::held`]).
    held: Vec<bool>,
    /// What the lookups found (run after the store's facts are read).
    lookups: crate::lookup::LookupFacts,
}

impl Item {
    fn message(&self) -> Option<&Message> {
        self.parsed.as_ref().ok()
    }

    /// The FAQ result scored ahead, wherever it is kept.
    fn scored(&self) -> Option<&crate::classify::FaqResult> {
        if self.faq_in_classified {
            self.classified.as_ref().map(|c| &c.faq)
        } else {
            self.faq.as_ref()
        }
    }

    fn outcome(&self) -> Outcome {
        let m = self.message();
        Outcome {
            id: self.id.to_string(),
            message_id: m.and_then(|m| m.message_id.clone()),
            from: m
                .and_then(|m| m.from.as_ref().map(|a| a.addr.clone()))
                .unwrap_or_default(),
            subject: m.map(|m| m.subject.clone()).unwrap_or_default(),
            verdict: String::new(),
            folder: None,
            ticket: None,
            why: String::new(),
            decision: None,
            replied: false,
        }
    }
}

/// What the act stage does with one message.
enum Step {
    /// Leave in the inbox (waiting for a retry).
    Leave,
    /// Set flags, file into a folder, mark done.
    File { folder: String, flags: Vec<Flag> },
    /// Send the reply, store its copy, flag, file, mark done.
    Reply(Box<Sending>),
    /// A reply already went out: store its copy unless it is there, flag,
    /// file, mark done.
    Resume {
        folder: String,
        reply_id: Option<String>,
        append: bool,
    },
}

/// A reply on its way.
struct Sending {
    out: Outgoing,
    template: String,
    to: String,
    sender: String,
    ticket: Option<String>,
    folder: String,
    flags: Vec<Flag>,
    decision: Decision,
    attempts: i64,
}

/// A message of a batch with what was decided for it.
struct Work {
    item: Item,
    step: Step,
    outcome: Outcome,
    /// A draft answer to store next to the message.
    draft: Option<Vec<u8>>,
}

/// A batch parsed and scored, ready for [`Pipeline::process_prepared`].
pub struct Prepared {
    items: Vec<Item>,
    took: std::time::Duration,
    /// Every message of the batch is in `items` (a part whose parsing
    /// failed leaves its messages in the inbox).
    pub complete: bool,
}

impl Prepared {
    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Parses a batch and scores it against the FAQ on the parsing threads ([`cpu`]),
/// split over the available cores. The CPU-bound stage: the daemon runs
/// it for the next batch while the current one is committed and filed.
pub async fn prepare_batch(batch: Vec<Fetched>, k: Arc<Knowledge>) -> Prepared {
    let started = std::time::Instant::now();
    let per = batch.len().div_ceil(cpu::threads()).max(16);
    let mut parts = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        parts.push(std::mem::replace(&mut rest, tail));
    }
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|part| {
            let k = k.clone();
            cpu::run(move || {
                part.into_iter()
                    .map(|f| prepare(f, &k))
                    .collect::<Vec<Item>>()
            })
        })
        .collect();
    let mut items = Vec::new();
    let mut complete = true;
    for t in tasks {
        // Each message is scored under `catch_unwind`, so this is a bug
        // in parsing or no thread at all; the messages then stay in the
        // inbox for the next run.
        match t.await {
            Ok(part) => items.extend(part),
            Err(e) => {
                complete = false;
                tracing::error!("parsing a batch failed: {e}; its messages stay in the inbox")
            }
        }
    }
    Prepared {
        items,
        took: started.elapsed(),
        complete,
    }
}

/// Parses one message and scores it against the FAQ when needed.
fn prepare(f: Fetched, k: &Knowledge) -> Item {
    match f.unreadable {
        Some(why) => Item {
            key: format!(
                "unreadable:{}",
                crate::util::sha256_hex(format!("{}", f.id).as_bytes())
            ),
            id: f.id,
            parsed: Err(why),
            faq: None,
            classified: None,
            faq_in_classified: false,
            held: Vec::new(),
            lookups: Default::default(),
        },
        None => match parse::parse(&f.raw, &parse_options(k, Some(f.size))) {
            Ok(m) => {
                let key = m.dedupe_key(&f.raw);
                // A bug in scoring must cost this message (parked, with
                // the reason), not its batch.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    crate::classify::ahead(&m, k)
                })) {
                    // The FAQ result is kept once (see `Item::scored`).
                    Ok(a) => Item {
                        key,
                        faq: a.faq_aside,
                        faq_in_classified: a.faq_in_classification,
                        classified: Some(a.classification),
                        held: a.held,
                        id: f.id,
                        parsed: Ok(m),
                        lookups: Default::default(),
                    },
                    Err(_) => {
                        tracing::error!(id = %f.id, "internal error while scoring against the FAQ; parking the message");
                        Item {
                            key,
                            faq: None,
                            classified: None,
                            faq_in_classified: false,
                            id: f.id,
                            parsed: Err("internal error while classifying the message".into()),
                            held: Vec::new(),
                            lookups: Default::default(),
                        }
                    }
                }
            }
            Err(e) => Item {
                key: format!("sha256:{}", crate::util::sha256_hex(&f.raw)),
                id: f.id,
                parsed: Err(format!("cannot parse the message: {e}")),
                faq: None,
                classified: None,
                faq_in_classified: false,
                held: Vec::new(),
                lookups: Default::default(),
            },
        },
    }
}

impl Pipeline {
    /// A pipeline with the system clock.
    pub fn new(store: Store, outbox: Outbox, retry_initial: Duration, retry_max: Duration) -> Self {
        Pipeline {
            store,
            outbox,
            retry_initial,
            retry_max,
            clock: system_clock(),
        }
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Processes one batch of fetched messages from `src`: parse, gather
    /// facts, decide, commit, send the replies and store their copies.
    /// Flagging and filing are added to `filing`, for the caller to
    /// [`Filing::flush`].
    pub async fn process<S: MailSource>(
        &self,
        src: &mut S,
        mb: &MailboxInfo,
        k: &Arc<Knowledge>,
        batch: Vec<Fetched>,
        filing: &mut Filing,
    ) -> Result<Vec<Outcome>, PipelineError> {
        let prepared = prepare_batch(batch, k.clone()).await;
        self.process_prepared(src, mb, k, prepared, filing).await
    }

    /// [`Pipeline::process`] for a batch parsed and scored ahead with
    /// [`prepare_batch`] (with the same knowledge `k`).
    pub async fn process_prepared<S: MailSource>(
        &self,
        src: &mut S,
        mb: &MailboxInfo,
        k: &Arc<Knowledge>,
        prepared: Prepared,
        filing: &mut Filing,
    ) -> Result<Vec<Outcome>, PipelineError> {
        let mut counted = HashMap::new();
        let loads = self
            .loads(src, k, prepared.len(), &mut counted, |f| {
                filing.waiting_for(f)
            })
            .await?;
        let staged = self.stage(mb, k, prepared, loads).await?;
        self.finish(src, mb, k, staged, filing, |_| {}).await
    }

    /// Stage 2, the part read from the mail server: the open loads of
    /// the people a batch of `messages` may be assigned to
    /// (`facts::loads`). Needs nothing of the batch but its size, so it
    /// can run while the batch is parsed.
    pub async fn loads<S: MailSource>(
        &self,
        src: &mut S,
        k: &Knowledge,
        messages: usize,
        counted: &mut HashMap<String, Option<u32>>,
        added: impl Fn(&str) -> u32,
    ) -> Result<facts::Loads, PipelineError> {
        facts::loads(src, k, messages, counted, added).await
    }

    /// Stages 2–4 without the mail server: gather the stored facts,
    /// decide, and commit the decisions in one transaction. The caller
    /// may meanwhile use the mail source for something else (filing
    /// earlier batches); [`Pipeline::finish`] then acts.
    pub async fn stage(
        &self,
        mb: &MailboxInfo,
        k: &Arc<Knowledge>,
        prepared: Prepared,
        loads: facts::Loads,
    ) -> Result<Staged, PipelineError> {
        let Prepared {
            mut items,
            took: parsed,
            ..
        } = prepared;
        let mut attempt = 0;
        let mut looked_up = false;
        let (work, commit, gathered, decided, committed) = loop {
            let now = self.now();
            let t = std::time::Instant::now();
            let facts = facts::gather(&self.store, k, &items, loads.clone(), now).await?;
            if !looked_up {
                looked_up = true;
                lookups(k, &mut items, &facts.stored, now).await;
            }
            let gathered = t.elapsed();
            let t = std::time::Instant::now();
            let (work, commit, drafts) = decide_batch(&items, k, mb, &facts, now);
            let decided = t.elapsed();
            let t = std::time::Instant::now();
            let result = self.store.commit(&commit, now).await;
            let committed = t.elapsed();
            match result {
                // Another instance took a ticket number or turn meanwhile:
                // decide again with fresh facts.
                Err(StoreError::Conflict(_)) if attempt < 5 => attempt += 1,
                Err(e) => return Err(e.into()),
                Ok(()) => break ((work, drafts), commit, gathered, decided, committed),
            }
        };
        let (work, mut drafts) = work;
        let work: Vec<Work> = work
            .into_iter()
            .zip(items)
            .map(|((step, outcome), item)| Work {
                draft: drafts.remove(&item.key),
                item,
                step,
                outcome,
            })
            .collect();
        drop(commit);
        Ok(Staged {
            work,
            took: [parsed, gathered, decided, committed],
        })
    }

    /// Stage 5 for a committed batch: send the replies, store their
    /// copies, and add the flags and moves to `filing`. `before_replies`
    /// is called with `filing` once the messages that need no reply are
    /// in it, before any reply is sent: the caller may start filing them
    /// meanwhile.
    pub async fn finish<S: MailSource>(
        &self,
        src: &mut S,
        mb: &MailboxInfo,
        k: &Arc<Knowledge>,
        staged: Staged,
        filing: &mut Filing,
        before_replies: impl FnOnce(&mut Filing),
    ) -> Result<Vec<Outcome>, PipelineError> {
        let Staged {
            work,
            took: [parsed, gathered, decided, committed],
        } = staged;
        let t = std::time::Instant::now();
        let n = work.len();
        let out = act::act(self, src, mb, k, work, filing, before_replies).await;
        tracing::debug!(
            mailbox = %mb.name,
            messages = n,
            parse_ms = parsed.as_millis() as u64,
            facts_ms = gathered.as_millis() as u64,
            decide_ms = decided.as_millis() as u64,
            commit_ms = committed.as_millis() as u64,
            act_ms = t.elapsed().as_millis() as u64,
            "batch"
        );
        out
    }
}

/// A batch decided and committed, its side effects still to do
/// ([`Pipeline::finish`]).
pub struct Staged {
    work: Vec<Work>,
    /// Parsing, facts, deciding, committing.
    took: [std::time::Duration; 4],
}

/// Runs the lookups for the messages of a batch that are to be decided
/// (not those an earlier run decided, nor automatic mail), all at once
/// within each lookup's caps.
async fn lookups(k: &Knowledge, items: &mut [Item], stored: &crate::record::StoredFacts, now: i64) {
    if k.lookups.is_empty() {
        return;
    }
    let jobs = items.iter_mut().filter_map(|item| {
        let Item {
            parsed,
            key,
            lookups,
            classified,
            ..
        } = item;
        let m = parsed.as_ref().ok()?;
        let decide_again = match stored.rows.get(key.as_str()) {
            None => true,
            Some(r) => match r.state {
                State::Decided => r.verdict == "reply",
                State::Deferred => r.retry_at.is_none_or(|t| t <= now),
                _ => false,
            },
        };
        // Automatic mail: the loop guard's finding, from the
        // classification made ahead (the guard does not depend on the
        // context).
        let automatic = match classified {
            Some(c) => c.automatic(),
            None => crate::classify::loop_guard::inspect(m, &k.policy.our_addresses)
                .iter()
                .any(|f| f.is_automatic()),
        };
        if !decide_again || automatic {
            return None;
        }
        let sender = plan::sender_key(m);
        Some(async move {
            *lookups = crate::lookup::run_all(&k.lookups, m, &sender).await;
        })
    });
    futures::future::join_all(jobs).await;
}

/// Draft answers of a batch (formatted messages), by message key.
type Drafts = HashMap<String, Vec<u8>>;

/// Decides a whole batch: the steps for the act stage and the one commit
/// that records them. Pure but for the clock passed in.
fn decide_batch(
    items: &[Item],
    k: &Knowledge,
    mb: &MailboxInfo,
    f: &facts::BatchFacts,
    now: i64,
) -> (Vec<(Step, Outcome)>, Commit, Drafts) {
    let mut ledger = Ledger::default();
    let mut commit = Commit::default();
    let mut drafts = Drafts::new();
    let mut out = Vec::with_capacity(items.len());
    // Keys decided earlier in this batch (a message delivered twice).
    let mut seen: HashMap<&str, String> = HashMap::new();
    for item in items {
        let mut o = item.outcome();
        let m = item.message();
        let audit = Auditor {
            at: now,
            mailbox: &mb.name,
            key: &item.key,
            message: m,
        };
        if let Some(folder) = seen.get(item.key.as_str()) {
            o.verdict = "duplicate".into();
            o.why = "the same message again in this batch".into();
            o.folder = Some(folder.clone());
            out.push((
                Step::File {
                    folder: folder.clone(),
                    flags: Vec::new(),
                },
                o,
            ));
            continue;
        }
        // Resume whatever an earlier run started.
        let row = f.stored.rows.get(&item.key);
        let mut resumed_ticket = None;
        if let Some(row) = row {
            resumed_ticket = row.ticket.clone();
            o.verdict = row.verdict.clone();
            o.ticket = row.ticket.clone();
            if let Some((step, why)) = resume(row, k, mb, now, &mut commit, &audit) {
                o.why = why;
                if let Step::File { folder, .. } | Step::Resume { folder, .. } = &step {
                    o.folder = Some(folder.clone());
                    seen.insert(&item.key, folder.clone());
                }
                if matches!(step, Step::Leave) {
                    o.verdict = "deferred".into();
                }
                out.push((step, o));
                continue;
            }
        }
        let m = match &item.parsed {
            Ok(m) => m,
            Err(why) => {
                let d = decide::park(why.clone());
                let folder = mb.folders.parked.clone();
                let json = serde_json::to_string(&d).unwrap_or_default();
                commit.messages.push(MessageWrite {
                    key: item.key.clone(),
                    mailbox: mb.name.clone(),
                    verdict: "park".into(),
                    folder: folder.clone(),
                    ..MessageWrite::default()
                });
                commit.audit.push(audit.event(
                    "decided",
                    format!("park: {why}"),
                    Some(json),
                    None,
                    None,
                ));
                tracing::warn!(mailbox = %mb.name, id = %item.id, "parked: {why}");
                o.verdict = "park".into();
                o.why = why.clone();
                o.folder = Some(folder.clone());
                o.decision = Some(d);
                seen.insert(&item.key, folder.clone());
                out.push((
                    Step::File {
                        folder,
                        flags: Vec::new(),
                    },
                    o,
                ));
                continue;
            }
        };
        let started = std::time::Instant::now();
        let p = plan::plan(
            m,
            k,
            &f.decide,
            &mut ledger,
            plan::Prior {
                ticket: resumed_ticket.as_deref(),
                scored: item.scored(),
                classified: item.classified.as_ref(),
                held: &item.held,
                lookups: Some(&item.lookups),
            },
            &mb.folders,
            now,
        );
        metrics::histogram!("switchboard_classify_seconds").record(started.elapsed().as_secs_f64());
        if let Some(check) = p.decision.suppressed {
            metrics::counter!("switchboard_reply_suppressed_total", "reason" => check).increment(1);
        }
        let sender = plan::sender_key(m);
        let json = serde_json::to_string(&p.decision).unwrap_or_default();
        let verdict = p.decision.verdict.kind();
        let summary = format!("{verdict}: {}", p.why);
        let mut e = audit.event(
            "decided",
            summary,
            Some(json),
            p.ticket.as_deref(),
            p.queue.as_deref(),
        );
        e.rep = p.rep.clone();
        commit.audit.push(e);
        if let (Some((text, draft)), Some((faq, template))) = (&p.draft, &p.decision.draft) {
            let mut e = audit.event(
                "draft",
                format!(
                    "draft answer {template} (FAQ entry {faq}) stored next to the message in {} as <{}>, for a person to review and send",
                    p.folder, draft.message_id
                ),
                None,
                p.ticket.as_deref(),
                p.queue.as_deref(),
            );
            e.rep = p.rep.clone();
            commit.audit.push(e);
            drafts.insert(item.key.clone(), draft.raw.clone());
            commit.drafts.push((
                draft.message_id.clone(),
                p.ticket.clone(),
                item.key.clone(),
                text.clone(),
            ));
        }
        let mut write = MessageWrite {
            key: item.key.clone(),
            mailbox: mb.name.clone(),
            message_id: m.message_id.clone(),
            sender: sender.clone(),
            subject: m.subject.clone(),
            state: Some(State::Decided),
            verdict: verdict.into(),
            folder: p.folder.clone(),
            queue: p.queue.clone(),
            rep: p.rep.clone(),
            template: p.decision.verdict.template().map(str::to_string),
            rule: p.decision.rule.clone(),
            ticket: p.ticket.clone(),
            ..MessageWrite::default()
        };
        o.ticket = p.ticket.clone();
        o.verdict = verdict.into();
        o.why = p.why.clone();
        o.folder = Some(p.folder.clone());
        seen.insert(&item.key, p.folder.clone());
        tracing::info!(mailbox = %mb.name, id = %item.id, message_id = m.message_id.as_deref().unwrap_or(""), decision = verdict, folder = %p.folder, rep = p.rep.as_deref().unwrap_or(""), "decided");
        let step = match (&p.decision.verdict, p.reply) {
            (Verdict::Reply { template, to, .. }, Some(out)) => {
                // The intent to send is recorded with the decision.
                write.state = Some(State::Sending);
                write.reply_message_id = Some(out.message_id.clone());
                write.reply_raw = Some(String::from_utf8_lossy(&out.raw).into_owned());
                let attempts = row.map_or(0, |r| r.attempts) + 1;
                commit.reservations.push(crate::record::Reservation {
                    key: item.key.clone(),
                    reply_id: out.message_id.clone(),
                    recipient: to.addr.clone(),
                    sender: sender.clone(),
                    template: template.clone(),
                    ticket: p.ticket.clone(),
                });
                Step::Reply(Box::new(Sending {
                    template: template.clone(),
                    to: to.addr.clone(),
                    sender,
                    ticket: p.ticket.clone(),
                    folder: p.folder.clone(),
                    flags: reply_flags(&p.decision.flags),
                    decision: p.decision.clone(),
                    attempts,
                    out,
                }))
            }
            _ => Step::File {
                folder: p.folder.clone(),
                flags: p
                    .decision
                    .flags
                    .iter()
                    .map(|f| Flag::Keyword(f.clone()))
                    .collect(),
            },
        };
        commit.messages.push(write);
        o.decision = Some(p.decision);
        out.push((step, o));
    }
    ledger_into_commit(&ledger, f, &mut commit);
    (out, commit, drafts)
}

/// Audit records about one message.
struct Auditor<'a> {
    at: i64,
    mailbox: &'a str,
    key: &'a str,
    message: Option<&'a Message>,
}

impl Auditor<'_> {
    fn event(
        &self,
        event: &str,
        detail: String,
        data: Option<String>,
        ticket: Option<&str>,
        queue: Option<&str>,
    ) -> AuditEvent {
        AuditEvent {
            at: self.at,
            event: event.into(),
            mailbox: Some(self.mailbox.to_string()),
            message_key: Some(self.key.to_string()),
            message_id: self.message.and_then(|m| m.message_id.clone()),
            sender: self.message.and_then(|m| m.from.as_ref().map(|a| a.key())),
            ticket: ticket.map(str::to_string),
            queue: queue.map(str::to_string),
            rep: None,
            detail,
            data,
        }
    }
}

/// What an earlier run left: the step that finishes it, or `None` when the
/// message is to be decided again.
fn resume(
    row: &MessageRow,
    k: &Knowledge,
    mb: &MailboxInfo,
    now: i64,
    commit: &mut Commit,
    audit: &Auditor<'_>,
) -> Option<(Step, String)> {
    let file = |folder: &str| Step::File {
        folder: folder.to_string(),
        flags: Vec::new(),
    };
    match row.state {
        State::Done => {
            commit.audit.push(audit.event(
                "duplicate",
                format!("same message as one already filed in {}", row.folder),
                None,
                row.ticket.as_deref(),
                None,
            ));
            Some((
                file(&row.folder),
                "duplicate of a message already handled".into(),
            ))
        }
        State::Decided if row.verdict != "reply" => Some((
            file(&row.folder),
            "resumed: filing as decided earlier".into(),
        )),
        State::Sending => {
            let queue = k.policy.default_queue.clone();
            let folder = folder_for(
                &Verdict::Route {
                    queue: queue.clone(),
                },
                k,
                &mb.folders,
            );
            let note = "an automatic reply may already have been sent when processing was interrupted; it is not sent again — please check";
            tracing::warn!(mailbox = %mb.name, key = %row.key, "{note}");
            // If it did go out, an answer to it must be recognised.
            if let (Some(id), Some(t)) = (&row.reply_message_id, &row.ticket) {
                commit.thread_ids.push((id.clone(), t.clone(), true));
            }
            commit.messages.push(MessageWrite {
                key: row.key.clone(),
                mailbox: row.mailbox.clone(),
                state: Some(State::Decided),
                verdict: "route".into(),
                folder: folder.clone(),
                queue: Some(queue.clone()),
                ticket: row.ticket.clone(),
                last_error: Some(note.into()),
                ..MessageWrite::default()
            });
            commit.audit.push(audit.event(
                "interrupted",
                note.into(),
                None,
                row.ticket.as_deref(),
                Some(&queue),
            ));
            Some((file(&folder), note.into()))
        }
        State::Sent | State::Archived => Some((
            Step::Resume {
                folder: row.folder.clone(),
                reply_id: row.reply_message_id.clone(),
                append: row.state == State::Sent,
            },
            "resumed: reply already sent, filing".into(),
        )),
        State::Deferred if row.retry_at.is_some_and(|t| t > now) => Some((
            Step::Leave,
            format!(
                "waiting to retry: {}",
                row.last_error.clone().unwrap_or_default()
            ),
        )),
        // A reply decided but not sent, or a retry that is due.
        State::Decided | State::Deferred => None,
    }
}

/// Conversations, thread links and counters the batch changed.
fn ledger_into_commit(ledger: &Ledger, f: &facts::BatchFacts, commit: &mut Commit) {
    let mut threads: BTreeMap<&String, &plan::ThreadChange> = BTreeMap::new();
    threads.extend(ledger.threads.iter());
    for (ticket, c) in threads {
        commit.conversations.push(crate::record::ConversationWrite {
            ticket: ticket.clone(),
            customer: c.customer.clone(),
            subject: c.subject.clone(),
            messages: c.messages,
            since_human_reset: c.since_human_reset,
            queue: c.queue.clone(),
            rep: c.rep.clone(),
            escalated: c.escalated,
            human_reply: c.human_reply,
            customer_wrote: c.customer_wrote,
            due: c.due,
        });
    }
    commit
        .draft_outcomes
        .extend(ledger.draft_outcomes.iter().cloned());
    let mut ids: Vec<(&String, &String)> = ledger.ids.iter().collect();
    ids.sort();
    for (id, ticket) in ids {
        if ledger.staff_ids.contains(id) {
            commit.staff_ids.push((id.clone(), ticket.clone()));
        } else {
            commit.thread_ids.push((id.clone(), ticket.clone(), false));
        }
    }
    if ledger.tickets_taken > 0 {
        let last = f.decide.last_ticket.unwrap_or(1000);
        commit.counters.push(crate::record::CounterWrite {
            name: "ticket".into(),
            expected: f.decide.last_ticket,
            value: last + ledger.tickets_taken,
        });
    }
    if !commit.reservations.is_empty() {
        let name = facts::REPLIES_COUNTER;
        let expected = f.stored.counters.get(name).copied();
        commit.counters.push(crate::record::CounterWrite {
            name: name.into(),
            expected,
            value: expected.unwrap_or(0) + 1,
        });
    }
    let mut rot: Vec<(&String, &u64)> = ledger.rotation.iter().collect();
    rot.sort();
    for (queue, pos) in rot {
        let name = format!("rotation:{queue}");
        commit.counters.push(crate::record::CounterWrite {
            expected: f.stored.counters.get(&name).copied(),
            name,
            value: *pos as i64,
        });
    }
}
