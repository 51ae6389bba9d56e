//! The FAQ matcher: which FAQ entry answers this question, and how sure
//! are we?
//!
//! Built once per knowledge snapshot from the entries' example questions
//! (plus titles and keywords), and a pure function of (question, snapshot)
//! afterwards:
//!
//! 1. **Words**: Unicode-normalised, lower-cased; a word the FAQ never uses
//!    that is one edit (insertion, deletion, substitution, swap of two
//!    letters) away from one it does is read as that word (`Speller`).
//! 2. **Features**: TF-IDF of stemmed words (uni- and bigrams) and of
//!    character 2–5-grams, so word forms and remaining typos cost little.
//! 3. **A classifier**: multinomial logistic regression on those features
//!    says which entry the question is about.
//! 4. **Nearest examples**: the cosine similarity of the question to the
//!    closest example of each entry, compared with how close that entry's
//!    own examples are to each other. A question far from every example of
//!    the entry the classifier picked is about something the FAQ does not
//!    cover, however sure the classifier is.
//! 5. **Confidence**: a small logistic model over those signals (the
//!    classifier's probability and lead, the similarity and its gap to the
//!    entry's typical one, how many content words the question has) turns
//!    them into a probability that the answer is right. It is fitted on
//!    cross-validated predictions of the FAQ's own examples when the FAQ is
//!    built, with some entries left out to stand for questions the FAQ does
//!    not cover, so that a threshold means the same on every FAQ.
//!
//! An e-mail is scored as its request ([`crate::classify::question`]):
//! when it has several sentences, those that resemble no example (a
//! sentence of context) are set aside, so one extra sentence cannot sink a
//! clear question. An automatic answer needs the best entry to clear the
//! threshold *and* lead the runner-up by the margin.

// A fast hasher: the maps are built from the FAQ and only looked up with
// text from mail (no inserts), so hash flooding does not apply.
use rustc_hash::FxHashMap as HashMap;

use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use crate::classify::question::Question;
use crate::config::FaqConfig;
use crate::knowledge::FaqEntry;

/// One scored FAQ entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub id: String,
    /// Confidence between 0 and 1.
    pub score: f64,
}

/// What the matcher looked at and found, for explanations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The text that was scored.
    pub scored: String,
    /// Sentences set aside because they resemble no example (context).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<String>,
    /// Words read as FAQ words: (as written, read as).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub corrected: Vec<(String, String)>,
    /// The classifier's probability for the best entry.
    pub model: f64,
    /// Cosine similarity to the closest example of the best entry.
    pub similarity: f64,
    /// How close that entry's examples typically are to each other: a
    /// question well below this is probably about something else.
    pub typical: f64,
    /// Words of the question that say something (not greetings, not
    /// function words, not numbers).
    pub content_words: usize,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
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

/// Examples that vote.
const NEIGHBOURS: usize = 10;

/// Most classifier weights kept dense (8 bytes each while training).
const DENSE_WEIGHTS: usize = 8_000_000;

/// SGD settings of the classifier.
const EPOCHS: usize = 10;
const LEARNING_RATE: f64 = 3.0;
const L2: f64 = 1e-5;
/// Upper bound of multiply-adds spent on training, so a very large FAQ
/// still loads in seconds (fewer epochs, never fewer than two).
const TRAINING_BUDGET: f64 = 4e9;

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
    let t = if text.is_ascii() {
        folded_ascii(text)
    } else {
        folded(text)
    };
    t.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.chars().count() <= 40)
        .map(str::to_string)
        .collect()
}

/// NFKC, lower case, apostrophes dropped.
fn folded(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !matches!(c, '\'' | '’' | '`'))
        .collect()
}

/// [`folded`] for ASCII text (its own NFKC form), without decoding.
fn folded_ascii(text: &str) -> String {
    text.bytes()
        .filter(|b| !matches!(b, b'\'' | b'`'))
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

fn stemmer() -> rust_stemmers::Stemmer {
    rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English)
}

/// Whether a word says something about the topic.
fn is_content(w: &str) -> bool {
    !w.chars().all(|c| c.is_ascii_digit()) && !NEUTRAL.contains(&w)
}

/// Typo tolerance: words within one edit of the FAQ's own words.
///
/// A symmetric-delete index (SymSpell): every FAQ word is stored under
/// itself and each of its one-letter deletions; a word of the question is
/// looked up the same way, which finds every FAQ word one insertion,
/// deletion, substitution or swap of neighbouring letters away, without
/// comparing against the whole vocabulary.
#[derive(Debug, Default)]
struct Speller {
    words: Vec<(String, u32)>,
    known: HashMap<String, u32>,
    deletes: HashMap<String, Vec<u32>>,
}

/// Shortest word that is corrected: shorter ones have too many neighbours.
const MIN_CORRECTED_LEN: usize = 4;

/// Calls `f` with each deletion of `w`: `w` without one of its
/// characters, first to last (one reused buffer).
#[inline]
fn for_each_deletion(w: &str, mut f: impl FnMut(&str)) {
    let mut key = String::with_capacity(w.len());
    for (at, c) in w.char_indices() {
        key.clear();
        key.push_str(&w[..at]);
        key.push_str(&w[at + c.len_utf8()..]);
        f(&key);
    }
}

/// Optimal-string-alignment distance, stopping early above `max`.
fn edit_distance(a: &str, b: &str, max: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

impl Speller {
    fn build<'a>(texts: impl Iterator<Item = &'a str>) -> Speller {
        let mut counts: HashMap<String, u32> = HashMap::default();
        for t in texts {
            for w in words(t) {
                if w.chars().all(char::is_alphabetic) {
                    *counts.entry(w).or_default() += 1;
                }
            }
        }
        let mut list: Vec<(String, u32)> = counts.into_iter().collect();
        list.sort();
        let mut s = Speller::default();
        for (i, (w, n)) in list.iter().enumerate() {
            s.known.insert(w.clone(), *n);
            if w.chars().count() >= MIN_CORRECTED_LEN - 1 {
                s.deletes.entry(w.clone()).or_default().push(i as u32);
                for_each_deletion(w, |d| {
                    s.deletes.entry(d.to_string()).or_default().push(i as u32);
                });
            }
        }
        s.words = list;
        s
    }

    fn knows(&self, w: &str) -> bool {
        self.known.contains_key(w)
    }

    /// The FAQ word a question word stands for, when it is not one itself
    /// and exactly one edit away (the most frequent such word).
    fn correct(&self, w: &str) -> Option<&str> {
        if self.knows(w)
            || w.chars().count() < MIN_CORRECTED_LEN
            || !w.chars().all(char::is_alphabetic)
        {
            return None;
        }
        let mut best: Option<(u32, &str)> = None;
        let mut consider = |idx: &u32| {
            let (cand, n) = &self.words[*idx as usize];
            if edit_distance(w, cand, 1) == 1
                && best.is_none_or(|(bn, bw)| (*n, bw) > (bn, cand.as_str()))
            {
                best = Some((*n, cand.as_str()));
            }
        };
        if let Some(list) = self.deletes.get(w) {
            list.iter().for_each(&mut consider);
        }
        for_each_deletion(w, |d| {
            if let Some(list) = self.deletes.get(d) {
                list.iter().for_each(&mut consider);
            }
        });
        best.map(|(_, w)| w)
    }
}

