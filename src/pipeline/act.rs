//! Stage 5 of a batch: the side effects, in the order that makes a crash
//! at any point harmless (see the table in [`super`]).
//!
//! 1. Replies go to the transport (a few at a time, as many as the SMTP
//!    pool keeps connections: `pool_size`); those accepted are recorded in one
//!    transaction; a failure is recorded for its message alone.
//! 2. Copies of the replies go to the Sent folder.
//! 3. Flags: one `UID STORE` per distinct flag set.
//! 4. Filing: one `UID MOVE` per destination folder.
//! 5. The filed messages are marked done, in one transaction.
//!
//! Steps 3–5 are gathered over several batches of a backlog ([`Filing`]):
//! the decisions are committed and the replies sent batch by batch, the
//! moves happen a few thousand messages (or a couple of seconds) at a
//! time, while the next batch is decided and committed (over a second
//! connection, when the mail source has one).
//!
//! Messages that get no reply need none of steps 1–2: they go into the
//! filing before the batch's replies are sent, and the caller may start
//! filing them meanwhile (`before_replies` of [`super::Pipeline::finish`]).
//! A message with a reply is only ever filed after its reply and its copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use tracing::warn;

use super::{MailboxInfo, Outcome, Pipeline, PipelineError, Sending, Step, Work, folder_for};
use crate::act::outbox::SendError;
use crate::decide::{self, Verdict};
use crate::fetch::{Flag, MailSource, MsgRef};
use crate::knowledge::Knowledge;
use crate::record::{AuditEvent, SentReply};

pub(super) async fn act<S: MailSource>(
    p: &Pipeline,
    src: &mut S,
    mb: &MailboxInfo,
    k: &Arc<Knowledge>,
    mut work: Vec<Work>,
    filing: &mut Filing,
    before_replies: impl FnOnce(&mut Filing),
) -> Result<Vec<Outcome>, PipelineError> {
    // What needs no reply goes to `filing` first, and `before_replies`
    // may start filing it (over a second connection) while the replies
    // are sent and copied.
    // (Decided before sending: a reply that fails becomes a filing.)
    let early: Vec<bool> = work
        .iter()
        .map(|w| matches!(w.step, Step::File { .. }))
        .collect();
    for (w, _) in work.iter().zip(&early).filter(|(_, e)| **e) {
        filing.add(w);
    }
    before_replies(filing);
    let t = std::time::Instant::now();
    send_replies(p, mb, k, &mut work).await?;
    let sent = t.elapsed();
    store_copies(p, src, mb, &work).await?;
    tracing::debug!(
        mailbox = %mb.name,
        send_ms = sent.as_millis() as u64,
        copy_ms = (t.elapsed() - sent).as_millis() as u64,
        "answered"
    );
    Ok(work
        .into_iter()
        .zip(early)
        .map(|(w, early)| {
            metrics::counter!(
                "switchboard_messages_total",
                "mailbox" => mb.name.clone(),
                "decision" => w.outcome.verdict.clone()
            )
            .increment(1);
            if !early {
                filing.add(&w);
            }
            w.outcome
        })
        .collect())
}

/// Messages decided (and answered) but not filed yet: flags and moves are
/// gathered over several batches, because a server's cost per `UID MOVE`
/// grows with the size of the inbox. Each entry's state is already
/// committed, so a crash before [`Filing::flush`] leaves the messages in
/// the inbox to be filed on resume.
#[derive(Debug, Default)]
pub struct Filing {
    /// (flags, messages) to flag, by the flags' names.
    flags: BTreeMap<Vec<String>, (Vec<Flag>, Vec<MsgRef>)>,
    /// Messages to move, by destination folder.
    moves: BTreeMap<String, Group>,
    /// Draft answers to store next to their messages, by folder.
    drafts: BTreeMap<String, Vec<Vec<u8>>>,
    /// How many messages wait.
    count: usize,
    /// When the oldest entry was added.
    since: Option<std::time::Instant>,
}

/// The messages waiting for one folder.
#[derive(Debug)]
struct Group {
    ids: Vec<MsgRef>,
    /// Their keys, to mark them done once moved.
    keys: Vec<String>,
}

