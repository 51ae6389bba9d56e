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
//! first_response = "4h"          # a person answers within (business hours)
//! follow_up = "1d"               # … and answers each follow-up within
//! hours = ["Mon-Fri 09:00-17:00"]   # business hours (default: [sla] or always)
//! timezone = "Europe/London"     # default: [sla] timezone, else UTC
//! holidays = ["2026-12-25"]      # default: [sla] holidays
//! escalate_overdue = "1h"        # after the reminder, escalate (default 1h)
//! close_after = "7d"             # after a person's answer, silence = solved
//! check_in = "check-in"          # template of the one "solved?" message
//! remind_by_mail = true          # overdue: also mail the assigned rep
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
    /// Service levels (deadlines for a person's answer).
    pub sla: crate::decide::sla::ServiceLevel,
    /// Which calendar keys the queue set itself (the rest come from
    /// `[sla]` in switchboard.toml).
    pub own_calendar: (bool, bool, bool),
    /// Where `check_in` names its template, for "missing template" errors.
    pub check_in_ref: Option<(String, Location)>,
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
    let mut sla = crate::decide::sla::ServiceLevel {
        escalate_after: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    sla.first_response = t.duration("first_response").map(|d| d.value);
    sla.follow_up = t.duration("follow_up").map(|d| d.value);
    if let Some(d) = t.duration("escalate_overdue") {
        sla.escalate_after = d.value;
    }
    sla.close_after = t.duration("close_after").map(|d| d.value);
    sla.remind_by_mail = t.boolean("remind_by_mail").is_some_and(|b| b.value);
    let check_in = t.string("check_in");
    if let (Some(c), None) = (&check_in, sla.close_after) {
        ctx.error(
            c.span.clone(),
            "`check_in` is sent when a conversation is closed: add `close_after = \"7d\"` too",
        );
    }
    let check_in_ref = check_in
        .as_ref()
        .map(|c| (c.value.clone(), ctx.location(&c.span)));
    sla.check_in = check_in.map(|c| c.value);
    let (hours, timezone, holidays) = read_calendar(&mut t);
    let own_calendar = (hours.is_some(), timezone.is_some(), holidays.is_some());
    sla.calendar.hours = hours.unwrap_or_default();
    if let Some(tz) = timezone {
        sla.calendar.timezone = tz;
    }
    sla.calendar.holidays = holidays.unwrap_or_default();
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
        sla,
        own_calendar,
        check_in_ref,
        location: ctx.location(&start),
    })
}

/// `hours`, `timezone` and `holidays` of a queue or of `[sla]`; each
/// `None` when not given.
pub fn read_calendar(
    t: &mut Table<'_>,
) -> (
    Option<Vec<crate::knowledge::team::Window>>,
    Option<jiff::tz::TimeZone>,
    Option<Vec<jiff::civil::Date>>,
) {
    let ctx = t.ctx();
    let hours = t.strings("hours").map(|list| {
        list.into_iter()
            .filter_map(|h| match crate::knowledge::team::parse_window(&h.value) {
                Ok(w) => Some(w),
                Err(e) => {
                    ctx.error(h.span, e);
                    None
                }
            })
            .collect()
    });
    let timezone = t
        .string("timezone")
        .and_then(|z| match jiff::tz::TimeZone::get(&z.value) {
            Ok(tz) => Some(tz),
            Err(_) => {
                ctx.error(
                    z.span,
                    format!(
                        "unknown time zone {:?}: use an IANA name such as \"Europe/London\"",
                        z.value
                    ),
                );
                None
            }
        });
    let holidays = t.strings("holidays").map(|list| {
        list.into_iter()
            .filter_map(|d| match d.value.parse::<jiff::civil::Date>() {
                Ok(date) => Some(date),
                Err(_) => {
                    ctx.error(
                        d.span,
                        format!("{:?} is not a date: use YYYY-MM-DD", d.value),
                    );
                    None
                }
            })
            .collect()
    });
    (hours, timezone, holidays)
}
