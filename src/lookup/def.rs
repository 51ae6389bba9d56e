//! `[[lookup]]` tables: reading and checking a lookup definition.

use std::path::Path;
use std::time::Duration;

use regex::Regex;

use crate::diag::Location;
use crate::secret::SecretSource;
use crate::tomlread::Table;

/// One `[[lookup]]` as the admin wrote it, checked.
#[derive(Debug, Clone)]
pub struct LookupDef {
    pub name: String,
    pub extract: Extract,
    pub backend: Backend,
    /// Per lookup (default 3 s).
    pub timeout: Duration,
    /// How long an answer is reused (default 60 s; `"0s"`: never).
    pub cache: Duration,
    /// Lookups of this kind in flight at once, at most (default 4).
    pub concurrency: usize,
    /// Lookups per second, at most (default: no limit).
    pub rate: Option<f64>,
    /// Dotted path of the answer's field that holds the customer's
    /// address; required unless the value is the sender's address.
    pub owner: Option<String>,
    /// The answer's fields templates may use (`lookup.NAME.FIELD`); when
    /// given, `check` reports any other field a template uses.
    pub fields: Vec<String>,
    pub location: Location,
}

/// Where the value to look up comes from.
#[derive(Debug, Clone)]
pub enum Extract {
    /// The sender's address (`extract = "sender"`), for account lookups.
    Sender,
    /// The first match of these patterns in the subject, then the body
    /// (the first capture group, or the whole match).
    Patterns(Vec<Regex>),
}

/// Where to ask.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `GET` on `url` with `{value}` replaced (URL-encoded); the answer is
    /// a JSON object (404: no such record).
    Http {
        url: String,
        headers: Vec<(String, HeaderValue)>,
    },
    /// One read-only query with the value as its only parameter (`$1`);
    /// the first row, as an object of its columns (no row: no such record).
    Sql { url: String, query: String },
    /// A program run without a shell, `{value}` in its arguments replaced
    /// (or the value appended); prints a JSON object (`null`: no such
    /// record).
    Command { argv: Vec<String> },
}

/// A request header's value: written out, or a secret.
#[derive(Debug, Clone)]
pub enum HeaderValue {
    Plain(String),
    Secret {
        source: SecretSource,
        /// Text before the secret, e.g. `"Bearer "`.
        prefix: String,
    },
}