impl Filing {
    fn add(&mut self, w: &Work) {
        let flags: Vec<Flag> = match &w.step {
            Step::Reply(s) if w.outcome.replied => s.flags.clone(),
            Step::Resume { .. } => vec![Flag::Answered],
            Step::File { flags, .. } => flags.clone(),
            _ => Vec::new(),
        };
        if !flags.is_empty() {
            let mut names: Vec<String> = flags.iter().map(|f| format!("{f:?}")).collect();
            names.sort();
            match self.flags.get_mut(&names) {
                Some((_, ids)) => ids.push(w.item.id.clone()),
                None => {
                    self.flags.insert(names, (flags, vec![w.item.id.clone()]));
                }
            }
        }
        let folder = match &w.step {
            Step::Reply(s) => s.folder.as_str(),
            Step::File { folder, .. } | Step::Resume { folder, .. } => folder.as_str(),
            Step::Leave => return,
        };
        if let Some(d) = &w.draft {
            self.drafts
                .entry(folder.to_string())
                .or_default()
                .push(d.clone());
        }
        match self.moves.get_mut(folder) {
            Some(g) => {
                g.ids.push(w.item.id.clone());
                g.keys.push(w.item.key.clone());
            }
            None => {
                let g = Group {
                    ids: vec![w.item.id.clone()],
                    keys: vec![w.item.key.clone()],
                };
                self.moves.insert(folder.to_string(), g);
            }
        }
        self.count += 1;
        self.since.get_or_insert_with(std::time::Instant::now);
    }

    /// Messages waiting to be filed.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Messages waiting to be moved to `folder`.
    pub fn waiting_for(&self, folder: &str) -> u32 {
        self.moves
            .get(folder)
            .map_or(0, |g| u32::try_from(g.ids.len()).unwrap_or(u32::MAX))
    }

    /// Messages waiting, by destination folder.
    pub fn per_folder(&self) -> impl Iterator<Item = (&str, u32)> {
        self.moves
            .iter()
            .map(|(f, g)| (f.as_str(), u32::try_from(g.ids.len()).unwrap_or(u32::MAX)))
    }

