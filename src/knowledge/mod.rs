//! The knowledge snapshot: rules, queues, FAQ and templates, loaded and
//! validated as one unit.
//!
//! A [`Knowledge`] is immutable. The daemon holds the current one in a
//! `tokio::sync::watch` channel; a reload builds a complete new snapshot
//! and swaps it in only when it has no errors, so a broken edit never
//! replaces working rules. A message in flight keeps the snapshot it
//! started with.

pub mod faq;
pub mod queues;
pub mod rules;
pub mod team;
pub mod templates;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::classify::faq::FaqIndex;
use crate::config::{Config, FaqConfig, Folders, Limits, ReplyConfig};
use crate::diag::{Diagnostic, Diagnostics, Location, Source};
use crate::tomlread::Ctx;

pub use faq::FaqEntry;
pub use queues::{Queue, Strategy};
pub use rules::{Condition, Rule, RuleAction};
pub use team::Rep;
pub use templates::Templates;

/// The policy knobs from the config that decisions depend on. Part of the
/// snapshot so that a reload applies them together with the rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Our own addresses, lower-case.
    pub our_addresses: Vec<String>,
    pub auto_reply: bool,
    pub default_queue: String,
    pub faq: FaqConfig,
    pub limits: Limits,
    pub reply: ReplyConfig,
    pub company: BTreeMap<String, String>,
    pub domain: String,
    pub folders: Folders,
    pub languages: Vec<whatlang::Lang>,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Policy {
        Policy {
            our_addresses: cfg.all_our_addresses(),
            auto_reply: cfg.auto_reply,
            default_queue: cfg.default_queue.clone(),
            faq: cfg.faq.clone(),
            limits: cfg.limits.clone(),
            reply: cfg.reply.clone(),
            company: cfg.company.clone(),
            domain: cfg.domain.clone(),
            folders: cfg.folders.clone(),
            languages: cfg.languages.clone(),
        }
    }
}

/// Everything switchboard knows: one validated, immutable snapshot.
#[derive(Debug)]
pub struct Knowledge {
    pub rules: Vec<Rule>,
    pub queues: BTreeMap<String, Queue>,
    /// Representatives by id.
    pub reps: BTreeMap<String, Rep>,
    pub faq: FaqIndex,
    pub templates: Templates,
    pub policy: Policy,
    /// The `[[lookup]]`s that a rule, FAQ entry or template uses, ready
    /// to run (connections and caches live as long as the snapshot).
    pub lookups: Vec<Arc<crate::lookup::Lookup>>,
    /// Hash of every file the snapshot was built from.
    pub fingerprint: String,
}

impl Knowledge {
    /// The queue a message goes to by default.
    pub fn default_queue(&self) -> Option<&Queue> {
        self.queues.get(&self.policy.default_queue)
    }