/// A question's words after spelling correction, with the corrections.
fn corrected_words(text: &str, speller: &Speller) -> (Vec<String>, Vec<(String, String)>) {
    let mut fixes = Vec::new();
    let ws = words(text)
        .into_iter()
        .map(|w| match speller.correct(&w) {
            Some(c) => {
                fixes.push((w, c.to_string()));
                c.to_string()
            }
            None => w,
        })
        .collect();
    (ws, fixes)
}

/// Raw features of a word list: (word features, character features).
fn raw_features(ws: &[String], stem: &rust_stemmers::Stemmer) -> (Vec<String>, Vec<String>) {
    let stemmed: Vec<String> = ws.iter().map(|w| stem.stem(w).into_owned()).collect();
    let mut word = stemmed.clone();
    for pair in stemmed.windows(2) {
        word.push(format!("{} {}", pair[0], pair[1]));
    }
    let mut chars = Vec::new();
    for w in ws {
        for_each_gram(w, |g| chars.push(g.to_string()));
    }
    (word, chars)
}

/// Calls `f` with each character n-gram (2 to 5 characters) of `w`
/// padded with a space each side, shortest first, left to right.
fn for_each_gram(w: &str, mut f: impl FnMut(&str)) {
    let mut padded = String::with_capacity(w.len() + 2);
    padded.push(' ');
    padded.push_str(w);
    padded.push(' ');
    // Byte offsets of the characters, and of the end.
    let mut bounds: Vec<usize> = padded.char_indices().map(|(i, _)| i).collect();
    bounds.push(padded.len());
    let chars = bounds.len() - 1;
    for n in 2..=5 {
        if n > chars {
            break;
        }
        for start in 0..=chars - n {
            f(&padded[bounds[start]..bounds[start + n]]);
        }
    }
}

/// The key of a character n-gram in the vocabulary: a 64-bit hash of its
/// text (two different n-grams of one FAQ sharing a key is a chance of
/// about one in 10^10; it would only merge their weights).
fn gram_key(gram: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    gram.hash(&mut h);
    h.finish()
}

/// A sparse vector: (feature, value), sorted by feature.
type Sparse = Vec<(u32, f32)>;

/// Term counts of a word list in the two feature blocks (word features,
/// character features): each block's feature ids, once per occurrence
/// (counted when normalised), with the list's words' features.
#[derive(Debug, Default, Clone)]
struct Counts {
    ids: [Vec<u32>; 2],
    words: Vec<std::rc::Rc<WordFeatures>>,
}

impl Counts {
    /// Sorts each block's ids (the order of occurrence does not count).
    fn sort(&mut self) {
        self.ids.iter_mut().for_each(|b| b.sort_unstable());
    }

    /// [`Counts::sort`] for counts joined from sorted parts
    /// ([`Vocab::join`]): sorted runs end to end (with the word pair
    /// across each join between them), which the run-merging stable sort
    /// handles in about linear time.
    fn sort_runs(&mut self) {
        self.ids.iter_mut().for_each(|b| b.sort());
    }

    fn add(&mut self, other: &Counts) {
        for (mine, theirs) in self.ids.iter_mut().zip(&other.ids) {
            mine.extend_from_slice(theirs);
        }
        self.words.extend(other.words.iter().cloned());
    }
}

/// TF-IDF vocabulary of the two feature blocks.
#[derive(Debug, Default)]
struct Vocab {
    /// Stemmed words.
    word: HashMap<String, u32>,
    /// Pairs of neighbouring stemmed words, by the two words' features
    /// (see [`pair_key`]): both words of a pair are features themselves.
    pairs: HashMap<u64, u32>,
    /// Character n-grams by [`gram_key`]: looked up straight from the
    /// question's text, without building a string per n-gram.
    chars: HashMap<u64, u32>,
    idf: Vec<f32>,
    /// The IDF of a word no example uses.
    max_idf: f64,
    /// Tells this vocabulary's entries in the per-thread word cache
    /// apart from those of an earlier one (a reload builds a new one).
    id: u64,
}

/// What counting needs of one word: its stem's word feature and the
/// character n-grams the vocabulary knows. Pure functions of the
/// word and the vocabulary, so they are cached per thread: the words of
/// mail repeat, and stemming plus four lookups per letter were a sixth
/// of a backlog's CPU.
#[derive(Debug)]
struct WordFeatures {
    word: Option<u32>,
    grams: Box<[u32]>,
}

/// Distinct words each parsing thread remembers (a few hundred KiB);
/// when full, the cache starts over.
const WORD_CACHE: usize = 2048;

#[derive(Default)]
struct WordCache {
    vocab: u64,
    words: HashMap<String, std::rc::Rc<WordFeatures>>,
}

thread_local! {
    static WORDS: std::cell::RefCell<WordCache> = std::cell::RefCell::new(WordCache::default());
}

