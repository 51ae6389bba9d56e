//! `switchboard status`: what the running daemon reports about itself.

use std::process::ExitCode;

use switchboard::daemon::health::{Snapshot, status_path};
use switchboard::util::{format_ms, now_ms};

use super::ConfigArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Do not connect to the mailbox to count the messages waiting in
    /// each queue and representative folder.
    #[arg(long)]
    pub offline: bool,
    /// Print the raw status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The daemon refreshes the file every 10 s; older than this means it is
/// not running (or stuck).
const STALE_MS: i64 = 60_000;

/// Exit codes: 0 all mailboxes up, 1 a mailbox is down or the last reload
/// failed, 3 the daemon is not running.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let path = a.config.path();
    // Only the config is needed: the rules may be broken right now (the
    // daemon then runs the previous ones, which is what status shows).
    let Some(cfg) = super::load_config(&path) else {
        return Ok(ExitCode::from(2));
    };
    let k = switchboard::knowledge::Knowledge::load(&cfg)
        .ok()
        .map(|(k, _)| k);
    // Under systemd the daemon writes into $STATE_DIRECTORY, which a shell
    // does not have: look there too, and take the newest.
    let mut candidates = vec![status_path(&cfg)];
    candidates.push(std::path::PathBuf::from("/var/lib/switchboard/status.json"));
    let newest = candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p.clone());
    let file = newest.unwrap_or_else(|| candidates[0].clone());
    let snap: Option<Snapshot> = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(snap) = snap else {
        println!(
            "not running: no status at {} (the daemon writes it while `switchboard run` runs)",
            file.display()
        );
        return Ok(ExitCode::from(3));
    };
    let now = now_ms();
    let stale = snap.stopped.is_some() || now - snap.updated > STALE_MS;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        if stale {
            println!(
                "NOT RUNNING (last status {} from pid {})",
                format_ms(snap.updated),
                snap.pid
            );
        } else {
            println!(
                "running: pid {}, version {}, up since {}",
                snap.pid,
                snap.version,
                format_ms(snap.started)
            );
        }
        if let Some(r) = &snap.last_reload {
            if r.ok {
                println!("rules: loaded {}", format_ms(r.at));
            } else {
                println!(
                    "rules: LAST RELOAD FAILED at {} — running the previous rules:",
                    format_ms(r.at)
                );
                for p in &r.problems {
                    println!("  {p}");
                }
            }
        }
        println!("auto-replies sent since start: {}", snap.replies_sent);
        println!();
        println!(
            "{:<16} {:<10} {:<22} {:>8} {:>8}  LAST ERROR",
            "MAILBOX", "STATE", "LAST CHECK", "BACKLOG", "HANDLED"
        );
        for (name, m) in &snap.mailboxes {
            let state = if !m.held {
                "elsewhere"
            } else if m.connected {
                "connected"
            } else {
                "DOWN"
            };
            let last = m
                .last_check
                .map(format_ms)
                .unwrap_or_else(|| "never".into());
            let err = match (&m.last_error, m.last_error_at) {
                (Some(e), Some(t)) => format!("{} ({})", e, format_ms(t)),
                _ => "-".into(),
            };
            println!(
                "{name:<16} {state:<10} {last:<22} {:>8} {:>8}  {err}",
                m.backlog, m.handled
            );
        }
        print_leases(&cfg.store.url).await;
        if let (false, Some(k)) = (a.offline, &k) {
            let folders: Vec<String> = k
                .queues
                .values()
                .flat_map(|q| [q.folder.clone(), q.escalation_folder.clone()])
                .chain(k.reps.values().map(|r| r.folder.clone()))
                .collect();
            match super::team::count_folders(&cfg, &folders).await {
                Ok(live) => {
                    println!();
                    println!(
                        "{:<14} {:>8} {:>10}  MEMBERS (open)",
                        "QUEUE", "SHARED", "ESCALATED"
                    );
                    for q in k.queues.values() {
                        let members: Vec<String> = q
                            .members
                            .iter()
                            .filter_map(|m| k.reps.get(m))
                            .map(|r| {
                                format!("{} ({})", r.id, live.get(&r.folder).copied().unwrap_or(0))
                            })
                            .collect();
                        println!(
                            "{:<14} {:>8} {:>10}  {}",
                            q.name,
                            live.get(&q.folder).copied().unwrap_or(0),
                            live.get(&q.escalation_folder).copied().unwrap_or(0),
                            members.join(", ")
                        );
                    }
                }
                Err(e) => println!("\n(queue load unavailable: {e})"),
            }
        }
    }
    let bad = snap.mailboxes.values().any(|m| m.held && !m.connected)
        || snap.last_reload.as_ref().is_some_and(|r| !r.ok);
    Ok(if stale {
        ExitCode::from(3)
    } else if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Which instance works which mailbox, from the store's lease table.
async fn print_leases(url: &str) {
    let store = match switchboard::record::Store::open(url).await {
        Ok(s) => s,
        Err(e) => {
            println!("\n(leases unavailable: {e})");
            return;
        }
    };
    let (leases, instances) = match (store.leases().await, store.instances().await) {
        (Ok(l), Ok(i)) => (l, i),
        (Err(e), _) | (_, Err(e)) => {
            println!("\n(leases unavailable: {e})");
            store.close().await;
            return;
        }
    };
    // Service levels of the last 30 days, where queues have them.
    let now = now_ms();
    if let Ok(sla) = store.sla_stats(now - 30 * 86_400_000, now).await
        && !sla.is_empty()
    {
        let with: i64 = sla.iter().map(|s| s.with_deadline).sum();
        let met: i64 = sla.iter().map(|s| s.met).sum();
        let overdue: i64 = sla.iter().map(|s| s.overdue).sum();
        let breaches: i64 = sla.iter().map(|s| s.breaches).sum();
        let in_time = if with > 0 {
            format!(
                "{:.1}% of first responses in time ({met}/{with}), ",
                100.0 * met as f64 / with as f64
            )
        } else {
            String::new()
        };
        println!(
            "service levels (30 days): {in_time}{breaches} deadline(s) missed, {overdue} overdue now{}",
            if overdue > 0 {
                " (switchboard overdue lists them)"
            } else {
                ""
            }
        );
    }
    store.close().await;
    println!();
    println!(
        "{:<16} {:<28} {:<22} {:>8}  EXPIRES",
        "LEASE", "HELD BY", "SINCE", "TOKEN"
    );
    for l in &leases {
        let who = match (&l.holder_name, l.holder_pid) {
            (Some(n), Some(p)) => format!("{n} (pid {p})"),
            _ => l.holder.clone(),
        };
        if l.live() {
            println!(
                "{:<16} {:<28} {:<22} {:>8}  in {}s",
                l.mailbox,
                who,
                format_ms(l.acquired_at),
                l.token,
                (l.expires_at - l.now).max(0) / 1000
            );
        } else {
            println!(
                "{:<16} {:<28} {:<22} {:>8}  free (released or expired)",
                l.mailbox, "-", "-", l.token
            );
        }
    }
    let now = leases.first().map_or_else(now_ms, |l| l.now);
    let live: Vec<String> = instances
        .iter()
        .map(|i| {
            format!(
                "{} (pid {}, seen {}s ago)",
                i.instance.name,
                i.instance.pid,
                (now - i.seen_at).max(0) / 1000
            )
        })
        .collect();
    if !live.is_empty() {
        println!("instances: {}", live.join(", "));
    }
}
