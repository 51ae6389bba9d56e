//! `switchboard rep …`, `switchboard log` and `switchboard stats`: the
//! people side of the desk, read from and written to the state store.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use jiff::tz::TimeZone;
use switchboard::config::{Config, MailboxKind};
use switchboard::fetch::MailSource;
use switchboard::fetch::imap::Imap;
use switchboard::fetch::maildir::Maildir;
use switchboard::knowledge::Knowledge;
use switchboard::record::{AuditEvent, AuditQuery, Store};
use switchboard::util::{format_ms, now_ms};

use super::ConfigArg;

#[derive(clap::Subcommand, Debug)]
pub enum RepCommand {
    /// List representatives: queues, hours, and whether they take new
    /// work right now.
    List(ListArgs),
    /// Mark someone away: they get no new messages (follow-ups in their
    /// conversations go to their queue instead) until the time given or
    /// until `switchboard rep back`.
    Away(AwayArgs),
    /// Clear an away mark.
    Back(BackArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct AwayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The rep's id (as in `[[rep]] id = …`).
    pub rep: String,
    /// Until when: `2026-12-01`, `2026-12-01T09:00` (local time), an
    /// RFC 3339 time, or a duration from now such as `3d` or `4h`.
    /// Default: until `switchboard rep back`.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// A note for colleagues (shown by `rep list`).
    #[arg(long, default_value = "")]
    pub note: String,
}

#[derive(clap::Args, Debug)]
pub struct BackArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    pub rep: String,
}

/// Output format of `log`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only events for this sender address.
    #[arg(long)]
    pub sender: Option<String>,
    /// Only events of this conversation (e.g. SB-1042).
    #[arg(long)]
    pub ticket: Option<String>,
    /// Only events assigned to this representative.
    #[arg(long)]
    pub rep: Option<String>,
    /// Only events for this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this kind of event: decided, reply_sent, deferred,
    /// reply_failed, interrupted, duplicate.
    #[arg(long)]
    pub event: Option<String>,
    /// From (inclusive): a date, a local time, RFC 3339, or a duration
    /// back from now such as `7d`.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Until (exclusive), same forms as --since.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// At most this many events (the oldest first).
    #[arg(long)]
    pub limit: Option<i64>,
    /// Output: a table for people, CSV or JSON lines for other tools.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Include the full decision evidence (JSON) in CSV/JSON output.
    #[arg(long)]
    pub evidence: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Period: a duration back from now (`7d`, `24h`) or a date.
    #[arg(long, default_value = "30d", value_name = "WHEN")]
    pub since: String,
    /// Do not connect to the mailboxes for the live open load.
    #[arg(long)]
    pub offline: bool,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct OverdueArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also list deadlines that come within this time (e.g. `2h`).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub within: String,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `switchboard overdue`: exit 0 when nothing is overdue, 1 when
