//! Measuring answer quality: how often would the FAQ answer, and how often
//! would it be right? Used by `switchboard eval` and `switchboard faq import`.
//!
//! Coverage is the share of *answerable* questions (those labelled with an
//! FAQ id) that get an automatic answer; precision is the share of all
//! automatic answers that were right — an automatic answer to a question
//! labelled `none` (nobody should answer it automatically) counts as wrong.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::classify::faq::{FaqIndex, Signals};
use crate::classify::question::Question;
use crate::config::FaqConfig;
use crate::knowledge::FaqEntry;

pub mod noise;

/// The label of questions no FAQ entry should answer.
pub const NONE: &str = "none";

/// A question with the FAQ id that should answer it (or `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// The question as written (for a mail: what the matcher would see).
    pub text: String,
    pub label: String,
    /// The whole e-mail, when the question came as one: predictions then
    /// go through parsing and question extraction exactly as in `run`.
    pub raw: Option<Vec<u8>>,
    /// For a `none` question: whether its label was left out of the FAQ
    /// (an in-domain question the FAQ does not cover) rather than being
    /// out of scope altogether.
    pub unsupported: bool,
}

impl Labelled {
    pub fn new(text: impl Into<String>, label: impl Into<String>) -> Labelled {
        Labelled {
            text: text.into(),
            label: label.into(),
            raw: None,
            unsupported: false,
        }
    }
}

/// Labels are compared in their slug form (`card_arrival` and
/// `card-arrival` are the same entry, as `faq import` writes it), and the
/// labels given as "none" (`--none-label`) all become [`NONE`].
pub fn normalise_labels(data: &mut [Labelled], none_labels: &[String]) {
    let nones: Vec<String> = none_labels.iter().map(|l| slug(l)).collect();
    for q in data {
        let s = slug(&q.label);
        q.label = if s == NONE || nones.contains(&s) {
            NONE.to_string()
        } else {
            s
        };
    }
}

/// Reads a CSV file with a header row. Columns are found by name
/// (defaults: `text`, and `label`, `category` or `faq`), so extra
/// columns do not matter.
pub fn read_csv(
    path: &Path,
    text_col: Option<&str>,
    label_col: Option<&str>,
) -> Result<Vec<Labelled>, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let headers = rdr
        .headers()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .clone();
    let find = |wanted: &[&str]| {
        headers
            .iter()
            .position(|h| wanted.iter().any(|w| h.trim().eq_ignore_ascii_case(w)))
    };
    let ti = match text_col {
        Some(c) => find(&[c]),
        None => find(&["text", "question", "query", "utterance"]),
    }
    .ok_or_else(|| format!("{}: no text column (use --text-column)", path.display()))?;
    let li = match label_col {
        Some(c) => find(&[c]),
        None => find(&["label", "category", "faq", "intent", "expected"]),
    }
    .ok_or_else(|| format!("{}: no label column (use --label-column)", path.display()))?;
    let mut out = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("{}: row {}: {e}", path.display(), n + 2))?;
        let text = rec.get(ti).unwrap_or("").trim().to_string();
        let label = rec.get(li).unwrap_or("").trim().to_string();
        if !text.is_empty() && !label.is_empty() {
            out.push(Labelled::new(text, label));
        }
    }
    Ok(out)
}

/// Reads a folder of `.eml` files. The expected id is in a sidecar file
/// `NAME.eml.label` (or `NAME.label`), or in an `X-Expected-FAQ` header.
/// The question is what the matcher would see: subject plus cleaned body.
pub fn read_eml_dir(dir: &Path) -> Result<Vec<Labelled>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let (raw, size) = crate::fetch::maildir::read_message_file(&f, 25 * 1024 * 1024)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        let opts = crate::parse::ParseOptions {
            full_size: Some(size),
            ..Default::default()
        };
        let Ok(m) = crate::parse::parse(&raw, &opts) else {
            continue;
        };
        let sidecar = [f.with_extension("eml.label"), f.with_extension("label")]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string());
        let label = sidecar
            .or_else(|| m.header("X-Expected-FAQ").map(str::to_string))
            .ok_or_else(|| {
                format!(
                    "{}: no label (add {}.label or an X-Expected-FAQ header)",
                    f.display(),
                    f.display()
                )
            })?;
        out.push(Labelled {
            text: crate::classify::question_text(&m),
            label,
            raw: Some(raw),
            unsupported: false,
        });
    }
    Ok(out)
}

