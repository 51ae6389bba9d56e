//! Reply templates: `templates/**/NAME[.LANG].txt.j2` (plain text, required)
//! and `NAME[.LANG].html.j2` (optional HTML alternative), rendered with
//! minijinja.
//!
//! Undefined variables are errors (strict mode): at load time every
//! variable a template uses is checked against the variables that exist,
//! so a typo is reported as `path:line:col` before any customer sees a
//! half-rendered mail. HTML templates are auto-escaped; a fuel limit stops
//! runaway loops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::diag::{Diagnostics, Source};

/// The variables every template may use. `company.*` keys come from the
/// `[company]` table of the config.
pub const VARIABLES: &[(&str, &[&str])] = &[
    ("customer", &["name", "email"]),
    ("original", &["subject", "date", "message_id"]),
    ("faq", &["id", "title"]),
    ("ticket", &[]),
    ("date", &[]),
    ("language", &[]),
    ("company", &[]),
    ("lookup", &[]),
];

/// One template name with its variants.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    /// Plain-text variants by language ("" = default).
    pub text: BTreeMap<String, PathBuf>,
    /// HTML variants by language.
    pub html: BTreeMap<String, PathBuf>,
}

/// All templates of a knowledge snapshot, compiled.
pub struct Templates {
    env: Environment<'static>,
    /// Template name (e.g. `faq/refund-status`) → variants.
    pub sets: BTreeMap<String, TemplateSet>,
    /// Directory the templates were loaded from.
    pub dir: PathBuf,
    /// Templates whose default text variant renders to nothing (answer
    /// stubs `faq import` writes): replies with them are never sent.
    pub empty: BTreeSet<String>,
    /// Lookups each template uses (`lookup.NAME.…`), by template name.
    pub lookups: BTreeMap<String, BTreeSet<String>>,
    /// The name each file is registered under in the environment (its
    /// path relative to the directory it was found in).
    names: BTreeMap<PathBuf, String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("sets", &self.sets)
            .finish()
    }
}

/// The rendered body of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub html: Option<String>,
    /// Language variant used ("" = default).
    pub language: String,
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {message}")]
pub struct RenderError {
    pub name: String,
    pub message: String,
}

/// Splits `faq/x.de.txt.j2` into (`faq/x`, `de`, is_html).
fn split_name(rel: &str) -> Option<(String, String, bool)> {
    let stem = rel.strip_suffix(".j2")?;
    let (stem, html) = if let Some(s) = stem.strip_suffix(".txt") {
        (s, false)
    } else if let Some(s) = stem.strip_suffix(".html") {
        (s, true)
    } else {
        return None;
    };
    // A language suffix is a 2–3 letter lowercase segment after the last dot.
    if let Some((base, lang)) = stem.rsplit_once('.') {
        let file_part = base.rsplit('/').next().unwrap_or(base);
        if !file_part.is_empty()
            && (2..=3).contains(&lang.len())
            && lang.chars().all(|c| c.is_ascii_lowercase())
        {
            return Some((base.to_string(), lang.to_string(), html));
        }
    }
    Some((stem.to_string(), String::new(), html))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(crate::diag::Diagnostic::file(
                dir,
                format!("cannot read the templates directory: {e}"),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out, diags);
        } else if p.extension().is_some_and(|e| e == "j2") {
            out.push(p);
        }
    }
}

/// Finds where `needle` (a variable path like `customer.nmae`) first
/// appears inside a `{{ … }}` or `{% … %}` block.
fn find_variable(text: &str, needle: &str) -> usize {
    let mut from = 0;
    while let Some(i) = text[from..].find(needle) {
        let at = from + i;
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        let ident =
            |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
        let open = text[..at].rfind("{{").max(text[..at].rfind("{%"));
        let close = text[..at].rfind("}}").max(text[..at].rfind("%}"));
        if !ident(before) && !ident(after) && open > close {
            return at;
        }
        from = at + needle.len();
    }
    0
}

impl Templates {
    /// Loads every template under `dir`. `company_keys` are the keys of the
    /// config's `[company]` table; `lookups` the `[[lookup]]` names with
    /// their declared fields (empty: any field).
    pub fn load(
        dir: &Path,
        company_keys: &BTreeSet<String>,
        lookups: &BTreeMap<String, Vec<String>>,
        diags: &mut Diagnostics,
    ) -> Templates {
        Templates::load_dirs(&[dir.to_path_buf()], company_keys, lookups, diags)
    }

