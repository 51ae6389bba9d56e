//! `switchboard check`.

use std::process::ExitCode;

use super::ConfigArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let path = a.config.path();
    let Some((cfg, k, warnings)) = super::load_all(&path) else {
        return Ok(ExitCode::from(2));
    };
    eprint!("{warnings}");
    if !a.quiet {
        println!(
            "{}: OK — {}, {} mailbox(es)",
            path.display(),
            switchboard::demo::describe_knowledge(&k),
            cfg.mailboxes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