/// What the matcher said about one question.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub expected: String,
    pub best: Option<String>,
    pub score: f64,
    pub margin: f64,
    /// The best entry's own threshold, when it has one (it then replaces
    /// the global one, as in production).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// False when the best entry cannot answer (its template has no text
    /// yet): production routes such messages, so it is no answer here.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stub: bool,
    /// A `none` question whose label was left out of the FAQ.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unsupported: bool,
    /// The candidates' signals (entry id as a slug), for refitting the
    /// confidence model.
    #[serde(skip)]
    pub candidates: Vec<(String, Signals)>,
}

impl Prediction {
    fn correct(&self) -> bool {
        self.best.as_deref() == Some(self.expected.as_str())
    }
    fn in_scope(&self) -> bool {
        self.expected != NONE
    }
}

/// One row of the threshold sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub threshold: f64,
    pub coverage: f64,
    pub precision: f64,
    /// Share of `none` questions answered automatically.
    pub none_answered: f64,
}

/// The evaluation report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub questions: usize,
    pub answerable: usize,
    pub out_of_scope: usize,
    /// Of the `none` questions: those whose label was left out of the FAQ
    /// (`--hold-out-intents`).
    pub unsupported: usize,
    /// Share of answerable questions whose best entry is right.
    pub top1_accuracy: f64,
    pub threshold: f64,
    pub margin: f64,
    pub coverage: f64,
    pub precision: f64,
    /// Share of all `none` questions answered automatically.
    pub none_answered: f64,
    /// Share of unsupported questions (labels left out) answered.
    pub unsupported_answered: f64,
    /// Share of the other `none` questions answered.
    pub out_of_scope_answered: f64,
    pub sweep: Vec<SweepRow>,
    pub target_precision: f64,
    /// The lowest threshold that reaches the target precision (with the margin).
    pub recommended_threshold: Option<f64>,
    /// Coverage at the recommended threshold.
    pub recommended_coverage: Option<f64>,
    /// (expected, predicted, count), most frequent first.
    pub confusions: Vec<(String, String, usize)>,
    pub seconds: f64,
}

/// The request a labelled question stands for: a mail goes through
/// parsing and question extraction exactly as in `run`.
pub fn question_of(q: &Labelled) -> Question {
    match &q.raw {
        Some(raw) => match crate::parse::parse(raw, &crate::parse::ParseOptions::default()) {
            Ok(m) => Question::from_message(&m),
            Err(_) => Question::default(),
        },
        None => Question::from_text(&q.text),
    }
}

/// Scores every question against an index, with the thresholds it would
/// be judged by (per entry where set).
pub fn predict(index: &FaqIndex, data: &[Labelled]) -> Vec<Prediction> {
    let mut preds: Vec<Prediction> = data
        .iter()
        .map(|q| Prediction {
            expected: q.label.clone(),
            best: None,
            score: 0.0,
            margin: 0.0,
            threshold: None,
            stub: false,
            unsupported: q.unsupported,
            candidates: index
                .signals(&question_of(q))
                .into_iter()
                .map(|(id, s)| (slug(&id), s))
                .collect(),
        })
        .collect();
    rescore(&mut preds, index);
    preds
}

/// Scores the predictions' candidates with the index's confidence model:
/// best entry, its score and its lead over the runner-up, as `query` does.
pub fn rescore(preds: &mut [Prediction], index: &FaqIndex) {
    rescore_with(
        preds,
        |s| index.confidence(s),
        |b| {
            index
                .entries()
                .iter()
                .find(|e| slug(&e.id) == b)
                .and_then(|e| index.entry_threshold(&e.id))
        },
    );
}