/// The key of the pair of word features `a b`.
fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// A distinct id per vocabulary built in this process (0: none).
fn next_vocab_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Vocab {
    /// Builds the vocabulary of a set of texts and their vectors. Feature
    /// strings are interned as they are met, so memory holds each distinct
    /// feature once plus an id per occurrence.
    fn build(texts: &[&str], stem: &rust_stemmers::Stemmer) -> (Vocab, Vec<Sparse>) {
        let n = texts.len() as f64;
        let mut ids: [HashMap<String, u32>; 2] = [HashMap::default(), HashMap::default()];
        let mut df: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut docs: Vec<[Vec<u32>; 2]> = Vec::with_capacity(texts.len());
        for t in texts {
            let (w, c) = raw_features(&words(t), stem);
            let mut doc: [Vec<u32>; 2] = [Vec::with_capacity(w.len()), Vec::with_capacity(c.len())];
            for (b, feats) in [w, c].into_iter().enumerate() {
                for f in feats {
                    let next = ids[b].len() as u32;
                    let id = *ids[b].entry(f).or_insert(next);
                    if id as usize == df[b].len() {
                        df[b].push(0);
                    }
                    doc[b].push(id);
                }
                let mut seen = doc[b].clone();
                seen.sort_unstable();
                seen.dedup();
                for id in seen {
                    df[b][id as usize] += 1;
                }
            }
            docs.push(doc);
        }
        // Final indices in sorted order of the features, so the same
        // files give the same model.
        let mut v = Vocab {
            max_idf: (1.0 + n).ln() + 1.0,
            id: next_vocab_id(),
            ..Vocab::default()
        };
        let mut remap: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut pairs = Vec::new();
        for (b, map) in ids.into_iter().enumerate() {
            let mut keys: Vec<(String, u32)> = map.into_iter().collect();
            keys.sort();
            remap[b] = vec![0; keys.len()];
            for (k, old) in keys {
                let idx = v.idf.len() as u32;
                let d = df[b][old as usize];
                v.idf
                    .push((((1.0 + n) / (1.0 + f64::from(d))).ln() + 1.0) as f32);
                remap[b][old as usize] = idx;
                if b == 1 {
                    v.chars.insert(gram_key(&k), idx);
                } else if k.contains(' ') {
                    pairs.push((k, idx));
                } else {
                    v.word.insert(k, idx);
                }
            }
        }
        for (k, idx) in pairs {
            let ids = k
                .split_once(' ')
                .and_then(|(a, b)| Some((*v.word.get(a)?, *v.word.get(b)?)));
            if let Some((a, b)) = ids {
                v.pairs.insert(pair_key(a, b), idx);
            }
        }
        let xs = docs
            .into_iter()
            .map(|mut doc| {
                for (b, list) in doc.iter_mut().enumerate() {
                    for id in list.iter_mut() {
                        *id = remap[b][*id as usize];
                    }
                }
                doc.iter_mut().for_each(|b| b.sort_unstable());
                v.normalise_sorted(&doc)
            })
            .collect();
        (v, xs)
    }

    fn dim(&self) -> usize {
        self.idf.len()
    }

    /// Sparse unit vector of a word list, computed without allocating per
    /// feature: every n-gram is looked up from one reused buffer, so the
    /// memory a question needs is bounded by its distinct known features.
    #[cfg(test)]
    fn vector_words(&self, ws: &[String], stem: &rust_stemmers::Stemmer) -> Sparse {
        self.normalise(&self.counts(ws, stem).ids)
    }

    /// Term counts of a word list (both blocks) with its stemmed words.
    fn counts(&self, ws: &[String], stem: &rust_stemmers::Stemmer) -> Counts {
        let mut c = Counts::default();
        WORDS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.vocab != self.id || cache.words.len() >= WORD_CACHE {
                cache.words.clear();
                cache.vocab = self.id;
            }
            for w in ws {
                let f = match cache.words.get(w.as_str()) {
                    Some(f) => f.clone(),
                    None => {
                        let f = std::rc::Rc::new(self.features(w, stem));
                        cache.words.insert(w.clone(), f.clone());
                        f
                    }
                };
                if let Some(i) = f.word {
                    c.ids[0].push(i);
                }
                if let Some(i) = c.words.last().and_then(|p| self.pair(p, &f)) {
                    c.ids[0].push(i);
                }
                c.ids[1].extend_from_slice(&f.grams);
                c.words.push(f);
            }
        });
        c
    }

    /// A word's word feature (of its stem) and its known character n-grams
    /// (of 2 to 5 characters of the word padded with a space each side).
    fn features(&self, w: &str, stem: &rust_stemmers::Stemmer) -> WordFeatures {
        let word = self.word.get(stem.stem(w).as_ref()).copied();
        let mut grams = Vec::new();
        for_each_gram(w, |g| {
            if let Some(&i) = self.chars.get(&gram_key(g)) {
                grams.push(i);
            }
        });
        WordFeatures {
            word,
            grams: grams.into_boxed_slice(),
        }
    }

    /// The feature of the word pair `a b`, when the vocabulary has it.
    fn pair(&self, a: &WordFeatures, b: &WordFeatures) -> Option<u32> {
        self.pairs.get(&pair_key(a.word?, b.word?)).copied()
    }

    /// The counts of word lists joined end to end, from their separate
    /// counts: the same as counting the joined list, without looking up
    /// every n-gram again (only the word pairs across each join are new).
    fn join<'a>(&self, parts: impl Iterator<Item = &'a Counts>) -> Counts {
        let mut out = Counts::default();
        for part in parts {
            let pair = match (out.words.last(), part.words.first()) {
                (Some(prev), Some(first)) => self.pair(prev, first),
                _ => None,
            };
            out.ids[0].extend(pair);
            out.add(part);
        }
        out
    }

    /// [`Vocab::normalise_sorted`] of blocks in any order.
    #[cfg(test)]
    fn normalise(&self, ids: &[Vec<u32>; 2]) -> Sparse {
        let mut sorted = ids.clone();
        sorted.iter_mut().for_each(|b| b.sort_unstable());
        self.normalise_sorted(&sorted)
    }

    /// Per block `(1 + ln tf) · idf`, L2-normalised, each block scaled by
    /// 1/√2, from the blocks' feature ids (once per occurrence), sorted
    /// (see [`Counts::sort`]).
    fn normalise_sorted(&self, ids: &[Vec<u32>; 2]) -> Sparse {
        let mut out = Vec::new();
        for sorted in ids {
            if sorted.is_empty() {
                continue;
            }
            debug_assert!(sorted.is_sorted());
            let mut block: Sparse = Vec::with_capacity(sorted.len());
            for run in sorted.chunk_by(|a, b| a == b) {
                let i = run[0];
                let c = run.len() as f32;
                block.push((i, (1.0 + c.ln()) * self.idf[i as usize]));
            }
            let norm = block.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                let k = norm * std::f32::consts::SQRT_2;
                out.extend(block.into_iter().map(|(i, v)| (i, v / k)));
            }
        }
        out.sort_unstable_by_key(|(i, _)| *i);
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

