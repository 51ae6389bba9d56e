//! `switchboard run`.

use std::process::ExitCode;
use std::sync::Arc;

use switchboard::act::outbox::Outbox;
use switchboard::pipeline::Pipeline;
use switchboard::record::Store;
use tracing::{error, info};

use super::ConfigArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Process the backlog of every mailbox, then exit.
    #[arg(long)]
    pub once: bool,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("info");
    let path = a.config.path();
    let Some((cfg, k, warnings)) = super::load_all(&path) else {
        return Ok(ExitCode::from(2));
    };
    for w in warnings.iter() {
        tracing::warn!("{w}");
    }
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
    let (ktx, krx) = tokio::sync::watch::channel(Arc::clone(&k));
    let (stx, srx) = tokio::sync::watch::channel(false);
    let pipeline = Pipeline {
        store: store.clone(),
        outbox,
        retry_initial: cfg.daemon.retry_initial,
        retry_max: cfg.daemon.retry_max,
    };
    let signals = tokio::spawn(signal_loop(path.clone(), ktx, stx));
    let filed = switchboard::daemon::run(cfg, krx, pipeline, srx, a.once).await;
    signals.abort();
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

/// SIGTERM/SIGINT: stop; SIGHUP: reload the knowledge.
async fn signal_loop(
    path: std::path::PathBuf,
    knowledge: tokio::sync::watch::Sender<Arc<switchboard::knowledge::Knowledge>>,
    shutdown: tokio::sync::watch::Sender<bool>,
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
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: finishing the messages in flight"); let _ = shutdown.send(true); return; }
            _ = int.recv() => { info!("SIGINT: finishing the messages in flight"); let _ = shutdown.send(true); return; }
            _ = hup.recv() => {
                info!("SIGHUP: reloading rules, FAQ and templates");
                match switchboard::config::Config::load(&path) {
                    Err(d) => { for x in d.sorted() { error!("{x}"); } error!("reload failed: keeping the previous rules"); }
                    Ok((cfg, _)) => match switchboard::knowledge::Knowledge::load(&cfg) {
                        Ok((k, w)) => {
                            for x in w.iter() { tracing::warn!("{x}"); }
                            info!("reloaded: {}", switchboard::demo::describe_knowledge(&k));
                            let _ = knowledge.send(k);
                        }
                        Err(d) => { for x in d.sorted() { error!("{x}"); } error!("reload failed: keeping the previous rules"); }
                    }
                }
            }
        }
    }
}