impl Backend {
    /// Where the lookup asks, without secrets: `http 127.0.0.1:8080`,
    /// `sql orders.db`, `command order-lookup`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Http { url, .. } => {
                let rest = url.split_once("://").map_or(url.as_str(), |x| x.1);
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                let host = authority.rsplit('@').next().unwrap_or("");
                format!("http {host}")
            }
            Backend::Sql { url, .. } => {
                if let Some(p) = url.strip_prefix("sqlite://") {
                    let p = p.split('?').next().unwrap_or(p);
                    format!(
                        "sql {}",
                        Path::new(p)
                            .file_name()
                            .map_or(p.into(), |f| f.to_string_lossy())
                    )
                } else {
                    format!("sql {}", crate::record::redact_url(url))
                }
            }
            Backend::Command { argv } => format!(
                "command {}",
                argv.first()
                    .map(|p| Path::new(p)
                        .file_name()
                        .map_or(p.clone(), |f| f.to_string_lossy().into_owned()))
                    .unwrap_or_default()
            ),
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 40
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// Reads one `[[lookup]]` table; relative paths (SQLite files, programs)
/// are taken from `base`. Problems go to the table's file.
pub fn read_lookup(mut t: Table<'_>, base: &Path) -> Option<LookupDef> {
    let ctx = t.ctx();
    let start = t.span.clone();
    let name = t.required_string("name");
    if let Some(n) = &name {
        t.set_what(format!("lookup {:?}", n.value));
        if !valid_name(&n.value) {
            ctx.error(
                n.span.clone(),
                "a lookup name is a short identifier (letters, digits, `_`), e.g. \"order\": templates use it as lookup.NAME",
            );
        }
    }
    let mut ok = true;
    let extract = match t.take("extract") {
        None => {
            ctx.error(
                start.clone(),
                format!(
                    "{} is missing `extract`: extract = \"sender\" or extract = {{ regex = '…(\\d+)' }}",
                    t.what()
                ),
            );
            None
        }
        Some(v) => {
            let span = v.span.clone();
            match &v.value {
                toml::de::DeValue::String(s) if s.as_ref() == "sender" => Some(Extract::Sender),
                toml::de::DeValue::String(_) => {
                    ctx.error(
                        span,
                        "`extract` is \"sender\" or a table: extract = { regex = '…' }",
                    );
                    None
                }
                _ => {
                    let mut et = v.into_table("`extract`")?;
                    let pats = et.strings("regex");
                    et.finish();
                    match pats {
                        None => {
                            ctx.error(span, "`extract` needs `regex` (one pattern or a list)");
                            None
                        }
                        Some(list) => {
                            let mut res = Vec::new();
                            for p in list {
                                match regex::RegexBuilder::new(&p.value)
                                    .size_limit(1 << 20)
                                    .build()
                                {
                                    Ok(r) => res.push(r),
                                    Err(e) => {
                                        ctx.error(p.span, format!("invalid regex: {e}"));
                                        ok = false;
                                    }
                                }
                            }
                            if res.is_empty() && ok {
                                ctx.error(span, "`regex` needs at least one pattern");
                            }
                            (!res.is_empty()).then_some(Extract::Patterns(res))
                        }
                    }
                }
            }
        }
    };
    let kind = t.required_string("kind");
    let backend = match kind.as_ref().map(|k| k.value.as_str()) {
        Some("http") => read_http(&mut t, base),
        Some("sql") => read_sql(&mut t, base),
        Some("command") => read_command(&mut t, base),
        Some(_) => {
            if let Some(k) = &kind {
                ctx.error(
                    k.span.clone(),
                    "`kind` is one of \"http\", \"sql\", \"command\"",
                );
            }
            None
        }
        None => None,
    };
    let mut d = LookupDef {
        name: String::new(),
        extract: Extract::Sender,
        backend: Backend::Command { argv: Vec::new() },
        timeout: Duration::from_secs(3),
        cache: Duration::from_secs(60),
        concurrency: 4,
        rate: None,
        owner: None,
        fields: Vec::new(),
        location: ctx.location(&start),
    };
    if let Some(v) = t.duration("timeout") {
        if v.value.is_zero() || v.value > Duration::from_secs(60) {
            ctx.error(v.span, "`timeout` must be between \"1ms\" and \"60s\"");
        } else {
            d.timeout = v.value;
        }
    }
    if let Some(v) = t.duration("cache") {
        d.cache = v.value;
    }
    if let Some(v) = t.integer("concurrency") {
        if !(1..=64).contains(&v.value) {
            ctx.error(v.span, "`concurrency` must be between 1 and 64");
        } else {
            d.concurrency = v.value as usize;
        }
    }
    if let Some(v) = t.take("rate") {
        let span = v.span.clone();
        let r = match v.value {
            toml::de::DeValue::Integer(_) => v.into_integer().map(|i| i.value as f64),
            _ => v.into_float().map(|f| f.value),
        };
        match r {
            Some(r) if (0.1..=10_000.0).contains(&r) => d.rate = Some(r),
            Some(_) => ctx.error(
                span,
                "`rate` (lookups per second) must be between 0.1 and 10000",
            ),
            None => {}
        }
    }
    if let Some(o) = t.string("owner") {
        if o.value.trim().is_empty() {
            ctx.error(
                o.span,
                "`owner` names a field of the answer, e.g. \"customer.email\"",
            );
        } else {
            d.owner = Some(o.value);
        }
    }
    if let Some(f) = t.strings("fields") {
        d.fields = f.into_iter().map(|f| f.value).collect();
    }
    if matches!(extract, Some(Extract::Patterns(_))) && d.owner.is_none() {
        ctx.error(
            start.clone(),
            format!(
                "{} extracts its value from the text: add `owner = \"…\"`, the field of the answer that holds the customer's address, \
                 so that nobody gets someone else's data by typing their number",
                t.what()
            ),
        );
        ok = false;
    }
    t.finish();
    d.name = name?.value;
    d.extract = extract?;
    d.backend = backend?;
    ok.then_some(d)
}

