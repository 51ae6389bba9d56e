//! Who gets a message: queue strategies, availability and sticky
//! follow-ups. Pure: the live facts (away marks, open loads, round-robin
//! position) are gathered by the pipeline and passed in.

use std::collections::HashMap;

use serde::Serialize;

use crate::knowledge::team::Unavailable;
use crate::knowledge::{Knowledge, Queue, Strategy};

/// Live facts about the team at one moment.
#[derive(Debug, Clone, Default)]
pub struct TeamFacts {
    pub now: i64,
    /// Rep id → away until (ms; `i64::MAX`: until further notice).
    pub away: HashMap<String, i64>,
    /// Rep id → messages in the personal folder (only where needed).
    pub loads: HashMap<String, u32>,
    /// Queue name → next round-robin position.
    pub rotation: HashMap<String, u64>,
}

/// Where a routed message goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub queue: String,
    pub rep: Option<String>,
    pub folder: String,
    /// One line for the audit log: why this person or folder.
    pub why: String,
    /// The queue's new round-robin position, when it advanced.
    #[serde(skip)]
    pub rotation: Option<u64>,
}

/// Who the message is for: a queue, or a representative by id.
pub fn route_target(k: &Knowledge, name: &str) -> Target {
    if k.reps.contains_key(name) && !k.queues.contains_key(name) {
        Target::Rep(name.to_string())
    } else {
        Target::Queue(name.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Queue(String),
    Rep(String),
}

fn available(k: &Knowledge, id: &str, f: &TeamFacts) -> Result<(), Unavailable> {
    match k.reps.get(id) {
        Some(r) => r.availability(f.now, f.away.get(id).copied(), f.loads.get(id).copied()),
        None => Err(Unavailable::Away),
    }
}

/// The reps whose open load the assignment needs (least-loaded queues,
/// and anyone with `max_open`).
pub fn loads_needed(k: &Knowledge, target: &Target, sticky: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut want = |id: &str, always: bool| {
        if let Some(r) = k.reps.get(id)
            && (always || r.max_open.is_some())
            && !out.iter().any(|o| o == id)
        {
            out.push(id.to_string());
        }
    };
    if let Some(s) = sticky {
        want(s, false);
    }
    let queue = match target {
        Target::Rep(id) => {
            want(id, false);
            k.reps
                .get(id)
                .and_then(|r| r.queues.first())
                .and_then(|q| k.queues.get(&q.0))
        }
        Target::Queue(q) => k.queues.get(q),
    };
    if let Some(q) = queue {
        for m in &q.members {
            want(m, q.strategy == Strategy::LeastLoaded);
        }
    }
    out
}

/// Decides who gets a message routed to `target`. `sticky` is the rep
/// who already has the conversation (a follow-up).
pub fn assign(
    k: &Knowledge,
    target: &Target,
    sticky: Option<(&str, &str)>,
    f: &TeamFacts,
) -> Assignment {
    let mut notes: Vec<String> = Vec::new();
    if let Some((rep, ticket)) = sticky
        && let Some(r) = k.reps.get(rep)
    {
        match available(k, rep, f) {
            Ok(()) => {
                let queue = match target {
                    Target::Queue(q) => q.clone(),
                    Target::Rep(_) => r.queues.first().map(|q| q.0.clone()).unwrap_or_default(),
                };
                return Assignment {
                    queue,
                    rep: Some(rep.to_string()),
                    folder: r.folder.clone(),
                    why: format!("follow-up in {ticket}: stays with {} ({})", r.name, r.id),
                    rotation: None,
                };
            }
            Err(why) => notes.push(format!("{} has {ticket} but is {why}", r.name)),
        }
    }
    let queue: Option<&Queue> = match target {
        Target::Rep(id) => {
            let Some(r) = k.reps.get(id) else {
                return shared(k, &k.policy.default_queue, notes, "unknown rep");
            };
            match available(k, id, f) {
                Ok(()) => {
                    return Assignment {
                        queue: r.queues.first().map(|q| q.0.clone()).unwrap_or_default(),
                        rep: Some(id.clone()),
                        folder: r.folder.clone(),
                        why: join(notes, format!("routed to {} ({})", r.name, r.id)),
                        rotation: None,
                    };
                }
                Err(why) => {
                    notes.push(format!("{} is {why}", r.name));
                    let q = r
                        .queues
                        .first()
                        .map_or(k.policy.default_queue.as_str(), |q| q.0.as_str());
                    k.queues.get(q)
                }
            }
        }
        Target::Queue(q) => k.queues.get(q),
    };
    let Some(q) = queue else {
        return shared(k, &k.policy.default_queue, notes, "");
    };
    if q.strategy == Strategy::Shared || q.members.is_empty() {
        return Assignment {
            queue: q.name.clone(),
            rep: None,
            folder: q.folder.clone(),
            why: join(notes, format!("shared queue {}", q.name)),
            rotation: None,
        };
    }
    let n = q.members.len();
    let start = f.rotation.get(&q.name).copied().unwrap_or(0) as usize % n;
    let order: Vec<(usize, &String)> = (0..n)
        .map(|i| ((start + i) % n, &q.members[(start + i) % n]))
        .collect();
    let mut candidates: Vec<(usize, &String)> = Vec::new();
    for (idx, id) in order {
        match available(k, id, f) {
            Ok(()) => candidates.push((idx, id)),
            Err(why) => {
                let name = k.reps.get(id.as_str()).map_or(id.as_str(), |r| &r.name);
                notes.push(format!("{name} skipped: {why}"));
            }
        }
    }
    let chosen = match q.strategy {
        Strategy::LeastLoaded => candidates
            .iter()
            .min_by_key(|(_, id)| f.loads.get(id.as_str()).copied().unwrap_or(0))
            .copied(),
        _ => candidates.first().copied(),
    };
    match chosen {
        Some((idx, id)) => {
            let r = &k.reps[id.as_str()];
            let how = match q.strategy {
                Strategy::LeastLoaded => format!(
                    "least loaded in {} ({} open)",
                    q.name,
                    f.loads.get(id.as_str()).copied().unwrap_or(0)
                ),
                _ => format!("next in turn in {}", q.name),
            };
            Assignment {
                queue: q.name.clone(),
                rep: Some(id.clone()),
                folder: r.folder.clone(),
                why: join(notes, format!("{} ({}): {how}", r.name, r.id)),
                rotation: Some((idx + 1) as u64),
            }
        }
        None => Assignment {
            queue: q.name.clone(),
            rep: None,
            folder: q.folder.clone(),
            why: join(
                notes,
                format!(
                    "nobody in {} is available: left in the shared folder",
                    q.name
                ),
            ),
            rotation: None,
        },
    }
}

fn shared(k: &Knowledge, queue: &str, notes: Vec<String>, extra: &str) -> Assignment {
    let folder = k
        .queues
        .get(queue)
        .map_or_else(|| k.policy.folders.parked.clone(), |q| q.folder.clone());
    let mut why = format!("shared queue {queue}");
    if !extra.is_empty() {
        why = format!("{extra}: {why}");
    }
    Assignment {
        queue: queue.to_string(),
        rep: None,
        folder,
        why: join(notes, why),
        rotation: None,
    }
}

fn join(mut notes: Vec<String>, last: String) -> String {
    notes.push(last);
    notes.join("; ")
}
