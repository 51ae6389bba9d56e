//! The FAQ matcher: which FAQ entry answers this question, and how sure
//! are we?
//!
//! Two signals, both built once per knowledge snapshot from the entries'
//! example questions (plus titles and keywords):
//!
//! 1. **A linear model** (multinomial logistic regression) over TF-IDF
//!    features: stemmed word unigrams and bigrams, and character 2–5-grams
//!    of the words. Character n-grams make it robust to typos and word
//!    forms; the model learns which words tell entries apart. Trained with
//!    plain SGD (fixed seed: the same files give the same model).
//! 2. **Nearest examples** from an in-RAM tantivy index (BM25): the ten
//!    most similar example questions vote for their entries.
//!
//! The confidence of an entry is `(p_model + 0.25 · p_vote) / 1.25`,
//! multiplied by `known²`, where `known` is the share of the question's
//! content words that occur in the FAQ's examples at all. The factor
//! stops questions from another domain that happen to contain one strong
//! keyword ("banana phone" is not a lost-phone question). An automatic answer needs the
//! best entry to clear the threshold *and* lead the runner-up by the
//! margin. Measured on 10,000 real banking questions with 5-fold
//! cross-validation (`switchboard eval --cross-validate 5`): see README.

use std::collections::HashMap;

use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::{Index, IndexReader, TantivyDocument, Term};
use unicode_normalization::UnicodeNormalization;

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

    /// Lead of the best candidate over the runner-up.
    pub fn margin(&self) -> f64 {
        match (self.candidates.first(), self.candidates.get(1)) {
            (Some(a), Some(b)) => a.score - b.score,
            (Some(a), None) => a.score,
            _ => 0.0,
        }
    }
}

/// Weight of the nearest-example vote relative to the model.
const VOTE_WEIGHT: f64 = 0.25;
/// Examples that vote.
const NEIGHBOURS: usize = 10;
/// SGD settings (see the module docs).
const EPOCHS: usize = 10;
const LEARNING_RATE: f64 = 3.0;
const L2: f64 = 1e-5;
/// Upper bound of multiply-adds spent on training, so a very large FAQ
/// still loads in seconds (fewer epochs, never fewer than two).
const TRAINING_BUDGET: f64 = 4e9;

/// Known content words that make a message clearly on topic, whatever
/// else it mentions.
const KNOWN_ENOUGH: f64 = 6.0;

/// Words that say nothing about the topic of an e-mail: greetings,
/// thanks, sign-offs and English function words. They neither count for
/// nor against `known` (they still are features of the model).
const NEUTRAL: &[&str] = &[
    "a",
    "an",
    "the",
    "i",
    "im",
    "ive",
    "id",
    "me",
    "my",
    "mine",
    "we",
    "our",
    "us",
    "you",
    "your",
    "yours",
    "it",
    "its",
    "is",
    "am",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "to",
    "of",
    "in",
    "on",
    "at",
    "for",
    "from",
    "with",
    "by",
    "about",
    "and",
    "or",
    "but",
    "so",
    "if",
    "as",
    "do",
    "does",
    "did",
    "done",
    "this",
    "that",
    "these",
    "those",
    "there",
    "here",
    "what",
    "which",
    "who",
    "how",
    "when",
    "why",
    "where",
    "can",
    "could",
    "would",
    "should",
    "will",
    "shall",
    "may",
    "might",
    "must",
    "have",
    "has",
    "had",
    "not",
    "no",
    "yes",
    "please",
    "hi",
    "hello",
    "hey",
    "dear",
    "thanks",
    "thank",
    "regards",
    "kind",
    "best",
    "cheers",
    "team",
    "sir",
    "madam",
    "good",
    "morning",
    "afternoon",
    "evening",
    "just",
    "also",
    "still",
    "again",
    "any",
    "some",
    "all",
    "up",
    "out",
    "get",
    "got",
    "know",
    "let",
    "like",
    "want",
    "need",
    "one",
    "there",
    "then",
    "than",
    "very",
    "much",
    "many",
    "really",
    "ok",
    "okay",
    "sorry",
    "wondering",
    "question",
    "help",
    "advance",
    "look",
    "forward",
    "hear",
    "soon",
    "asap",
];

/// Normalises text for features: Unicode NFKC, lower case, apostrophes
/// dropped (`don't` → `dont`), then runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    let t: String = text
        .nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !matches!(c, '\'' | '’' | '`'))
        .collect();
    t.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.chars().count() <= 40)
        .map(str::to_string)
        .collect()
}