    /// Loads the snapshot for a config. All problems of all files are
    /// returned; the snapshot only when there is no error.
    pub fn load(cfg: &Config) -> Result<(Arc<Knowledge>, Diagnostics), Diagnostics> {
        let mut diags = Diagnostics::new();
        let mut hasher = crate::util::Fingerprint::default();

        // Rules and queues.
        let mut rules: Vec<Rule> = Vec::new();
        let mut refs = Vec::new();
        let mut queues: BTreeMap<String, Queue> = BTreeMap::new();
        let mut rep_list: Vec<Rep> = Vec::new();
        let base = cfg
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut lookup_defs: Vec<crate::lookup::LookupDef> = cfg.lookups.clone();
        let mut rule_files = toml_files(&cfg.rules_dir, &mut diags, "rules");
        for d in &cfg.extra_rules_dirs {
            rule_files.extend(toml_files(d, &mut diags, "rules"));
        }
        rule_files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        for path in rule_files {
            let Some(src) = Source::read(&path, &mut diags) else {
                continue;
            };
            hasher.add(&path, &src.text);
            let ctx = Ctx::new(src);
            let mut t = ctx.parse();
            for rt in t.tables("rule") {
                if let Some(r) = rules::compile_rule(rt, &mut refs) {
                    rules.push(r);
                }
            }
            for qt in t.tables("queue") {
                if let Some(q) = queues::read_queue(qt) {
                    if let Some(prev) = queues.get(&q.name) {
                        diags.error_at(
                            &q.location,
                            format!("queue {:?} is already defined at {}", q.name, prev.location),
                        );
                    } else {
                        queues.insert(q.name.clone(), q);
                    }
                }
            }
            for rt in t.tables("rep") {
                if let Some(r) = team::read_rep(rt) {
                    rep_list.push(r);
                }
            }
            for lt in t.tables("lookup") {
                if let Some(l) = crate::lookup::read_lookup(lt, &base) {
                    lookup_defs.push(l);
                }
            }
            t.finish();
            diags.extend(ctx.into_diagnostics());
        }
        let reps = link_team(&mut queues, rep_list, &mut diags);
        // Queues without a calendar of their own use [sla]'s.
        for q in queues.values_mut() {
            let (hours, tz, holidays) = q.own_calendar;
            if !hours {
                q.sla.calendar.hours = cfg.sla.hours.clone();
            }
            if !tz {
                q.sla.calendar.timezone = cfg.sla.timezone.clone();
            }
            if !holidays {
                q.sla.calendar.holidays = cfg.sla.holidays.clone();
            }
        }
        let mut seen: BTreeMap<&str, &Location> = BTreeMap::new();
        for r in &rules {
            if let Some(prev) = seen.insert(&r.name, &r.location) {
                diags.error_at(
                    &r.location,
                    format!("rule name {:?} is already used at {prev}; names must be unique so decisions can be explained", r.name),
                );
            }
        }
        // A terminal rule that always matches hides every rule after it.
        if let Some(pos) = rules
            .iter()
            .position(|r| matches!(r.when, Condition::True) && r.action.is_some())
            && let Some(next) = rules.get(pos + 1)
        {
            diags.push(Diagnostic {
                location: next.location.clone(),
                severity: crate::diag::Severity::Warning,
                message: format!(
                    "rule {:?} can never match: rule {:?} at {} matches every message",
                    next.name, rules[pos].name, rules[pos].location
                ),
            });
        }

        // FAQ entries.
        let mut entries: Vec<FaqEntry> = Vec::new();
        let mut out_of_scope: Vec<String> = Vec::new();
        let mut calibration: Option<faq::Calibration> = None;
        if cfg.faq_dir.exists() {
            for path in toml_files(&cfg.faq_dir, &mut diags, "FAQ") {
                let Some(src) = Source::read(&path, &mut diags) else {
                    continue;
                };
                hasher.add(&path, &src.text);
                let ctx = Ctx::new(src);
                let mut t = ctx.parse();
                for et in t.tables("entry") {
                    if let Some(e) = faq::read_entry(et) {
                        entries.push(e);
                    }
                }
                for ot in t.tables("out_of_scope") {
                    out_of_scope.extend(faq::read_out_of_scope(ot));
                }
                if let Some(ct) = t.table("calibration", "[calibration]")
                    && let Some(c) = faq::read_calibration(ct)
                {
                    if let Some(prev) = &calibration {
                        ctx.error(
                            0..0,
                            format!(
                                "a second [calibration] table: the first is at {}",
                                prev.location
                            ),
                        );
                    } else {
                        calibration = Some(c);
                    }
                }
                t.finish();
                diags.extend(ctx.into_diagnostics());
            }
        }
        let mut ids: BTreeMap<&str, &Location> = BTreeMap::new();
        for e in &entries {
            if let Some(prev) = ids.insert(&e.id, &e.location) {
                diags.error_at(
                    &e.location,
                    format!("duplicate FAQ id {:?}: already defined at {prev}", e.id),
                );
            }
        }

        // Lookups: unique names.
        let mut lookup_fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut lookup_at: BTreeMap<String, Location> = BTreeMap::new();
        for l in &lookup_defs {
            if let Some(prev) = lookup_at.get(&l.name) {
                diags.error_at(
                    &l.location,
                    format!("lookup {:?} is already defined at {prev}", l.name),
                );
            } else {
                lookup_at.insert(l.name.clone(), l.location.clone());
                lookup_fields.insert(l.name.clone(), l.fields.clone());
            }
        }

        // Templates.
        let company: BTreeSet<String> = cfg.company.keys().cloned().collect();
        let templates = if cfg.templates_dir.is_dir() {
            let mut dirs = vec![cfg.templates_dir.clone()];
            dirs.extend(cfg.extra_templates_dirs.iter().cloned());
            Templates::load_dirs(&dirs, &company, &lookup_fields, &mut diags)
        } else {
            diags.push(Diagnostic::file(
                &cfg.path,
                format!(
                    "templates directory {} does not exist (set templates_dir)",
                    cfg.templates_dir.display()
                ),
            ));
            Templates::load(
                Path::new("/nonexistent-templates"),
                &company,
                &lookup_fields,
                &mut Diagnostics::new(),
            )
        };
        for d in std::iter::once(&cfg.templates_dir).chain(&cfg.extra_templates_dirs) {
            for f in collect_template_hashes(d) {
                hasher.add(&f.0, &f.1);
            }
        }

        // Cross references.
        for r in &refs {
            match r.kind {
                rules::RefKind::Template if !templates.contains(&r.name) => {
                    let hint = crate::diag::suggest(&r.name, templates.names())
                        .map(|s| format!("; did you mean {s:?}?"))
                        .unwrap_or_default();
                    diags.error_at(
                        &r.location,
                        format!(
                            "template {:?} not found: expected {}/{}.txt.j2{hint}",
                            r.name,
                            cfg.templates_dir.display(),
                            r.name
                        ),
                    );
                }
                rules::RefKind::Target
                    if !queues.contains_key(&r.name) && !reps.contains_key(&r.name) =>
                {
                    let hint = crate::diag::suggest(
                        &r.name,
                        queues.keys().chain(reps.keys()).map(String::as_str),
                    )
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                    let msg = if reps.is_empty() {
                        format!(
                            "queue {:?} is not defined: add a [[queue]] with name = {:?}{hint}",
                            r.name, r.name
                        )
                    } else {
                        format!(
                            "{:?} is neither a queue nor a rep: add a [[queue]] or [[rep]] with that name{hint}",
                            r.name
                        )
                    };
                    diags.error_at(&r.location, msg);
                }
                rules::RefKind::Lookup if !lookup_at.contains_key(&r.name) => {
                    let hint = crate::diag::suggest(&r.name, lookup_at.keys().map(String::as_str))
                        .map(|s| format!("; did you mean {s:?}?"))
                        .unwrap_or_default();
                    diags.error_at(
                        &r.location,
                        format!(
                            "lookup {:?} is not defined: add a [[lookup]] with name = {:?}{hint}",
                            r.name, r.name
                        ),
                    );
                }
                rules::RefKind::Queue if !queues.contains_key(&r.name) => {
                    let hint = crate::diag::suggest(&r.name, queues.keys().map(String::as_str))
                        .map(|s| format!("; did you mean {s:?}?"))
                        .unwrap_or_default();
                    diags.error_at(
                        &r.location,
                        format!(
                            "queue {:?} is not defined: add a [[queue]] with name = {:?}{hint}",
                            r.name, r.name
                        ),
                    );
                }
                _ => {}
            }
        }
        for q in queues.values() {
            if let Some((t, at)) = &q.check_in_ref
                && !templates.contains(t)
            {
                diags.error_at(
                    at,
                    format!(
                        "template {t:?} not found: expected {}/{t}.txt.j2",
                        cfg.templates_dir.display()
                    ),
                );
            }
        }
        for e in &entries {
            for (n, at) in &e.needs {
                if !lookup_at.contains_key(n) {
                    diags.error_at(
                        at,
                        format!("lookup {n:?} is not defined: add a [[lookup]] with name = {n:?}"),
                    );
                }
            }
            if !templates.contains(&e.template) {
                diags.error_at(
                    &e.template_location,
                    format!(
                        "template {:?} not found: expected {}/{}.txt.j2",
                        e.template,
                        cfg.templates_dir.display(),
                        e.template
                    ),
                );
            }
        }
        if !queues.contains_key(&cfg.default_queue) {
            diags.error_at(
                &cfg.default_queue_location,
                format!(
                    "default_queue {:?} is not defined: add a [[queue]] with name = {:?} to a file in {}",
                    cfg.default_queue,
                    cfg.default_queue,
                    cfg.rules_dir.display()
                ),
            );
        }

        // Lookups nothing uses are not run.
        let mut used: BTreeSet<String> = templates.lookups.values().flatten().cloned().collect();
        used.extend(
            refs.iter()
                .filter(|r| r.kind == rules::RefKind::Lookup)
                .map(|r| r.name.clone()),
        );
        used.extend(
            entries
                .iter()
                .flat_map(|e| e.needs.iter().map(|n| n.0.clone())),
        );
        let mut lookups = Vec::new();
        for l in lookup_defs {
            if !used.contains(&l.name) {
                diags.push(Diagnostic {
                    location: l.location.clone(),
                    severity: crate::diag::Severity::Warning,
                    message: format!(
                        "lookup {:?} is not used by any rule, FAQ entry (`needs`) or template: it is not run",
                        l.name
                    ),
                });
            } else if lookup_at.get(&l.name) == Some(&l.location) {
                lookups.push(Arc::new(crate::lookup::Lookup::new(l)));
            }
        }
        if diags.has_errors() {
            return Err(diags);
        }
        let fingerprint = crate::classify::faq::examples_fingerprint(&entries);
        if let Some(c) = &calibration {
            if c.fingerprint != fingerprint {
                diags.push(Diagnostic {
                    location: c.location.clone(),
                    severity: crate::diag::Severity::Warning,
                    message: "the FAQ changed since this calibration was fitted: run `switchboard eval --cross-validate 5 --write` again".into(),
                });
            }
            if let Some(t) = c.threshold
                && cfg.faq.threshold_set
                && cfg.faq.threshold + 1e-9 < t
            {
                diags.push(Diagnostic {
                    location: cfg.faq_threshold_location.clone(),
                    severity: crate::diag::Severity::Warning,
                    message: format!(
                        "[faq] threshold = {:.2} is below {t:.2}, the lowest threshold at which the FAQ's own cross-validation reached {:.0}% precision ({}): expect more wrong automatic answers",
                        cfg.faq.threshold,
                        c.target_precision * 100.0,
                        c.location
                    ),
                });
            }
            for id in c.thresholds.keys() {
                if !entries.iter().any(|e| e.id == *id) {
                    diags.push(Diagnostic {
                        location: c.location.clone(),
                        severity: crate::diag::Severity::Warning,
                        message: format!(
                            "[calibration.thresholds] names {id:?}, which is not an FAQ entry"
                        ),
                    });
                }
            }
        }
        let faq = match FaqIndex::build_with(entries, out_of_scope, calibration, &cfg.faq) {
            Ok(f) => f,
            Err(e) => {
                diags.push(Diagnostic::file(
                    &cfg.faq_dir,
                    format!("cannot build the FAQ index: {e}"),
                ));
                return Err(diags);
            }
        };
        Ok((
            Arc::new(Knowledge {
                rules,
                queues,
                reps,
                faq,
                templates,
                policy: Policy::from_config(cfg),
                lookups,
                fingerprint: hasher.finish(),
            }),
            diags,
        ))
    }
}

