//! Small helpers shared by several stages.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A hash over a set of files, to tell snapshots apart.
#[derive(Default)]
pub struct Fingerprint {
    h: Sha256,
}

impl Fingerprint {
    pub fn add(&mut self, path: &Path, text: &str) {
        self.h.update(path.to_string_lossy().as_bytes());
        self.h.update([0]);
        self.h.update(text.as_bytes());
        self.h.update([0]);
    }

    pub fn finish(self) -> String {
        let d = self.h.finalize();
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Shortens a text for one-line display, on a character boundary.
pub fn ellipsize(s: &str, max: usize) -> String {
    let s = crate::parse::single_line(s);
    if s.chars().count() <= max {
        s
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A Unix time in milliseconds as `2026-11-23 14:05 UTC`.
pub fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Escapes a cell for CSV files opened in spreadsheets: a cell that
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return would be
/// read as a formula (CSV injection), so it gets a leading apostrophe.
pub fn csv_cell(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => std::borrow::Cow::Owned(format!("'{s}")),
        _ => std::borrow::Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_and_csv() {
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("héllo", 3), "hé");
        assert_eq!(truncate_str("abc", 10), "abc");
        assert_eq!(csv_cell("=1+2+cmd|calc!a0@x"), "'=1+2+cmd|calc!a0@x");
        assert_eq!(csv_cell("-2"), "'-2");
        assert_eq!(csv_cell("jane@x"), "jane@x");
    }
}