fn stemmer() -> rust_stemmers::Stemmer {
    rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English)
}

/// Stemmed words: the tokens of the tantivy index.
pub fn analyze(text: &str) -> Vec<String> {
    let s = stemmer();
    words(text).iter().map(|w| s.stem(w).into_owned()).collect()
}

/// Raw features of a text: (word features, character features).
fn raw_features(text: &str, stem: &rust_stemmers::Stemmer) -> (Vec<String>, Vec<String>) {
    let ws = words(text);
    let stemmed: Vec<String> = ws.iter().map(|w| stem.stem(w).into_owned()).collect();
    let mut word = stemmed.clone();
    for pair in stemmed.windows(2) {
        word.push(format!("{} {}", pair[0], pair[1]));
    }
    let mut chars = Vec::new();
    for w in &ws {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(w.chars())
            .chain(std::iter::once(' '))
            .collect();
        for n in 2..=5 {
            if n > padded.len() {
                break;
            }
            for win in padded.windows(n) {
                chars.push(win.iter().collect());
            }
        }
    }
    (word, chars)
}

/// TF-IDF vocabulary of the two feature blocks.
#[derive(Debug, Default)]
struct Vocab {
    word: HashMap<String, u32>,
    chars: HashMap<String, u32>,
    idf: Vec<f32>,
}

impl Vocab {
    fn build(docs: &[(Vec<String>, Vec<String>)]) -> Vocab {
        let n = docs.len() as f64;
        let mut df: [HashMap<&str, u32>; 2] = [HashMap::new(), HashMap::new()];
        for (w, c) in docs {
            for (b, feats) in [w, c].into_iter().enumerate() {
                let mut seen: Vec<&str> = feats.iter().map(String::as_str).collect();
                seen.sort_unstable();
                seen.dedup();
                for f in seen {
                    *df[b].entry(f).or_default() += 1;
                }
            }
        }
        let mut v = Vocab::default();
        for (b, map) in df.iter().enumerate() {
            let mut keys: Vec<(&&str, &u32)> = map.iter().collect();
            keys.sort();
            for (k, d) in keys {
                let idx = v.idf.len() as u32;
                v.idf
                    .push((((1.0 + n) / (1.0 + f64::from(*d))).ln() + 1.0) as f32);
                if b == 0 {
                    v.word.insert((*k).to_string(), idx);
                } else {
                    v.chars.insert((*k).to_string(), idx);
                }
            }
        }
        v
    }

    fn dim(&self) -> usize {
        self.idf.len()
    }

    /// Sparse unit vector of already extracted features (training).
    fn vector(&self, feats: &(Vec<String>, Vec<String>)) -> Vec<(u32, f32)> {
        let mut tf: [HashMap<u32, u32>; 2] = [HashMap::new(), HashMap::new()];
        for (b, (map, list)) in [(&self.word, &feats.0), (&self.chars, &feats.1)]
            .into_iter()
            .enumerate()
        {
            for f in list {
                if let Some(&i) = map.get(f.as_str()) {
                    *tf[b].entry(i).or_default() += 1;
                }
            }
        }
        self.normalise(tf)
    }

    /// Sparse unit vector of a text, computed without allocating per
    /// feature: every n-gram is looked up from one reused buffer, so the
    /// memory a question needs is bounded by its distinct known features.
    fn vector_text(&self, text: &str, stem: &rust_stemmers::Stemmer) -> Vec<(u32, f32)> {
        let mut tf: [HashMap<u32, u32>; 2] = [HashMap::new(), HashMap::new()];
        let mut buf = String::new();
        let mut prev: Option<String> = None;
        let mut padded: Vec<char> = Vec::new();
        for w in words(text) {
            let stemmed = stem.stem(&w).into_owned();
            if let Some(&i) = self.word.get(stemmed.as_str()) {
                *tf[0].entry(i).or_default() += 1;
            }
            if let Some(p) = &prev {
                buf.clear();
                buf.push_str(p);
                buf.push(' ');
                buf.push_str(&stemmed);
                if let Some(&i) = self.word.get(buf.as_str()) {
                    *tf[0].entry(i).or_default() += 1;
                }
            }
            prev = Some(stemmed);
            padded.clear();
            padded.push(' ');
            padded.extend(w.chars());
            padded.push(' ');
            for n in 2..=5 {
                if n > padded.len() {
                    break;
                }
                for win in padded.windows(n) {
                    buf.clear();
                    buf.extend(win);
                    if let Some(&i) = self.chars.get(buf.as_str()) {
                        *tf[1].entry(i).or_default() += 1;
                    }
                }
            }
        }
        self.normalise(tf)
    }