/// [`rescore`] with any confidence model and per-entry thresholds.
pub fn rescore_with(
    preds: &mut [Prediction],
    confidence: impl Fn(&Signals) -> f64,
    threshold: impl Fn(&str) -> Option<f64>,
) {
    for p in preds {
        let mut scored: Vec<(&str, f64)> = p
            .candidates
            .iter()
            .map(|(id, s)| (id.as_str(), confidence(s)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        p.best = scored.first().map(|c| c.0.to_string());
        p.score = scored.first().map_or(0.0, |c| c.1);
        p.margin = match (scored.first(), scored.get(1)) {
            (Some(a), Some(b)) => a.1 - b.1,
            (Some(a), None) => a.1,
            _ => 0.0,
        };
        p.threshold = p.best.as_deref().and_then(&threshold);
    }
}

/// Whether a prediction is answered automatically.
fn answered(p: &Prediction, threshold: f64, margin: f64) -> bool {
    p.best.is_some() && !p.stub && p.score >= p.threshold.unwrap_or(threshold) && p.margin >= margin
}

/// (coverage, precision, none answered, unsupported answered, out of scope answered)
fn rates(preds: &[Prediction], threshold: f64, margin: f64) -> (f64, f64, f64, f64, f64) {
    let share = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let answerable = preds.iter().filter(|p| p.in_scope()).count().max(1);
    let none: Vec<&Prediction> = preds.iter().filter(|p| !p.in_scope()).collect();
    let answered_list: Vec<&Prediction> = preds
        .iter()
        .filter(|p| answered(p, threshold, margin))
        .collect();
    let coverage = answered_list.iter().filter(|p| p.in_scope()).count() as f64 / answerable as f64;
    let precision = if answered_list.is_empty() {
        1.0
    } else {
        share(
            answered_list.iter().filter(|p| p.correct()).count(),
            answered_list.len(),
        )
    };
    let n_answered = |f: &dyn Fn(&Prediction) -> bool| {
        share(
            none.iter()
                .filter(|p| f(p) && answered(p, threshold, margin))
                .count(),
            none.iter().filter(|p| f(p)).count(),
        )
    };
    (
        coverage,
        precision,
        n_answered(&|_| true),
        n_answered(&|p| p.unsupported),
        n_answered(&|p| !p.unsupported),
    )
}

/// Fits the confidence model on cross-validated predictions (top
/// candidates; right or wrong), rescores the predictions with it, and
/// returns it with the thresholds that reach `target` precision: globally,
/// and per entry where an entry has enough answered questions to tell.
pub fn calibrate(
    preds: &mut [Prediction],
    target: f64,
    margin: f64,
    fingerprint: String,
) -> crate::knowledge::faq::Calibration {
    let samples: Vec<(Signals, bool)> = preds
        .iter()
        .filter_map(|p| p.candidates.first().map(|(id, s)| (*s, *id == p.expected)))
        .collect();
    // About as strong as 200 questions: small data keeps the defaults.
    let (weights, bias) = crate::classify::faq::fit_calibration(&samples, 200.0);
    let mut cal = crate::knowledge::faq::Calibration {
        weights,
        bias,
        threshold: None,
        target_precision: target,
        thresholds: BTreeMap::new(),
        fingerprint,
        location: crate::diag::Location {
            path: "calibration".into(),
            line: 1,
            col: 1,
        },
    };
    rescore_with(
        preds,
        |s| FaqIndex::confidence_with(Some(&cal), s),
        |_| None,
    );
    let global = lowest_threshold(preds, target, margin, |_| true);
    cal.threshold = global;
    if let Some(g) = global {
        let mut ids: Vec<String> = preds.iter().filter_map(|p| p.best.clone()).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let mine = |p: &Prediction| p.best.as_deref() == Some(id.as_str());
            // Only entries with enough answered questions get their own.
            let n = preds
                .iter()
                .filter(|p| mine(p) && answered(p, g, margin))
                .count();
            if n < 20 {
                continue;
            }
            if let Some(t) = lowest_threshold(preds, target, margin, mine)
                && t > g + 0.005
            {
                cal.thresholds.insert(id, t);
            }
        }
    }
    let thresholds = cal.thresholds.clone();
    rescore_with(
        preds,
        |s| FaqIndex::confidence_with(Some(&cal), s),
        |b| thresholds.get(b).copied(),
    );
    cal
}

/// The `[calibration]` table as TOML, with a comment saying how it was
/// made.
pub fn calibration_toml(c: &crate::knowledge::faq::Calibration, how: &str) -> String {
    let num = |x: f64| format!("{x:.6}");
    let mut s = format!(
        "# The FAQ matcher's confidence model, fitted on cross-validated predictions of\n# this desk's own questions by `{how}`.\n# It is loaded with the FAQ; run the command again after changing the FAQ\n# (`switchboard check` says when it is stale).\n[calibration]\nfingerprint = {:?}\nweights = [{}]\nbias = {}\ntarget_precision = {}\n",
        c.fingerprint,
        c.weights
            .iter()
            .map(|w| num(*w))
            .collect::<Vec<_>>()
            .join(", "),
        num(c.bias),
        c.target_precision
    );
    if let Some(t) = c.threshold {
        s.push_str(&format!(
            "# The lowest threshold that reached the target precision; used when\n# switchboard.toml sets no [faq] threshold.\nthreshold = {t:.2}\n"
        ));
    }
    if !c.thresholds.is_empty() {
        s.push_str("\n# Entries that needed a stricter threshold of their own.\n[calibration.thresholds]\n");
        for (id, t) in &c.thresholds {
            s.push_str(&format!("{id:?} = {t:.2}\n"));
        }
    }
    s
}

/// The lowest threshold (to 0.01) at which the predictions `which`
/// selects reach `target` precision.
fn lowest_threshold(
    preds: &[Prediction],
    target: f64,
    margin: f64,
    which: impl Fn(&Prediction) -> bool,
) -> Option<f64> {
    (20..=99).map(|i| f64::from(i) / 100.0).find(|t| {
        let a: Vec<&Prediction> = preds
            .iter()
            .filter(|p| which(p) && answered(p, *t, margin))
            .collect();
        !a.is_empty() && a.iter().filter(|p| p.correct()).count() as f64 / a.len() as f64 >= target
    })
}

/// Builds the report for predictions.
pub fn report(
    preds: &[Prediction],
    threshold: f64,
    margin: f64,
    target: f64,
    seconds: f64,
) -> Report {
    let answerable: Vec<&Prediction> = preds.iter().filter(|p| p.in_scope()).collect();
    let top1 =
        answerable.iter().filter(|p| p.correct()).count() as f64 / answerable.len().max(1) as f64;
    let (coverage, precision, none_answered, unsupported_answered, out_of_scope_answered) =
        rates(preds, threshold, margin);
    let sweep: Vec<SweepRow> = (6..=19)
        .map(|i| f64::from(i) * 0.05)
        .map(|t| {
            let (c, p, n, _, _) = rates(preds, t, margin);
            SweepRow {
                threshold: (t * 100.0).round() / 100.0,
                coverage: c,
                precision: p,
                none_answered: n,
            }
        })
        .collect();
    // The lowest threshold (to 0.01) that reaches the target precision.
    let recommended = lowest_threshold(preds, target, margin, |_| true);
    let recommended_coverage = recommended.map(|t| rates(preds, t, margin).0);
    let mut conf: HashMap<(String, String), usize> = HashMap::new();
    for p in &answerable {
        if let Some(b) = &p.best
            && *b != p.expected
        {
            *conf.entry((p.expected.clone(), b.clone())).or_default() += 1;
        }
    }
    let mut confusions: Vec<(String, String, usize)> =
        conf.into_iter().map(|((e, p), n)| (e, p, n)).collect();
    confusions.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    confusions.truncate(15);
    Report {
        questions: preds.len(),
        answerable: answerable.len(),
        out_of_scope: preds.len() - answerable.len(),
        unsupported: preds.iter().filter(|p| p.unsupported).count(),
        top1_accuracy: top1,
        threshold,
        margin,
        coverage,
        precision,
        none_answered,
        unsupported_answered,
        out_of_scope_answered,
        sweep,
        target_precision: target,
        recommended_threshold: recommended,
        recommended_coverage,
        confusions,
        seconds,
    }
}

/// FAQ entries built from labelled questions: one entry per label, its
/// questions as examples (what `faq import` writes, and what
/// cross-validation trains on).
pub fn entries_from(data: &[&Labelled]) -> Vec<FaqEntry> {
    let mut by_label: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for q in data {
        if q.label != NONE {
            let list = by_label.entry(q.label.as_str()).or_default();
            if !list.contains(&q.text) {
                list.push(q.text.clone());
            }
        }
    }
    let loc = crate::diag::Location {
        path: "labelled".into(),
        line: 1,
        col: 1,
    };
    by_label
        .into_iter()
        .map(|(label, examples)| FaqEntry {
            id: label.to_string(),
            title: label.replace(['_', '-'], " "),
            template: format!("faq/{}", slug(label)),
            keywords: Vec::new(),
            examples,
            threshold: None,
            location: loc.clone(),
            template_location: loc.clone(),
            needs: Vec::new(),
        })
        .collect()
}

/// A file-name and id friendly form of a label.
pub fn slug(label: &str) -> String {
    let mut s = String::new();
    for c in label.trim().chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    s.trim_end_matches('-').to_string()
}

/// How a cross-validation is run.
#[derive(Debug, Clone, Default)]
pub struct CvOptions {
    /// Test questions are wrapped into realistic e-mails (the FAQ is still
    /// built from the clean questions, as an admin writes examples).
    pub realistic: Option<noise::Noise>,
    /// This many labels are left out of the FAQ altogether: their
    /// questions are only ever test questions, labelled `none` (in-domain
    /// questions the FAQ does not cover).
    pub hold_out: usize,
    /// Seed for the fold assignment, the held-out labels and the noise.
    pub seed: u64,
    /// Build each FAQ entry from at most this many examples (a small FAQ).
    pub examples_per_entry: Option<usize>,
    /// Use only this many labels (the others are dropped from the data).
    pub labels: Option<usize>,
    /// Do not learn from the training folds' `none` questions (an FAQ
    /// without `[[out_of_scope]]` examples).
    pub no_negatives: bool,
}

/// Labels left out of the FAQ for [`CvOptions::hold_out`], chosen by seed.
pub fn held_out_labels(data: &[Labelled], n: usize, seed: u64) -> Vec<String> {
    let mut labels: Vec<&str> = data
        .iter()
        .map(|q| q.label.as_str())
        .filter(|l| *l != NONE)
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let mut rng = noise::Rng::new(seed ^ 0x401d);
    for i in (1..labels.len()).rev() {
        labels.swap(i, rng.below(i + 1));
    }
    let mut out: Vec<String> = labels.into_iter().take(n).map(str::to_string).collect();
    out.sort();
    out
}

/// Stratified k-fold cross-validation: every label's questions are spread
/// evenly over the folds (deterministically); the FAQ is built from k−1
/// folds and tested on the remaining one. Returns every held-out
/// prediction.
pub fn cross_validate(
    data: &[Labelled],
    k: usize,
    cfg: &FaqConfig,
    opts: &CvOptions,
) -> Result<Vec<Prediction>, String> {
    let k = k.max(2);
    // A smaller FAQ: fewer labels (chosen by seed).
    let data: Vec<Labelled> = match opts.labels {
        Some(n) => {
            let keep = held_out_labels(data, n, opts.seed ^ 0x1abe1);
            data.iter()
                .filter(|q| q.label == NONE || keep.contains(&q.label))
                .cloned()
                .collect()
        }
        None => data.to_vec(),
    };
    let data = &data[..];
    let held = held_out_labels(data, opts.hold_out, opts.seed);
    let mut fold = vec![0usize; data.len()];
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, q) in data.iter().enumerate() {
        by_label.entry(q.label.as_str()).or_default().push(i);
    }
    let mut rng = noise::Rng::new(opts.seed);
    for idx in by_label.values_mut() {
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        for (n, &i) in idx.iter().enumerate() {
            fold[i] = n % k;
        }
    }
    let mut noise_rng = noise::Rng::new(opts.seed ^ 0x0e1a);
    let mut preds = Vec::with_capacity(data.len());
    for f in 0..k {
        let mut per_label: HashMap<&str, usize> = HashMap::new();
        let train: Vec<&Labelled> = data
            .iter()
            .zip(&fold)
            .filter(|(q, x)| **x != f && !held.contains(&q.label))
            .filter(|(q, _)| {
                let n = per_label.entry(q.label.as_str()).or_default();
                *n += 1;
                opts.examples_per_entry.is_none_or(|m| *n <= m)
            })
            .map(|(q, _)| q)
            .collect();
        let test: Vec<Labelled> = data
            .iter()
            .zip(&fold)
            .filter(|(_, x)| **x == f)
            .enumerate()
            .map(|(n, (q, _))| {
                let mut t = q.clone();
                if held.contains(&t.label) {
                    t.label = NONE.to_string();
                    t.unsupported = true;
                }
                if let Some(noise) = &opts.realistic {
                    t.raw = Some(noise::email(&q.text, noise, &mut noise_rng, n));
                }
                t
            })
            .collect();
        let negatives: Vec<String> = train
            .iter()
            .filter(|q| q.label == NONE && !opts.no_negatives)
            .map(|q| q.text.clone())
            .collect();
        let index = FaqIndex::build_with(entries_from(&train), negatives, None, cfg)?;
        preds.extend(predict(&index, &test));
    }
    Ok(preds)
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let mut s = String::new();
    s.push_str(&format!(
        "questions: {} ({} answerable, {} none: {} unsupported, {} out of scope), {:.1}s\n",
        r.questions,
        r.answerable,
        r.out_of_scope,
        r.unsupported,
        r.out_of_scope - r.unsupported,
        r.seconds
    ));
    s.push_str(&format!("top-1 accuracy:       {}\n", pct(r.top1_accuracy)));
    s.push_str(&format!(
        "at threshold {:.2}, margin {:.2}:\n  coverage:            {} of answerable questions answered automatically\n  precision:           {} of automatic answers right\n  none answered:       {}",
        r.threshold, r.margin, pct(r.coverage), pct(r.precision), pct(r.none_answered)
    ));
    if r.unsupported > 0 {
        s.push_str(&format!(
            " (unsupported {}, out of scope {})",
            pct(r.unsupported_answered),
            pct(r.out_of_scope_answered)
        ));
    }
    s.push('\n');
    s.push_str(
        "\nthreshold sweep (margin fixed):\n  threshold  coverage  precision  none answered\n",
    );
    for row in &r.sweep {
        s.push_str(&format!(
            "  {:>9.2}  {:>8}  {:>9}  {:>8}\n",
            row.threshold,
            pct(row.coverage),
            pct(row.precision),
            pct(row.none_answered)
        ));
    }
    match r.recommended_threshold {
        Some(t) => s.push_str(&format!(
            "\nlowest threshold reaching {} precision: {t:.2}, coverage {}  (set [faq] threshold = {t:.2})\n",
            pct(r.target_precision),
            pct(r.recommended_coverage.unwrap_or(0.0))
        )),
        None => s.push_str(&format!(
            "\nno threshold reaches {} precision\n",
            pct(r.target_precision)
        )),
    }
    if !r.confusions.is_empty() {
        s.push_str("\nmost often confused (expected → answered instead):\n");
        for (e, p, n) in &r.confusions {
            s.push_str(&format!("  {n:>4}  {e} → {p}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(expected: &str, best: &str, score: f64) -> Prediction {
        Prediction {
            expected: expected.into(),
            best: Some(best.into()),
            score,
            margin: score,
            threshold: None,
            stub: false,
            unsupported: false,
            candidates: Vec::new(),
        }
    }

    #[test]
    fn coverage_precision_and_none() {
        let preds = vec![
            p("a", "a", 0.9),
            p("a", "b", 0.8),
            p("b", "b", 0.3),
            p(NONE, "a", 0.95),
            p(NONE, "b", 0.1),
        ];
        let r = report(&preds, 0.5, 0.0, 0.9, 0.0);
        assert_eq!(r.answerable, 3);
        assert!((r.top1_accuracy - 2.0 / 3.0).abs() < 1e-9);
        // Answered: 0.9 (right), 0.8 (wrong), none@0.95 (wrong).
        assert!((r.coverage - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.precision - 1.0 / 3.0).abs() < 1e-9);
        assert!((r.none_answered - 0.5).abs() < 1e-9);
        assert_eq!(r.confusions, vec![("a".into(), "b".into(), 1)]);
        assert_eq!(slug("Card_Arrival"), "card-arrival");
    }
}