/// Multinomial logistic regression. Weights are dense (features ×
/// entries) while that fits in [`DENSE_WEIGHTS`]; for larger FAQs they
/// are sparse: a feature then has a weight for an entry only when some
/// example of that entry has the feature, which keeps memory proportional
/// to the examples, not to features × entries (at a small cost in
/// accuracy).
#[derive(Debug, Default)]
struct Model {
    /// Sparse layout: row start of each feature in `classes_of` /
    /// `weights` (CSR). Empty for the dense layout.
    offsets: Vec<u32>,
    classes_of: Vec<u32>,
    /// Dense: `dim × classes`, row-major by feature. Sparse: per pair.
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
    fn dense(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The weights of feature `j`: (entries, weights); the entries are
    /// `None` for a dense row (all entries in order).
    fn row(&self, j: usize) -> (Option<&[u32]>, &[f32]) {
        if self.dense() {
            let row = self
                .weights
                .get(j * self.classes..(j + 1) * self.classes)
                .unwrap_or_default();
            (None, row)
        } else {
            match (self.offsets.get(j), self.offsets.get(j + 1)) {
                (Some(a), Some(b)) => {
                    let (a, b) = (*a as usize, *b as usize);
                    (Some(&self.classes_of[a..b]), &self.weights[a..b])
                }
                _ => (Some(&[]), &[]),
            }
        }
    }

    /// Adds `f × row(j)` to the scores `z`.
    fn add_row(&self, j: usize, f: f32, z: &mut [f32]) {
        match self.row(j) {
            (None, w) => {
                for (zc, wc) in z.iter_mut().zip(w) {
                    *zc += f * wc;
                }
            }
            (Some(cs), w) => {
                for (c, wc) in cs.iter().zip(w) {
                    if let Some(zc) = z.get_mut(*c as usize) {
                        *zc += f * wc;
                    }
                }
            }
        }
    }

    fn train(xs: &[&Sparse], labels: &[usize], classes: usize, dim: usize) -> Model {
        let mut m = Model {
            classes,
            bias: vec![0.0; classes],
            ..Model::default()
        };
        if dim.saturating_mul(classes) <= DENSE_WEIGHTS {
            m.weights = vec![0f32; dim * classes];
        } else {
            // The (feature, entry) pairs that occur in the examples.
            let mut rows: Vec<Vec<u32>> = vec![Vec::new(); dim];
            for (x, l) in xs.iter().zip(labels) {
                for &(f, _) in x.iter() {
                    rows[f as usize].push(*l as u32);
                }
            }
            m.offsets.push(0u32);
            for r in &mut rows {
                r.sort_unstable();
                r.dedup();
                m.classes_of.extend_from_slice(r);
                m.offsets.push(m.classes_of.len() as u32);
            }
            m.weights = vec![0f32; m.classes_of.len()];
        }
        let work: usize = xs
            .iter()
            .map(|x| {
                x.iter()
                    .map(|(f, _)| m.row(*f as usize).1.len())
                    .sum::<usize>()
                    + classes
            })
            .sum();
        let per_epoch = 2.0 * work as f64;
        let epochs = ((TRAINING_BUDGET / per_epoch.max(1.0)) as usize).clamp(2, EPOCHS);
        let steps = (epochs * xs.len()).max(1) as f64;
        let mut order: Vec<usize> = (0..xs.len()).collect();
        let mut rng = XorShift(42);
        let mut bias = vec![0f64; classes];
        let mut z32 = vec![0f32; classes];
        let mut z = vec![0f64; classes];
        let mut g = vec![0f32; classes];
        let mut scale = 1.0f64;
        let mut t = 0f64;
        for _ in 0..epochs {
            rng.shuffle(&mut order);
            for &i in &order {
                let lr = LEARNING_RATE * (1.0 - t / steps);
                t += 1.0;
                let x = xs[i];
                z32.iter_mut().for_each(|v| *v = 0.0);
                for &(j, val) in x.iter() {
                    m.add_row(j as usize, val, &mut z32);
                }
                for ((zc, z3), b) in z.iter_mut().zip(&z32).zip(&bias) {
                    *zc = b + scale * f64::from(*z3);
                }
                softmax(&mut z);
                z[labels[i]] -= 1.0;
                scale *= 1.0 - lr * L2;
                let coef = lr / scale;
                for (gc, zc) in g.iter_mut().zip(&z) {
                    *gc = *zc as f32;
                }
                for &(j, val) in x.iter() {
                    let f = (coef * f64::from(val)) as f32;
                    let j = j as usize;
                    if m.dense() {
                        let row = &mut m.weights[j * classes..(j + 1) * classes];
                        for (w, gc) in row.iter_mut().zip(&g) {
                            *w -= f * gc;
                        }
                    } else {
                        let (a, b) = (m.offsets[j] as usize, m.offsets[j + 1] as usize);
                        for (c, w) in m.classes_of[a..b].iter().zip(m.weights[a..b].iter_mut()) {
                            *w -= f * g[*c as usize];
                        }
                    }
                }
                for (b, gc) in bias.iter_mut().zip(z.iter()) {
                    *b -= lr * gc;
                }
                if scale < 1e-6 {
                    for w in m.weights.iter_mut() {
                        *w = (f64::from(*w) * scale) as f32;
                    }
                    scale = 1.0;
                }
            }
        }
        for w in m.weights.iter_mut() {
            *w = (f64::from(*w) * scale) as f32;
        }
        m.bias = bias.into_iter().map(|b| b as f32).collect();
        m
    }

    /// Raw class scores (before the softmax).
    fn logits(&self, x: &Sparse) -> Vec<f64> {
        let mut z = vec![0f32; self.classes];
        for &(j, val) in x {
            self.add_row(j as usize, val, &mut z);
        }
        z.iter()
            .zip(&self.bias)
            .map(|(v, b)| f64::from(*v) + f64::from(*b))
            .collect()
    }
}

/// Nearest examples: an inverted index over the examples' TF-IDF vectors.
#[derive(Debug, Default)]
struct Knn {
    /// feature → (example, value), in one array: feature `f`'s list is
    /// `entries[starts[f]..starts[f + 1]]` (a list per feature would cost
    /// 24 bytes per feature of the vocabulary plus unused capacity).
    starts: Vec<u32>,
    entries: Vec<(u32, f32)>,
    /// Whether a feature counts for similarity (common ones do not).
    kept: Vec<bool>,
    labels: Vec<u32>,
    classes: usize,
}

impl Knn {
    fn build(xs: &[&Sparse], labels: &[usize], classes: usize, dim: usize) -> Knn {
        let mut counts = vec![0u32; dim];
        for x in xs {
            for &(f, _) in x.iter() {
                counts[f as usize] += 1;
            }
        }
        // Features in more than a tenth of the examples (" th", "e ") say
        // little about which example is nearest but make up most of the
        // work of a lookup: similarity leaves them out.
        let common = (xs.len() / 10).max(50) as u32;
        let kept: Vec<bool> = counts.iter().map(|&n| n <= common).collect();
        let mut starts = Vec::with_capacity(dim + 1);
        let mut total = 0u32;
        for (n, k) in counts.iter().zip(&kept) {
            starts.push(total);
            if *k {
                total += n;
            }
        }
        starts.push(total);
        let mut next: Vec<u32> = starts[..dim].to_vec();
        let mut entries = vec![(0u32, 0f32); total as usize];
        for (e, x) in xs.iter().enumerate() {
            for &(f, v) in x.iter() {
                if kept[f as usize] {
                    let at = &mut next[f as usize];
                    entries[*at as usize] = (e as u32, v);
                    *at += 1;
                }
            }
        }
        Knn {
            starts,
            entries,
            kept,
            labels: labels.iter().map(|l| *l as u32).collect(),
            classes,
        }
    }

