//! A reader for admin-edited TOML that keeps positions and collects every
//! problem instead of stopping at the first.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key and loses
//! the position of semantic errors (an undefined queue, a bad regex). This
//! reader walks the spanned document from `toml`'s parser instead: each
//! accessor removes the key it reads, type errors are recorded with the
//! value's position, and [`Table::finish`] reports whatever is left as an
//! unknown key, with a "did you mean" hint.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostics, Location, Source, suggest};

/// A value together with the byte range it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub span: Range<usize>,
}

impl<T> At<T> {
    pub fn new(value: T, span: Range<usize>) -> At<T> {
        At { value, span }
    }
}

/// One file being read: the source text and the problems found so far.
pub struct Ctx {
    pub src: Arc<Source>,
    diags: RefCell<Diagnostics>,
}

impl Ctx {
    pub fn new(src: Arc<Source>) -> Ctx {
        Ctx {
            src,
            diags: RefCell::new(Diagnostics::new()),
        }
    }

    /// Parses the document. Syntax errors are all recorded; the partial
    /// document that the parser recovered is still returned so that the
    /// rest of the file is checked too.
    pub fn parse(&self) -> Table<'_> {
        let (doc, errors) = DeTable::parse_recoverable(&self.src.text);
        for e in errors {
            let at = e.span().map_or(0, |s| s.start);
            self.error(at..at, format!("TOML syntax error: {}", e.message()));
        }
        let span = doc.span();
        Table::new(self, doc.into_inner(), span, "the top level")
    }

    pub fn error(&self, span: Range<usize>, message: impl Into<String>) {
        self.diags
            .borrow_mut()
            .error(&self.src, span.start, message);
    }

    pub fn warning(&self, span: Range<usize>, message: impl Into<String>) {
        self.diags
            .borrow_mut()
            .warning(&self.src, span.start, message);
    }

    pub fn location(&self, span: &Range<usize>) -> Location {
        self.src.location(span.start)
    }

    pub fn into_diagnostics(self) -> Diagnostics {
        self.diags.into_inner()
    }
}

/// A TOML table being read. Keys are consumed as they are read.
pub struct Table<'c> {
    ctx: &'c Ctx,
    map: DeTable<'c>,
    pub span: Range<usize>,
    /// Human name of the table for messages, e.g. "rule `refunds`".
    what: String,
    /// Every key the reader asked for: the "expected one of" list.
    known: Vec<&'static str>,
}

/// A value taken out of a table, not yet converted.
pub struct Value<'c> {
    ctx: &'c Ctx,
    pub key: String,
    pub value: DeValue<'c>,
    pub span: Range<usize>,
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a number",
        DeValue::Boolean(_) => "true/false",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

