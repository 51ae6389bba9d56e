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
    /// With --cross-validate and none given: the configured FAQ's own
    /// examples (and its [[out_of_scope]] questions as "none").
    #[arg(value_name = "LABELLED")]
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
    /// Labels that mean "nobody should answer this automatically", besides
    /// `none` (e.g. `--none-label NO_NODES_DETECTED`). Repeatable.
    #[arg(long, value_name = "LABEL")]
    pub none_label: Vec<String>,
    /// With --cross-validate: test on realistic e-mails built around the
    /// held-out questions (greeting, name line, sign-off, typo, context
    /// sentence, vague subject, lower case), as customers write.
    #[arg(long)]
    pub realistic: bool,
    /// With --cross-validate: leave this many labels out of the FAQ; their
    /// questions are tested as `none` (in-domain questions the FAQ does not
    /// cover).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub hold_out_intents: usize,
    /// Seed for folds, held-out labels and realistic e-mails.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// With --cross-validate: build each entry from at most N examples
    /// (how a small FAQ would do).
    #[arg(long, value_name = "N")]
    pub examples_per_entry: Option<usize>,
    /// With --cross-validate: use only N of the labels (a smaller FAQ).
    #[arg(long, value_name = "N")]
    pub labels: Option<usize>,
    /// With --cross-validate: do not learn from the "none" questions of the
    /// training folds (measure an FAQ without [[out_of_scope]] examples).
    #[arg(long)]
    pub no_negatives: bool,
    /// With --cross-validate: fit the confidence model on the
    /// cross-validated predictions and write it, with the thresholds that
    /// reach --target-precision (global and per entry), as a [calibration]
    /// table to FILE. Put FILE in the FAQ directory: it is loaded with the
    /// FAQ, and `check` warns when the FAQ changes afterwards.
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Write each question's candidates and their signals as CSV (for
    /// research on the confidence model).
    #[arg(long, value_name = "FILE", hide = true)]
    pub signals: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Labelled questions from the configured FAQ: every example with its
/// entry's id, every [[out_of_scope]] question as "none".
fn faq_as_data(
    k: &switchboard::knowledge::Knowledge,
    cfg: &switchboard::config::Config,
) -> Vec<Labelled> {
    let mut data: Vec<Labelled> = k
        .faq
        .entries()
        .iter()
        .flat_map(|e| {
            e.examples
                .iter()
                .map(|x| Labelled::new(x.clone(), e.id.clone()))
        })
        .collect();
    let _ = cfg;
    data.extend(
        k.faq
            .out_of_scope()
            .iter()
            .map(|x| Labelled::new(x.clone(), eval::NONE)),
    );
    data
}

