//! Command-line interface.

mod check;
mod demo;
mod docs;
mod eval;
mod report;
mod run;
mod status;
mod team;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// E-mail triage and auto-response for shared support inboxes.
///
/// switchboard watches mailboxes, answers routine questions from an FAQ
/// with templated replies (safe against mail loops), and files
/// everything else into the right team's folder — recording why.
#[derive(Parser, Debug)]
#[command(name = "switchboard", version, about, long_about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
Start with `switchboard demo`: it runs the whole pipeline on a bundled
mailbox with no mail server and shows what was decided and why.

Configuration: switchboard.toml (see README), rules in rules/*.toml, FAQ
in rules/faq/*.toml, reply templates in templates/. Check them with
`switchboard check`; every problem is printed as path:line:col: message.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration.";

/// Arguments shared by commands that read a config.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// Path of switchboard.toml. Default: $SWITCHBOARD_CONFIG, else
    /// /etc/switchboard/switchboard.toml if it exists, else ./switchboard.toml.
    #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        if let Some(p) = &self.config {
            return p.clone();
        }
        let etc = PathBuf::from("/etc/switchboard/switchboard.toml");
        if etc.exists() {
            etc
        } else {
            PathBuf::from("switchboard.toml")
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate the config, rules, FAQ and templates; print every problem
    /// as path:line:col: message. Exit 0 only when there is no error.
    Check(check::Args),
    /// Dry run: classify and decide .eml files, directories or Maildirs
    /// without sending or moving anything.
    Test(test::Args),
    /// Run the whole pipeline on the bundled demo mailbox (no server
    /// needed) and print what happened to each message.
    Demo(demo::Args),
    /// Run the daemon: watch the configured mailboxes, answer and file.
    Run(run::Args),
    /// Measure FAQ answer quality on labelled questions: accuracy,
    /// coverage and precision at the configured thresholds, a threshold
    /// sweep and the most confused entries.
    Eval(eval::Args),
    /// Manage FAQ entries.
    #[command(subcommand)]
    Faq(FaqCommand),
    /// Representatives: list them, mark someone away or back.
    #[command(subcommand)]
    Rep(team::RepCommand),
    /// Query the record of every interaction (received, decided,
    /// replied, routed to whom, escalated) by sender, ticket,
    /// representative, queue or time; as a table, CSV or JSON.
    Log(team::LogArgs),
    /// Load per queue and per representative, the share of mail answered
    /// automatically, and service-level attainment.
    Stats(team::StatsArgs),
    /// Conversations past their service-level deadline (and those due
    /// soon): who has them, since when, reminded or escalated.
    Overdue(team::OverdueArgs),
    /// Write a self-contained HTML report of a period (or print it as
    /// JSON): volume, automatic answers, service levels, load per
    /// person, why mail went to people, and what to add to the FAQ.
    Report(report::Args),
    /// What the running daemon reports: each mailbox connected or down,
    /// last successful check, backlog, last error; the last reload; the
    /// load of each queue. Exit 0 healthy, 1 degraded, 3 not running.
    Status(status::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `switchboard completions bash >
    /// /etc/bash_completion.d/switchboard`.
    Completions(docs::CompletionsArgs),
    /// Write the manual pages (switchboard.1 and one per subcommand) into
    /// a directory, or print the main page.
    Man(docs::ManArgs),
}

#[derive(Subcommand, Debug)]
pub enum FaqCommand {
    /// Bootstrap FAQ entries from labelled historical questions (CSV): one
    /// entry per label with its questions as examples, plus answer
    /// templates to fill in.
    Import(eval::ImportArgs),
    /// Write labelled questions as realistic e-mails (greeting, name line,
    /// sign-off, a typo, a context sentence, a vague subject …), one .eml
    /// file per question with its label in NAME.eml.label: a benchmark for
    /// `switchboard eval DIR` with a reproducible seed.
    Emails(eval::EmailsArgs),
}

/// Sets up logging. `RUST_LOG` overrides the level. Under systemd (when
/// `JOURNAL_STREAM` is set and the journal is reachable) records go to
/// journald with their fields (mailbox, message id, …) as journal fields;
/// `SWITCHBOARD_LOG_FORMAT=json` prints one JSON object per line instead;
/// otherwise human-readable lines go to stderr.
pub fn init_logging(default: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let format = std::env::var("SWITCHBOARD_LOG_FORMAT").unwrap_or_default();
    let registry =
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::filter::filter_fn(|m| {
                !protocol_trace(m.target(), *m.level())
            }));
    if format == "json" {
        let _ = registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .boxed(),
            )
            .try_init();
        return;
    }
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && format != "text"
        && let Ok(j) = tracing_journald::layer()
    {
        let _ = registry
            .with(j.with_syslog_identifier("switchboard".into()))
            .try_init();
        return;
    }
    use std::io::IsTerminal;
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
}

/// Protocol traces of the IMAP library: they contain the raw command
/// lines, `LOGIN "user" "password"` included, and whole messages. They
/// are never logged, whatever `RUST_LOG` says.
pub fn protocol_trace(target: &str, level: tracing::Level) -> bool {
    level == tracing::Level::TRACE
        && (target.starts_with("async_imap") || target.starts_with("imap_proto"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    switchboard::daemon::tune_allocator();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Check(a) => check::run(a).await,
            Command::Test(a) => test::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Run(a) => run::run(a).await,
            Command::Eval(a) => eval::run(a).await,
            Command::Faq(FaqCommand::Import(a)) => eval::import(a).await,
            Command::Faq(FaqCommand::Emails(a)) => eval::emails(a).await,
            Command::Rep(c) => team::rep(c).await,
            Command::Log(a) => team::log(a).await,
            Command::Stats(a) => team::stats(a).await,
            Command::Overdue(a) => team::overdue(a).await,
            Command::Report(a) => report::run(a).await,
            Command::Status(a) => status::run(a).await,
            Command::Completions(a) => docs::completions(a),
            Command::Man(a) => docs::man(a),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads the config alone (the rules may be broken: commands that only
/// read the store still work); problems go to stderr.
pub fn load_config(path: &std::path::Path) -> Option<switchboard::config::Config> {
    match switchboard::config::Config::load(path) {
        Ok((c, _)) => Some(c),
        Err(d) => {
            eprint!("{d}");
            None
        }
    }
}

/// Loads config and knowledge, printing every problem. `None` means
/// invalid (exit code 2).
pub fn load_all(
    path: &std::path::Path,
) -> Option<(
    switchboard::config::Config,
    std::sync::Arc<switchboard::knowledge::Knowledge>,
    switchboard::diag::Diagnostics,
)> {
    load_all_then(path, |_| {})
}

/// [`load_all`], calling `configured` with the configuration before the
/// rules, FAQ and templates are loaded.
pub fn load_all_then(
    path: &std::path::Path,
    configured: impl FnOnce(&switchboard::config::Config),
) -> Option<(
    switchboard::config::Config,
    std::sync::Arc<switchboard::knowledge::Knowledge>,
    switchboard::diag::Diagnostics,
)> {
    use switchboard::config::Config;
    use switchboard::knowledge::Knowledge;
    let (cfg, mut warnings) = match Config::load(path) {
        Ok(c) => c,
        Err(d) => {
            eprint!("{d}");
            eprintln!(
                "{}: {} error(s) in the configuration",
                path.display(),
                d.error_count()
            );
            return None;
        }
    };
    configured(&cfg);
    match Knowledge::load(&cfg) {
        Ok((k, w)) => {
            warnings.extend(w);
            Some((cfg, k, warnings))
        }
        Err(d) => {
            eprint!("{warnings}{d}");
            eprintln!("{} error(s) in rules, FAQ or templates", d.error_count());
            None
        }
    }
}