    /// The (example, value) list of a feature; empty for common ones.
    fn posting(&self, f: u32) -> &[(u32, f32)] {
        let f = f as usize;
        match (self.starts.get(f), self.starts.get(f + 1)) {
            (Some(&a), Some(&b)) => self.entries.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The similarity of two examples, as the index measures it.
    fn similarity(&self, a: &Sparse, b: &Sparse) -> f32 {
        let (mut i, mut j, mut s) = (0, 0, 0.0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    if self.kept.get(a[i].0 as usize).copied().unwrap_or(false) {
                        s += a[i].1 * b[j].1;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        s
    }

    /// The highest cosine similarity to an example of each class.
    fn per_class_max(&self, q: &Sparse) -> Vec<f32> {
        self.neighbours(q).0
    }

    /// The highest cosine similarity to any example.
    fn best_similarity(&self, q: &Sparse) -> f32 {
        self.similarities(q).into_iter().fold(0f32, f32::max)
    }

    /// The similarity of `q` to every example, by example.
    fn similarities(&self, q: &Sparse) -> Vec<f32> {
        let mut acc = vec![0f32; self.labels.len()];
        for &(f, v) in q {
            for &(e, w) in self.posting(f) {
                acc[e as usize] += v * w;
            }
        }
        acc
    }

    /// The highest cosine similarity to an example of each class, and the
    /// vote of the nearest examples (similarity², normalised).
    fn neighbours(&self, q: &Sparse) -> (Vec<f32>, Vec<f64>) {
        let acc = self.similarities(q);
        let mut best = vec![0f32; self.classes];
        for (s, c) in acc.iter().zip(&self.labels) {
            let c = *c as usize;
            if *s > best[c] {
                best[c] = *s;
            }
        }
        let mut idx: Vec<u32> = (0..acc.len() as u32)
            .filter(|&e| acc[e as usize] > 0.0)
            .collect();
        let k = NEIGHBOURS.min(idx.len());
        if k > 0 && k < idx.len() {
            idx.select_nth_unstable_by(k - 1, |a, b| acc[*b as usize].total_cmp(&acc[*a as usize]));
            idx.truncate(k);
        }
        let mut vote = vec![0f64; self.classes];
        let mut total = 0.0;
        for e in idx {
            let w = f64::from(acc[e as usize]).powi(2);
            vote[self.labels[e as usize] as usize] += w;
            total += w;
        }
        if total > 0.0 {
            vote.iter_mut().for_each(|v| *v /= total);
        }
        (best, vote)
    }
}

/// How close an entry's examples are to each other: for each example the
/// similarity to its nearest neighbour in the same entry; the entry's
/// typical value is the lower quartile (at most 60 examples are used).
fn typical_similarity(knn: &Knn, xs: &[&Sparse], labels: &[usize], classes: usize) -> Vec<f32> {
    let mut by: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, l) in labels.iter().enumerate() {
        if by[*l].len() < 60 {
            by[*l].push(i);
        }
    }
    by.iter()
        .map(|idx| {
            if idx.len() < 2 {
                return 0.5;
            }
            let mut nn: Vec<f32> = idx
                .iter()
                .map(|&i| {
                    idx.iter()
                        .filter(|&&j| j != i)
                        .map(|&j| knn.similarity(xs[i], xs[j]))
                        .fold(0f32, f32::max)
                })
                .collect();
            nn.sort_by(f32::total_cmp);
            nn[nn.len() / 4]
        })
        .collect()
}

/// The signals the confidence is computed from, for one candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Signals {
    /// Classifier probability.
    pub p: f64,
    /// Lead over the best other entry's probability.
    pub lead: f64,
    /// Cosine similarity to the nearest example.
    pub sim: f64,
    /// The entry's typical similarity.
    pub typical: f64,
    /// Content words of the question.
    pub content: f64,
    /// Share of the content words the FAQ's examples use.
    pub known: f64,
    /// Share of the question's content (weighted by how rare each word
    /// is) that this entry's own examples use.
    pub entry_known: f64,
    /// The classifier's raw score for the entry (before normalisation).
    pub logit: f64,
    /// Share of the nearest examples' vote that goes to the entry.
    pub vote: f64,
    /// Similarity lead over the closest example of any other entry.
    pub sim_gap: f64,
    /// Content words the FAQ uses, but not this entry's examples (summed
    /// IDF): words that point to another topic.
    pub foreign: f64,
    /// Log-sum-exp of all raw scores: how strongly the question speaks to
    /// any entry at all.
    pub energy: f64,
}

/// Number of calibrator inputs.
const FEATURES: usize = 12;
/// Number of weights a `[calibration]` table has.
pub const CALIBRATION_WEIGHTS: usize = FEATURES;

impl Signals {
    /// The calibrator's inputs.
    pub fn features(&self) -> [f64; FEATURES] {
        let logit = |p: f64| {
            let p = p.clamp(1e-4, 1.0 - 1e-4);
            (p / (1.0 - p)).ln()
        };
        [
            logit(self.p),
            self.lead,
            self.sim,
            self.sim - self.typical,
            (self.content.min(8.0)) / 8.0,
            f64::from(self.content <= 2.0),
            self.known,
            self.entry_known,
            self.vote,
            self.sim_gap,
            self.foreign.ln_1p(),
            f64::from(self.foreign == 0.0),
        ]
    }
}

/// The confidence model: logistic regression over [`Signals::features`].
#[derive(Debug, Clone, PartialEq)]
struct Calibrator {
    w: [f64; FEATURES],
    b: f64,
}

/// Fits the confidence model on labelled signals (is the candidate the
/// right answer?) by Newton's method, with a ridge penalty that pulls the
/// weights towards the shipped defaults: with little data the defaults
/// win, with much data the desk's own data does. Returns (weights, bias).
pub fn fit_calibration(samples: &[(Signals, bool)], ridge: f64) -> (Vec<f64>, f64) {
    const N: usize = FEATURES + 1;
    let prior = Calibrator::default();
    let mut beta = [0f64; N];
    beta[..FEATURES].copy_from_slice(&prior.w);
    beta[FEATURES] = prior.b;
    let mut prior_beta = beta;
    prior_beta[FEATURES] = prior.b;
    let rows: Vec<([f64; N], f64)> = samples
        .iter()
        .map(|(s, y)| {
            let mut x = [1f64; N];
            x[..FEATURES].copy_from_slice(&s.features());
            (x, f64::from(u8::from(*y)))
        })
        .collect();
    for _ in 0..25 {
        // Gradient and Hessian of the penalised negative log-likelihood.
        let mut g = [0f64; N];
        let mut h = [[0f64; N]; N];
        for (x, y) in &rows {
            let z: f64 = x.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let w = (p * (1.0 - p)).max(1e-9);
            for i in 0..N {
                g[i] += (p - y) * x[i];
                for j in 0..N {
                    h[i][j] += w * x[i] * x[j];
                }
            }
        }
        for i in 0..FEATURES {
            g[i] += ridge * (beta[i] - prior_beta[i]);
            h[i][i] += ridge;
        }
        h[FEATURES][FEATURES] += 1e-6;
        let Some(step) = solve(h, g) else { break };
        let mut change = 0f64;
        for i in 0..N {
            beta[i] -= step[i];
            change = change.max(step[i].abs());
        }
        if !beta.iter().all(|b| b.is_finite()) {
            return (prior.w.to_vec(), prior.b);
        }
        if change < 1e-6 {
            break;
        }
    }
    (beta[..FEATURES].to_vec(), beta[FEATURES])
}

/// Solves `a · x = b` (Gaussian elimination with partial pivoting).
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..N {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0f64; N];
    for i in (0..N).rev() {
        let s: f64 = (i + 1..N).map(|k| a[i][k] * x[k]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    Some(x)
}

impl Default for Calibrator {
    fn default() -> Self {
        Calibrator {
            w: [
                0.1484, 3.2981, 0.8339, -0.4180, 0.8381, -0.2203, 1.2846, 1.2674, 0.7658, 2.0956,
                0.2433, 0.5845,
            ],
            b: -4.2179,
        }
    }
}

impl Calibrator {
    fn from_calibration(c: &crate::knowledge::faq::Calibration) -> Option<Calibrator> {
        let w: [f64; FEATURES] = c.weights.as_slice().try_into().ok()?;
        w.iter()
            .chain(std::iter::once(&c.bias))
            .all(|v| v.is_finite())
            .then_some(Calibrator { w, b: c.bias })
    }

    fn confidence(&self, s: &Signals) -> f64 {
        let f = s.features();
        let z = self.b + self.w.iter().zip(f.iter()).map(|(w, x)| w * x).sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }
}

/// Everything built from the examples.
struct Matcher {
    /// Stemmed content words of each entry's examples (their word
    /// features).
    entry_words: Vec<rustc_hash::FxHashSet<u32>>,
    vocab: Vocab,
    speller: Speller,
    model: Model,
    knn: Knn,
    typical: Vec<f32>,
    calibrator: Calibrator,
}

/// A question scored against the matcher.
struct Scored {
    p: Vec<f64>,
    z: Vec<f64>,
    vote: Vec<f64>,
    sims: Vec<f32>,
    content: usize,
    known: f64,
    /// Stemmed content words: their word feature (none when no example
    /// uses them) and IDF weight.
    terms: Vec<(Option<u32>, f64)>,
}

impl Matcher {
    /// `background` marks the built-in out-of-scope questions: those that
    /// resemble an FAQ example are left out.
    fn build(texts: &[String], labels: &[usize], classes: usize, background: &[bool]) -> Matcher {
        let stem = stemmer();
        let all: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (vocab, mut xs) = Vocab::build(&all, &stem);
        let dim = vocab.dim();
        let mut texts: Vec<&String> = texts.iter().collect();
        let mut labels: Vec<usize> = labels.to_vec();
        if background.iter().any(|b| *b) {
            let own: Vec<usize> = (0..xs.len()).filter(|i| !background[*i]).collect();
            let own_x: Vec<&Sparse> = own.iter().map(|i| &xs[*i]).collect();
            let own_l: Vec<usize> = own.iter().map(|i| labels[*i]).collect();
            let probe = Knn::build(&own_x, &own_l, classes, dim);
            let keep: Vec<bool> = (0..xs.len())
                .map(|i| {
                    !background[i]
                        || probe.per_class_max(&xs[i])[..classes.saturating_sub(1)]
                            .iter()
                            .all(|s| *s < BACKGROUND_CONFLICT)
                })
                .collect();
            let mut k = keep.iter();
            xs.retain(|_| k.next().copied().unwrap_or(true));
            let mut k = keep.iter();
            texts.retain(|_| k.next().copied().unwrap_or(true));
            let mut k = keep.iter();
            labels.retain(|_| k.next().copied().unwrap_or(true));
        }
        let labels = &labels[..];
        let speller = Speller::build(texts.iter().map(|t| t.as_str()));
        let refs: Vec<&Sparse> = xs.iter().collect();
        let model = Model::train(&refs, labels, classes, dim);
        let knn = Knn::build(&refs, labels, classes, dim);
        let typical = typical_similarity(&knn, &refs, labels, classes);
        let mut entry_words = vec![rustc_hash::FxHashSet::default(); classes];
        for (t, l) in texts.iter().zip(labels) {
            for w in words(t) {
                if is_content(&w)
                    && let Some(&i) = vocab.word.get(stem.stem(&w).as_ref())
                {
                    entry_words[*l].insert(i);
                }
            }
        }
        Matcher {
            entry_words,
            vocab,
            speller,
            model,
            knn,
            typical,
            calibrator: Calibrator::default(),
        }
    }

    /// Scores a word list from its counts (see [`Vocab::counts`]).
    fn score(&self, ws: &[String], mut counts: Counts) -> Scored {
        counts.sort_runs();
        let content: Vec<(&String, &std::rc::Rc<WordFeatures>)> = ws
            .iter()
            .zip(&counts.words)
            .filter(|(w, _)| is_content(w))
            .collect();
        let known = if content.is_empty() {
            0.0
        } else {
            content
                .iter()
                .filter(|(w, _)| self.speller.knows(w))
                .count() as f64
                / content.len() as f64
        };
        let terms = content
            .iter()
            .map(|(_, f)| {
                let idf = f
                    .word
                    .and_then(|i| self.vocab.idf.get(i as usize))
                    .map(|v| f64::from(*v));
                (
                    f.word.filter(|_| idf.is_some()),
                    idf.unwrap_or(self.vocab.max_idf),
                )
            })
            .collect();
        let x = self.vocab.normalise_sorted(&counts.ids);
        let z = self.model.logits(&x);
        let mut p = z.clone();
        softmax(&mut p);
        let (sims, vote) = self.knn.neighbours(&x);
        Scored {
            p,
            z,
            vote,
            sims,
            content: content.len(),
            known,
            terms,
        }
    }

    fn signals(&self, s: &Scored, i: usize) -> Signals {
        let other =
            s.p.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| *p)
                .fold(0.0, f64::max);
        Signals {
            p: s.p[i],
            lead: s.p[i] - other,
            sim: f64::from(s.sims[i]),
            typical: f64::from(self.typical.get(i).copied().unwrap_or(0.5)),
            content: s.content as f64,
            known: s.known,
            logit: s.z[i],
            foreign: s
                .terms
                .iter()
                .filter(|t| t.0.is_some_and(|w| !self.entry_words[i].contains(&w)))
                .map(|t| t.1)
                .sum(),
            vote: s.vote[i],
            sim_gap: f64::from(s.sims[i])
                - s.sims
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, v)| f64::from(*v))
                    .fold(0.0, f64::max),
            energy: {
                let m = s.z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                m + s.z.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
            },
            entry_known: {
                let total: f64 = s.terms.iter().map(|t| t.1).sum::<f64>();
                let hit: f64 = s
                    .terms
                    .iter()
                    .filter(|t| t.0.is_some_and(|w| self.entry_words[i].contains(&w)))
                    .map(|t| t.1)
                    .sum();
                if total > 0.0 { hit / total } else { 0.0 }
            },
        }
    }
}

/// Questions about everything else (`background.txt`): every FAQ learns
/// them as "none of the entries" (unless `[faq] background = false`).
const BACKGROUND: &str = include_str!("background.txt");

/// A background question at least this similar to an FAQ example is left
/// out: it may be what the desk answers.
const BACKGROUND_CONFLICT: f32 = 0.5;

/// A fingerprint of the FAQ's ids and examples: a `[calibration]` fitted
/// on other examples is reported as stale.
pub fn examples_fingerprint(entries: &[FaqEntry]) -> String {
    let mut f = crate::util::Fingerprint::default();
    let mut sorted: Vec<&FaqEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    for e in sorted {
        f.add(std::path::Path::new(&e.id), &e.examples.join("\n"));
    }
    f.finish()
}

/// A sentence is set aside when its nearest example is less than this
/// share as close as the best sentence's.
const SET_ASIDE: f32 = 0.5;
/// …and is itself less similar than this to every example.
const SET_ASIDE_ABOVE: f32 = 0.3;

/// The FAQ entries of a snapshot with their matcher.
pub struct FaqIndex {
    entries: Vec<FaqEntry>,
    out_of_scope: Vec<String>,
    matcher: Option<Matcher>,
    calibration: Option<crate::knowledge::faq::Calibration>,
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
    /// Builds the matcher for a set of entries.
    pub fn build(entries: Vec<FaqEntry>, cfg: &FaqConfig) -> Result<FaqIndex, String> {
        Self::build_with(entries, Vec::new(), None, cfg)
    }