fn read_http(t: &mut Table<'_>, base: &Path) -> Option<Backend> {
    let ctx = t.ctx();
    let url = t.required_string("url")?;
    let mut ok = true;
    if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
        ctx.error(
            url.span.clone(),
            "`url` must start with http:// or https://",
        );
        ok = false;
    }
    if !url.value.contains("{value}") {
        ctx.error(
            url.span.clone(),
            "`url` must contain {value} where the extracted value goes, e.g. \"https://shop.example/api/orders/{value}\"",
        );
        ok = false;
    }
    let mut headers = Vec::new();
    if let Some(mut ht) = t.table("headers", "`headers`") {
        while let Some((name, v)) = ht.take_any() {
            if name.value.is_empty()
                || !name
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                ctx.error(
                    name.span.clone(),
                    format!("{:?} is not a header name", name.value),
                );
                ok = false;
                continue;
            }
            match &v.value {
                toml::de::DeValue::String(_) => {
                    if let Some(s) = v.into_string() {
                        if name.value.eq_ignore_ascii_case("authorization")
                            || name.value.to_ascii_lowercase().contains("key")
                            || name.value.to_ascii_lowercase().contains("token")
                        {
                            ctx.error(
                                s.span,
                                format!(
                                    "secrets are never written in the config: use {} = {{ env = \"…\" }} (or file, credential, command)",
                                    name.value
                                ),
                            );
                            ok = false;
                        } else {
                            headers.push((name.value, HeaderValue::Plain(s.value)));
                        }
                    }
                }
                _ => {
                    let Some(mut st) = v.into_table(format!("header {}", name.value)) else {
                        ok = false;
                        continue;
                    };
                    let prefix = st.string("prefix").map(|p| p.value).unwrap_or_default();
                    let mut found = Vec::new();
                    if let Some(f) = st.string("file") {
                        found.push(SecretSource::File(base.join(&f.value)));
                    }
                    if let Some(e) = st.string("env") {
                        found.push(SecretSource::Env(e.value));
                    }
                    if let Some(c) = st.string("credential") {
                        found.push(SecretSource::Credential(c.value));
                    }
                    if let Some(c) = st.strings("command") {
                        found.push(SecretSource::Command(
                            c.into_iter().map(|a| a.value).collect(),
                        ));
                    }
                    if found.len() != 1 {
                        ctx.error(
                            st.span.clone(),
                            "a secret header takes exactly one of file, env, credential, command",
                        );
                        ok = false;
                    }
                    st.finish();
                    if let Some(source) = found.into_iter().next() {
                        headers.push((name.value, HeaderValue::Secret { source, prefix }));
                    }
                }
            }
        }
        ht.finish();
    }
    ok.then_some(Backend::Http {
        url: url.value,
        headers,
    })
}

fn read_sql(t: &mut Table<'_>, base: &Path) -> Option<Backend> {
    let ctx = t.ctx();
    let url = t.required_string("url")?;
    let query = t.required_string("query")?;
    let mut ok = true;
    let url_value = if let Some(p) = url.value.strip_prefix("sqlite://") {
        let path = p.split('?').next().unwrap_or(p);
        let full = if Path::new(path).is_absolute() {
            path.to_string()
        } else {
            base.join(path).display().to_string()
        };
        if path != ":memory:" && !Path::new(&full).is_file() {
            ctx.warning(
                url.span.clone(),
                format!(
                    "the database {full} does not exist (yet): until it does, this lookup \
                     fails and the messages that need it go to a person"
                ),
            );
        }
        // Read-only, whatever the file's permissions.
        format!("sqlite://{full}?mode=ro")
    } else if url.value.starts_with("postgres://") || url.value.starts_with("postgresql://") {
        url.value.clone()
    } else {
        ctx.error(
            url.span.clone(),
            "`url` must start with sqlite:// or postgres://",
        );
        ok = false;
        String::new()
    };
    let q = query.value.trim_start().to_ascii_lowercase();
    if !(q.starts_with("select") || q.starts_with("with")) {
        ctx.error(
            query.span.clone(),
            "`query` must be one SELECT (it runs read-only)",
        );
        ok = false;
    }
    if !query.value.contains("$1") && !query.value.contains('?') {
        ctx.error(
            query.span.clone(),
            "`query` must use the extracted value as a parameter: … WHERE id = $1 (never spliced into the text)",
        );
        ok = false;
    }
    if query.value.trim_end().trim_end_matches(';').contains(';') {
        ctx.error(query.span.clone(), "`query` must be a single statement");
        ok = false;
    }
    ok.then_some(Backend::Sql {
        url: url_value,
        query: query.value,
    })
}

fn read_command(t: &mut Table<'_>, base: &Path) -> Option<Backend> {
    let ctx = t.ctx();
    let c = t.strings("command");
    let Some(c) = c else {
        ctx.error(
            t.span.clone(),
            format!(
                "{} is missing `command`: command = [\"/usr/local/bin/order-lookup\", \"{{value}}\"]",
                t.what()
            ),
        );
        return None;
    };
    let mut argv: Vec<String> = c.iter().map(|a| a.value.clone()).collect();
    let Some(first) = argv.first_mut() else {
        ctx.error(t.span.clone(), "`command` is empty");
        return None;
    };
    if first.contains('/') && !Path::new(first.as_str()).is_absolute() {
        *first = base.join(first.as_str()).display().to_string();
    }
    if first.contains('/')
        && !is_executable(Path::new(first.as_str()))
        && let Some(span) = c.first().map(|a| a.span.clone())
    {
        ctx.warning(
            span,
            format!(
                "{first} is not an executable file: until it is, this lookup fails \
                 and the messages that need it go to a person"
            ),
        );
    }
    Some(Backend::Command { argv })
}

/// Whether a path is a file someone may execute.
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
