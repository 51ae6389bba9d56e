//! Stage 2 of a batch: the facts its decisions depend on, gathered in a
//! few queries (and, for least-loaded queues, one `STATUS` per person).

use std::collections::{HashMap, HashSet};

use super::{Item, PipelineError};
use crate::decide::assign::TeamFacts;
use crate::decide::plan::{self, Thread};
use crate::fetch::MailSource;
use crate::knowledge::{Knowledge, Strategy};
use crate::record::{Store, StoredFacts};

/// The facts of one batch: as stored (for resuming) and as the decide
/// stage sees them.
#[derive(Debug, Clone, Default)]
pub struct BatchFacts {
    pub stored: StoredFacts,
    pub decide: plan::Facts,
}

/// The counter every batch with replies moves (see [`gather`]).
pub const REPLIES_COUNTER: &str = "replies";

/// Open messages per representative (see [`loads`]).
pub type Loads = HashMap<String, u32>;

/// The open loads of the members of least-loaded queues and of anyone
/// with `max_open`: what the server counted in their folder (one `STATUS`
/// per person, kept in `counted` for the rest of the pass) plus what the
/// pass has decided for it since (`added`: moved or not yet), so that a
/// backlog filed a few thousand messages at a time, over another
/// connection, still respects `max_open` and spreads evenly. A folder
/// the server refused to count is not asked again in the pass (`None` in
/// `counted`): counted later, it would already hold mail the pass moved
/// there, counted once more in `added`; the person has no known load
/// until the next pass. Nothing is read for a batch of no `messages`.
pub async fn loads<S: MailSource>(
    src: &mut S,
    k: &Knowledge,
    messages: usize,
    counted: &mut HashMap<String, Option<u32>>,
    added: impl Fn(&str) -> u32,
) -> Result<Loads, PipelineError> {
    let mut loads = Loads::new();
    if messages == 0 || k.reps.is_empty() {
        return Ok(loads);
    }
    let mut needed: HashSet<&str> = HashSet::new();
    for q in k
        .queues
        .values()
        .filter(|q| q.strategy == Strategy::LeastLoaded)
    {
        needed.extend(q.members.iter().map(String::as_str));
    }
    needed.extend(
        k.reps
            .values()
            .filter(|r| r.max_open.is_some())
            .map(|r| r.id.as_str()),
    );
    let mut needed: Vec<&str> = needed.into_iter().collect();
    needed.sort_unstable();
    for id in needed {
        let Some(r) = k.reps.get(id) else { continue };
        let n = match counted.get(&r.folder) {
            Some(Some(n)) => Ok(*n),
            // Refused earlier in the pass.
            Some(None) => continue,
            None => src.count(&r.folder).await.inspect(|n| {
                counted.insert(r.folder.clone(), Some(*n));
            }),
        };
        match n {
            Ok(n) => {
                let n = n.saturating_add(added(&r.folder));
                metrics::gauge!("switchboard_rep_open_messages", "rep" => id.to_string())
                    .set(f64::from(n));
                loads.insert(id.to_string(), n);
            }
            Err(e) if matches!(e, crate::fetch::FetchError::Protocol(_)) => {
                tracing::warn!(rep = %id, folder = %r.folder, "cannot count open messages: {e}");
                counted.insert(r.folder.clone(), None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(loads)
}

/// Reads everything else the batch's decisions depend on from the store.
/// `loads` are the open loads read with [`loads`] (the one fact that
/// comes from the mail server, read before, so that this stage can run
/// while the server is busy filing).
pub async fn gather(
    store: &Store,
    k: &Knowledge,
    items: &[Item],
    loads: Loads,
    now: i64,
) -> Result<BatchFacts, PipelineError> {
    let keys: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
    let mut ids = Vec::new();
    let mut tags = Vec::new();
    let mut recipients = Vec::new();
    let mut senders = Vec::new();
    for m in items.iter().filter_map(Item::message) {
        ids.extend(plan::references(m).into_iter().rev().take(50));
        tags.extend(crate::act::reply::ticket_tags(&m.subject));
        if let Ok(a) =
            crate::decide::reply_address(m, k.policy.reply.address, &k.policy.our_addresses)
        {
            recipients.push(a.key());
        }
        senders.push(plan::sender_key(m));
    }
    // "replies" moves with every batch that intends to send a reply, so
    // that two batches deciding replies at the same time (two mailboxes,
    // two instances) cannot both pass the rate limits: the second one's
    // commit fails its compare-and-set and it decides again, seeing the
    // first one's replies.
    let mut counters = vec!["ticket".to_string(), REPLIES_COUNTER.to_string()];
    // Every queue that hands out turns (the assignment moves its position).
    counters.extend(
        k.queues
            .values()
            .filter(|q| q.strategy != Strategy::Shared)
            .map(|q| format!("rotation:{}", q.name)),
    );
    let stored = store.facts(&keys, &ids, &tags, &counters).await?;
    let r = store.reply_facts(&recipients, &senders, now).await?;
    let replies = r;
    let mut team = TeamFacts {
        now,
        away: stored
            .away
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(r, u)| (r.clone(), *u))
            .collect(),
        ..TeamFacts::default()
    };
    for (name, v) in &stored.counters {
        if let Some(q) = name.strip_prefix("rotation:") {
            team.rotation.insert(q.to_string(), (*v).max(0) as u64);
        }
    }
    team.loads = loads;
    let decide = plan::Facts {
        tickets: stored.tickets.clone(),
        auto_replies: stored.auto_replies.clone(),
        staff_replies: stored.staff_replies.clone(),
        drafts: stored.drafts.clone(),
        threads: stored
            .conversations
            .iter()
            .map(|(t, c)| {
                (
                    t.clone(),
                    Thread {
                        customer: c.customer.clone(),
                        queue: c.queue.clone(),
                        rep: c.rep.clone(),
                        since_human: c.since_human,
                        first_response_at: c.first_response_at,
                        due_at: c.due_at,
                    },
                )
            })
            .collect(),
        replies,
        team,
        last_ticket: stored.counters.get("ticket").copied(),
    };
    Ok(BatchFacts { stored, decide })
}