    /// Per block `(1 + ln tf) · idf`, L2-normalised, each block scaled by
    /// 1/√2.
    fn normalise(&self, tf: [HashMap<u32, u32>; 2]) -> Vec<(u32, f32)> {
        let mut out = Vec::new();
        for block in tf {
            if block.is_empty() {
                continue;
            }
            let mut block: Vec<(u32, f32)> = block
                .into_iter()
                .map(|(i, c)| (i, (1.0 + (c as f32).ln()) * self.idf[i as usize]))
                .collect();
            block.sort_unstable_by_key(|(i, _)| *i);
            let norm = block.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                let k = norm * std::f32::consts::SQRT_2;
                out.extend(block.into_iter().map(|(i, v)| (i, v / k)));
            }
        }
        out
    }
}

/// A deterministic xorshift generator for shuffling training examples.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Multinomial logistic regression.
#[derive(Debug, Default)]
struct Model {
    vocab: Vocab,
    /// `dim × classes`, row-major by feature.
    weights: Vec<f32>,
    bias: Vec<f32>,
    classes: usize,
}

fn softmax(z: &mut [f64]) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in z.iter_mut() {
            *v /= sum;
        }
    }
}

impl Model {
    fn train(texts: &[String], labels: &[usize], classes: usize) -> Model {
        let stem = stemmer();
        let feats: Vec<(Vec<String>, Vec<String>)> =
            texts.iter().map(|t| raw_features(t, &stem)).collect();
        let vocab = Vocab::build(&feats);
        let xs: Vec<Vec<(u32, f32)>> = feats.iter().map(|f| vocab.vector(f)).collect();
        let dim = vocab.dim();
        let mut v = vec![0f32; dim * classes];
        let mut bias = vec![0f64; classes];
        let mut scale = 1.0f64;
        let nnz: usize = xs.iter().map(Vec::len).sum();
        let per_epoch = 2.0 * nnz as f64 * classes as f64;
        let epochs = ((TRAINING_BUDGET / per_epoch.max(1.0)) as usize).clamp(2, EPOCHS);
        let steps = (epochs * xs.len()).max(1) as f64;
        let mut order: Vec<usize> = (0..xs.len()).collect();
        let mut rng = XorShift(42);
        let mut z = vec![0f64; classes];
        let mut t = 0f64;
        for _ in 0..epochs {
            rng.shuffle(&mut order);
            for &i in &order {
                let lr = LEARNING_RATE * (1.0 - t / steps);
                t += 1.0;
                let x = &xs[i];
                for (k, zk) in z.iter_mut().enumerate() {
                    *zk = bias[k];
                }
                for &(j, val) in x {
                    let row = &v[j as usize * classes..(j as usize + 1) * classes];
                    let f = f64::from(val) * scale;
                    for (zk, w) in z.iter_mut().zip(row) {
                        *zk += f * f64::from(*w);
                    }
                }
                softmax(&mut z);
                z[labels[i]] -= 1.0;
                scale *= 1.0 - lr * L2;
                let coef = lr / scale;
                for &(j, val) in x {
                    let row = &mut v[j as usize * classes..(j as usize + 1) * classes];
                    let f = coef * f64::from(val);
                    for (w, g) in row.iter_mut().zip(z.iter()) {
                        *w -= (f * g) as f32;
                    }
                }
                for (b, g) in bias.iter_mut().zip(z.iter()) {
                    *b -= lr * g;
                }
                if scale < 1e-6 {
                    for w in v.iter_mut() {
                        *w = (f64::from(*w) * scale) as f32;
                    }
                    scale = 1.0;
                }
            }
        }
        for w in v.iter_mut() {
            *w = (f64::from(*w) * scale) as f32;
        }
        Model {
            vocab,
            weights: v,
            bias: bias.into_iter().map(|b| b as f32).collect(),
            classes,
        }
    }