impl<'c> Value<'c> {
    pub fn ctx(&self) -> &'c Ctx {
        self.ctx
    }

    fn wrong(&self, expected: &str) {
        self.ctx.error(
            self.span.clone(),
            format!(
                "`{}` must be {expected}, not {}",
                self.key,
                type_name(&self.value)
            ),
        );
    }

    pub fn type_name(&self) -> &'static str {
        type_name(&self.value)
    }

    pub fn into_string(self) -> Option<At<String>> {
        match &self.value {
            DeValue::String(s) => Some(At::new(s.to_string(), self.span)),
            _ => {
                self.wrong("a string");
                None
            }
        }
    }

    pub fn into_bool(self) -> Option<At<bool>> {
        match self.value {
            DeValue::Boolean(b) => Some(At::new(b, self.span)),
            _ => {
                self.wrong("true or false");
                None
            }
        }
    }

    pub fn into_integer(self) -> Option<At<i64>> {
        match &self.value {
            DeValue::Integer(i) => {
                match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                    Ok(n) => Some(At::new(n, self.span)),
                    Err(_) => {
                        self.ctx
                            .error(self.span.clone(), format!("`{}` is out of range", self.key));
                        None
                    }
                }
            }
            _ => {
                self.wrong("an integer");
                None
            }
        }
    }

    pub fn into_float(self) -> Option<At<f64>> {
        match &self.value {
            DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
                Ok(n) if n.is_finite() => Some(At::new(n, self.span)),
                _ => {
                    self.ctx.error(
                        self.span.clone(),
                        format!("`{}` must be a finite number", self.key),
                    );
                    None
                }
            },
            DeValue::Integer(_) => self.into_integer().map(|i| At::new(i.value as f64, i.span)),
            _ => {
                self.wrong("a number");
                None
            }
        }
    }

    /// One string or a list of strings.
    pub fn into_strings(self) -> Option<Vec<At<String>>> {
        match self.value {
            DeValue::String(s) => Some(vec![At::new(s.to_string(), self.span)]),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items {
                    let span = item.span();
                    match item.into_inner() {
                        DeValue::String(s) => out.push(At::new(s.to_string(), span)),
                        other => {
                            ok = false;
                            self.ctx.error(
                                span,
                                format!(
                                    "every item of `{}` must be a string, not {}",
                                    self.key,
                                    type_name(&other)
                                ),
                            );
                        }
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.wrong("a string or a list of strings");
                None
            }
        }
    }

    pub fn into_table(self, what: impl Into<String>) -> Option<Table<'c>> {
        match self.value {
            DeValue::Table(t) => Some(Table::new(self.ctx, t, self.span, what)),
            _ => {
                let what = what.into();
                self.ctx.error(
                    self.span.clone(),
                    format!("{what} must be a table, not {}", type_name(&self.value)),
                );
                None
            }
        }
    }

    /// The items of a list (a single non-list value counts as a list of one).
    pub fn into_items(self) -> Vec<Value<'c>> {
        match self.value {
            DeValue::Array(items) => items
                .into_iter()
                .map(|item| {
                    let span = item.span();
                    Value {
                        ctx: self.ctx,
                        key: self.key.clone(),
                        value: item.into_inner(),
                        span,
                    }
                })
                .collect(),
            value => vec![Value {
                ctx: self.ctx,
                key: self.key,
                value,
                span: self.span,
            }],
        }
    }

    /// A duration such as `"90s"`, `"15m"`, `"24h"`, `"7d"` (or a number of seconds).
    pub fn into_duration(self) -> Option<At<Duration>> {
        if let DeValue::Integer(_) = self.value {
            let key = self.key.clone();
            let ctx = self.ctx;
            return self.into_integer().and_then(|n| {
                if n.value < 0 {
                    ctx.error(n.span, format!("`{key}` cannot be negative"));
                    None
                } else {
                    Some(At::new(Duration::from_secs(n.value as u64), n.span))
                }
            });
        }
        let key = self.key.clone();
        let ctx = self.ctx;
        let s = self.into_string()?;
        match parse_duration(&s.value) {
            Some(d) => Some(At::new(d, s.span)),
            None => {
                ctx.error(
                    s.span,
                    format!(
                        "`{key}`: cannot read {:?} as a duration; write e.g. \"30s\", \"15m\", \"24h\" or \"7d\"",
                        s.value
                    ),
                );
                None
            }
        }
    }

    /// A size such as `"25MB"`, `"512KiB"` (or a number of bytes).
    pub fn into_size(self) -> Option<At<u64>> {
        if let DeValue::Integer(_) = self.value {
            return self
                .into_integer()
                .map(|n| At::new(n.value.max(0) as u64, n.span));
        }
        let key = self.key.clone();
        let ctx = self.ctx;
        let s = self.into_string()?;
        match parse_size(&s.value) {
            Some(d) => Some(At::new(d, s.span)),
            None => {
                ctx.error(
                    s.span,
                    format!(
                        "`{key}`: cannot read {:?} as a size; write e.g. \"25MB\" or \"512KB\"",
                        s.value
                    ),
                );
                None
            }
        }
    }
}

/// Parses `"30s"`, `"15m"`, `"24h"`, `"7d"`, `"1w"` or a combination like `"1h30m"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    // Milliseconds, so that "1m30s" and "300ms" both read right.
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut saw_unit = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
        } else if c.is_whitespace() {
            continue;
        } else {
            let n: u64 = num.parse().ok()?;
            num.clear();
            let unit: u64 = match c {
                'm' if chars.peek() == Some(&'s') => {
                    chars.next();
                    1
                }
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                'w' => 7 * 86_400_000,
                _ => return None,
            };
            total = total.checked_add(n.checked_mul(unit)?)?;
            saw_unit = true;
        }
    }
    if !num.is_empty() {
        if saw_unit {
            return None;
        }
        total = num.parse::<u64>().ok()?.checked_mul(1_000)?;
    }
    Some(Duration::from_millis(total))
}

/// Parses `"25MB"`, `"25 MiB"`, `"512KB"`, `"1GB"`, `"1000"` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

