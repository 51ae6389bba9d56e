//! `switchboard demo`.

use std::process::ExitCode;
use std::sync::Arc;

use switchboard::act::outbox::Outbox;
use switchboard::config::MailboxKind;
use switchboard::daemon::{self, Shared};
use switchboard::demo::{Row, table};
use switchboard::fetch::maildir::Maildir;
use switchboard::pipeline::Pipeline;
use switchboard::record::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to run the demo in (default: a new directory under /tmp,
    /// kept so you can look at the replies and folders afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// Print one JSON object per message instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("warn");
    let root = match a.dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("switchboard-demo-")
            .tempdir()?
            .keep(),
    };
    let config = switchboard::demo::extract(&root)?;
    let Some((cfg, k, warnings)) = super::load_all(&config) else {
        return Ok(ExitCode::from(2));
    };
    eprint!("{warnings}");
    let store = Store::open(&cfg.store.url).await?;
    let outbox = Outbox::open(&cfg.outbound)
        .await
        .map_err(anyhow::Error::msg)?;
    let (_ktx, krx) = tokio::sync::watch::channel(Arc::clone(&k));
    let (_stx, srx) = tokio::sync::watch::channel(false);
    let shared = Shared {
        pipeline: Pipeline {
            store: store.clone(),
            outbox,
            retry_initial: cfg.daemon.retry_initial,
            retry_max: cfg.daemon.retry_max,
            clock: switchboard::pipeline::system_clock(),
        },
        knowledge: krx,
        shutdown: srx,
        max_size: cfg.limits.max_message_size,
        batch_size: 100,
        file_every: switchboard::daemon::FILE_EVERY,
        health: Default::default(),
        sla_check: std::time::Duration::from_secs(30),
    };
    let mut rows = Vec::new();
    let mut maildirs = Vec::new();
    for mb in &cfg.mailboxes {
        let MailboxKind::Maildir { path } = &mb.kind else {
            continue;
        };
        let mut src = Maildir::open(path)?;
        let outcomes = daemon::drain(&mut src, &shared, &daemon::mailbox_info(mb)).await?;
        for o in outcomes {
            if a.json {
                println!("{}", serde_json::to_string(&o)?);
                continue;
            }
            let decision = match (&o.decision, o.folder.as_deref()) {
                (Some(d), _) if d.verdict.kind() == "reply" => {
                    format!(
                        "reply {}",
                        d.verdict
                            .template()
                            .unwrap_or_default()
                            .trim_start_matches("faq/")
                    )
                }
                (Some(d), Some(f)) => format!("{} → {f}", d.verdict.kind()),
                (_, Some(f)) => format!("{} → {f}", o.verdict),
                _ => o.verdict.clone(),
            };
            rows.push(Row {
                n: rows.len() + 1,
                from: if o.from.is_empty() {
                    "(unknown)".into()
                } else {
                    o.from.clone()
                },
                subject: o.subject.clone(),
                decision,
                why: o.why.clone(),
            });
        }
        maildirs.push(src);
    }
    if !a.json {
        print!("{}", table(&rows));
        let count = |kind: &str| rows.iter().filter(|r| r.decision.starts_with(kind)).count();
        println!(
            "\n{} messages: {} answered automatically, {} routed, {} escalated, {} ignored, {} parked.",
            rows.len(),
            count("reply"),
            count("route"),
            count("escalate"),
            count("ignore"),
            count("park")
        );
        let outbox_dir = match &cfg.outbound {
            switchboard::config::OutboundConfig::File { dir } => dir.display().to_string(),
            _ => String::new(),
        };
        println!("Replies (.eml):   {outbox_dir}");
        if let Some(md) = maildirs.first() {
            println!(
                "Mailbox folders:  {} (Maildir++: .Queues.Support, .Answered, …)",
                md.root.display()
            );
        }
        println!("State and audit:  {}", cfg.store.url);
        println!(
            "Explain one:      switchboard test --explain --config {} {}/new",
            config.display(),
            root.join("examples/demo/Maildir").display()
        );
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
