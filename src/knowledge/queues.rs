//! Queues: where messages for people go.
//!
//! ```toml
//! [[queue]]
//! name = "billing"
//! folder = "Queues/Billing"
//! escalation_folder = "Queues/Billing/Supervisor"   # default: FOLDER/Escalated
//! ```

use crate::diag::Location;
use crate::tomlread::Table;

/// A queue of work for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    pub description: String,
    /// IMAP folder (or Maildir++ folder) where routed messages go.
    pub folder: String,
    /// Folder for escalations to the queue's supervisor.
    pub escalation_folder: String,
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
    t.finish();
    let folder = folder?.value;
    Some(Queue {
        name: name?.value,
        description,
        escalation_folder: escalation.map_or_else(|| format!("{folder}/Escalated"), |e| e.value),
        folder,
        location: ctx.location(&start),
    })
}