impl<'c> Table<'c> {
    pub fn new(
        ctx: &'c Ctx,
        map: DeTable<'c>,
        span: Range<usize>,
        what: impl Into<String>,
    ) -> Table<'c> {
        Table {
            ctx,
            map,
            span,
            what: what.into(),
            known: Vec::new(),
        }
    }

    pub fn ctx(&self) -> &'c Ctx {
        self.ctx
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn set_what(&mut self, what: impl Into<String>) {
        self.what = what.into();
    }

    /// Whether the table has the key (without consuming it).
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The keys that are still unread.
    pub fn remaining_keys(&self) -> Vec<String> {
        self.map.keys().map(|k| k.get_ref().to_string()).collect()
    }

    /// Takes a raw value out of the table.
    pub fn take(&mut self, key: &'static str) -> Option<Value<'c>> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let v = self.map.remove(key)?;
        let span = v.span();
        Some(Value {
            ctx: self.ctx,
            key: key.to_string(),
            value: v.into_inner(),
            span,
        })
    }

    /// Takes a key whose name is only known at run time (e.g. a header name).
    pub fn take_any(&mut self) -> Option<(At<String>, Value<'c>)> {
        let key = self.map.keys().next()?.clone();
        let v = self.map.remove(key.get_ref().as_ref())?;
        let span = v.span();
        let name = key.get_ref().to_string();
        Some((
            At::new(name.clone(), key.span()),
            Value {
                ctx: self.ctx,
                key: name,
                value: v.into_inner(),
                span,
            },
        ))
    }

    fn missing(&self, key: &str) {
        self.ctx.error(
            self.span.clone(),
            format!("{} is missing the required key `{key}`", self.what),
        );
    }

    pub fn string(&mut self, key: &'static str) -> Option<At<String>> {
        self.take(key)?.into_string()
    }

    pub fn required_string(&mut self, key: &'static str) -> Option<At<String>> {
        match self.take(key) {
            Some(v) => v.into_string(),
            None => {
                self.missing(key);
                None
            }
        }
    }

    pub fn boolean(&mut self, key: &'static str) -> Option<At<bool>> {
        self.take(key)?.into_bool()
    }

    pub fn integer(&mut self, key: &'static str) -> Option<At<i64>> {
        self.take(key)?.into_integer()
    }

    pub fn float(&mut self, key: &'static str) -> Option<At<f64>> {
        self.take(key)?.into_float()
    }

    pub fn strings(&mut self, key: &'static str) -> Option<Vec<At<String>>> {
        self.take(key)?.into_strings()
    }

    /// A list of numbers.
    pub fn floats(&mut self, key: &'static str) -> Option<Vec<At<f64>>> {
        let v = self.take(key)?;
        let mut out = Vec::new();
        for item in v.into_items() {
            out.push(item.into_float()?);
        }
        Some(out)
    }

    pub fn duration(&mut self, key: &'static str) -> Option<At<Duration>> {
        self.take(key)?.into_duration()
    }

    pub fn size(&mut self, key: &'static str) -> Option<At<u64>> {
        self.take(key)?.into_size()
    }

    pub fn table(&mut self, key: &'static str, what: impl Into<String>) -> Option<Table<'c>> {
        self.take(key)?.into_table(what)
    }

    /// An array of tables (`[[key]]`); a single table is accepted too.
    pub fn tables(&mut self, key: &'static str) -> Vec<Table<'c>> {
        let Some(v) = self.take(key) else {
            return Vec::new();
        };
        v.into_items()
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| item.into_table(format!("[[{key}]] #{}", i + 1)))
            .collect()
    }

    /// Reports every unread key as unknown.
    pub fn finish(self) {
        for (k, _) in self.map.iter() {
            let name = k.get_ref();
            let hint = match suggest(name, self.known.iter().copied()) {
                Some(s) => format!("; did you mean `{s}`?"),
                None if self.known.is_empty() => String::new(),
                None => format!("; expected one of: {}", self.known.join(", ")),
            };
            self.ctx.error(
                k.span(),
                format!("unknown key `{name}` in {}{hint}", self.what),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_size("25MB"), Some(25 * 1024 * 1024));
        assert_eq!(parse_size("1.5 KiB"), Some(1536));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn unknown_keys_and_type_errors_are_all_reported_with_positions() {
        let ctx = Ctx::new(Source::new(
            "x.toml",
            "name = 3\ntempalte = \"a\"\n[sub]\nok = true\nbad = 1\n",
        ));
        let mut t = ctx.parse();
        assert!(t.string("name").is_none());
        assert!(t.string("template").is_none());
        let mut sub = t.table("sub", "[sub]").unwrap_or_else(|| panic!("sub"));
        assert_eq!(sub.boolean("ok").map(|b| b.value), Some(true));
        sub.finish();
        t.finish();
        let out = ctx.into_diagnostics().to_string();
        assert_eq!(
            out,
            "x.toml:1:8: `name` must be a string, not an integer\n\
             x.toml:2:1: unknown key `tempalte` in the top level; did you mean `template`?\n\
             x.toml:5:1: unknown key `bad` in [sub]; expected one of: ok\n"
        );
    }

    #[test]
    fn syntax_errors_are_reported_and_the_rest_is_still_read() {
        let ctx = Ctx::new(Source::new("y.toml", "a = \nb = \"ok\"\n"));
        let mut t = ctx.parse();
        let b = t.string("b");
        let d = ctx.into_diagnostics();
        assert!(d.has_errors());
        assert!(d.to_string().starts_with("y.toml:1:"), "{d}");
        assert_eq!(b.map(|b| b.value), Some("ok".to_string()));
    }
}