/// Checks reps against queues and fills in each queue's members.
fn link_team(
    queues: &mut BTreeMap<String, Queue>,
    list: Vec<Rep>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Rep> {
    let mut reps: BTreeMap<String, Rep> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for r in list {
        if let Some(prev) = reps.get(&r.id) {
            diags.error_at(
                &r.location,
                format!("rep {:?} is already defined at {}", r.id, prev.location),
            );
            continue;
        }
        if let Some(q) = queues.get(&r.id) {
            diags.error_at(
                &r.location,
                format!(
                    "rep id {:?} is also the name of the queue at {}: `route = {:?}` would be ambiguous; rename one",
                    r.id, q.location, r.id
                ),
            );
        }
        order.push(r.id.clone());
        reps.insert(r.id.clone(), r);
    }
    // Queues a rep names.
    for id in &order {
        let r = &reps[id];
        for (q, at) in &r.queues {
            if !queues.contains_key(q) {
                let hint = crate::diag::suggest(q, queues.keys().map(String::as_str))
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                diags.error_at(
                    at,
                    format!(
                        "rep {:?} serves queue {q:?}, which is not defined: add a [[queue]] with name = {q:?}{hint}",
                        r.id
                    ),
                );
            }
        }
    }
    for q in queues.values_mut() {
        let mut members: Vec<String> = Vec::new();
        for (m, at) in &q.listed_members {
            if !reps.contains_key(m) {
                let hint = crate::diag::suggest(m, reps.keys().map(String::as_str))
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                diags.error_at(
                    at,
                    format!(
                        "queue {:?} lists member {m:?}, which is not defined: add a [[rep]] with id = {m:?}{hint}",
                        q.name
                    ),
                );
            } else if !members.contains(m) {
                members.push(m.clone());
                // A listed member serves the queue as if they named it.
                if let Some(r) = reps.get_mut(m)
                    && !r.serves(&q.name)
                {
                    r.queues.push((q.name.clone(), at.clone()));
                }
            }
        }
        for id in &order {
            if reps[id].serves(&q.name) && !members.contains(id) {
                members.push(id.clone());
            }
        }
        if q.strategy != Strategy::Shared && members.is_empty() {
            diags.push(Diagnostic {
                location: q.location.clone(),
                severity: crate::diag::Severity::Warning,
                message: format!(
                    "queue {:?} uses strategy {:?} but has no members: everything goes to its folder {:?}",
                    q.name,
                    q.strategy.as_str(),
                    q.folder
                ),
            });
        }
        q.members = members;
    }
    reps
}

/// `*.toml` files of a directory (not recursive), sorted by name.
fn toml_files(dir: &Path, diags: &mut Diagnostics, what: &str) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension().is_some_and(|e| e == "toml")
                        && !p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                })
                .collect();
            v.sort();
            v
        }
        Err(e) => {
            diags.push(Diagnostic::file(
                dir,
                format!("cannot read the {what} directory: {e}"),
            ));
            Vec::new()
        }
    }
}

fn collect_template_hashes(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = std::fs::read_to_string(&p) {
                out.push((p, t));
            }
        }
    }
    out.sort();
    out
}