    /// [`Templates::load`] from several directories (`templates_dir`,
    /// then `extra_templates_dirs`); a template in a later directory
    /// replaces one of the same name.
    pub fn load_dirs(
        dirs: &[PathBuf],
        company_keys: &BTreeSet<String>,
        lookups: &BTreeMap<String, Vec<String>>,
        diags: &mut Diagnostics,
    ) -> Templates {
        let dir = dirs.first().map_or(Path::new("."), PathBuf::as_path);
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(100_000));
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html.j2") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
        for d in dirs {
            let mut found = Vec::new();
            collect_files(d, &mut found, diags);
            files.extend(found.into_iter().map(|f| (d.clone(), f)));
        }
        let mut sets: BTreeMap<String, TemplateSet> = BTreeMap::new();
        let mut empty = BTreeSet::new();
        let mut used_lookups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut names: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (base, path) in files {
            let rel = path
                .strip_prefix(&base)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            names.insert(path.clone(), rel.clone());
            let Some(src) = Source::read(&path, diags) else {
                continue;
            };
            let Some((name, lang, html)) = split_name(&rel) else {
                diags.warning(
                    &src,
                    0,
                    "ignored: template files are named NAME.txt.j2 or NAME.html.j2 (optionally NAME.LANG.txt.j2)",
                );
                continue;
            };
            if let Err(e) = env.add_template_owned(rel.clone(), src.text.clone()) {
                let offset = match (e.range(), e.line()) {
                    (Some(r), _) => r.start,
                    (None, Some(line)) => src
                        .text
                        .split_inclusive('\n')
                        .take(line.saturating_sub(1))
                        .map(str::len)
                        .sum(),
                    _ => 0,
                };
                let detail = e
                    .detail()
                    .map_or_else(|| e.kind().to_string(), str::to_string);
                diags.error(&src, offset, format!("template syntax error: {detail}"));
                continue;
            }
            let errors_before = diags.error_count();
            let mut vars: Vec<String> = Vec::new();
            if let Ok(t) = env.get_template(&rel) {
                vars = t.undeclared_variables(true).into_iter().collect();
                vars.sort();
                for var in &vars {
                    check_variable(&src, var, company_keys, lookups, diags);
                    if let Some(l) = var.strip_prefix("lookup.") {
                        let l = l.split('.').next().unwrap_or(l);
                        used_lookups
                            .entry(name.clone())
                            .or_default()
                            .insert(l.to_string());
                    }
                }
            }
            if let (Ok(t), true) = (env.get_template(&rel), diags.error_count() == errors_before) {
                match t.render(sample_context(company_keys, &vars)) {
                    Ok(text) if text.trim().is_empty() && !html && {
                        if lang.is_empty() {
                            empty.insert(name.to_string());
                        }
                        true
                    } => diags.warning(
                        &src,
                        0,
                        "this template renders to an empty text: replies with it are never sent (a person gets those messages) until it has text",
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        let line = e.line().unwrap_or(1);
                        let offset: usize = src
                            .text
                            .split_inclusive('\n')
                            .take(line.saturating_sub(1))
                            .map(str::len)
                            .sum();
                        let detail = e.detail().map_or_else(|| e.kind().to_string(), str::to_string);
                        diags.error(&src, offset, format!("template cannot be rendered: {detail}"));
                    }
                }
            }
            let set = sets.entry(name).or_default();
            let slot = if html { &mut set.html } else { &mut set.text };
            slot.insert(lang, path.clone());
        }
        // Every HTML variant needs its plain-text sibling.
        for (name, set) in &sets {
            for lang in set.html.keys() {
                if !set.text.contains_key(lang)
                    && let Some(p) = set.html.get(lang)
                {
                    diags.push(crate::diag::Diagnostic::file(
                        p,
                        format!(
                            "HTML template without a plain-text version: add {name}{}.txt.j2",
                            if lang.is_empty() {
                                String::new()
                            } else {
                                format!(".{lang}")
                            }
                        ),
                    ));
                }
            }
            if !set.text.is_empty()
                && !set.text.contains_key("")
                && let Some(p) = set.text.values().next()
            {
                diags.push(crate::diag::Diagnostic::file(
                    p,
                    format!(
                        "template {name} has language variants but no default: add {name}.txt.j2"
                    ),
                ));
            }
        }
        Templates {
            env,
            sets,
            dir: dir.to_path_buf(),
            empty,
            lookups: used_lookups,
            names,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.sets.get(name).is_some_and(|s| s.text.contains_key(""))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    /// Renders `name` in `language` (falling back to the default variant).
    pub fn render(
        &self,
        name: &str,
        language: Option<&str>,
        ctx: &Value,
    ) -> Result<Rendered, RenderError> {
        let err = |message: String| RenderError {
            name: name.to_string(),
            message,
        };
        let set = self
            .sets
            .get(name)
            .ok_or_else(|| err("no such template".into()))?;
        let lang = language
            .filter(|l| set.text.contains_key(*l))
            .unwrap_or("")
            .to_string();
        let file = |map: &BTreeMap<String, PathBuf>| -> Option<String> {
            let p = map.get(&lang)?;
            self.names.get(p).cloned()
        };
        let render = |file: String| -> Result<String, RenderError> {
            let t = self
                .env
                .get_template(&file)
                .map_err(|e| err(e.to_string()))?;
            t.render(ctx).map_err(|e| {
                err(format!(
                    "{}{}",
                    e.detail()
                        .map_or_else(|| e.kind().to_string(), str::to_string),
                    e.line().map(|l| format!(" (line {l})")).unwrap_or_default()
                ))
            })
        };
        let text_file = file(&set.text).ok_or_else(|| err("no plain-text variant".into()))?;
        let text = render(text_file)?;
        if text.trim().is_empty() {
            return Err(err("rendered to an empty text".into()));
        }
        let html = match file(&set.html) {
            Some(f) => Some(render(f)?),
            None => None,
        };
        Ok(Rendered {
            text,
            html,
            language: lang,
        })
    }
}

/// A context with every variable set, for test renders at load time:
/// the lookup fields a template uses (`vars`) get placeholder values.
fn sample_context(company: &BTreeSet<String>, vars: &[String]) -> Value {
    let mut lookup = serde_json::Map::new();
    for v in vars {
        let Some(path) = v.strip_prefix("lookup.") else {
            continue;
        };
        let mut node = &mut lookup;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                node.entry(p.to_string())
                    .or_insert_with(|| serde_json::Value::String(format!("<{v}>")));
            } else {
                let e = node
                    .entry(p.to_string())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                if !e.is_object() {
                    *e = serde_json::Value::Object(serde_json::Map::new());
                }
                match e {
                    serde_json::Value::Object(m) => node = m,
                    _ => break,
                }
            }
        }
    }
    let company: BTreeMap<String, String> = company
        .iter()
        .map(|k| (k.clone(), format!("<{k}>")))
        .collect();
    minijinja::context! {
        customer => minijinja::context! { name => "Jane Doe", email => "jane@example.com" },
        original => minijinja::context! { subject => "Question", date => "2026-01-01 10:00 UTC", message_id => "x@example.com" },
        faq => minijinja::context! { id => "faq", title => "FAQ" },
        ticket => "SB-1000",
        date => "2026-01-01",
        language => "en",
        company => Value::from(company),
        lookup => crate::lookup::to_template(&serde_json::Value::Object(lookup)),
    }
}

