//! `switchboard run`: the daemon, with systemd integration (sd_notify
//! READY/RELOADING/STOPPING/WATCHDOG/STATUS), Prometheus metrics, a status
//! file for `switchboard status`, and reloads on SIGHUP or file changes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use switchboard::act::outbox::Outbox;
use switchboard::daemon::health::{Health, notify};
use switchboard::knowledge::Knowledge;
use switchboard::pipeline::Pipeline;
use switchboard::record::Store;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::ConfigArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Process the backlog of every mailbox, then exit.
    #[arg(long)]
    pub once: bool,
    /// This instance's name among the instances sharing a store (shown by
    /// `switchboard status`); overrides `[daemon] instance`, whose default
    /// is the host name.
    #[arg(long, env = "SWITCHBOARD_INSTANCE", value_name = "NAME")]
    pub instance: Option<String>,
}

/// How long to wait for every mailbox's first connection before telling
/// systemd we are ready anyway (a mailbox that is down must not keep the
/// service from starting; it shows in STATUS= and `switchboard status`).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often STATUS= and the status file are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(10);

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("info");
    let path = a.config.path();
    // The IMAP servers are connected to while the rules and the FAQ load
    // (a server's first SELECT of a large inbox takes a while).
    let mut early = switchboard::daemon::Early::new();
    let Some((mut cfg, k, warnings)) = super::load_all_then(&path, |cfg| {
        early = switchboard::daemon::connect_early(cfg);
    }) else {
        return Ok(ExitCode::from(2));
    };
    if let Some(name) = a.instance.as_deref().map(str::trim) {
        if name.is_empty() || name.len() > 64 || name.contains('/') {
            error!("--instance must be a short name (1 to 64 characters, no `/`)");
            return Ok(ExitCode::from(2));
        }
        cfg.daemon.instance = Some(name.to_string());
    }
    for w in warnings.iter() {
        warn!("{w}");
    }
    if let Some(addr) = cfg.daemon.metrics_listen
        && !a.once
    {
        let built = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("switchboard_classify_seconds".into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("switchboard_lookup_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0,
                    ],
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "switchboard_wake_to_filed_seconds".into(),
                    ),
                    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                )
            })
            .and_then(|b| b.install());
        match built {
            Ok(()) => info!("metrics on http://{addr}/metrics"),
            Err(e) => {
                error!("cannot serve metrics on {addr}: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    // One daemon per SQLite file; held until the process ends.
    let _instance = match switchboard::record::lock::sqlite_file(&cfg.store.url) {
        Some(db) => match switchboard::record::lock::InstanceLock::acquire(&db) {
            Ok(l) => Some(l),
            Err(e) => {
                error!("{e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    let store = Store::open(&cfg.store.url).await?;
    let outbox = Outbox::open(&cfg.outbound)
        .await
        .map_err(anyhow::Error::msg)?;
    info!(
        "switchboard {} starting: {}, {} mailbox(es), replies via {}",
        env!("CARGO_PKG_VERSION"),
        switchboard::demo::describe_knowledge(&k),
        cfg.mailboxes.len(),
        outbox.describe()
    );
    let health = Health::new(
        cfg.mailboxes.iter().map(|m| m.name.clone()),
        (!a.once).then(|| switchboard::daemon::health::status_path(&cfg)),
    );
    health.reloaded(true, Vec::new());
    let (ktx, krx) = watch::channel(Arc::clone(&k));
    let (stx, srx) = watch::channel(false);
    let pipeline = Pipeline {
        store: store.clone(),
        outbox,
        retry_initial: cfg.daemon.retry_initial,
        retry_max: cfg.daemon.retry_max,
        clock: switchboard::pipeline::system_clock(),
    };
    // File changes under rules/ and templates/ trigger the same reload as
    // SIGHUP (debounced: editors save by writing a temporary file and
    // renaming it).
    let (rtx, rrx) = mpsc::unbounded_channel::<&'static str>();
    let _watcher = if cfg.daemon.watch && !a.once {
        let mut dirs: Vec<&Path> = vec![&cfg.rules_dir, &cfg.faq_dir, &cfg.templates_dir];
        dirs.extend(cfg.extra_rules_dirs.iter().map(PathBuf::as_path));
        dirs.extend(cfg.extra_templates_dirs.iter().map(PathBuf::as_path));
        watch_files(&dirs, rtx.clone())
    } else {
        None
    };
    let signals = tokio::spawn(control_loop(
        path.clone(),
        ktx,
        stx,
        rtx,
        rrx,
        health.clone(),
    ));
    let reporter = (!a.once).then(|| tokio::spawn(report_loop(health.clone())));
    let watchdog = spawn_watchdog();
    let filed =
        switchboard::daemon::run(cfg, krx, pipeline, srx, a.once, health.clone(), early).await;
    notify(&[NotifyState::Stopping]);
    signals.abort();
    if let Some(r) = reporter {
        r.abort();
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    health.stopped();
    health.write_file();
    store.close().await;
    match filed {
        Ok(s) if s.failed.is_empty() => {
            info!(filed = s.filed, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        Ok(s) => {
            error!(
                filed = s.filed,
                "stopped; failed mailboxes: {}",
                s.failed.join(", ")
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            error!("{e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// READY=1 once every mailbox has connected (or after READY_TIMEOUT),
/// then STATUS= and the status file every few seconds.
async fn report_loop(health: Health) {
    let start = tokio::time::Instant::now();
    while !health.all_connected_once() && start.elapsed() < READY_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !health.all_connected_once() {
        warn!(
            "not every mailbox is connected after {}s; ready anyway: {}",
            READY_TIMEOUT.as_secs(),
            health.status_line()
        );
    }
    let line = health.status_line();
    notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
    info!("ready: {line}");
    loop {
        health.write_file();
        let line = health.status_line();
        notify(&[NotifyState::Status(&line)]);
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

/// Pings systemd's watchdog at half its interval, from the runtime that
/// runs the mailboxes (a stuck runtime stops the pings).
fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    // As sd_watchdog_enabled(3): WATCHDOG_USEC set, and WATCHDOG_PID (when
    // set) is this process.
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    if usec == 0 {
        return None;
    }
    let every = Duration::from_micros(usec / 2);
    Some(tokio::spawn(async move {
        loop {
            notify(&[NotifyState::Watchdog]);
            tokio::time::sleep(every).await;
        }
    }))
}

fn watch_files(
    dirs: &[&Path],
    tx: mpsc::UnboundedSender<&'static str>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut w = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !ev.kind.is_access()
            && ev.paths.iter().any(|p| !is_scratch(p))
        {
            let _ = tx.send("files changed");
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!("cannot watch the rules and templates for changes: {e}; use SIGHUP to reload");
            return None;
        }
    };
    for d in dirs {
        if d.exists()
            && let Err(e) = w.watch(d, RecursiveMode::Recursive)
        {
            warn!("cannot watch {}: {e}", d.display());
        }
    }
    info!("watching rules, FAQ and templates for changes");
    Some(w)
}

/// Editor scratch files (swap files, backups) do not trigger a reload.
fn is_scratch(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".tmp")
}

/// SIGTERM/SIGINT: stop; SIGHUP or a file change: reload the knowledge.
async fn control_loop(
    path: PathBuf,
    knowledge: watch::Sender<Arc<Knowledge>>,
    shutdown: watch::Sender<bool>,
    _keep: mpsc::UnboundedSender<&'static str>,
    mut reloads: mpsc::UnboundedReceiver<&'static str>,
    health: Health,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        let why = tokio::select! {
            _ = term.recv() => { info!("SIGTERM: finishing the messages in flight"); notify(&[NotifyState::Stopping]); let _ = shutdown.send(true); return; }
            _ = int.recv() => { info!("SIGINT: finishing the messages in flight"); notify(&[NotifyState::Stopping]); let _ = shutdown.send(true); return; }
            _ = hup.recv() => "SIGHUP",
            Some(w) = reloads.recv() => {
                // Debounce: wait for the burst of events to end.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(400), reloads.recv()).await
                {}
                w
            }
        };
        reload(&path, &knowledge, &health, why);
    }
}

fn reload(path: &Path, knowledge: &watch::Sender<Arc<Knowledge>>, health: &Health, why: &str) {
    info!("{why}: reloading rules, FAQ and templates");
    let mut states = vec![NotifyState::Reloading];
    if let Ok(m) = NotifyState::monotonic_usec_now() {
        states.push(m);
    }
    notify(&states);
    let result = switchboard::config::Config::load(path).and_then(|(cfg, _)| Knowledge::load(&cfg));
    match result {
        Ok((k, w)) => {
            for x in w.iter() {
                warn!("{x}");
            }
            info!("reloaded: {}", switchboard::demo::describe_knowledge(&k));
            let _ = knowledge.send(k);
            health.reloaded(true, Vec::new());
        }
        Err(d) => {
            let problems: Vec<String> = d.sorted().iter().map(|x| x.to_string()).collect();
            for x in &problems {
                error!("{x}");
            }
            error!("reload failed: keeping the previous rules");
            health.reloaded(false, problems);
        }
    }
    let line = health.status_line();
    notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
    health.write_file();
}
