//! The FAQ matcher: which FAQ entry answers this question, and how sure
//! are we?
//!
//! Every example question is a document in an in-RAM tantivy index
//! (BM25). A query retrieves the nearest examples and each entry gets the
//! weighted vote of its examples among them. Confidence is the entry's
//! share of the vote mass. The matcher is a pure function of (text,
//! snapshot): the index is built once per knowledge snapshot.

use std::collections::HashMap;

use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, TantivyDocument, Term};

use crate::config::FaqConfig;
use crate::knowledge::FaqEntry;

/// One scored FAQ entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub id: String,
    /// Confidence between 0 and 1.
    pub score: f64,
}

/// What the matcher found for one text.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaqResult {
    /// Best candidates first (at most five).
    pub candidates: Vec<Candidate>,
    /// Whether the best candidate clears the threshold and the margin.
    pub confident: bool,
    /// Why it is or is not confident, for explanations.
    pub reason: String,
}

impl FaqResult {
    pub fn best(&self) -> Option<&Candidate> {
        self.candidates.first()
    }
}

/// The FAQ entries of a snapshot with their search index.
pub struct FaqIndex {
    entries: Vec<FaqEntry>,
    index: Option<(Index, IndexReader, Field)>,
    threshold: f64,
    margin: f64,
}

impl std::fmt::Debug for FaqIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaqIndex")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Number of nearest examples that vote.
const NEIGHBOURS: usize = 20;

/// Lower-cases, splits on anything that is not a letter or digit, folds
/// numbers to one token and stems English words. Used for both indexing
/// and querying so they always agree.
pub fn analyze(text: &str) -> Vec<String> {
    let stemmer = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    for word in lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
    {
        let word = word.replace('\'', "");
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push("0num".to_string());
        } else if word.chars().count() <= 30 {
            out.push(stemmer.stem(&word).into_owned());
        }
    }
    out
}

impl FaqIndex {
    /// Builds the index for a set of entries.
    pub fn build(entries: Vec<FaqEntry>, cfg: &FaqConfig) -> Result<FaqIndex, String> {
        if entries.is_empty() {
            return Ok(FaqIndex {
                entries,
                index: None,
                threshold: cfg.threshold,
                margin: cfg.margin,
            });
        }
        let mut sb = Schema::builder();
        let text_opts = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("whitespace")
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let text = sb.add_text_field("text", text_opts);
        let entry = sb.add_u64_field("entry", FAST | STORED);
        let index = Index::create_in_ram(sb.build());
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(1, 20_000_000)
            .map_err(|e| e.to_string())?;
        for (i, e) in entries.iter().enumerate() {
            let docs = e
                .examples
                .iter()
                .chain(e.keywords.iter())
                .chain(std::iter::once(&e.title));
            for d in docs {
                let mut doc = TantivyDocument::default();
                doc.add_text(text, analyze(d).join(" "));
                doc.add_u64(entry, i as u64);
                writer.add_document(doc).map_err(|e| e.to_string())?;
            }
        }
        writer.commit().map_err(|e| e.to_string())?;
        let reader = index.reader().map_err(|e| e.to_string())?;
        Ok(FaqIndex {
            entries,
            index: Some((index, reader, text)),
            threshold: cfg.threshold,
            margin: cfg.margin,
        })
    }

    pub fn entries(&self) -> &[FaqEntry] {
        &self.entries
    }

    pub fn entry(&self, id: &str) -> Option<&FaqEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Scores a question (subject plus cleaned body).
    pub fn query(&self, question: &str) -> FaqResult {
        let mut result = FaqResult::default();
        let Some((_, reader, text)) = &self.index else {
            result.reason = "no FAQ entries".into();
            return result;
        };
        let mut terms = analyze(question);
        terms.sort();
        terms.dedup();
        terms.truncate(256);
        if terms.is_empty() {
            result.reason = "no words to match".into();
            return result;
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(*text, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let searcher = reader.searcher();
        let Ok(top) = searcher.search(&query, &TopDocs::with_limit(NEIGHBOURS).order_by_score())
        else {
            result.reason = "search failed".into();
            return result;
        };
        let mut votes: HashMap<usize, f64> = HashMap::new();
        let mut total = 0.0;
        for (score, addr) in top {
            let seg = searcher.segment_reader(addr.segment_ord);
            let Ok(col) = seg.fast_fields().u64("entry") else {
                continue;
            };
            let Some(e) = col.first(addr.doc_id) else {
                continue;
            };
            let w = f64::from(score).powi(3);
            *votes.entry(e as usize).or_default() += w;
            total += w;
        }
        if total <= 0.0 {
            result.reason = "no similar example".into();
            return result;
        }
        let mut scored: Vec<(usize, f64)> =
            votes.into_iter().map(|(e, v)| (e, v / total)).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        result.candidates = scored
            .iter()
            .take(5)
            .filter_map(|(e, s)| {
                Some(Candidate {
                    id: self.entries.get(*e)?.id.clone(),
                    score: *s,
                })
            })
            .collect();
        self.judge(&mut result);
        result
    }

    /// Applies threshold and margin.
    fn judge(&self, r: &mut FaqResult) {
        let Some(best) = r.candidates.first() else {
            r.reason = "no candidate".into();
            return;
        };
        let threshold = self
            .entry(&best.id)
            .and_then(|e| e.threshold)
            .unwrap_or(self.threshold);
        let second = r.candidates.get(1).map_or(0.0, |c| c.score);
        let margin = best.score - second;
        if best.score < threshold {
            r.reason = format!(
                "best match {} scores {:.2}, below the threshold {:.2}",
                best.id, best.score, threshold
            );
        } else if margin < self.margin {
            r.reason = format!(
                "best match {} ({:.2}) is too close to {} ({:.2}); margin {:.2} < {:.2}",
                best.id,
                best.score,
                r.candidates.get(1).map_or("", |c| c.id.as_str()),
                second,
                margin,
                self.margin
            );
        } else {
            r.confident = true;
            r.reason = format!(
                "{} scores {:.2} (threshold {:.2}), {:.2} ahead of the runner-up",
                best.id, best.score, threshold, margin
            );
        }
    }
}