    /// How long the oldest waiting message has waited.
    pub fn age(&self) -> std::time::Duration {
        self.since.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Adds `other`'s messages to this filing.
    pub fn merge(&mut self, other: Filing) {
        for (names, (flags, ids)) in other.flags {
            self.flags
                .entry(names)
                .or_insert_with(|| (flags, Vec::new()))
                .1
                .extend(ids);
        }
        for (folder, g) in other.moves {
            match self.moves.get_mut(&folder) {
                Some(mine) => {
                    mine.ids.extend(g.ids);
                    mine.keys.extend(g.keys);
                }
                None => {
                    self.moves.insert(folder, g);
                }
            }
        }
        for (folder, d) in other.drafts {
            self.drafts.entry(folder).or_default().extend(d);
        }
        self.count += other.count;
        self.since = match (self.since, other.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Takes about half of the messages into a filing of their own (with
    /// their flags), to be filed over another connection at the same time:
    /// whole folders first (with their drafts), then part of the largest
    /// folder left that has no drafts. Messages that are only flagged
    /// stay.
    pub fn split(&mut self) -> Filing {
        let mut other = Filing {
            since: self.since,
            ..Filing::default()
        };
        let half = self.count / 2;
        let mut sizes: Vec<(usize, String)> = self
            .moves
            .iter()
            .map(|(f, g)| (g.ids.len(), f.clone()))
            .collect();
        // Largest first, so that the halves come out close.
        sizes.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (n, folder) in sizes {
            if other.count + n > half {
                continue;
            }
            if let Some(g) = self.moves.remove(&folder) {
                if let Some(d) = self.drafts.remove(&folder) {
                    other.drafts.insert(folder.clone(), d);
                }
                other.count += n;
                self.count -= n;
                other.moves.insert(folder, g);
            }
        }
        // The rest from the largest folder left, split in two — one without
        // drafts: a folder's drafts are stored after its moves, over the
        // connection that moves it.
        let need = half - other.count;
        let drafts = &self.drafts;
        if need > 0
            && let Some((folder, g)) = self
                .moves
                .iter_mut()
                .filter(|(f, _)| !drafts.contains_key(*f))
                .max_by_key(|(_, g)| g.ids.len())
            && g.ids.len() > need
        {
            let at = g.ids.len() - need;
            let part = Group {
                ids: g.ids.split_off(at),
                keys: g.keys.split_off(at),
            };
            other.count += need;
            self.count -= need;
            other.moves.insert(folder.clone(), part);
        }
        let taken: std::collections::HashSet<&MsgRef> =
            other.moves.values().flat_map(|g| g.ids.iter()).collect();
        for (names, (flags, ids)) in &mut self.flags {
            let (theirs, mine): (Vec<MsgRef>, Vec<MsgRef>) = std::mem::take(ids)
                .into_iter()
                .partition(|i| taken.contains(i));
            *ids = mine;
            if !theirs.is_empty() {
                other.flags.insert(names.clone(), (flags.clone(), theirs));
            }
        }
        self.flags.retain(|_, (_, ids)| !ids.is_empty());
        other
    }

    /// Flags (one `UID STORE` per flag set), files (one `UID MOVE` per
    /// folder) and marks the moved messages done (one transaction).
    pub async fn flush<S: MailSource>(
        &mut self,
        p: &Pipeline,
        src: &mut S,
    ) -> Result<(), PipelineError> {
        if self.is_empty() {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let Filing {
            flags,
            moves,
            drafts,
            count,
            ..
        } = std::mem::take(self);
        for (_, (flags, ids)) in flags {
            src.add_flags(&ids, &flags).await?;
        }
        let flagged = t.elapsed();
        // The moved messages are marked done in one transaction after the
        // moves — also when a later move fails, so that no moved message
        // looks unfiled. (A crash in between is settled after the next
        // complete drain: `Store::settle_filed`.)
        let mut moved: Vec<String> = Vec::new();
        let mut result = Ok(());
        for (folder, Group { ids, keys }) in moves {
            if let Err(e) = src.move_to(&folder, &ids).await {
                result = Err(PipelineError::from(e));
                break;
            }
            moved.extend(keys);
            // The drafts go next to their messages (a draft that cannot be
            // stored is only a lost suggestion).
            if let Some(raws) = drafts.get(&folder) {
                let raws: Vec<&[u8]> = raws.iter().map(Vec::as_slice).collect();
                if let Err(e) = src
                    .append_all(&folder, &raws, &[Flag::Draft, Flag::Seen])
                    .await
                {
                    tracing::warn!(folder = %folder, "draft answers not stored: {e}");
                }
            }
        }
        let filed = t.elapsed();
        if !moved.is_empty() {
            p.store.finish(&moved, p.now()).await?;
        }
        result?;
        tracing::debug!(
            messages = count,
            flag_ms = flagged.as_millis() as u64,
            move_ms = (filed - flagged).as_millis() as u64,
            file_ms = t.elapsed().as_millis() as u64,
            "filed"
        );
        Ok(())
    }
}

/// Sends every reply of the batch and records the outcome of each.
async fn send_replies(
    p: &Pipeline,
    mb: &MailboxInfo,
    k: &Knowledge,
    work: &mut [Work],
) -> Result<(), PipelineError> {
    let todo: Vec<usize> = (0..work.len())
        .filter(|i| matches!(work[*i].step, Step::Reply(_)))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let mut results: Vec<(usize, Result<(), SendError>)> = {
        let outbox = &p.outbox;
        let work = &*work;
        futures::stream::iter(todo)
            .map(|i| async move {
                let r = match &work[i].step {
                    Step::Reply(s) => outbox.send(&s.out).await,
                    _ => Ok(()),
                };
                (i, r)
            })
            .buffer_unordered(p.outbox.parallel())
            .collect()
            .await
    };
    // The accepted replies first, and recorded before any failure is
    // handled: a store error while handling a failure must not leave
    // replies that went out looking unconfirmed.
    results.sort_by_key(|(_, r)| r.is_err());
    let mut sent = Vec::new();
    let now = p.now();
    for (i, result) in results {
        if result.is_err() && !sent.is_empty() {
            p.store
                .replies_sent(&std::mem::take(&mut sent), now)
                .await?;
        }
        let Work {
            item,
            step,
            outcome,
            ..
        } = &mut work[i];
        let Step::Reply(s) = step else { continue };
        let audit = |event: &str, detail: String, queue: Option<&str>| AuditEvent {
            at: now,
            event: event.into(),
            mailbox: Some(mb.name.clone()),
            message_key: Some(item.key.clone()),
            message_id: item.message().and_then(|m| m.message_id.clone()),
            sender: Some(s.sender.clone()),
            ticket: s.ticket.clone(),
            queue: queue.map(str::to_string),
            rep: None,
            detail,
            data: None,
        };
        let sent_reply = |s: &Sending, detail: String| SentReply {
            key: item.key.clone(),
            reply_id: s.out.message_id.clone(),
            recipient: s.to.clone(),
            sender: s.sender.clone(),
            template: s.template.clone(),
            ticket: s.ticket.clone(),
            audit: audit("reply_sent", detail, None),
        };
        match result {
            Ok(()) => {
                metrics::counter!("switchboard_auto_replies_sent_total", "template" => s.template.clone())
                    .increment(1);
                outcome.replied = true;
                sent.push(sent_reply(
                    s,
                    format!("{} to {} ({})", s.template, s.out.to, s.out.subject),
                ));
            }
            Err(SendError::Temporary(e)) => {
                metrics::counter!("switchboard_reply_failures_total", "outcome" => "deferred")
                    .increment(1);
                p.store.release_reply(&s.out.message_id).await?;
                let attempts = s.attempts.max(1) as u32;
                let delay = p
                    .retry_initial
                    .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)))
                    .min(p.retry_max);
                let retry_at = now + delay.as_millis() as i64;
                p.store.defer(&item.key, retry_at, &e, now).await?;
                p.store
                    .audit(&audit(
                        "deferred",
                        format!(
                            "reply not sent, retry in {}: {e}",
                            decide::human_duration(delay.as_secs() as i64)
                        ),
                        None,
                    ))
                    .await?;
                warn!(mailbox = %mb.name, id = %item.id, "reply deferred: {e}");
                outcome.verdict = "deferred".into();
                outcome.why = format!("reply not sent yet: {e}");
                outcome.folder = None;
                *step = Step::Leave;
            }
            Err(SendError::Permanent(e)) => {
                metrics::counter!("switchboard_reply_failures_total", "outcome" => "refused")
                    .increment(1);
                p.store.release_reply(&s.out.message_id).await?;
                let note = format!("the reply was refused ({e}); a person answers instead");
                let folder = to_person(p, mb, k, &s.decision, &item.key, &note, now).await?;
                p.store
                    .audit(&audit(
                        "reply_failed",
                        e.clone(),
                        Some(&k.policy.default_queue),
                    ))
                    .await?;
                warn!(mailbox = %mb.name, id = %item.id, "reply refused: {e}");
                rerouted(outcome, &s.decision, note, &folder, k);
                *step = Step::File {
                    folder,
                    flags: Vec::new(),
                };
            }
            Err(SendError::Ambiguous(e)) => {
                metrics::counter!("switchboard_reply_failures_total", "outcome" => "uncertain")
                    .increment(1);
                // The server may have accepted the reply: count it as sent
                // for every limit, never send it again, let a person check.
                let note = format!(
                    "the SMTP server did not confirm the reply ({e}); it may have been \
                     delivered, so it is not sent again — please check"
                );
                p.store
                    .replies_sent(&[sent_reply(s, note.clone())], now)
                    .await?;
                let folder = to_person(p, mb, k, &s.decision, &item.key, &note, now).await?;
                p.store
                    .audit(&audit(
                        "reply_uncertain",
                        note.clone(),
                        Some(&k.policy.default_queue),
                    ))
                    .await?;
                warn!(mailbox = %mb.name, id = %item.id, "{note}");
                rerouted(outcome, &s.decision, note, &folder, k);
                *step = Step::File {
                    folder,
                    flags: Vec::new(),
                };
            }
        }
    }
    p.store.replies_sent(&sent, now).await?;
    Ok(())
}

/// Records that a message whose reply failed goes to a person; returns
/// its folder.
async fn to_person(
    p: &Pipeline,
    mb: &MailboxInfo,
    k: &Knowledge,
    d: &decide::Decision,
    key: &str,
    note: &str,
    now: i64,
) -> Result<String, PipelineError> {
    let _ = d;
    let queue = k.policy.default_queue.clone();
    let folder = folder_for(
        &Verdict::Route {
            queue: queue.clone(),
        },
        k,
        &mb.folders,
    );
    p.store
        .reroute(key, "route", &folder, Some(&queue), note, now)
        .await?;
    Ok(folder)
}

fn rerouted(o: &mut Outcome, d: &decide::Decision, note: String, folder: &str, k: &Knowledge) {
    let mut d = d.clone();
    d.reasons.push(note.clone());
    d.verdict = Verdict::Route {
        queue: k.policy.default_queue.clone(),
    };
    o.verdict = "route".into();
    o.why = note;
    o.folder = Some(folder.to_string());
    o.decision = Some(d);
}

/// Copies of the sent replies into the Sent folder (and, for replies sent
/// before an interruption, only when the copy is not there yet).
async fn store_copies<S: MailSource>(
    p: &Pipeline,
    src: &mut S,
    mb: &MailboxInfo,
    work: &[Work],
) -> Result<(), PipelineError> {
    // The batch's new replies in one command where the server allows.
    let fresh: Vec<&[u8]> = work
        .iter()
        .filter_map(|w| match &w.step {
            Step::Reply(s) if w.outcome.replied => Some(s.out.raw.as_slice()),
            _ => None,
        })
        .collect();
    if !fresh.is_empty() {
        src.append_all(&mb.folders.sent, &fresh, &[Flag::Seen])
            .await?;
    }
    for w in work {
        if let Step::Resume {
            reply_id,
            append: true,
            ..
        } = &w.step
        {
            let there = match reply_id {
                Some(id) => src.has_message(&mb.folders.sent, id).await?,
                None => false,
            };
            if !there && let Some(raw) = p.store.reply_raw(&w.item.key).await? {
                src.append(&mb.folders.sent, &raw, &[Flag::Seen]).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(n: u32) -> MsgRef {
        MsgRef::Uid(n)
    }

    /// Folders A (uids 1–5), B (6–8), C (9–10); \Seen on 1, 6 and 9, and
    /// on 11, which is only flagged; a draft for B.
    fn filing() -> Filing {
        let mut f = Filing::default();
        for (folder, uids) in [("A", 1..=5), ("B", 6..=8), ("C", 9..=10)] {
            let ids: Vec<MsgRef> = uids.map(uid).collect();
            let keys = ids.iter().map(|i| format!("{i:?}")).collect();
            f.count += ids.len();
            f.moves.insert(folder.into(), Group { ids, keys });
        }
        f.flags.insert(
            vec!["Seen".into()],
            (vec![Flag::Seen], vec![uid(1), uid(6), uid(9), uid(11)]),
        );
        f.drafts.insert("B".into(), vec![b"draft".to_vec()]);
        f.since = Some(std::time::Instant::now());
        f
    }

    fn folders(f: &Filing) -> Vec<(String, Vec<MsgRef>, Vec<String>)> {
        f.moves
            .iter()
            .map(|(k, g)| (k.clone(), g.ids.clone(), g.keys.clone()))
            .collect()
    }

    fn flagged(f: &Filing) -> Vec<MsgRef> {
        let mut v: Vec<MsgRef> = f.flags.values().flat_map(|(_, ids)| ids.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_split_takes_whole_folders_with_their_flags_and_drafts() {
        let mut mine = filing();
        let theirs = mine.split();
        // 10 messages: A (5) goes, B and C (5) stay.
        assert_eq!(theirs.len(), 5);
        assert_eq!(mine.len(), 5);
        let names = |f: &Filing| f.moves.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&theirs), ["A"]);
        assert_eq!(names(&mine), ["B", "C"]);
        // Each message's flags go with it; the flagged-only one stays.
        assert_eq!(flagged(&theirs), [uid(1)]);
        assert_eq!(flagged(&mine), [uid(6), uid(9), uid(11)]);
        assert!(mine.drafts.contains_key("B") && theirs.drafts.is_empty());
        // The other way round, the draft goes with its folder.
        let mut mine2 = filing();
        mine2.drafts = BTreeMap::from([("A".to_string(), vec![b"draft".to_vec()])]);
        let theirs2 = mine2.split();
        assert_eq!(theirs2.moves.keys().collect::<Vec<_>>(), ["A"]);
        assert!(theirs2.drafts.contains_key("A") && mine2.drafts.is_empty());
        // Merged back, nothing is lost or doubled.
        let original = filing();
        mine.merge(theirs);
        assert_eq!(mine.len(), original.len());
        assert_eq!(folders(&mine), folders(&original));
        assert_eq!(flagged(&mine), flagged(&original));
        assert_eq!(mine.drafts, original.drafts);
    }

    #[test]
    fn one_folder_is_split() {
        let mut mine = Filing::default();
        let ids: Vec<MsgRef> = (1..=9).map(uid).collect();
        mine.count = ids.len();
        mine.moves.insert(
            "A".into(),
            Group {
                keys: ids.iter().map(|i| format!("{i:?}")).collect(),
                ids,
            },
        );
        let theirs = mine.split();
        assert_eq!(
            folders(&theirs),
            [(
                "A".to_string(),
                (6..=9).map(uid).collect(),
                (6..=9).map(|i| format!("{:?}", uid(i))).collect()
            )]
        );
        assert_eq!(mine.len(), 5);
        assert_eq!(theirs.len(), 4);
        assert_eq!(mine.moves["A"].ids, (1..=5).map(uid).collect::<Vec<_>>());
        // A folder with drafts is not split: they follow its moves.
        let mut mine = filing();
        mine.moves.remove("A");
        mine.moves.remove("C");
        mine.count = 3;
        assert!(mine.split().is_empty());
        assert_eq!(mine.len(), 3);
    }
}