    /// Builds the matcher with questions no entry answers (`out_of_scope`,
    /// learned as a class of their own: negative evidence) and a
    /// confidence model fitted on the desk's own data.
    pub fn build_with(
        entries: Vec<FaqEntry>,
        out_of_scope: Vec<String>,
        calibration: Option<crate::knowledge::faq::Calibration>,
        cfg: &FaqConfig,
    ) -> Result<FaqIndex, String> {
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
        let mut classes = entries.len();
        let kept_out_of_scope = out_of_scope.clone();
        let mut background = vec![false; texts.len()];
        let builtin: Vec<&str> = if cfg.background {
            BACKGROUND
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect()
        } else {
            Vec::new()
        };
        if !out_of_scope.is_empty() || !builtin.is_empty() {
            for t in &out_of_scope {
                texts.push(t.clone());
                labels.push(entries.len());
                background.push(false);
            }
            for t in &builtin {
                texts.push((*t).to_string());
                labels.push(entries.len());
                background.push(true);
            }
            classes += 1;
        }
        let matcher = if texts.is_empty() || entries.len() < 2 {
            None
        } else {
            let mut m = Matcher::build(&texts, &labels, classes, &background);
            if let Some(c) = calibration.as_ref().and_then(Calibrator::from_calibration) {
                m.calibrator = c;
            }
            Some(m)
        };
        // A calibration's threshold applies when the config sets none.
        let threshold = match (&calibration, cfg.threshold_set) {
            (Some(c), false) => c.threshold.unwrap_or(cfg.threshold),
            _ => cfg.threshold,
        };
        Ok(FaqIndex {
            entries,
            out_of_scope: kept_out_of_scope,
            matcher,
            calibration,
            threshold,
            margin: cfg.margin,
        })
    }