    /// Share of the question's content words (not digits, not the
    /// greetings and function words every message has) that occur in the
    /// training examples.
    fn known(&self, text: &str, stem: &rust_stemmers::Stemmer) -> f64 {
        let mut total = 0usize;
        let mut known = 0usize;
        for w in words(text) {
            if w.chars().all(|c| c.is_ascii_digit()) || NEUTRAL.contains(&w.as_str()) {
                continue;
            }
            total += 1;
            if self.vocab.word.contains_key(stem.stem(&w).as_ref()) {
                known += 1;
            }
        }
        if total == 0 {
            return 0.0;
        }
        // A long message with many known words is on topic even when it
        // also names things the examples never mention (products, places).
        let share = known as f64 / total as f64;
        share.max((known as f64 / KNOWN_ENOUGH).min(1.0))
    }

    /// Class probabilities of a text.
    fn predict(&self, text: &str, stem: &rust_stemmers::Stemmer) -> Vec<f64> {
        let x = self.vocab.vector_text(text, stem);
        let mut z: Vec<f64> = self.bias.iter().map(|b| f64::from(*b)).collect();
        for (j, val) in x {
            let row = &self.weights[j as usize * self.classes..(j as usize + 1) * self.classes];
            for (zk, w) in z.iter_mut().zip(row) {
                *zk += f64::from(val) * f64::from(*w);
            }
        }
        softmax(&mut z);
        z
    }
}

/// The nearest-example index.
struct Neighbours {
    reader: IndexReader,
    text: Field,
}

impl Neighbours {
    fn build(texts: &[String], labels: &[usize]) -> Result<Neighbours, String> {
        let mut sb = Schema::builder();
        let opts = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("whitespace")
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let text = sb.add_text_field("text", opts);
        let entry = sb.add_u64_field("entry", FAST);
        let index = Index::create_in_ram(sb.build());
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(1, 15_000_000)
            .map_err(|e| e.to_string())?;
        for (t, l) in texts.iter().zip(labels) {
            let mut doc = TantivyDocument::default();
            doc.add_text(text, analyze(t).join(" "));
            doc.add_u64(entry, *l as u64);
            writer.add_document(doc).map_err(|e| e.to_string())?;
        }
        writer.commit().map_err(|e| e.to_string())?;
        let reader = index.reader().map_err(|e| e.to_string())?;
        Ok(Neighbours { reader, text })
    }

