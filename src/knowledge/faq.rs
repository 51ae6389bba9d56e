//! FAQ entries: `faq/*.toml` files with `[[entry]]` tables, optional
//! `[[out_of_scope]]` example lists (questions no entry answers, which
//! teach the matcher what not to answer) and at most one `[calibration]`
//! table (written by `switchboard eval --cross-validate … --write`).
//!
//! ```toml
//! [[entry]]
//! id = "refund-status"
//! title = "Where is my refund?"
//! template = "faq/refund-status"
//! keywords = ["refund", "money back"]
//! examples = ["Where is my refund?", "I returned the shoes two weeks ago, no money yet"]
//! threshold = 0.7          # optional, stricter than the global [faq] threshold
//! ```

use std::collections::BTreeMap;

use crate::diag::Location;
use crate::tomlread::Table;

/// A confidence model fitted on the desk's own data by
/// `switchboard eval --cross-validate … --write`.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Weights of the matcher's confidence model (see `classify::faq`).
    pub weights: Vec<f64>,
    pub bias: f64,
    /// The lowest global threshold that reached `target_precision`.
    pub threshold: Option<f64>,
    pub target_precision: f64,
    /// Per-entry thresholds, where the data allowed one.
    pub thresholds: BTreeMap<String, f64>,
    /// Fingerprint of the FAQ examples it was fitted on.
    pub fingerprint: String,
    pub location: Location,
}

/// Reads an `[[out_of_scope]]` table: `examples = ["…"]`.
pub fn read_out_of_scope(mut t: Table<'_>) -> Vec<String> {
    t.set_what("[[out_of_scope]]");
    let examples = t.strings("examples").unwrap_or_default();
    t.finish();
    examples
        .into_iter()
        .map(|e| e.value)
        .filter(|e| !e.trim().is_empty())
        .collect()
}

/// Reads the `[calibration]` table.
pub fn read_calibration(mut t: Table<'_>) -> Option<Calibration> {
    t.set_what("[calibration]");
    let ctx = t.ctx();
    let start = t.span.clone();
    let weights = t.floats("weights");
    let bias = t.float("bias");
    let threshold = t.float("threshold");
    let target = t.float("target_precision");
    let fingerprint = t.string("fingerprint");
    let mut thresholds = BTreeMap::new();
    if let Some(mut tt) = t.table("thresholds", "[calibration.thresholds]") {
        while let Some((k, v)) = tt.take_any() {
            if let Some(f) = v.into_float() {
                thresholds.insert(k.value, f.value);
            }
        }
        tt.finish();
    }
    t.finish();
    let weights = weights?;
    if weights.len() != crate::classify::faq::CALIBRATION_WEIGHTS {
        ctx.error(
            start,
            format!(
                "[calibration] has {} weights where this version expects {}: run `switchboard eval --cross-validate 5 --write` again",
                weights.len(),
                crate::classify::faq::CALIBRATION_WEIGHTS
            ),
        );
        return None;
    }
    Some(Calibration {
        weights: weights.into_iter().map(|w| w.value).collect(),
        bias: bias.map_or(0.0, |b| b.value),
        threshold: threshold.map(|t| t.value),
        target_precision: target.map_or(0.98, |t| t.value),
        thresholds,
        fingerprint: fingerprint.map(|f| f.value).unwrap_or_default(),
        location: ctx.location(&start),
    })
}

/// One FAQ entry as written by the admin.
#[derive(Debug, Clone, PartialEq)]
pub struct FaqEntry {
    pub id: String,
    pub title: String,
    /// Name of the answer template.
    pub template: String,
    pub keywords: Vec<String>,
    pub examples: Vec<String>,
    /// Per-entry confidence threshold (overrides the global one when higher or lower).
    pub threshold: Option<f64>,
    pub location: Location,
    /// Where the `template` key is, for "missing template" errors.
    pub template_location: Location,
    /// Lookups the answer needs (`needs = ["order"]`): without their
    /// answer for this sender, a person answers instead.
    pub needs: Vec<(String, Location)>,
}

/// Reads one `[[entry]]` table.
pub fn read_entry(mut t: Table<'_>) -> Option<FaqEntry> {
    let ctx = t.ctx();
    let start = t.span.clone();
    let id = t.required_string("id");
    if let Some(id) = &id {
        t.set_what(format!("FAQ entry {:?}", id.value));
        let ok = !id.value.is_empty()
            && id
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            ctx.error(
                id.span.clone(),
                "FAQ ids may contain only letters, digits, '-' and '_'",
            );
        }
        if id.value == "none" {
            ctx.error(id.span.clone(), "`none` is reserved for \"no FAQ entry\"");
        }
    }
    let title = t.string("title");
    let template = t.required_string("template");
    let keywords = t.strings("keywords").unwrap_or_default();
    let examples = t.strings("examples").unwrap_or_default();
    let threshold = t.float("threshold");
    let needs: Vec<(String, Location)> = t
        .strings("needs")
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            let at = ctx.location(&n.span);
            (n.value, at)
        })
        .collect();
    if let Some(th) = &threshold
        && !(0.0..=1.0).contains(&th.value)
    {
        ctx.error(th.span.clone(), "`threshold` must be between 0 and 1");
    }
    if examples.is_empty() && keywords.is_empty() {
        ctx.error(
            start.clone(),
            format!(
                "{} has no examples: add `examples = [\"…\"]` with questions customers ask",
                t.what()
            ),
        );
    }
    for e in &examples {
        if e.value.trim().is_empty() {
            ctx.error(e.span.clone(), "empty example question");
        }
    }
    t.finish();
    let id = id?;
    let template = template?;
    Some(FaqEntry {
        title: title.map_or_else(|| id.value.clone(), |t| t.value),
        id: id.value,
        template_location: ctx.location(&template.span),
        template: template.value,
        keywords: keywords.into_iter().map(|k| k.value).collect(),
        examples: examples.into_iter().map(|e| e.value).collect(),
        threshold: threshold.map(|t| t.value),
        location: ctx.location(&start),
        needs,
    })
}
