//! `switchboard report`: a self-contained HTML page (or JSON) about a
//! period: volume, automatic answers, service levels, load, why mail
//! went to people and what to add to the FAQ.

use std::path::PathBuf;
use std::process::ExitCode;

use switchboard::util::now_ms;

use super::ConfigArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Period: a duration back from now (`30d`, `7d`) or a date.
    #[arg(long, default_value = "30d", value_name = "WHEN")]
    pub since: String,
    /// Where to write the HTML page.
    #[arg(long, default_value = "report.html", value_name = "FILE")]
    pub out: PathBuf,
    /// Print the data as JSON instead of writing the page.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let path = a.config.path();
    let Some(cfg) = super::load_config(&path) else {
        return Ok(ExitCode::from(2));
    };
    let since = super::team::parse_when(&a.since, true)?;
    let store = switchboard::record::Store::open(&cfg.store.url).await?;
    let started = std::time::Instant::now();
    let company = cfg.company.get("name").cloned().unwrap_or_default();
    let report = switchboard::report::gather(&store, &company, since, now_ms() + 1).await?;
    store.close().await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let html = switchboard::report::render(&report);
    let tmp = a.out.with_extension("html.tmp");
    std::fs::write(&tmp, html)?;
    std::fs::rename(&tmp, &a.out)?;
    eprintln!(
        "wrote {} ({} messages, {} FAQ gap(s)) in {} ms",
        a.out.display(),
        report.messages,
        report.gaps.len(),
        started.elapsed().as_millis()
    );
    Ok(ExitCode::SUCCESS)
}