/// something is (for monitoring scripts).
pub async fn overdue(a: OverdueArgs) -> anyhow::Result<ExitCode> {
    let Some((_cfg, k, store)) = open(&a.config).await? else {
        return Ok(ExitCode::from(2));
    };
    let within = switchboard::tomlread::parse_duration(&a.within)
        .ok_or_else(|| anyhow::anyhow!("--within: cannot read {:?} as a duration", a.within))?;
    let now = now_ms();
    let rows = store.deadlines(now + within.as_millis() as i64).await?;
    let late = rows.iter().filter(|r| r.due_at <= now).count();
    let state = |r: &switchboard::record::sla::DueRow| -> &'static str {
        if r.due_at > now {
            "due soon"
        } else if r.reminded_at.is_some() {
            "overdue, reminded"
        } else {
            "overdue"
        }
    };
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "ticket": r.conv.ticket,
                    "customer": r.conv.customer,
                    "subject": r.conv.subject,
                    "queue": r.conv.queue,
                    "rep": r.conv.rep,
                    "kind": r.due_kind,
                    "due_at": jiff::Timestamp::from_millisecond(r.due_at).map(|t| t.to_string()).unwrap_or_default(),
                    "overdue_minutes": (now - r.due_at).max(0) / 60_000,
                    "state": state(r),
                    "folder": r.conv.folder,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else if rows.is_empty() {
        println!("Nothing is overdue.");
    } else {
        println!(
            "{:<10} {:<12} {:<10} {:<15} {:<22} {:<18} {:<28} SUBJECT",
            "TICKET", "QUEUE", "REP", "KIND", "DUE", "STATE", "CUSTOMER"
        );
        for r in &rows {
            let rep = r
                .conv
                .rep
                .as_deref()
                .and_then(|id| k.reps.get(id).map(|x| x.id.as_str()).or(Some(id)))
                .unwrap_or("-");
            println!(
                "{:<10} {:<12} {:<10} {:<15} {:<22} {:<18} {:<28} {}",
                r.conv.ticket,
                r.conv.queue.as_deref().unwrap_or("-"),
                rep,
                r.due_kind.replace('_', " "),
                format_ms(r.due_at),
                state(r),
                switchboard::util::ellipsize(&r.conv.customer, 28),
                switchboard::util::ellipsize(&switchboard::parse::single_line(&r.conv.subject), 50)
            );
        }
        println!("{late} overdue, {} due soon", rows.len() - late);
    }
    Ok(if late > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Parses a point in time: a duration back from now (`past`) or forward
/// (`!past`), a date, a local date-time or an RFC 3339 timestamp.
pub fn parse_when(s: &str, past: bool) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Some(d) = switchboard::tomlread::parse_duration(s) {
        let ms = d.as_millis() as i64;
        return Ok(if past { now_ms() - ms } else { now_ms() + ms });
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let tz = TimeZone::system();
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return Ok(dt.to_zoned(tz)?.timestamp().as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return Ok(d.to_zoned(tz)?.timestamp().as_millisecond());
    }
    anyhow::bail!(
        "cannot read {s:?} as a time: use 2026-12-01, 2026-12-01T09:00, an RFC 3339 time or a duration such as 7d"
    )
}

async fn open(
    config: &ConfigArg,
) -> anyhow::Result<Option<(Config, std::sync::Arc<Knowledge>, Store)>> {
    let path = config.path();
    let Some((cfg, k, _)) = super::load_all(&path) else {
        return Ok(None);
    };
    let store = Store::open(&cfg.store.url)
        .await
        .with_context(|| "cannot open the state store".to_string())?;
    Ok(Some((cfg, k, store)))
}

fn unknown_rep(k: &Knowledge, id: &str) -> ExitCode {
    let known: Vec<&str> = k.reps.keys().map(String::as_str).collect();
    eprintln!(
        "switchboard: no rep with id {id:?}; known: {}",
        if known.is_empty() {
            "(none configured)".to_string()
        } else {
            known.join(", ")
        }
    );
    ExitCode::from(2)
}

pub async fn rep(cmd: RepCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RepCommand::List(a) => {
            let Some((_, k, store)) = open(&a.config).await? else {
                return Ok(ExitCode::from(2));
            };
            let now = now_ms();
            let away = store.away(now).await?;
            let notes = away_notes(&store).await?;
            println!(
                "{:<12} {:<20} {:<24} {:<28} STATUS",
                "ID", "NAME", "QUEUES", "HOURS"
            );
            for r in k.reps.values() {
                let queues: Vec<&str> = r.queues.iter().map(|q| q.0.as_str()).collect();
                let hours = match &r.hours {
                    None => "always".to_string(),
                    Some(_) => format!("{} ({})", hours_text(r), r.timezone_name),
                };
                let status = match r.availability(now, away.get(&r.id).copied(), None) {
                    Ok(()) => "available".to_string(),
                    Err(e) => e.to_string(),
                };
                let note = notes.get(&r.id).filter(|n| !n.is_empty());
                println!(
                    "{:<12} {:<20} {:<24} {:<28} {status}{}",
                    r.id,
                    r.name,
                    queues.join(","),
                    hours,
                    note.map(|n| format!(" — {n}")).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RepCommand::Away(a) => {
            let Some((_, k, store)) = open(&a.config).await? else {
                return Ok(ExitCode::from(2));
            };
            if !k.reps.contains_key(&a.rep) {
                return Ok(unknown_rep(&k, &a.rep));
            }
            let until = match &a.until {
                Some(u) => Some(parse_when(u, false)?),
                None => None,
            };
            store.set_away(&a.rep, until, &a.note, now_ms()).await?;
            store
                .audit(&AuditEvent {
                    at: now_ms(),
                    event: "rep_away".into(),
                    rep: Some(a.rep.clone()),
                    detail: match until {
                        Some(t) => format!("away until {}", format_ms(t)),
                        None => "away until further notice".into(),
                    },
                    ..empty_event()
                })
                .await?;
            match until {
                Some(t) => println!("{} is away until {}", a.rep, format_ms(t)),
                None => println!("{} is away until `switchboard rep back {}`", a.rep, a.rep),
            }
            Ok(ExitCode::SUCCESS)
        }
        RepCommand::Back(a) => {
            let Some((_, k, store)) = open(&a.config).await? else {
                return Ok(ExitCode::from(2));
            };
            if !k.reps.contains_key(&a.rep) {
                return Ok(unknown_rep(&k, &a.rep));
            }
            let was = store.clear_away(&a.rep).await?;
            store
                .audit(&AuditEvent {
                    at: now_ms(),
                    event: "rep_back".into(),
                    rep: Some(a.rep.clone()),
                    detail: "back".into(),
                    ..empty_event()
                })
                .await?;
            if was {
                println!("{} is back", a.rep);
            } else {
                println!("{} was not marked away", a.rep);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn empty_event() -> AuditEvent {
    AuditEvent {
        at: 0,
        event: String::new(),
        mailbox: None,
        message_key: None,
        message_id: None,
        sender: None,
        ticket: None,
        queue: None,
        rep: None,
        detail: String::new(),
        data: None,
    }
}

async fn away_notes(store: &Store) -> anyhow::Result<BTreeMap<String, String>> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT rep, note FROM rep_status")
        .fetch_all(store.pool())
        .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        out.insert(r.try_get("rep")?, r.try_get("note")?);
    }
    Ok(out)
}

fn hours_text(r: &switchboard::knowledge::Rep) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    r.hours
        .iter()
        .flatten()
        .map(|w| {
            let days: Vec<&str> = (0..7)
                .filter(|i| w.days & (1 << i) != 0)
                .map(|i| DAYS[i])
                .collect();
            format!(
                "{} {:02}:{:02}-{:02}:{:02}",
                days.join(","),
                w.start / 60,
                w.start % 60,
                w.end / 60,
                w.end % 60
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn log(a: LogArgs) -> anyhow::Result<ExitCode> {
    let Some((_, _, store)) = open(&a.config).await? else {
        return Ok(ExitCode::from(2));
    };
    let q = AuditQuery {
        sender: a.sender.clone(),
        ticket: a.ticket.clone(),
        rep: a.rep.clone(),
        queue: a.queue.clone(),
        event: a.event.clone(),
        since: a
            .since
            .as_deref()
            .map(|s| parse_when(s, true))
            .transpose()?,
        until: a
            .until
            .as_deref()
            .map(|s| parse_when(s, true))
            .transpose()?,
        limit: a.limit,
    };
    let events = store.audit_query(&q).await?;
    let mut out = std::io::stdout().lock();
    write_log(&mut out, &events, a.format, a.evidence)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes audit events as a table, CSV (with a header row) or JSON lines.
pub fn write_log(
    out: &mut impl std::io::Write,
    events: &[AuditEvent],
    format: Format,
    evidence: bool,
) -> anyhow::Result<()> {
    let time = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    match format {
        Format::Table => {
            writeln!(
                out,
                "{:<20} {:<12} {:<10} {:<28} {:<12} {:<10} DETAIL",
                "TIME (UTC)", "EVENT", "TICKET", "SENDER", "QUEUE", "REP"
            )?;
            for e in events {
                writeln!(
                    out,
                    "{:<20} {:<12} {:<10} {:<28} {:<12} {:<10} {}",
                    format_ms(e.at).trim_end_matches(" UTC"),
                    e.event,
                    e.ticket.as_deref().unwrap_or("-"),
                    switchboard::util::ellipsize(e.sender.as_deref().unwrap_or("-"), 28),
                    e.queue.as_deref().unwrap_or("-"),
                    e.rep.as_deref().unwrap_or("-"),
                    e.detail
                )?;
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            let mut header = vec![
                "time",
                "event",
                "mailbox",
                "message_id",
                "sender",
                "ticket",
                "queue",
                "rep",
                "detail",
            ];
            if evidence {
                header.push("evidence");
            }
            w.write_record(&header)?;
            for e in events {
                let mut row = vec![
                    time(e.at),
                    e.event.clone(),
                    e.mailbox.clone().unwrap_or_default(),
                    e.message_id.clone().unwrap_or_default(),
                    e.sender.clone().unwrap_or_default(),
                    e.ticket.clone().unwrap_or_default(),
                    e.queue.clone().unwrap_or_default(),
                    e.rep.clone().unwrap_or_default(),
                    e.detail.clone(),
                ];
                if evidence {
                    row.push(e.data.clone().unwrap_or_default());
                }
                w.write_record(
                    row.iter()
                        .map(|c| switchboard::util::csv_cell(c).into_owned()),
                )?;
            }
            w.flush()?;
        }
        Format::Json => {
            for e in events {
                let mut v = serde_json::json!({
                    "time": time(e.at),
                    "event": e.event,
                    "mailbox": e.mailbox,
                    "message_id": e.message_id,
                    "sender": e.sender,
                    "ticket": e.ticket,
                    "queue": e.queue,
                    "rep": e.rep,
                    "detail": e.detail,
                });
                if evidence {
                    v["evidence"] = e
                        .data
                        .as_deref()
                        .and_then(|d| serde_json::from_str(d).ok())
                        .unwrap_or(serde_json::Value::Null);
                }
                writeln!(out, "{v}")?;
            }
        }
    }
    Ok(())
}

pub async fn stats(a: StatsArgs) -> anyhow::Result<ExitCode> {
    let Some((cfg, k, store)) = open(&a.config).await? else {
        return Ok(ExitCode::from(2));
    };
    let since = parse_when(&a.since, true)?;
    let rows = store.routing_counts(since).await?;
    let total: i64 = rows.iter().map(|r| r.3).sum();
    let by_verdict = |v: &str| -> i64 { rows.iter().filter(|r| r.0 == v).map(|r| r.3).sum() };
    let replied = by_verdict("reply");
    let mut queues: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut reps: BTreeMap<String, i64> = BTreeMap::new();
    for (verdict, queue, rep, n) in &rows {
        if let Some(q) = queue {
            let e = queues.entry(q.clone()).or_default();
            match verdict.as_str() {
                "route" => e.0 += n,
                "escalate" => e.1 += n,
                _ => {}
            }
        }
        if let Some(r) = rep {
            *reps.entry(r.clone()).or_default() += n;
        }
    }
    // Live open load: messages now in each folder, from the first mailbox.
    let mut live: BTreeMap<String, u32> = BTreeMap::new();
    let mut live_error = None;
    if !a.offline {
        let folders: Vec<String> = k
            .queues
            .values()
            .flat_map(|q| [q.folder.clone(), q.escalation_folder.clone()])
            .chain(k.reps.values().map(|r| r.folder.clone()))
            .collect();
        match count_folders(&cfg, &folders).await {
            Ok(m) => live = m,
            Err(e) => live_error = Some(e.to_string()),
        }
    }
    let away = store.away(now_ms()).await?;
    let sla = store.sla_stats(since, now_ms()).await?;
    let drafts = store.draft_stats(since).await?;
    let draft_n = |o: &str| drafts.iter().find(|d| d.0 == o).map_or(0, |d| d.1);
    let attainment = |s: &switchboard::record::sla::SlaStats| {
        (s.with_deadline > 0).then(|| s.met as f64 / s.with_deadline as f64)
    };
    if a.json {
        let by_decision: BTreeMap<String, i64> = ["reply", "route", "escalate", "ignore", "park"]
            .iter()
            .map(|v| (v.to_string(), by_verdict(v)))
            .collect();
        let queue_rows: Vec<serde_json::Value> = k
            .queues
            .values()
            .map(|q| {
                serde_json::json!({
                    "name": q.name,
                    "strategy": q.strategy.as_str(),
                    "routed": queues.get(&q.name).map_or(0, |e| e.0),
                    "escalated": queues.get(&q.name).map_or(0, |e| e.1),
                    "open_shared": live.get(&q.folder),
                    "open_escalated": live.get(&q.escalation_folder),
                })
            })
            .collect();
        let rep_rows: Vec<serde_json::Value> = k.reps.values().map(|r| serde_json::json!({
                "id": r.id,
                "assigned": reps.get(&r.id).copied().unwrap_or(0),
                "open": live.get(&r.folder),
                "available": r.availability(now_ms(), away.get(&r.id).copied(), live.get(&r.folder).copied()).is_ok(),
            })).collect();
        let v = serde_json::json!({
            "since": jiff::Timestamp::from_millisecond(since).map(|t| t.to_string()).unwrap_or_default(),
            "messages": total,
            "by_decision": by_decision,
            "answered_automatically": if total > 0 { replied as f64 / total as f64 } else { 0.0 },
            "queues": queue_rows,
            "reps": rep_rows,
            "service_levels": sla.iter().map(|s| serde_json::json!({
                "queue": s.queue,
                "conversations_with_deadline": s.with_deadline,
                "first_response_in_time": s.met,
                "attainment": attainment(s),
                "breaches": s.breaches,
                "overdue_now": s.overdue,
            })).collect::<Vec<_>>(),
            "drafts": {
                "written": drafts.iter().map(|d| d.1).sum::<i64>(),
                "sent_unchanged": draft_n("sent_unchanged"),
                "edited": draft_n("edited"),
                "not_used": draft_n("not_used"),
                "open": draft_n("open"),
            },
            "live_error": live_error,
        });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let pct = |n: i64| {
        if total > 0 {
            format!("{:.1}%", 100.0 * n as f64 / total as f64)
        } else {
            "-".into()
        }
    };
    println!("Since {}: {total} message(s)", format_ms(since));
    for v in ["reply", "route", "escalate", "ignore", "park"] {
        let n = by_verdict(v);
        println!("  {v:<9} {n:>7}  {}", pct(n));
    }
    println!("Answered automatically: {}", pct(replied));
    let open = |f: &str| {
        live.get(f)
            .map_or_else(|| "?".to_string(), |n| n.to_string())
    };
    println!();
    println!(
        "{:<14} {:<13} {:>7} {:>9} {:>12} {:>14}",
        "QUEUE", "STRATEGY", "ROUTED", "ESCALATED", "OPEN SHARED", "OPEN ESCALATED"
    );
    for q in k.queues.values() {
        let (r, e) = queues.get(&q.name).copied().unwrap_or_default();
        println!(
            "{:<14} {:<13} {r:>7} {e:>9} {:>12} {:>14}",
            q.name,
            q.strategy.as_str(),
            open(&q.folder),
            open(&q.escalation_folder)
        );
    }
    if !drafts.is_empty() {
        println!(
            "Drafts for people: {} written — {} sent unchanged, {} edited, {} not used, {} open",
            drafts.iter().map(|d| d.1).sum::<i64>(),
            draft_n("sent_unchanged"),
            draft_n("edited"),
            draft_n("not_used"),
            draft_n("open")
        );
    }
    if !sla.is_empty() {
        println!();
        println!(
            "{:<14} {:>10} {:>12} {:>11} {:>9} {:>8}",
            "SERVICE LEVEL", "DEADLINES", "ANSWERED IN", "ATTAINMENT", "BREACHES", "OVERDUE"
        );
        for s in &sla {
            println!(
                "{:<14} {:>10} {:>12} {:>11} {:>9} {:>8}",
                if s.queue.is_empty() { "-" } else { &s.queue },
                s.with_deadline,
                s.met,
                attainment(s).map_or_else(|| "-".into(), |a| format!("{:.1}%", 100.0 * a)),
                s.breaches,
                s.overdue
            );
        }
    }
    if !k.reps.is_empty() {
        println!();
        println!(
            "{:<12} {:<20} {:>9} {:>6}  STATUS",
            "REP", "NAME", "ASSIGNED", "OPEN"
        );
        for r in k.reps.values() {
            let status = match r.availability(
                now_ms(),
                away.get(&r.id).copied(),
                live.get(&r.folder).copied(),
            ) {
                Ok(()) => "available".to_string(),
                Err(e) => e.to_string(),
            };
            println!(
                "{:<12} {:<20} {:>9} {:>6}  {status}",
                r.id,
                r.name,
                reps.get(&r.id).copied().unwrap_or(0),
                open(&r.folder)
            );
        }
    }
    if let Some(e) = live_error {
        println!();
        println!("(open counts unavailable: {e})");
    }
    Ok(ExitCode::SUCCESS)
}

/// Messages now in each folder of the first configured mailbox.
pub(super) async fn count_folders(
    cfg: &Config,
    folders: &[String],
) -> anyhow::Result<BTreeMap<String, u32>> {
    let Some(mb) = cfg.mailboxes.first() else {
        anyhow::bail!("no mailbox configured");
    };
    let mut out = BTreeMap::new();
    match &mb.kind {
        MailboxKind::Maildir { path } => {
            let mut src = Maildir::open(path)?;
            for f in folders {
                out.insert(f.clone(), src.count(f).await?);
            }
        }
        MailboxKind::Imap(icfg) => {
            let mut imap = Imap::connect(icfg).await?;
            for f in folders {
                out.insert(f.clone(), imap.count(f).await?);
            }
            imap.logout().await;
        }
    }
    Ok(out)
}
