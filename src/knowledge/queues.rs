//! Queues: where messages for people go.
//!
//! ```toml
//! [[queue]]
//! name = "billing"
//! folder = "Queues/Billing"                        # the shared folder
//! escalation_folder = "Queues/Billing/Supervisor"   # default: FOLDER/Escalated
//! strategy = "round_robin"       # shared (default) | round_robin | least_loaded
//! members = ["ann", "bob"]       # reps; reps can also list the queue themselves
//! escalate_after = 3             # customer messages without a human reply
//! ```

use crate::diag::Location;
use crate::tomlread::Table;

/// How a queue hands out work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Everything goes into the queue's folder; whoever is free picks it up.
    Shared,
    /// Available members in turn.
    RoundRobin,
    /// The available member with the fewest messages in their folder.
    LeastLoaded,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Shared => "shared",
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLoaded => "least_loaded",
        }
    }
}

/// A queue of work for people.
#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub description: String,
    /// IMAP folder (or Maildir++ folder) where routed messages go when
    /// nobody in particular gets them.
    pub folder: String,
    /// Folder for escalations to the queue's supervisor.
    pub escalation_folder: String,
    pub strategy: Strategy,
    /// Member rep ids, in rotation order (listed members first, then reps
    /// that name the queue, in file order). Filled in after loading.
    pub members: Vec<String>,
    /// Members as written, for cross-reference checks.
    pub listed_members: Vec<(String, Location)>,
    /// Escalate a conversation after this many customer messages without
    /// a human reply.
    pub escalate_after: Option<u32>,
    pub location: Location,
}

/// Reads one `[[queue]]` table.
pub fn read_queue(mut t: Table<'_>) -> Option<Queue> {
    let ctx = t.ctx();
    let start = t.span.clone();
    let name = t.required_string("name");
    if let Some(n) = &name {
        t.set_what(format!("queue {:?}", n.value));
    }
    let description = t.string("description").map(|d| d.value).unwrap_or_default();
    let folder = t.required_string("folder");
    let escalation = t.string("escalation_folder");
    for f in folder.iter().chain(escalation.iter()) {
        if f.value.trim().is_empty() || f.value.contains(['*', '%', '\r', '\n']) {
            ctx.error(
                f.span.clone(),
                "folder names cannot be empty or contain '*', '%' or line breaks",
            );
        }
    }
    let strategy = match t.string("strategy") {
        None => Strategy::Shared,
        Some(s) => match s.value.as_str() {
            "shared" => Strategy::Shared,
            "round_robin" | "round-robin" => Strategy::RoundRobin,
            "least_loaded" | "least-loaded" => Strategy::LeastLoaded,
            other => {
                ctx.error(
                    s.span.clone(),
                    format!(
                        "unknown strategy {other:?}: use \"shared\", \"round_robin\" or \"least_loaded\""
                    ),
                );
                Strategy::Shared
            }
        },
    };
    let listed_members: Vec<(String, Location)> = t
        .strings("members")
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let l = ctx.location(&m.span);
            (m.value, l)
        })
        .collect();
    let escalate_after = t
        .integer("escalate_after")
        .and_then(|n| match u32::try_from(n.value) {
            Ok(v) if v >= 1 => Some(v),
            _ => {
                ctx.error(
                    n.span,
                    "escalate_after must be a positive number of customer messages",
                );
                None
            }
        });
    t.finish();
    let folder = folder?.value;
    Some(Queue {
        name: name?.value,
        description,
        escalation_folder: escalation.map_or_else(|| format!("{folder}/Escalated"), |e| e.value),
        folder,
        strategy,
        members: Vec::new(),
        listed_members,
        escalate_after,
        location: ctx.location(&start),
    })
}
