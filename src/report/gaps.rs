//! FAQ gaps: groups of similar questions that no FAQ entry answered.
//!
//! Each question becomes a TF-IDF vector over its content words (lower
//! case, stop words and numbers dropped, a light suffix stemming so that
//! "invoice" and "invoices" meet); questions join the first group whose
//! centre they resemble (cosine ≥ 0.3), else open a new group. Groups of
//! two or more, largest first, with the words that weigh most in them as
//! the suggested title.

use std::collections::HashMap;

use serde::Serialize;

/// One group of unanswered questions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gap {
    /// Suggested FAQ title, from the group's heaviest words.
    pub title: String,
    /// Suggested entry id (`invoice-vat-company`).
    pub id: String,
    /// The group's words, heaviest first.
    pub terms: Vec<String>,
    pub questions: usize,
    /// Up to five example questions.
    pub examples: Vec<String>,
}

impl Gap {
    /// An `[[entry]]` ready to paste into an FAQ file (the template still
    /// needs writing).
    pub fn toml(&self) -> String {
        let examples: Vec<String> = self
            .examples
            .iter()
            .map(|e| format!("  {},", toml_string(e)))
            .collect();
        format!(
            "[[entry]]\nid = {}\ntitle = {}\ntemplate = {}\nexamples = [\n{}\n]\n",
            toml_string(&self.id),
            toml_string(&self.title),
            toml_string(&format!("faq/{}", self.id)),
            examples.join("\n")
        )
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const STOP: &[&str] = &[
    "the", "and", "for", "you", "your", "with", "have", "has", "had", "this", "that", "are", "was",
    "were", "but", "not", "can", "could", "would", "will", "please", "thanks", "thank", "hello",
    "from", "what", "when", "where", "how", "why", "who", "which", "there", "their", "they",
    "them", "our", "ours", "about", "any", "all", "just", "still", "also", "into", "out", "get",
    "got", "did", "does", "doing", "done", "been", "being", "its", "it's", "i'm", "i've", "don't",
    "can't", "want", "need", "know", "like", "some", "one", "two", "yet", "now", "then", "than",
    "too", "very", "much", "more", "most", "here", "should", "may", "might", "must", "let", "make",
    "made", "der", "die", "das", "und", "ist", "ich", "mit", "nicht", "ein", "eine", "bitte",
    "les", "des", "est", "pour", "que", "une", "por", "para", "los", "las", "una", "con",
];

/// Content words of a question, lightly stemmed.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| w.chars().count() >= 3 && !w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| !STOP.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

fn stem(w: &str) -> String {
    for suffix in ["ies", "ing", "ed", "es", "s"] {
        if let Some(base) = w.strip_suffix(suffix)
            && base.chars().count() >= 3
            && !(suffix == "s" && base.ends_with('s'))
        {
            if suffix == "ies" {
                return format!("{base}y");
            }
            // wrapping, wrapped → wrap
            let mut chars: Vec<char> = base.chars().collect();
            if matches!(suffix, "ing" | "ed")
                && chars.len() >= 4
                && chars[chars.len() - 1] == chars[chars.len() - 2]
                && !"aeiouls".contains(chars[chars.len() - 1])
            {
                chars.pop();
            }
            return chars.into_iter().collect();
        }
    }
    w.to_string()
}

type Vector = HashMap<usize, f64>;

fn cosine(a: &Vector, b: &Vector) -> f64 {
    let (small, large) = if a.len() < b.len() { (a, b) } else { (b, a) };
    let dot: f64 = small
        .iter()
        .filter_map(|(k, x)| large.get(k).map(|y| x * y))
        .sum();
    let na: f64 = a.values().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.values().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Groups of similar questions, largest first (groups of one are left
/// out: a single question is not a gap yet).
pub fn find_gaps(questions: &[String]) -> Vec<Gap> {
    const SIMILAR: f64 = 0.25;
    let docs: Vec<Vec<String>> = questions.iter().map(|q| words(q)).collect();
    let mut vocab: HashMap<&str, usize> = HashMap::new();
    let mut df: Vec<f64> = Vec::new();
    for d in &docs {
        let mut seen: Vec<usize> = Vec::new();
        for w in d {
            let next = vocab.len();
            let id = *vocab.entry(w.as_str()).or_insert(next);
            if id == df.len() {
                df.push(0.0);
            }
            if !seen.contains(&id) {
                seen.push(id);
                df[id] += 1.0;
            }
        }
    }
    let n = docs.len().max(1) as f64;
    let vectors: Vec<Vector> = docs
        .iter()
        .map(|d| {
            let mut v = Vector::new();
            for w in d {
                if let Some(&id) = vocab.get(w.as_str()) {
                    *v.entry(id).or_default() += 1.0;
                }
            }
            for (id, tf) in v.iter_mut() {
                *tf *= (n / df[*id]).ln() + 1.0;
            }
            v
        })
        .collect();
    // Leader clustering against running centroids.
    let mut groups: Vec<(Vector, Vec<usize>)> = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        // Similar to the group's centre, or to one of its first members.
        let best = groups
            .iter()
            .enumerate()
            .map(|(g, (c, members))| {
                let near = members
                    .iter()
                    .take(50)
                    .map(|m| cosine(&vectors[*m], v))
                    .fold(cosine(c, v), f64::max);
                (g, near)
            })
            .filter(|(_, s)| *s >= SIMILAR)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((g, _)) => {
                let (c, members) = &mut groups[g];
                for (k, x) in v {
                    *c.entry(*k).or_default() += x;
                }
                members.push(i);
            }
            None => groups.push((v.clone(), vec![i])),
        }
    }
    let names: HashMap<usize, &str> = vocab.iter().map(|(w, id)| (*id, *w)).collect();
    let mut gaps: Vec<Gap> = groups
        .into_iter()
        .filter(|(_, m)| m.len() >= 2)
        .map(|(_, members)| {
            // A word weighs by how many of the group's questions have it,
            // times how rare it is among all of them.
            let mut weight: HashMap<usize, f64> = HashMap::new();
            for i in &members {
                for k in vectors[*i].keys() {
                    *weight.entry(*k).or_default() += (n / df[*k]).ln() + 1.0;
                }
            }
            let mut terms: Vec<(usize, f64)> = weight.into_iter().collect();
            terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let terms: Vec<String> = terms
                .iter()
                .take(5)
                .filter_map(|(id, _)| names.get(id).map(|w| w.to_string()))
                .collect();
            let head: Vec<&str> = terms.iter().take(3).map(String::as_str).collect();
            let title = match head.split_first() {
                Some((first, rest)) => {
                    let mut t = first.to_string();
                    if let Some(c) = t.get(..1) {
                        t = c.to_uppercase() + t.get(1..).unwrap_or("");
                    }
                    if rest.is_empty() {
                        t
                    } else {
                        format!("{t}: {}", rest.join(", "))
                    }
                }
                None => "Unanswered questions".into(),
            };
            let id = head
                .iter()
                .map(|w| {
                    w.chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .collect::<String>()
                })
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            Gap {
                title,
                id: if id.is_empty() { "gap".into() } else { id },
                terms,
                questions: members.len(),
                examples: members
                    .iter()
                    .take(5)
                    .filter_map(|i| questions.get(*i).cloned())
                    .collect(),
            }
        })
        .collect();
    gaps.sort_by(|a, b| b.questions.cmp(&a.questions).then(a.title.cmp(&b.title)));
    gaps.truncate(20);
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_questions_group_and_strangers_do_not() {
        let q: Vec<String> = [
            "Can I get a VAT invoice made out to my company?",
            "I need an invoice with our company VAT number",
            "Please send a company invoice with VAT",
            "Do you ship to Canada?",
            "My parcel to Norway: do I pay import duties?",
            "Is gift wrapping available for orders?",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let gaps = find_gaps(&q);
        assert_eq!(gaps.len(), 1, "{gaps:#?}");
        assert_eq!(gaps[0].questions, 3);
        assert!(gaps[0].terms.iter().any(|t| t == "invoice"), "{gaps:#?}");
        assert!(gaps[0].terms.iter().any(|t| t == "company"), "{gaps:#?}");
        let toml = gaps[0].toml();
        assert!(toml.starts_with("[[entry]]\nid = \""), "{toml}");
        assert!(
            toml.contains("\"Please send a company invoice with VAT\","),
            "{toml}"
        );
        // It reads back as an FAQ entry.
        let parsed: Result<toml::Table, _> = toml.parse();
        assert!(parsed.is_ok(), "{toml}");
        assert!(find_gaps(&[]).is_empty());
    }
}