    pub fn entries(&self) -> &[FaqEntry] {
        &self.entries
    }

    /// The questions no entry answers (`[[out_of_scope]]`).
    pub fn out_of_scope(&self) -> &[String] {
        &self.out_of_scope
    }

    /// The global threshold in force.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    pub fn entry(&self, id: &str) -> Option<&FaqEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// An entry's own threshold, when it has one: written in the entry, or
    /// fitted for it by the calibration.
    pub fn entry_threshold(&self, id: &str) -> Option<f64> {
        self.entry(id).and_then(|e| e.threshold).or_else(|| {
            self.calibration
                .as_ref()
                .and_then(|c| c.thresholds.get(id).copied())
        })
    }

    /// Replaces the confidence model (evaluation: refitting on
    /// cross-validated predictions).
    pub fn set_calibration(&mut self, c: crate::knowledge::faq::Calibration) {
        if let Some(m) = self.matcher.as_mut()
            && let Some(cal) = Calibrator::from_calibration(&c)
        {
            m.calibrator = cal;
        }
        self.calibration = Some(c);
    }

    /// The confidence of a set of signals under a fitted model (or the
    /// shipped default when it does not fit this version).
    pub fn confidence_with(c: Option<&crate::knowledge::faq::Calibration>, s: &Signals) -> f64 {
        c.and_then(Calibrator::from_calibration)
            .unwrap_or_default()
            .confidence(s)
    }

