//! `switchboard eval` and `switchboard faq import`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use switchboard::config::{DEFAULT_FAQ_MARGIN, DEFAULT_FAQ_THRESHOLD, FaqConfig};
use switchboard::eval::{self, Labelled};

use super::ConfigArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Labelled questions: CSV files (columns text and label; label "none"
    /// for questions nobody should answer automatically) or folders of
    /// .eml files (label in NAME.eml.label or an X-Expected-FAQ header).
    #[arg(required = true, value_name = "LABELLED")]
    pub inputs: Vec<PathBuf>,
    /// Build the FAQ from the labelled data itself and test it with k-fold
    /// cross-validation, instead of testing the configured FAQ.
    #[arg(long, value_name = "K")]
    pub cross_validate: Option<usize>,
    /// Precision the threshold recommendation aims for.
    #[arg(long, default_value_t = 0.98, value_name = "P")]
    pub target_precision: f64,
    /// Override the configured [faq] threshold.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Override the configured [faq] margin.
    #[arg(long)]
    pub margin: Option<f64>,
    /// Name of the CSV column with the question.
    #[arg(long, value_name = "C")]
    pub text_column: Option<String>,
    /// Name of the CSV column with the expected FAQ id.
    #[arg(long, value_name = "L")]
    pub label_column: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn read_inputs(
    inputs: &[PathBuf],
    text: Option<&str>,
    label: Option<&str>,
) -> Result<Vec<Labelled>, String> {
    let mut data = Vec::new();
    for p in inputs {
        if p.is_dir() {
            data.extend(eval::read_eml_dir(p)?);
        } else {
            data.extend(eval::read_csv(p, text, label)?);
        }
    }
    if data.is_empty() {
        return Err("no labelled questions found".into());
    }
    Ok(data)
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let data = match read_inputs(
        &a.inputs,
        a.text_column.as_deref(),
        a.label_column.as_deref(),
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("switchboard eval: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let start = Instant::now();
    let (preds, faq) = if let Some(k) = a.cross_validate {
        let mut faq = FaqConfig {
            threshold: DEFAULT_FAQ_THRESHOLD,
            margin: DEFAULT_FAQ_MARGIN,
        };
        if a.config.config.is_some()
            && let Some((cfg, _, _)) = super::load_all(&a.config.path())
        {
            faq = cfg.faq.clone();
        }
        faq.threshold = a.threshold.unwrap_or(faq.threshold);
        faq.margin = a.margin.unwrap_or(faq.margin);
        let preds = tokio::task::spawn_blocking({
            let faq = faq.clone();
            move || eval::cross_validate(&data, k, &faq)
        })
        .await?;
        match preds {
            Ok(p) => (p, faq),
            Err(e) => {
                eprintln!("switchboard eval: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    } else {
        let Some((cfg, k, _)) = super::load_all(&a.config.path()) else {
            return Ok(ExitCode::from(2));
        };
        let mut faq = cfg.faq.clone();
        faq.threshold = a.threshold.unwrap_or(faq.threshold);
        faq.margin = a.margin.unwrap_or(faq.margin);
        // Labels that are not FAQ ids are out of scope for this FAQ.
        let known: std::collections::HashSet<&str> =
            k.faq.entries().iter().map(|e| e.id.as_str()).collect();
        let unknown: std::collections::BTreeSet<&str> = data
            .iter()
            .map(|q| q.label.as_str())
            .filter(|l| *l != eval::NONE && !known.contains(l))
            .collect();
        if !unknown.is_empty() {
            eprintln!(
                "switchboard eval: labels that are not FAQ ids: {} (label questions nobody should answer \"none\")",
                unknown.into_iter().collect::<Vec<_>>().join(", ")
            );
            return Ok(ExitCode::from(1));
        }
        (eval::predict(&k.faq, &data), faq)
    };
    let report = eval::report(
        &preds,
        faq.threshold,
        faq.margin,
        a.target_precision,
        start.elapsed().as_secs_f64(),
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", eval::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// CSV with labelled historical questions (one row per question).
    #[arg(long = "from", value_name = "FILE.csv")]
    pub from: PathBuf,
    /// Name of the question column (default: text, question, query).
    #[arg(long, value_name = "C")]
    pub text_column: Option<String>,
    /// Name of the label column (default: label, category, intent).
    #[arg(long, value_name = "L")]
    pub label_column: Option<String>,
    /// Where to write the FAQ entries.
    #[arg(long, default_value = "rules/faq/imported.toml")]
    pub out: PathBuf,
    /// Templates directory for the answer stubs (existing files are kept).
    #[arg(long, default_value = "templates")]
    pub templates: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

pub async fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let data = match eval::read_csv(&a.from, a.text_column.as_deref(), a.label_column.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("switchboard faq import: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if a.out.exists() && !a.force {
        eprintln!(
            "switchboard faq import: {} exists (use --force to replace it)",
            a.out.display()
        );
        return Ok(ExitCode::from(1));
    }
    let refs: Vec<&Labelled> = data.iter().collect();
    let entries = eval::entries_from(&refs);
    let mut toml = format!(
        "# FAQ entries imported from {} ({} questions, {} entries).\n# Review the examples, add keywords, and write each answer template.\n\n",
        a.from.display(),
        data.len(),
        entries.len()
    );
    let mut stubs = 0;
    for e in &entries {
        let id = eval::slug(&e.id);
        toml.push_str(&format!(
            "[[entry]]\nid = {}\ntitle = {}\ntemplate = {}\nkeywords = []\nexamples = [\n",
            toml_str(&id),
            toml_str(&e.title),
            toml_str(&format!("faq/{id}"))
        ));
        for ex in &e.examples {
            toml.push_str(&format!("  {},\n", toml_str(ex)));
        }
        toml.push_str("]\n\n");
        let stub = a.templates.join("faq").join(format!("{id}.txt.j2"));
        if !stub.exists() {
            if let Some(d) = stub.parent() {
                std::fs::create_dir_all(d)?;
            }
            let mut f = std::fs::File::create(&stub)?;
            writeln!(
                f,
                "{{#- Answer for the FAQ entry {id:?} ({}). Write it here.\n    Until this template has text, questions matching the entry go to a person. -#}}",
                e.title
            )?;
            stubs += 1;
        }
    }
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&a.out, toml)?;
    println!(
        "wrote {} entries to {} and {stubs} answer templates to fill in {}",
        entries.len(),
        a.out.display(),
        a.templates.join("faq").display()
    );
    Ok(ExitCode::SUCCESS)
}
