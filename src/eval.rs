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

use crate::classify::faq::FaqIndex;
use crate::config::FaqConfig;
use crate::knowledge::FaqEntry;

/// The label of questions no FAQ entry should answer.
pub const NONE: &str = "none";

/// A question with the FAQ id that should answer it (or `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub text: String,
    pub label: String,
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
            out.push(Labelled { text, label });
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
    /// Share of answerable questions whose best entry is right.
    pub top1_accuracy: f64,
    pub threshold: f64,
    pub margin: f64,
    pub coverage: f64,
    pub precision: f64,
    pub none_answered: f64,
    pub sweep: Vec<SweepRow>,
    pub target_precision: f64,
    /// The lowest threshold that reaches the target precision (with the margin).
    pub recommended_threshold: Option<f64>,
    /// (expected, predicted, count), most frequent first.
    pub confusions: Vec<(String, String, usize)>,
    pub seconds: f64,
}

/// Scores every question against an index.
pub fn predict(index: &FaqIndex, data: &[Labelled]) -> Vec<Prediction> {
    data.iter()
        .map(|q| {
            let r = index.query(&q.text);
            Prediction {
                expected: q.label.clone(),
                best: r.best().map(|c| c.id.clone()),
                score: r.best().map_or(0.0, |c| c.score),
                margin: r.margin(),
            }
        })
        .collect()
}

fn rates(preds: &[Prediction], threshold: f64, margin: f64) -> (f64, f64, f64) {
    let auto = |p: &Prediction| p.best.is_some() && p.score >= threshold && p.margin >= margin;
    let answerable = preds.iter().filter(|p| p.in_scope()).count().max(1);
    let none = preds.iter().filter(|p| !p.in_scope()).count();
    let answered: Vec<&Prediction> = preds.iter().filter(|p| auto(p)).collect();
    let coverage = answered.iter().filter(|p| p.in_scope()).count() as f64 / answerable as f64;
    let precision = if answered.is_empty() {
        1.0
    } else {
        answered.iter().filter(|p| p.correct()).count() as f64 / answered.len() as f64
    };
    let none_answered = if none == 0 {
        0.0
    } else {
        answered.iter().filter(|p| !p.in_scope()).count() as f64 / none as f64
    };
    (coverage, precision, none_answered)
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
    let (coverage, precision, none_answered) = rates(preds, threshold, margin);
    let sweep: Vec<SweepRow> = (6..=19)
        .map(|i| f64::from(i) * 0.05)
        .map(|t| {
            let (c, p, n) = rates(preds, t, margin);
            SweepRow {
                threshold: (t * 100.0).round() / 100.0,
                coverage: c,
                precision: p,
                none_answered: n,
            }
        })
        .collect();
    // The lowest threshold (to 0.01) that reaches the target precision.
    let recommended = (20..=99).map(|i| f64::from(i) / 100.0).find(|t| {
        let (c, p, _) = rates(preds, *t, margin);
        p >= target && c > 0.0
    });
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
        top1_accuracy: top1,
        threshold,
        margin,
        coverage,
        precision,
        none_answered,
        sweep,
        target_precision: target,
        recommended_threshold: recommended,
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

/// Stratified k-fold cross-validation: every label's questions are spread
/// evenly over the folds (deterministically); the FAQ is built from k−1
/// folds and tested on the remaining one. Returns every held-out
/// prediction.
pub fn cross_validate(
    data: &[Labelled],
    k: usize,
    cfg: &FaqConfig,
) -> Result<Vec<Prediction>, String> {
    let k = k.max(2);
    let mut fold = vec![0usize; data.len()];
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, q) in data.iter().enumerate() {
        by_label.entry(q.label.as_str()).or_default().push(i);
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for idx in by_label.values_mut() {
        for i in (1..idx.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            idx.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for (n, &i) in idx.iter().enumerate() {
            fold[i] = n % k;
        }
    }
    let mut preds = Vec::with_capacity(data.len());
    for f in 0..k {
        let train: Vec<&Labelled> = data
            .iter()
            .zip(&fold)
            .filter(|(_, x)| **x != f)
            .map(|(q, _)| q)
            .collect();
        let test: Vec<Labelled> = data
            .iter()
            .zip(&fold)
            .filter(|(_, x)| **x == f)
            .map(|(q, _)| q.clone())
            .collect();
        let index = FaqIndex::build(entries_from(&train), cfg)?;
        preds.extend(predict(&index, &test));
    }
    Ok(preds)
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let mut s = String::new();
    s.push_str(&format!(
        "questions: {} ({} answerable, {} out of scope), {:.1}s\n",
        r.questions, r.answerable, r.out_of_scope, r.seconds
    ));
    s.push_str(&format!("top-1 accuracy:       {}\n", pct(r.top1_accuracy)));
    s.push_str(&format!(
        "at threshold {:.2}, margin {:.2}:\n  coverage:            {} of answerable questions answered automatically\n  precision:           {} of automatic answers right\n  out-of-scope answered: {}\n",
        r.threshold, r.margin, pct(r.coverage), pct(r.precision), pct(r.none_answered)
    ));
    s.push_str("\nthreshold sweep (margin fixed):\n  threshold  coverage  precision  out-of-scope answered\n");
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
            "\nlowest threshold reaching {} precision: {t:.2}  (set [faq] threshold = {t:.2})\n",
            pct(r.target_precision)
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