    /// The confidence of a set of signals under this index's model.
    pub fn confidence(&self, s: &Signals) -> f64 {
        self.matcher.as_ref().map_or_else(
            || Calibrator::default().confidence(s),
            |m| m.calibrator.confidence(s),
        )
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

    /// Scores a plain question (a line of text).
    pub fn query(&self, question: &str) -> FaqResult {
        self.query_question(&Question::from_text(question))
    }

    /// The signals of the best candidates of a question, for calibration
    /// and evaluation: (entry id, signals), best first.
    pub fn signals(&self, q: &Question) -> Vec<(String, Signals)> {
        self.evaluate(q)
            .map(|(_, c)| {
                c.into_iter()
                    .map(|(i, s)| (self.entries[i].id.clone(), s))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Scores a question: the best candidates with their signals.
    #[allow(clippy::type_complexity)]
    fn evaluate(&self, q: &Question) -> Option<(Evidence, Vec<(usize, Signals)>)> {
        let m = self.matcher.as_ref()?;
        let stem = stemmer();
        let mut segments: Vec<&str> = Vec::new();
        if let Some(s) = &q.subject {
            segments.push(s);
        }
        segments.extend(q.sentences.iter().map(String::as_str));
        let mut corrected = Vec::new();
        let seg_words: Vec<Vec<String>> = segments
            .iter()
            .map(|s| {
                let (ws, fixes) = corrected_words(s, &m.speller);
                corrected.extend(fixes);
                ws
            })
            .collect();
        // Each segment's terms are counted once: for setting aside and,
        // joined, for scoring.
        let seg_counts: Vec<Counts> = seg_words
            .iter()
            .map(|ws| {
                let mut c = m.vocab.counts(ws, &stem);
                c.sort();
                c
            })
            .collect();
        // Set aside sentences that resemble no example.
        let mut keep = vec![true; segments.len()];
        if segments.len() > 1 {
            let rel: Vec<f32> = seg_counts
                .iter()
                .map(|c| {
                    let x = m.vocab.normalise_sorted(&c.ids);
                    m.knn.best_similarity(&x)
                })
                .collect();
            let best = rel.iter().copied().fold(0f32, f32::max);
            for (k, r) in keep.iter_mut().zip(&rel) {
                *k = *r >= best * SET_ASIDE || *r >= SET_ASIDE_ABOVE;
            }
        }
        let mut ws = Vec::new();
        let mut scored = Vec::new();
        let mut set_aside = Vec::new();
        for ((seg, w), k) in segments.iter().zip(&seg_words).zip(&keep) {
            if *k {
                ws.extend(w.iter().cloned());
                scored.push(*seg);
            } else {
                set_aside.push(seg.to_string());
            }
        }
        if ws.is_empty() {
            return None;
        }
        let joined = m.vocab.join(
            seg_counts
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c),
        );
        let s = m.score(&ws, joined);
        // The out-of-scope class (after the entries) is never a candidate.
        let mut order: Vec<usize> = (0..self.entries.len().min(s.p.len())).collect();
        order.sort_by(|a, b| s.p[*b].total_cmp(&s.p[*a]).then(a.cmp(b)));
        let cands: Vec<(usize, Signals)> = order
            .iter()
            .take(5)
            .map(|&i| (i, m.signals(&s, i)))
            .collect();
        let best = cands.first().map(|c| c.1).unwrap_or_default();
        Some((
            Evidence {
                scored: scored.join(" "),
                set_aside,
                corrected,
                model: best.p,
                similarity: best.sim,
                typical: best.typical,
                content_words: s.content,
            },
            cands,
        ))
    }

    /// Scores a question and judges confidence.
    pub fn query_question(&self, q: &Question) -> FaqResult {
        let mut result = FaqResult::default();
        let Some(m) = &self.matcher else {
            result.reason = match self.entries.len() {
                0 => "no FAQ entries".into(),
                _ => "the FAQ needs at least two entries".into(),
            };
            return result;
        };
        let Some((evidence, cands)) = self.evaluate(q) else {
            result.reason = "no words to match".into();
            return result;
        };
        let mut scored: Vec<Candidate> = cands
            .iter()
            .map(|(i, s)| Candidate {
                id: self.entries[*i].id.clone(),
                score: m.calibrator.confidence(s),
            })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        result.candidates = scored;
        result.evidence = Some(evidence);
        self.judge(&mut result);
        result
    }

    /// Applies threshold and margin.
    fn judge(&self, r: &mut FaqResult) {
        let Some(best) = r.candidates.first() else {
            r.reason = "no candidate".into();
            return;
        };
        let threshold = self.entry_threshold(&best.id).unwrap_or(self.threshold);
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
            needs: Vec::new(),
        }
    }

    #[test]
    fn features() {
        assert_eq!(
            words("Don't   PANIC—it’s 42!"),
            vec!["dont", "panic", "its", "42"]
        );
        let (w, c) = raw_features(&words("card arrived"), &stemmer());
        assert_eq!(w, vec!["card", "arriv", "card arriv"]);
        assert!(c.contains(&" c".to_string()) && c.contains(&"card ".to_string()));
    }

    #[test]
    fn ascii_folding_equals_the_general_folding() {
        let every: String = (0u8..128).map(char::from).collect();
        for t in [every.as_str(), "Where's my ORDER #1234? `quoted` ''", ""] {
            assert_eq!(folded_ascii(t), folded(t), "{t:?}");
        }
    }

    #[test]
    fn joined_counts_equal_counting_the_joined_words() {
        let stem = stemmer();
        let texts = [
            "where is my order",
            "my order has not arrived",
            "order arrived damaged",
            "how do I reset my password",
        ];
        let (vocab, _) = Vocab::build(&texts, &stem);
        let parts = [
            words("Hello, where is my"),
            Vec::new(),
            words("order? It has not arrived"),
            words("reset password"),
        ];
        let counts: Vec<Counts> = parts.iter().map(|p| vocab.counts(p, &stem)).collect();
        let all: Vec<String> = parts.concat();
        let whole = vocab.counts(&all, &stem);
        let joined = vocab.join(counts.iter());
        let stems = |c: &Counts| c.words.iter().map(|f| f.word).collect::<Vec<_>>();
        assert_eq!(stems(&joined), stems(&whole));
        for b in 0..2 {
            let mut a = joined.ids[b].clone();
            let mut w = whole.ids[b].clone();
            a.sort();
            w.sort();
            assert_eq!(a, w, "block {b}");
        }
        // "my order" crosses the first join: counted once, as in the whole.
        let id = |w: &str| vocab.word.get(w).copied();
        let pair = id("my")
            .zip(id("order"))
            .and_then(|(a, b)| vocab.pairs.get(&pair_key(a, b)).copied());
        assert!(pair.is_some_and(|i| joined.ids[0].iter().filter(|x| **x == i).count() == 1));
        assert_eq!(
            vocab.normalise(&joined.ids),
            vocab.vector_words(&all, &stem)
        );
    }

    #[test]
    fn spelling() {
        let s = Speller::build(
            ["my card has not arrived", "where is my refund", "receive"].into_iter(),
        );
        assert_eq!(s.correct("arived"), Some("arrived"));
        assert_eq!(s.correct("arrvied"), Some("arrived"));
        assert_eq!(s.correct("refnud"), Some("refund"));
        assert_eq!(s.correct("recieve"), Some("receive"));
        assert_eq!(s.correct("refund"), None, "known words stay");
        assert_eq!(s.correct("crad"), Some("card"));
        assert_eq!(s.correct("portugal"), None);
        assert_eq!(s.correct("myy"), None, "too short to correct");
        assert_eq!(edit_distance("abcd", "acbd", 2), 1);
        assert_eq!(edit_distance("kitten", "sitting", 5), 3);
    }

    #[test]
    fn calibration_fit_separates_right_from_wrong() {
        // Right answers have a high probability and similarity, wrong ones
        // low: the fitted model must rank them apart and stay finite.
        let mut samples = Vec::new();
        for i in 0..400 {
            let right = i % 2 == 0;
            let x = f64::from(i % 17) / 17.0;
            let s = Signals {
                p: if right { 0.6 + 0.4 * x } else { 0.1 + 0.4 * x },
                lead: if right { 0.5 } else { 0.05 },
                sim: if right { 0.7 } else { 0.3 + 0.2 * x },
                typical: 0.5,
                content: 5.0,
                known: 1.0,
                ..Signals::default()
            };
            samples.push((s, right));
        }
        let (w, b) = fit_calibration(&samples, 1.0);
        assert_eq!(w.len(), FEATURES);
        let c = Calibrator {
            w: w.as_slice().try_into().unwrap_or([0.0; FEATURES]),
            b,
        };
        let right: f64 = samples
            .iter()
            .filter(|s| s.1)
            .map(|s| c.confidence(&s.0))
            .sum::<f64>()
            / 200.0;
        let wrong: f64 = samples
            .iter()
            .filter(|s| !s.1)
            .map(|s| c.confidence(&s.0))
            .sum::<f64>()
            / 200.0;
        assert!(right > 0.9 && wrong < 0.1, "{right} {wrong}");
        assert_eq!(
            solve([[2.0, 1.0], [1.0, 3.0]], [3.0, 5.0]).map(|x| (x[0] * 1e6).round() / 1e6),
            Some(0.8)
        );
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
                threshold_set: true,
                background: true,
                suggest_threshold: None,
            },
        )?;
        let r = idx.query("Hi, what time are you open on Saturday?");
        assert_eq!(r.best().map(|c| c.id.as_str()), Some("hours"), "{r:?}");
        let r = idx.query("my refund has still not been received");
        assert_eq!(r.best().map(|c| c.id.as_str()), Some("refund"), "{r:?}");
        let r = idx.query("my refnud has still not been recieved");
        assert_eq!(r.best().map(|c| c.id.as_str()), Some("refund"), "{r:?}");
        assert!(
            r.evidence
                .as_ref()
                .is_some_and(|e| e.corrected.contains(&("refnud".into(), "refund".into()))),
            "{r:?}"
        );
        assert!(!idx.query("").confident);
        Ok(())
    }
}