fn write_signals(path: &std::path::Path, preds: &[eval::Prediction]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        w,
        "kind,expected,candidate,rank,correct,p,lead,sim,typical,content,known,entry_known,vote,sim_gap,foreign"
    )?;
    for p in preds {
        let kind = if p.expected != eval::NONE {
            "in"
        } else if p.unsupported {
            "unsupported"
        } else {
            "oos"
        };
        for (rank, (id, s)) in p.candidates.iter().enumerate() {
            writeln!(
                w,
                "{kind},{},{id},{rank},{},{},{},{},{},{},{},{},{},{},{}",
                p.expected,
                u8::from(*id == p.expected),
                s.p,
                s.lead,
                s.sim,
                s.typical,
                s.content,
                s.known,
                s.entry_known,
                s.vote,
                s.sim_gap,
                s.foreign
            )?;
        }
    }
    w.flush()
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
    if a.cross_validate.is_none() && (a.realistic || a.hold_out_intents > 0 || a.write.is_some()) {
        eprintln!(
            "switchboard eval: --realistic, --hold-out-intents and --write need --cross-validate K"
        );
        return Ok(ExitCode::from(1));
    }
    let configured = if a.inputs.is_empty() || a.cross_validate.is_none() {
        match super::load_all(&a.config.path()) {
            Some(x) => Some(x),
            None => return Ok(ExitCode::from(2)),
        }
    } else if a.config.config.is_some() {
        super::load_all(&a.config.path())
    } else {
        None
    };
    let mut data = if a.inputs.is_empty() {
        match &configured {
            Some((cfg, k, _)) if a.cross_validate.is_some() => faq_as_data(k, cfg),
            _ => {
                eprintln!(
                    "switchboard eval: give labelled questions (CSV or .eml folders), or --cross-validate K to test the configured FAQ on its own examples"
                );
                return Ok(ExitCode::from(1));
            }
        }
    } else {
        match read_inputs(
            &a.inputs,
            a.text_column.as_deref(),
            a.label_column.as_deref(),
        ) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("switchboard eval: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    };
    eval::normalise_labels(&mut data, &a.none_label);
    let start = Instant::now();
    let mut faq = configured.as_ref().map_or(
        FaqConfig {
            threshold: DEFAULT_FAQ_THRESHOLD,
            margin: DEFAULT_FAQ_MARGIN,
            threshold_set: false,
            background: true,
            suggest_threshold: None,
        },
        |(cfg, k, _)| FaqConfig {
            threshold: k.faq.threshold(),
            ..cfg.faq.clone()
        },
    );
    faq.threshold = a.threshold.unwrap_or(faq.threshold);
    faq.margin = a.margin.unwrap_or(faq.margin);
    let mut preds = if let Some(k) = a.cross_validate {
        let opts = eval::CvOptions {
            realistic: a.realistic.then(eval::noise::Noise::realistic),
            hold_out: a.hold_out_intents,
            seed: a.seed,
            examples_per_entry: a.examples_per_entry,
            labels: a.labels,
            no_negatives: a.no_negatives,
        };
        let cv = tokio::task::spawn_blocking({
            let faq = faq.clone();
            let data = data.clone();
            move || eval::cross_validate(&data, k, &faq, &opts)
        })
        .await?;
        match cv {
            Ok(p) => p,
            Err(e) => {
                eprintln!("switchboard eval: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    } else {
        let Some((_, k, _)) = &configured else {
            return Ok(ExitCode::from(2));
        };
        // Labels that are not FAQ ids are out of scope for this FAQ.
        let known: std::collections::HashSet<String> =
            k.faq.entries().iter().map(|e| eval::slug(&e.id)).collect();
        let unknown: std::collections::BTreeSet<&str> = data
            .iter()
            .map(|q| q.label.as_str())
            .filter(|l| *l != eval::NONE && !known.contains(*l))
            .collect();
        if !unknown.is_empty() {
            eprintln!(
                "switchboard eval: labels that are not FAQ ids: {} (label questions nobody should answer \"none\", or name their labels with --none-label)",
                unknown.into_iter().collect::<Vec<_>>().join(", ")
            );
            return Ok(ExitCode::from(1));
        }
        let mut preds = eval::predict(&k.faq, &data);
        // An entry whose answer template has no text never answers.
        for p in &mut preds {
            p.stub = p.best.as_deref().is_some_and(|b| {
                k.faq
                    .entries()
                    .iter()
                    .any(|e| eval::slug(&e.id) == b && k.templates.empty.contains(&e.template))
            });
        }
        preds
    };
    if let Some(path) = &a.signals {
        write_signals(path, &preds)?;
    }
    let mut written = None;
    if let Some(path) = &a.write {
        // The FAQ the calibration belongs to: the data's own (as `faq
        // import` writes it), or the configured one.
        let fingerprint = match (&configured, a.inputs.is_empty()) {
            (Some((_, k, _)), true) => {
                switchboard::classify::faq::examples_fingerprint(k.faq.entries())
            }
            _ => {
                let refs: Vec<&Labelled> = data.iter().collect();
                switchboard::classify::faq::examples_fingerprint(&eval::entries_from(&refs))
            }
        };
        let cal = eval::calibrate(&mut preds, a.target_precision, faq.margin, fingerprint);
        let how = std::env::args().collect::<Vec<_>>().join(" ");
        std::fs::write(path, eval::calibration_toml(&cal, &how))?;
        if let Some(t) = cal.threshold {
            faq.threshold = a.threshold.unwrap_or(t);
        }
        written = Some((path.clone(), cal));
    }
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
    if let Some((path, cal)) = written {
        eprintln!(
            "wrote the fitted confidence model{} to {}",
            match (cal.threshold, cal.thresholds.len()) {
                (Some(t), 0) => format!(" (threshold {t:.2})"),
                (Some(t), n) => format!(" (threshold {t:.2}; {n} entries stricter)"),
                (None, _) => " (no threshold reached the target precision)".into(),
            },
            path.display()
        );
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
    /// Labels that mean "no FAQ entry answers this" besides `none`; their
    /// questions are written as `[[out_of_scope]]` examples, which teach
    /// the matcher what not to answer. Repeatable.
    #[arg(long, value_name = "LABEL")]
    pub none_label: Vec<String>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Skip fitting the confidence model: by default the import
    /// cross-validates the questions (5 folds, as realistic e-mails) and
    /// writes the fitted [calibration] and thresholds with the entries.
    #[arg(long)]
    pub no_calibrate: bool,
    /// Precision the written thresholds aim for.
    #[arg(long, default_value_t = 0.98, value_name = "P")]
    pub target_precision: f64,
}

/// The text of an answer stub `faq import` writes.
const STUB_MARK: &str = "Write it here.";

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

pub async fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let mut data =
        match eval::read_csv(&a.from, a.text_column.as_deref(), a.label_column.as_deref()) {
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
    eval::normalise_labels(&mut data, &a.none_label);
    let refs: Vec<&Labelled> = data.iter().collect();
    let entries = eval::entries_from(&refs);
    let mut toml = format!(
        "# FAQ entries imported from {} ({} questions, {} entries).\n# Review the examples, add keywords, and write each answer template.\n\n",
        a.from.display(),
        data.len(),
        entries.len()
    );
    let mut stubs = 0;
    let mut renamed = Vec::new();
    for e in &entries {
        let id = eval::slug(&e.id);
        // An existing template of the same name belongs to someone else's
        // entry (a shipped "order-status" would answer with the shop's
        // text): the import gets its own, under faq/imported/.
        let mut template = format!("faq/{id}");
        let existing = a.templates.join(format!("{template}.txt.j2"));
        if existing.exists()
            && !std::fs::read_to_string(&existing)
                .unwrap_or_default()
                .contains(STUB_MARK)
        {
            template = format!("faq/imported/{id}");
            renamed.push(id.clone());
        }
        toml.push_str(&format!(
            "[[entry]]\nid = {}\ntitle = {}\ntemplate = {}\nkeywords = []\nexamples = [\n",
            toml_str(&id),
            toml_str(&e.title),
            toml_str(&template)
        ));
        for ex in &e.examples {
            toml.push_str(&format!("  {},\n", toml_str(ex)));
        }
        toml.push_str("]\n\n");
        let stub = a.templates.join(format!("{template}.txt.j2"));
        if !stub.exists() {
            if let Some(d) = stub.parent() {
                std::fs::create_dir_all(d)?;
            }
            let mut f = std::fs::File::create(&stub)?;
            writeln!(
                f,
                "{{#- Answer for the FAQ entry {id:?} ({}). {STUB_MARK}\n    Until this template has text, questions matching the entry go to a person. -#}}",
                e.title
            )?;
            stubs += 1;
        }
    }
    let negatives: Vec<&str> = data
        .iter()
        .filter(|q| q.label == eval::NONE)
        .map(|q| q.text.as_str())
        .collect();
    if !negatives.is_empty() {
        toml.push_str("# Questions no entry answers: they teach the matcher what not to answer.\n[[out_of_scope]]\nexamples = [\n");
        for ex in &negatives {
            toml.push_str(&format!("  {},\n", toml_str(ex)));
        }
        toml.push_str("]\n");
    }
    if !renamed.is_empty() {
        println!(
            "templates of the same name already exist for {}: the imported entries use faq/imported/ instead",
            renamed.join(", ")
        );
    }
    let mut calibrated = None;
    if !a.no_calibrate && entries.len() >= 2 {
        eprintln!(
            "cross-validating {} questions as realistic e-mails to fit the confidence model …",
            data.len()
        );
        let faq = FaqConfig {
            threshold: DEFAULT_FAQ_THRESHOLD,
            margin: DEFAULT_FAQ_MARGIN,
            threshold_set: false,
            background: true,
            suggest_threshold: None,
        };
        let opts = eval::CvOptions {
            realistic: Some(eval::noise::Noise::realistic()),
            seed: 1,
            ..Default::default()
        };
        let cv = tokio::task::spawn_blocking({
            let data = data.clone();
            let faq = faq.clone();
            move || eval::cross_validate(&data, 5, &faq, &opts)
        })
        .await?;
        match cv {
            Ok(mut preds) => {
                let fingerprint = switchboard::classify::faq::examples_fingerprint(&entries);
                let cal = eval::calibrate(&mut preds, a.target_precision, faq.margin, fingerprint);
                let how = format!(
                    "switchboard faq import --from {} (5-fold cross-validation as realistic e-mails)",
                    a.from.display()
                );
                toml.push('\n');
                toml.push_str(&eval::calibration_toml(&cal, &how));
                let report = eval::report(
                    &preds,
                    cal.threshold.unwrap_or(faq.threshold),
                    faq.margin,
                    a.target_precision,
                    0.0,
                );
                calibrated = Some((cal, report));
            }
            Err(e) => eprintln!("switchboard faq import: cannot cross-validate: {e}"),
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
    if let Some((cal, r)) = calibrated {
        match cal.threshold {
            Some(t) => println!(
                "cross-validated: top-1 {:.1}%; at threshold {t:.2} {:.1}% of the questions are answered automatically, {:.1}% of those rightly{}",
                r.top1_accuracy * 100.0,
                r.coverage * 100.0,
                r.precision * 100.0,
                if cal.thresholds.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} entries need a stricter threshold of their own)",
                        cal.thresholds.len()
                    )
                }
            ),
            None => println!(
                "cross-validated: top-1 {:.1}%; no threshold reaches {:.0}% precision: add examples to the entries that are confused (switchboard eval --cross-validate 5 lists them)",
                r.top1_accuracy * 100.0,
                a.target_precision * 100.0
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct EmailsArgs {
    /// CSV with labelled questions (columns text and label).
    #[arg(long = "from", value_name = "FILE.csv")]
    pub from: PathBuf,
    /// Directory to write the .eml files into (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the generator: the same seed writes the same mails.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write only the first N questions.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Name of the question column.
    #[arg(long, value_name = "C")]
    pub text_column: Option<String>,
    /// Name of the label column.
    #[arg(long, value_name = "L")]
    pub label_column: Option<String>,
    /// Labels that mean "none" besides `none`. Repeatable.
    #[arg(long, value_name = "LABEL")]
    pub none_label: Vec<String>,
}

pub async fn emails(a: EmailsArgs) -> anyhow::Result<ExitCode> {
    let mut data =
        match eval::read_csv(&a.from, a.text_column.as_deref(), a.label_column.as_deref()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("switchboard faq emails: {e}");
                return Ok(ExitCode::from(1));
            }
        };
    eval::normalise_labels(&mut data, &a.none_label);
    std::fs::create_dir_all(&a.out)?;
    let noise = eval::noise::Noise::realistic();
    let mut rng = eval::noise::Rng::new(a.seed);
    let n = a.limit.unwrap_or(data.len()).min(data.len());
    for (i, q) in data.iter().take(n).enumerate() {
        let raw = eval::noise::email(&q.text, &noise, &mut rng, i);
        let name = a.out.join(format!("{i:06}.eml"));
        std::fs::write(&name, raw)?;
        std::fs::write(
            a.out.join(format!("{i:06}.eml.label")),
            format!("{}\n", q.label),
        )?;
    }
    println!("wrote {n} e-mails to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
