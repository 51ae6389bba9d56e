//! Which mailboxes this instance works: the lease manager.
//!
//! Every instance on a store registers itself and beats every third of
//! `[daemon] lease_ttl`. On each beat it renews the leases it holds,
//! hands over those above its fair share (⌈mailboxes / live instances⌉,
//! so leases spread evenly when an instance joins) and claims free ones
//! up to that share (so the mailboxes of an instance that died are taken
//! over once its leases expire). A lease that cannot be renewed in time
//! is given up locally before it can expire in the store, and every store
//! write for a mailbox is fenced by its token (`record::lease`): there is
//! never a moment where two instances may both write for one mailbox.
//!
//! With one instance (SQLite's default, or a single PostgreSQL instance)
//! this is one claim per mailbox at start and one small write per beat.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tracing::{info, warn};

use super::health::Health;
use crate::record::lease::{Fence, Instance};
use crate::record::{Store, StoreError};

/// What the daemon has to do after a beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Start working this mailbox (its store handle carries the fence).
    Acquired(Fence),
    /// Stop at once: the lease is lost (or could not be renewed in time).
    Lost(String),
    /// Stop after the batch in flight, then give the lease up
    /// ([`Leases::finished`]): another instance takes the mailbox over.
    HandOver(String),
}

struct Held {
    fence: Fence,
    /// When the last successful renewal was *sent*: the lease lasts at
    /// least until this + ttl in the store.
    renewed: Instant,
    handing_over: bool,
}

/// The lease manager of one instance.
pub struct Leases {
    store: Store,
    me: Instance,
    ttl: Duration,
    mailboxes: Vec<String>,
    held: HashMap<String, Held>,
    health: Health,
    /// The last beat failed (logged once until it works again).
    failing: bool,
    /// Boot id and PID namespace are known, so another instance's pid on
    /// this host can be checked.
    local_known: bool,
}

impl Leases {
    /// Registers this instance. With SQLite (one instance per file, held
    /// by the instance lock) every earlier holder is gone: their leases
    /// are expired at once instead of after their ttl.
    pub async fn start(
        store: &Store,
        name: Option<&str>,
        mailboxes: Vec<String>,
        ttl: Duration,
        health: Health,
    ) -> Result<Leases, StoreError> {
        let host_name = host_name();
        let (boot, ns) = (boot_id(), pid_namespace());
        let local_known = !boot.is_empty() && !ns.is_empty();
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| host_name.clone());
        let me = Instance {
            id: format!(
                "{name}/{}/{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            name,
            // Host name, boot and PID namespace: instances with the same
            // three see each other's processes (containers on one host
            // share the boot id but not the PID namespace). Empty when
            // unknown: then nobody is declared dead by pid.
            host: format!("{host_name} {boot} {ns}"),
            pid: i64::from(std::process::id()),
        };
        store.register_instance(&me).await?;
        if store.is_sqlite() {
            for l in store.leases().await? {
                if l.holder != me.id {
                    store.expire_leases_of(&l.holder).await?;
                }
            }
        }
        Ok(Leases {
            store: store.clone(),
            me,
            ttl,
            mailboxes,
            held: HashMap::new(),
            health,
            failing: false,
            local_known,
        })
    }

    /// This instance's registration.
    pub fn instance(&self) -> &Instance {
        &self.me
    }

    /// How often [`Leases::beat`] should run.
    pub fn every(&self) -> Duration {
        self.ttl / 3
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }

    /// One heartbeat. `claim_all`: claim every free mailbox whatever the
    /// fair share (`run --once`); `stopping`: renew only; `busy`:
    /// mailboxes whose task has not ended yet (or that `--once` already
    /// did), which are not claimed. A beat lasts at most a heartbeat
    /// interval, whatever the store does.
    pub async fn beat(
        &mut self,
        claim_all: bool,
        stopping: bool,
        busy: &HashSet<String>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let every = self.every();
        let result = tokio::time::timeout(
            every,
            self.try_beat(claim_all, stopping, busy, &mut changes),
        )
        .await;
        match result {
            Ok(Ok(())) => {
                if self.failing {
                    info!(instance = %self.me.name, "lease heartbeat works again");
                    self.failing = false;
                }
            }
            Ok(Err(e)) => {
                if !self.failing {
                    warn!(instance = %self.me.name, "lease heartbeat failed: {e}; retrying");
                    self.failing = true;
                }
            }
            Err(_) => {
                if !self.failing {
                    warn!(instance = %self.me.name, "lease heartbeat took longer than {every:?}; retrying");
                    self.failing = true;
                }
            }
        }
        // A lease that the next beat might renew too late is given up
        // now, at least a heartbeat before the store can let another
        // instance claim it.
        let margin = self.ttl / 6;
        let late: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.renewed.elapsed() + every + margin >= self.ttl)
            .map(|(m, _)| m.clone())
            .collect();
        for m in late {
            warn!(mailbox = %m, instance = %self.me.name, "lease could not be renewed in time; stopping work on this mailbox");
            self.drop_lease(&m, "expired");
            changes.push(Change::Lost(m));
        }
        changes
    }

    async fn try_beat(
        &mut self,
        claim_all: bool,
        stopping: bool,
        busy: &HashSet<String>,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        let ttl = self.ttl_ms();
        let live = self.store.heartbeat(&self.me, ttl).await?;
        // Renew what is held.
        let names: Vec<String> = self.held.keys().cloned().collect();
        for m in names {
            let sent = Instant::now();
            let Some(h) = self.held.get(&m) else { continue };
            if self.store.renew_lease(&h.fence, ttl).await? {
                if let Some(h) = self.held.get_mut(&m) {
                    h.renewed = sent;
                }
            } else {
                warn!(mailbox = %m, instance = %self.me.name, "lease lost to another instance; stopping work on this mailbox");
                self.drop_lease(&m, "lost");
                changes.push(Change::Lost(m));
            }
        }
        if stopping {
            return Ok(());
        }
        let fair = if claim_all {
            self.mailboxes.len()
        } else {
            self.mailboxes.len().div_ceil(live)
        };
        let keeping = self.held.values().filter(|h| !h.handing_over).count();
        if keeping > fair {
            // Hand the excess over (an instance joined).
            let mut mine: Vec<String> = self
                .held
                .iter()
                .filter(|(_, h)| !h.handing_over)
                .map(|(m, _)| m.clone())
                .collect();
            mine.sort();
            mine.shuffle(&mut rand::rng());
            for m in mine.into_iter().take(keeping - fair) {
                if let Some(h) = self.held.get_mut(&m) {
                    h.handing_over = true;
                }
                info!(mailbox = %m, instance = %self.me.name, live, fair, "handing the mailbox over to another instance");
                changes.push(Change::HandOver(m));
            }
            return Ok(());
        }
        if self.held.len() >= fair {
            return Ok(());
        }
        self.reap_dead_local().await?;
        let live_leases: HashSet<String> = self
            .store
            .leases()
            .await?
            .into_iter()
            .filter(|l| l.live())
            .map(|l| l.mailbox)
            .collect();
        let mut free: Vec<String> = self
            .mailboxes
            .iter()
            .filter(|m| {
                !self.held.contains_key(*m) && !live_leases.contains(*m) && !busy.contains(*m)
            })
            .cloned()
            .collect();
        free.shuffle(&mut rand::rng());
        for m in free {
            if self.held.len() >= fair {
                break;
            }
            let sent = Instant::now();
            if let Some(token) = self.store.claim_lease(&m, &self.me.id, ttl).await? {
                let fence = Fence {
                    mailbox: m.clone(),
                    holder: self.me.id.clone(),
                    token,
                };
                info!(mailbox = %m, instance = %self.me.name, token, "lease acquired");
                metrics::counter!("switchboard_lease_changes_total", "mailbox" => m.clone(), "change" => "acquired")
                    .increment(1);
                self.health.lease(&m, &self.me.name, true);
                self.held.insert(
                    m,
                    Held {
                        fence: fence.clone(),
                        renewed: sent,
                        handing_over: false,
                    },
                );
                changes.push(Change::Acquired(fence));
            }
        }
        Ok(())
    }

    /// Expires the leases of instances on this host whose process is gone
    /// (a restart after a crash takes its mailboxes back at once).
    async fn reap_dead_local(&self) -> Result<(), StoreError> {
        for row in self.store.instances().await? {
            let i = row.instance;
            if i.id != self.me.id && i.host == self.me.host && self.local_known && !pid_alive(i.pid)
            {
                let n = self.store.expire_leases_of(&i.id).await?;
                self.store.deregister_instance(&i.id).await?;
                if n > 0 {
                    info!(instance = %i.name, pid = i.pid, leases = n, "an earlier instance on this host is gone: its leases are free");
                }
            }
        }
        Ok(())
    }

    fn drop_lease(&mut self, m: &str, change: &'static str) {
        if self.held.remove(m).is_some() {
            metrics::counter!("switchboard_lease_changes_total", "mailbox" => m.to_string(), "change" => change)
                .increment(1);
            self.health.lease(m, &self.me.name, false);
        }
    }

    /// The task of mailbox `m`, started with lease `token`, ended: give
    /// that lease up (hand-over, a finished `--once` run, or a task that
    /// stopped because its writes were fenced off). Other instances claim
    /// it at their next beat. A newer lease on the mailbox is kept.
    pub async fn finished(&mut self, m: &str, token: i64) {
        let Some(h) = self.held.get(m) else { return };
        if h.fence.token != token {
            return;
        }
        match self.store.release_lease(&h.fence).await {
            Ok(true) => info!(mailbox = %m, instance = %self.me.name, "lease released"),
            Ok(false) => {}
            // It expires by itself.
            Err(e) => warn!(mailbox = %m, "cannot release the lease: {e}"),
        }
        self.drop_lease(m, "released");
    }

    /// Clean shutdown (after every task ended): gives every lease up and
    /// removes the registration, so the other instances take over at once.
    pub async fn shutdown(&mut self) {
        let held: Vec<(String, i64)> = self
            .held
            .iter()
            .map(|(m, h)| (m.clone(), h.fence.token))
            .collect();
        for (m, token) in held {
            self.finished(&m, token).await;
        }
        if let Err(e) = self.store.deregister_instance(&self.me.id).await {
            warn!("cannot deregister this instance: {e}");
        }
    }

    /// Mailboxes held right now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Distinguishes boots (and machines that share a host name).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default()
}

/// The PID namespace of this process (`pid:[4026531836]`), or "".
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