fn check_variable(
    src: &Arc<Source>,
    var: &str,
    company: &BTreeSet<String>,
    lookups: &BTreeMap<String, Vec<String>>,
    diags: &mut Diagnostics,
) {
    let mut parts = var.split('.');
    let top = parts.next().unwrap_or_default();
    let attr = parts.next();
    let known = VARIABLES.iter().find(|(n, _)| *n == top);
    let problem = match (known, attr) {
        (Some(("lookup", _)), None) => {
            Some("use a lookup's fields: lookup.NAME.FIELD (e.g. lookup.order.status)".into())
        }
        (Some(("lookup", _)), Some(a)) => match lookups.get(a) {
            None => Some(match lookups.keys().next() {
                None => format!("`lookup.{a}`: there is no [[lookup]] named {a:?}"),
                Some(_) => format!(
                    "`lookup.{a}`: there is no [[lookup]] named {a:?}; defined: {}",
                    lookups.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }),
            Some(fields) => match parts.next() {
                None => None,
                Some(f) if fields.is_empty() || fields.iter().any(|x| x == f) => None,
                Some(f) => Some(format!(
                    "`lookup.{a}.{f}`: lookup {a:?} declares the fields {}; add {f:?} to its `fields` if the answer has it",
                    fields.join(", ")
                )),
            },
        },
        (None, _) => Some(format!(
            "unknown variable `{top}`; templates can use: {}",
            VARIABLES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (Some(("company", _)), Some(a)) if !company.contains(a) => Some(format!(
            "`company.{a}` is not defined: add `{a} = \"…\"` to [company] in switchboard.toml"
        )),
        (Some(("company", _)), _) => None,
        (Some((_, attrs)), Some(a)) if !attrs.is_empty() && !attrs.contains(&a) => Some(format!(
            "`{top}` has no field `{a}`; it has: {}",
            attrs.join(", ")
        )),
        (Some((_, [])), Some(a)) => {
            Some(format!("`{top}` is a plain value and has no field `{a}`"))
        }
        _ => None,
    };
    if let Some(msg) = problem {
        let at = find_variable(&src.text, var);
        diags.error(src, at, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            split_name("faq/x.txt.j2"),
            Some(("faq/x".into(), "".into(), false))
        );
        assert_eq!(
            split_name("faq/x.de.txt.j2"),
            Some(("faq/x".into(), "de".into(), false))
        );
        assert_eq!(
            split_name("ack.html.j2"),
            Some(("ack".into(), "".into(), true))
        );
        assert_eq!(split_name("notes.md"), None);
    }

    #[test]
    fn load_validate_render() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("faq"))?;
        std::fs::write(
            dir.path().join("faq/a.txt.j2"),
            "Hi {{ customer.name }},\nref {{ ticket }}\n{{ company.name }}\n",
        )?;
        std::fs::write(
            dir.path().join("faq/a.de.txt.j2"),
            "Hallo {{ customer.name }}\n",
        )?;
        std::fs::write(
            dir.path().join("faq/a.html.j2"),
            "<p>Hi {{ customer.name }}</p>\n",
        )?;
        std::fs::write(
            dir.path().join("bad.txt.j2"),
            "ok\n{{ customer.nmae }}\n{% if %}",
        )?;
        std::fs::write(dir.path().join("typo.txt.j2"), "x\n  {{ custmer.name }}\n")?;
        std::fs::write(
            dir.path().join("look.txt.j2"),
            "{{ lookup.order.status }}\n{{ lookup.order.colour }}\n{{ lookup.refund.state }}\n",
        )?;
        std::fs::write(
            dir.path().join("track.txt.j2"),
            "Shipped with {{ lookup.order.carrier }}.\n",
        )?;
        let company: BTreeSet<String> = ["name".to_string()].into();
        let lookups: BTreeMap<String, Vec<String>> =
            [("order".to_string(), vec!["status".into(), "carrier".into()])].into();
        let mut d = Diagnostics::new();
        let t = Templates::load(dir.path(), &company, &lookups, &mut d);
        let out = d
            .to_string()
            .replace(&dir.path().display().to_string(), "T");
        assert!(
            out.contains("T/look.txt.j2:2:4: `lookup.order.colour`: lookup \"order\" declares the fields status, carrier"),
            "{out}"
        );
        assert!(
            out.contains("T/look.txt.j2:3:4: `lookup.refund`: there is no [[lookup]] named \"refund\"; defined: order"),
            "{out}"
        );
        assert!(!out.contains("track.txt.j2"), "{out}");
        assert_eq!(
            t.lookups
                .get("track")
                .map(|l| l.iter().cloned().collect::<Vec<_>>()),
            Some(vec!["order".to_string()])
        );
        assert!(out.contains("T/bad.txt.j2:3:"), "{out}");
        assert!(
            out.contains("T/typo.txt.j2:2:6: unknown variable `custmer`"),
            "{out}"
        );
        assert!(t.contains("faq/a"));
        let ctx = minijinja::context! {
            customer => minijinja::context!{ name => "<Ann>", email => "a@x" },
            ticket => "SB-1",
            company => minijinja::context!{ name => "Shop" },
        };
        let r = t.render("faq/a", Some("fr"), &ctx)?;
        assert_eq!(r.text, "Hi <Ann>,\nref SB-1\nShop");
        assert_eq!(r.html.as_deref(), Some("<p>Hi &lt;Ann&gt;</p>"));
        let r = t.render("faq/a", Some("de"), &ctx)?;
        assert_eq!(r.text, "Hallo <Ann>");
        assert_eq!(r.language, "de");
        // A missing variable at render time is an error, never partial output.
        let e = t.render("faq/a", None, &minijinja::context! { ticket => "x" });
        assert!(e.is_err());
        Ok(())
    }
}
