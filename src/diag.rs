//! Diagnostics for admin-edited files.
//!
//! Every problem found in `switchboard.toml`, a rule file, an FAQ file or a
//! template is reported as `path:line:col: message`, the format editors and
//! terminals understand. Loading never stops at the first problem: a
//! [`Diagnostics`] collects all of them and the caller decides at the end
//! whether the result is usable (no errors) or not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded text file with a line index, so byte offsets can be turned into
/// `line:col` positions (1-based; columns count characters, not bytes).
#[derive(Debug)]
pub struct Source {
    /// The path as the admin wrote it or as it was found on disk.
    pub path: PathBuf,
    /// The full text of the file.
    pub text: String,
    /// Byte offset of the start of every line.
    line_starts: Vec<usize>,
}

impl Source {
    /// Wraps text that was already read.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Source> {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Arc::new(Source {
            path: path.into(),
            text,
            line_starts,
        })
    }

    /// Reads a file; an unreadable or non-UTF-8 file becomes a diagnostic.
    pub fn read(path: &Path, diags: &mut Diagnostics) -> Option<Arc<Source>> {
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Some(Source::new(path, text)),
                Err(e) => {
                    let offset = e.utf8_error().valid_up_to();
                    let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                    let src = Source::new(path, text);
                    diags.error(
                        &src,
                        offset,
                        "the file is not valid UTF-8: save it with UTF-8 encoding",
                    );
                    None
                }
            },
            Err(e) => {
                diags.push(Diagnostic::file(path, format!("cannot read the file: {e}")));
                None
            }
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let mut end = offset;
        while end > start && !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let col = self.text.get(start..end).map_or(0, |s| s.chars().count()) + 1;
        (line + 1, col)
    }

    /// A printable location for an offset.
    pub fn location(&self, offset: usize) -> Location {
        let (line, col) = self.position(offset);
        Location {
            path: self.path.clone(),
            line,
            col,
        }
    }
}

/// A position in an admin-edited file, e.g. where a rule is defined.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.col)
    }
}

/// How bad a problem is: errors make a file set unusable, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    /// A problem with a whole file (line 1, column 1).
    pub fn file(path: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: Location {
                path: path.to_path_buf(),
                line: 1,
                col: 1,
            },
            severity: Severity::Error,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.location, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.location, self.message),
        }
    }
}

/// A collection of problems, in the order of files and positions.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Records an error at a byte offset of a source.
    pub fn error(&mut self, src: &Source, offset: usize, message: impl Into<String>) {
        self.items.push(Diagnostic {
            location: src.location(offset),
            severity: Severity::Error,
            message: message.into(),
        });
    }

    /// Records a warning at a byte offset of a source.
    pub fn warning(&mut self, src: &Source, offset: usize, message: impl Into<String>) {
        self.items.push(Diagnostic {
            location: src.location(offset),
            severity: Severity::Warning,
            message: message.into(),
        });
    }

    /// Records an error at an already resolved location.
    pub fn error_at(&mut self, location: &Location, message: impl Into<String>) {
        self.items.push(Diagnostic {
            location: location.clone(),
            severity: Severity::Error,
            message: message.into(),
        });
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Sorted by path, line and column, without exact duplicates.
    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            (&a.location.path, a.location.line, a.location.col).cmp(&(
                &b.location.path,
                b.location.line,
                b.location.col,
            ))
        });
        self.items.dedup();
        self.items
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.clone().sorted() {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, for "did you mean …?" hints.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let v = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            cur.push(v);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = Source::new("f.toml", "a = 1\nüb = 2\n");
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(6), (2, 1));
        // 'b' follows a two-byte character: column 2, not 3.
        assert_eq!(src.position(8), (2, 2));
        assert_eq!(src.position(1000), (3, 1));
    }

    #[test]
    fn suggestions_find_close_words_only() {
        assert_eq!(suggest("tempalte", ["template", "route"]), Some("template"));
        assert_eq!(suggest("xyz", ["template", "route"]), None);
    }

    #[test]
    fn display_is_path_line_col_message() {
        let src = Source::new("rules/a.toml", "x\ny = 2");
        let mut d = Diagnostics::new();
        d.error(&src, 2, "bad");
        d.warning(&src, 0, "meh");
        assert_eq!(
            d.to_string(),
            "rules/a.toml:1:1: warning: meh\nrules/a.toml:2:1: bad\n"
        );
    }
}
