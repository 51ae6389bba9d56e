//! FAQ entries: `faq/*.toml` files with `[[entry]]` tables.
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

use crate::diag::Location;
use crate::tomlread::Table;

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
    })
}