    /// Vote distribution over entries (sums to 1, or all zero).
    fn vote(&self, question: &str, classes: usize) -> Vec<f64> {
        let mut votes = vec![0.0; classes];
        let mut terms = analyze(question);
        terms.sort();
        terms.dedup();
        terms.truncate(256);
        if terms.is_empty() {
            return votes;
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(self.text, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let searcher = self.reader.searcher();
        let Ok(top) = searcher.search(
            &BooleanQuery::new(clauses),
            &TopDocs::with_limit(NEIGHBOURS).order_by_score(),
        ) else {
            return votes;
        };
        let mut total = 0.0;
        for (score, addr) in top {
            let seg = searcher.segment_reader(addr.segment_ord);
            let Ok(col) = seg.fast_fields().u64("entry") else {
                continue;
            };
            let Some(e) = col.first(addr.doc_id) else {
                continue;
            };
            if let Some(slot) = votes.get_mut(e as usize) {
                let w = f64::from(score).powi(2);
                *slot += w;
                total += w;
            }
        }
        if total > 0.0 {
            for v in votes.iter_mut() {
                *v /= total;
            }
        }
        votes
    }
}

/// The FAQ entries of a snapshot with their model and index.
pub struct FaqIndex {
    entries: Vec<FaqEntry>,
    model: Option<Model>,
    neighbours: Option<Neighbours>,
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

impl FaqIndex {
    /// Builds the model and index for a set of entries.
    pub fn build(entries: Vec<FaqEntry>, cfg: &FaqConfig) -> Result<FaqIndex, String> {
        let mut texts = Vec::new();
        let mut labels = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            for t in e
                .examples
                .iter()
                .chain(e.keywords.iter())
                .chain(std::iter::once(&e.title))
            {
                if !t.trim().is_empty() {
                    texts.push(t.clone());
                    labels.push(i);
                }
            }
        }
        let (model, neighbours) = if texts.is_empty() || entries.len() < 2 {
            (None, None)
        } else {
            (
                Some(Model::train(&texts, &labels, entries.len())),
                Some(Neighbours::build(&texts, &labels)?),
            )
        };
        Ok(FaqIndex {
            entries,
            model,
            neighbours,
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

    /// The same index with other thresholds (for evaluation sweeps).
    pub fn with_thresholds(mut self, threshold: f64, margin: f64) -> FaqIndex {
        self.threshold = threshold;
        self.margin = margin;
        self
    }

    /// Scores of every entry for a question (subject plus cleaned body).
    pub fn scores(&self, question: &str) -> Vec<f64> {
        let (Some(model), Some(nb)) = (&self.model, &self.neighbours) else {
            return vec![0.0; self.entries.len()];
        };
        let stem = stemmer();
        let known = model.known(question, &stem);
        let factor = known * known;
        let p = model.predict(question, &stem);
        let v = nb.vote(question, self.entries.len());
        if v.iter().all(|x| *x == 0.0) {
            // No similar example at all: the model alone speaks.
            return p.into_iter().map(|x| x * factor).collect();
        }
        p.iter()
            .zip(v.iter())
            .map(|(p, v)| factor * (p + VOTE_WEIGHT * v) / (1.0 + VOTE_WEIGHT))
            .collect()
    }

    /// Scores a question and judges confidence.
    pub fn query(&self, question: &str) -> FaqResult {
        let mut result = FaqResult::default();
        if self.model.is_none() {
            result.reason = match self.entries.len() {
                0 => "no FAQ entries".into(),
                _ => "the FAQ needs at least two entries".into(),
            };
            return result;
        }
        if words(question).is_empty() {
            result.reason = "no words to match".into();
            return result;
        }
        let scores = self.scores(question);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
        result.candidates = order
            .iter()
            .take(5)
            .map(|&i| Candidate {
                id: self.entries[i].id.clone(),
                score: scores[i],
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
        let second = r.candidates.get(1);
        let margin = r.margin();
        if best.score < threshold {
            r.reason = format!(
                "best match {} scores {:.2}, below the threshold {:.2}",
                best.id, best.score, threshold
            );
        } else if margin < self.margin {
            r.reason = format!(
                "best match {} ({:.2}) is too close to {} ({:.2}): lead {:.2} < margin {:.2}",
                best.id,
                best.score,
                second.map_or("", |c| c.id.as_str()),
                second.map_or(0.0, |c| c.score),
                margin,
                self.margin
            );
        } else {
            r.confident = true;
            r.reason = format!(
                "{} scores {:.2} (threshold {:.2}) and leads by {:.2} (margin {:.2})",
                best.id, best.score, threshold, margin, self.margin
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, examples: &[&str]) -> FaqEntry {
        let loc = crate::diag::Location {
            path: "x".into(),
            line: 1,
            col: 1,
        };
        FaqEntry {
            id: id.into(),
            title: id.into(),
            template: "t".into(),
            keywords: vec![],
            examples: examples.iter().map(|s| s.to_string()).collect(),
            threshold: None,
            location: loc.clone(),
            template_location: loc,
        }
    }

    #[test]
    fn features() {
        assert_eq!(
            words("Don't   PANIC—it’s 42!"),
            vec!["dont", "panic", "its", "42"]
        );
        let (w, c) = raw_features("card arrived", &stemmer());
        assert_eq!(w, vec!["card", "arriv", "card arriv"]);
        assert!(c.contains(&" c".to_string()) && c.contains(&"card ".to_string()));
    }

    #[test]
    fn learns_and_separates() -> Result<(), String> {
        let idx = FaqIndex::build(
            vec![
                entry(
                    "hours",
                    &[
                        "when are you open",
                        "opening hours please",
                        "are you open on sunday",
                        "what time do you close",
                    ],
                ),
                entry(
                    "refund",
                    &[
                        "where is my refund",
                        "I want my money back",
                        "refund still not received",
                        "how long does a refund take",
                    ],
                ),
                entry(
                    "password",
                    &[
                        "forgot my password",
                        "reset my password",
                        "cannot log in",
                        "password reset link broken",
                    ],
                ),
            ],
            &FaqConfig {
                threshold: 0.4,
                margin: 0.1,
            },
        )?;
        let r = idx.query("Hi, what time are you open on Saturday?");
        assert_eq!(r.best().map(|c| c.id.as_str()), Some("hours"), "{r:?}");
        let r = idx.query("my refund has still not been received");
        assert_eq!(r.best().map(|c| c.id.as_str()), Some("refund"), "{r:?}");
        assert!(r.confident, "{r:?}");
        let s: f64 = idx.scores("anything at all").iter().sum();
        assert!(
            (s - 1.0).abs() < 1e-6 || s < 1e-9,
            "scores are a distribution: {s}"
        );
        assert!(!idx.query("").confident);
        Ok(())
    }
}
