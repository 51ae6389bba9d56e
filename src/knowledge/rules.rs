//! The rule language: `rules/*.toml`, compiled into [`Rule`]s.
//!
//! ```toml
//! [[rule]]
//! name = "legal-threats"
//! when.any = [
//!   { subject = { contains = ["lawyer", "attorney", "legal action"] } },
//!   { body = { regex = '\bsmall claims\b' } },
//! ]
//! escalate = "support"
//! ```
//!
//! A condition is a table: each key is a field test (or `all` / `any` /
//! `not`), and all keys of one table must hold. Rules run in file-name
//! order, then in the order they appear in the file; the first rule with a
//! terminal action (`reply`, `route`, `escalate`, `ignore`, `park`, `stop`)
//! ends the evaluation. `flag` is not terminal: flags of every matching
//! rule up to the terminal one are kept.

use aho_corasick::AhoCorasick;
use regex::{Regex, RegexBuilder};

use crate::diag::Location;
use crate::tomlread::{At, Table, Value};

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub description: String,
    /// Where the rule starts, for evidence ("rule x at rules/a.toml:12:1").
    pub location: Location,
    pub when: Condition,
    /// The terminal action, if any.
    pub action: Option<RuleAction>,
    /// Keywords set on the message (IMAP flags) when the rule matches.
    pub flags: Vec<String>,
    /// Lookups the rule needs (`needs = ["order"]`): it applies only when
    /// the message has their values, and a lookup without a usable answer
    /// sends the message to a person.
    pub needs: Vec<String>,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    /// Answer with a template (`reply = "ack"`) or with the matched FAQ
    /// entry's answer (`reply = "faq"`, only when the match is confident).
    Reply(ReplyWith),
    /// Move to a queue (`route = "billing"`).
    Route(String),
    /// Move to a queue's supervisor folder (`escalate = "billing"`, or
    /// `escalate = true` for the default queue).
    Escalate(Option<String>),
    /// File away without a person (`ignore = "newsletter"`).
    Ignore(String),
    /// Put aside for an admin (`park = "reason"`).
    Park(String),
    /// Stop evaluating rules; the default policy decides (`stop = true`).
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReplyWith {
    Template(String),
    Faq,
}

/// References from a rule to other knowledge, checked after loading.
#[derive(Debug, Clone)]
pub struct RuleRef {
    pub kind: RefKind,
    pub name: String,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Template,
    Queue,
    /// A queue or a rep (`route = …`).
    Target,
    /// A `[[lookup]]` (`needs = […]`, `lookup.NAME.… = …`).
    Lookup,
}

/// A condition tree.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Always true (a rule without `when`).
    True,
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Text(TextField, TextTest),
    Number(NumField, NumOp, f64),
    Bool(BoolField, bool),
    /// A field of a lookup's answer (`lookup.order.status = { in = […] }`),
    /// or whether the lookup found a record (`lookup.order.found = true`).
    Lookup {
        name: String,
        test: LookupTest,
    },
}

#[derive(Debug, Clone)]
pub enum LookupTest {
    /// The dotted field path and the test on its value (numbers and
    /// booleans are compared as text).
    Field(String, TextTest),
    Found(bool),
}

impl Condition {
    /// Whether the condition looks at the FAQ result (`faq_id`,
    /// `faq_score`, `faq_confident`).
    pub fn uses_faq(&self) -> bool {
        match self {
            Condition::True => false,
            Condition::All(c) | Condition::Any(c) => c.iter().any(Condition::uses_faq),
            Condition::Not(c) => c.uses_faq(),
            Condition::Text(field, _) => matches!(field, TextField::FaqId),
            Condition::Number(field, _, _) => matches!(field, NumField::FaqScore),
            Condition::Bool(field, _) => matches!(field, BoolField::FaqConfident),
            Condition::Lookup { .. } => false,
        }
    }

    /// Whether the condition looks at a lookup's answer.
    pub fn uses_lookups(&self) -> bool {
        match self {
            Condition::All(c) | Condition::Any(c) => c.iter().any(Condition::uses_lookups),
            Condition::Not(c) => c.uses_lookups(),
            Condition::Lookup { .. } => true,
            _ => false,
        }
    }

    /// Whether the condition looks at whether the message continues a
    /// conversation (`follow_up`).
    pub fn uses_follow_up(&self) -> bool {
        match self {
            Condition::All(c) | Condition::Any(c) => c.iter().any(Condition::uses_follow_up),
            Condition::Not(c) => c.uses_follow_up(),
            Condition::Bool(field, _) => matches!(field, BoolField::FollowUp),
            Condition::True
            | Condition::Text(..)
            | Condition::Number(..)
            | Condition::Lookup { .. } => false,
        }
    }

    /// The lookups the condition names.
    pub fn lookup_names(&self, out: &mut Vec<String>) {
        match self {
            Condition::All(c) | Condition::Any(c) => c.iter().for_each(|c| c.lookup_names(out)),
            Condition::Not(c) => c.lookup_names(out),
            Condition::Lookup { name, .. } => out.push(name.clone()),
            _ => {}
        }
    }
}

impl Rule {
    /// Whether evaluating this rule needs the FAQ result.
    pub fn uses_faq(&self) -> bool {
        self.when.uses_faq() || matches!(self.action, Some(RuleAction::Reply(ReplyWith::Faq)))
    }

    /// Whether the rule's outcome depends on lookups.
    pub fn uses_lookups(&self) -> bool {
        !self.needs.is_empty() || self.when.uses_lookups()
    }
}

/// Text fields a condition can test. Each yields one or more values; a
/// test holds when it holds for any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextField {
    /// Sender address (From).
    From,
    /// Sender display name.
    FromName,
    /// Domain of the sender address.
    FromDomain,
    /// Any To or Cc address.
    To,
    Subject,
    /// The cleaned body: the customer's own words.
    Body,
    /// Any value of the named header.
    Header(String),
    /// Detected language (`en`, `de`, …; empty when unknown).
    Language,
    /// Id of the best FAQ entry (empty when there is none).
    FaqId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumField {
    /// Message size in bytes.
    Size,
    /// Confidence of the best FAQ entry (0–1).
    FaqScore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumOp {
    Over,
    Under,
    AtLeast,
    AtMost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolField {
    HasAttachment,
    /// The FAQ match clears threshold and margin.
    FaqConfident,
    /// The loop guard found an automatic message (bounce, list, out-of-office…).
    AutoGenerated,
    /// The message answers a conversation switchboard already knows.
    FollowUp,
    /// The message is broken (see [`crate::parse::Message::malformed`]).
    Malformed,
}

/// A compiled string test. Patterns are lower-cased at load time unless
/// `case_sensitive = true`; values are lower-cased once per message.
#[derive(Debug, Clone)]
pub struct TextTest {
    pub case_sensitive: bool,
    pub ops: Vec<TextOp>,
}

#[derive(Debug, Clone)]
pub enum TextOp {
    /// Any of the patterns occurs (Aho-Corasick, one pass).
    Contains(AhoCorasick),
    /// The value equals one of these.
    Equals(Vec<String>),
    StartsWith(Vec<String>),
    EndsWith(Vec<String>),
    /// Any of these regexes matches (linear-time engine).
    Regex(Vec<Regex>),
}

const TEXT_FIELDS: &[&str] = &[
    "from",
    "from_name",
    "from_domain",
    "to",
    "subject",
    "body",
    "header",
    "language",
    "faq_id",
    "lookup",
];
const NUM_FIELDS: &[&str] = &["size", "faq_score"];
const BOOL_FIELDS: &[&str] = &[
    "has_attachment",
    "faq_confident",
    "auto_generated",
    "follow_up",
    "malformed",
];
const COMBINATORS: &[&str] = &["all", "any", "not"];

/// Compiles one `[[rule]]` table. Problems go to the table's file context.
pub fn compile_rule(mut t: Table<'_>, refs: &mut Vec<RuleRef>) -> Option<Rule> {
    let ctx = t.ctx();
    let start = t.span.clone();
    let name = t.required_string("name");
    if let Some(n) = &name {
        t.set_what(format!("rule {:?}", n.value));
        if n.value.trim().is_empty() {
            ctx.error(n.span.clone(), "rule names cannot be empty");
        }
    }
    let description = t.string("description").map(|d| d.value).unwrap_or_default();
    let enabled = t.boolean("enabled").is_none_or(|b| b.value);
    let needs: Vec<String> = t
        .strings("needs")
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            refs.push(RuleRef {
                kind: RefKind::Lookup,
                name: n.value.clone(),
                location: ctx.location(&n.span),
            });
            n.value
        })
        .collect();
    let when = match t.take("when") {
        Some(v) => compile_condition(v),
        None => Some(Condition::True),
    };
    if let Some(w) = &when {
        let mut names = Vec::new();
        w.lookup_names(&mut names);
        for n in names {
            refs.push(RuleRef {
                kind: RefKind::Lookup,
                name: n,
                location: ctx.location(&start),
            });
        }
    }
    let flags: Vec<String> = t
        .strings("flag")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| {
            let ok = !f.value.is_empty()
                && f.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_$".contains(c));
            if !ok {
                ctx.error(
                    f.span,
                    "flags must be IMAP keywords: letters, digits, '-', '_' or '$'",
                );
            }
            ok.then_some(f.value)
        })
        .collect();

    let mut actions: Vec<(RuleAction, std::ops::Range<usize>)> = Vec::new();
    if let Some(r) = t.string("reply") {
        if r.value == "faq" {
            actions.push((RuleAction::Reply(ReplyWith::Faq), r.span));
        } else {
            refs.push(RuleRef {
                kind: RefKind::Template,
                name: r.value.clone(),
                location: ctx.location(&r.span),
            });
            actions.push((RuleAction::Reply(ReplyWith::Template(r.value)), r.span));
        }
    }
    if let Some(r) = t.string("route") {
        refs.push(RuleRef {
            kind: RefKind::Target,
            name: r.value.clone(),
            location: ctx.location(&r.span),
        });
        actions.push((RuleAction::Route(r.value), r.span));
    }
    if let Some(v) = t.take("escalate") {
        let span = v.span.clone();
        match v.value {
            toml::de::DeValue::Boolean(true) => actions.push((RuleAction::Escalate(None), span)),
            toml::de::DeValue::Boolean(false) => {}
            _ => {
                if let Some(q) = v.into_string() {
                    refs.push(RuleRef {
                        kind: RefKind::Queue,
                        name: q.value.clone(),
                        location: ctx.location(&q.span),
                    });
                    actions.push((RuleAction::Escalate(Some(q.value)), span));
                }
            }
        }
    }
    for (key, make) in [
        ("ignore", RuleAction::Ignore as fn(String) -> RuleAction),
        ("park", RuleAction::Park),
    ] {
        if let Some(v) = t.take(key) {
            let span = v.span.clone();
            if let toml::de::DeValue::Boolean(b) = v.value {
                if b {
                    actions.push((
                        make(format!("rule {:?}", name.as_ref().map_or("", |n| &n.value))),
                        span,
                    ));
                }
            } else if let Some(reason) = v.into_string() {
                actions.push((make(reason.value), span));
            }
        }
    }
    if let Some(s) = t.boolean("stop")
        && s.value
    {
        actions.push((RuleAction::Stop, s.span));
    }
    if actions.len() > 1 {
        ctx.error(
            actions[1].1.clone(),
            "a rule can have only one of reply, route, escalate, ignore, park, stop (split it into two rules)",
        );
    }
    if actions.is_empty() && flags.is_empty() {
        ctx.error(
            start.clone(),
            format!(
                "{} has no action: add one of reply, route, escalate, ignore, park, stop or flag",
                t.what()
            ),
        );
    }
    t.finish();
    if !enabled {
        return None;
    }
    Some(Rule {
        name: name?.value,
        description,
        location: ctx.location(&start),
        when: when?,
        action: actions.into_iter().next().map(|(a, _)| a),
        flags,
        needs,
    })
}

/// Compiles a condition (a table, or a list meaning "all of").
pub fn compile_condition(v: Value<'_>) -> Option<Condition> {
    let ctx = v.ctx();
    if let toml::de::DeValue::Array(_) = v.value {
        let items: Vec<Option<Condition>> =
            v.into_items().into_iter().map(compile_condition).collect();
        return items
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(Condition::All);
    }
    let mut t = v.into_table("a condition")?;
    let mut parts = Vec::new();
    let mut ok = true;
    if t.remaining_keys().is_empty() {
        ctx.error(
            t.span.clone(),
            "empty condition: add a test such as { subject = { contains = \"refund\" } }",
        );
        return None;
    }
    while let Some((key, val)) = t.take_any() {
        let c = compile_entry(&key, val);
        ok &= c.is_some();
        parts.extend(c);
    }
    t.finish();
    if !ok {
        return None;
    }
    Some(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Condition::All(parts)
    })
}

fn compile_entry(key: &At<String>, val: Value<'_>) -> Option<Condition> {
    let ctx = val.ctx();
    let k = key.value.as_str();
    match k {
        "all" | "any" => {
            let items: Vec<Value<'_>> = match val.value {
                toml::de::DeValue::Array(_) => val.into_items(),
                _ => {
                    ctx.error(
                        val.span.clone(),
                        format!("`{k}` takes a list of conditions: {k} = [ {{ … }}, {{ … }} ]"),
                    );
                    return None;
                }
            };
            let list: Option<Vec<Condition>> = items
                .into_iter()
                .map(compile_condition)
                .collect::<Vec<_>>()
                .into_iter()
                .collect();
            let list = list?;
            Some(if k == "all" {
                Condition::All(list)
            } else {
                Condition::Any(list)
            })
        }
        "not" => compile_condition(val).map(|c| Condition::Not(Box::new(c))),
        "has_attachment" | "faq_confident" | "auto_generated" | "follow_up" | "malformed" => {
            let field = match k {
                "has_attachment" => BoolField::HasAttachment,
                "faq_confident" => BoolField::FaqConfident,
                "auto_generated" => BoolField::AutoGenerated,
                "malformed" => BoolField::Malformed,
                _ => BoolField::FollowUp,
            };
            val.into_bool().map(|b| Condition::Bool(field, b.value))
        }
        "size" | "faq_score" => {
            let field = if k == "size" {
                NumField::Size
            } else {
                NumField::FaqScore
            };
            compile_number(field, val)
        }
        "lookup" => compile_lookup(val),
        "header" => {
            let mut t = val.into_table("`header`")?;
            let mut parts = Vec::new();
            let mut ok = true;
            while let Some((name, test)) = t.take_any() {
                if name.value.is_empty()
                    || !name.value.chars().all(|c| c.is_ascii_graphic() && c != ':')
                {
                    ctx.error(
                        name.span.clone(),
                        format!("{:?} is not a header name", name.value),
                    );
                    ok = false;
                    continue;
                }
                match compile_text_test(test) {
                    Some(tt) => parts.push(Condition::Text(
                        TextField::Header(name.value.to_ascii_lowercase()),
                        tt,
                    )),
                    None => ok = false,
                }
            }
            t.finish();
            if !ok {
                return None;
            }
            Some(if parts.len() == 1 {
                parts.remove(0)
            } else {
                Condition::All(parts)
            })
        }
        _ => {
            let field = match k {
                "from" => TextField::From,
                "from_name" => TextField::FromName,
                "from_domain" => TextField::FromDomain,
                "to" => TextField::To,
                "subject" => TextField::Subject,
                "body" => TextField::Body,
                "language" => TextField::Language,
                "faq_id" => TextField::FaqId,
                _ => {
                    let all = TEXT_FIELDS
                        .iter()
                        .chain(NUM_FIELDS)
                        .chain(BOOL_FIELDS)
                        .chain(COMBINATORS)
                        .copied();
                    let hint = match crate::diag::suggest(k, all) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!(
                            "conditions test one of: {}, {}, {}, or combine with all / any / not",
                            TEXT_FIELDS.join(", "),
                            NUM_FIELDS.join(", "),
                            BOOL_FIELDS.join(", ")
                        ),
                    };
                    ctx.error(key.span.clone(), format!("unknown condition `{k}`; {hint}"));
                    return None;
                }
            };
            let mut tt = compile_text_test(val)?;
            if field == TextField::Language {
                // Accept `deu`, `german` or `de`; messages carry `de`.
                for op in &mut tt.ops {
                    if let TextOp::Equals(list) = op {
                        for code in list.iter_mut() {
                            if let Some(l) = crate::parse::lang_from_code(code) {
                                *code = crate::parse::lang_code(l).into_owned();
                            }
                        }
                    }
                }
            }
            Some(Condition::Text(field, tt))
        }
    }
}

/// `lookup = { order = { status = { in = [...] }, found = true } }`, as
/// TOML writes `lookup.order.status = { in = [...] }` in a condition.
fn compile_lookup(val: Value<'_>) -> Option<Condition> {
    let ctx = val.ctx();
    let mut t =
        val.into_table("`lookup`: lookup.NAME.FIELD = { … } or lookup.NAME.found = true")?;
    let mut parts = Vec::new();
    let mut ok = true;
    while let Some((name, v)) = t.take_any() {
        let Some(mut ft) = v.into_table(format!("lookup.{}", name.value)) else {
            ok = false;
            continue;
        };
        let mut fields = Vec::new();
        fn flatten<'c>(
            prefix: String,
            t: &mut crate::tomlread::Table<'c>,
            out: &mut Vec<(String, Value<'c>)>,
        ) {
            while let Some((k, v)) = t.take_any() {
                let path = if prefix.is_empty() {
                    k.value.clone()
                } else {
                    format!("{prefix}.{}", k.value)
                };
                // A table without text-test operators is a nested field.
                let nested = match &v.value {
                    toml::de::DeValue::Table(tb) => !tb.keys().any(|k| {
                        matches!(
                            k.get_ref().as_ref(),
                            "contains"
                                | "equals"
                                | "in"
                                | "starts_with"
                                | "ends_with"
                                | "regex"
                                | "case_sensitive"
                        )
                    }),
                    _ => false,
                };
                if nested {
                    if let Some(mut inner) = v.into_table(format!("lookup field {path}")) {
                        flatten(path, &mut inner, out);
                        inner.finish();
                    }
                } else {
                    out.push((path, v));
                }
            }
        }
        flatten(String::new(), &mut ft, &mut fields);
        ft.finish();
        for (path, v) in fields {
            if path == "found" {
                match v.into_bool() {
                    Some(b) => parts.push(Condition::Lookup {
                        name: name.value.clone(),
                        test: LookupTest::Found(b.value),
                    }),
                    None => ok = false,
                }
                continue;
            }
            match compile_text_test(v) {
                Some(tt) => parts.push(Condition::Lookup {
                    name: name.value.clone(),
                    test: LookupTest::Field(path, tt),
                }),
                None => ok = false,
            }
        }
    }
    let span = t.span.clone();
    t.finish();
    if !ok {
        return None;
    }
    match parts.len() {
        0 => {
            ctx.error(
                span,
                "an empty lookup test: lookup.NAME.FIELD = { equals = \"…\" }",
            );
            None
        }
        1 => parts.pop(),
        _ => Some(Condition::All(parts)),
    }
}

fn compile_number(field: NumField, val: Value<'_>) -> Option<Condition> {
    let mut t = val.into_table("a number test such as { over = \"1MB\" }")?;
    let ctx = t.ctx();
    let mut parts = Vec::new();
    for (key, op) in [
        ("over", NumOp::Over),
        ("under", NumOp::Under),
        ("at_least", NumOp::AtLeast),
        ("at_most", NumOp::AtMost),
    ] {
        if let Some(v) = t.take(key) {
            let n = match field {
                NumField::Size => v.into_size().map(|s| s.value as f64),
                NumField::FaqScore => {
                    let span = v.span.clone();
                    let f = v.into_float();
                    if let Some(x) = &f
                        && !(0.0..=1.0).contains(&x.value)
                    {
                        ctx.error(span, "FAQ scores are between 0 and 1");
                    }
                    f.map(|f| f.value)
                }
            };
            parts.push(Condition::Number(field, op, n?));
        }
    }
    let span = t.span.clone();
    t.finish();
    match parts.len() {
        0 => {
            ctx.error(span, "a number test needs over, under, at_least or at_most");
            None
        }
        1 => parts.pop(),
        _ => Some(Condition::All(parts)),
    }
}

fn compile_text_test(val: Value<'_>) -> Option<TextTest> {
    let ctx = val.ctx();
    if !matches!(val.value, toml::de::DeValue::Table(_)) {
        let key = val.key.clone();
        ctx.error(
            val.span.clone(),
            format!(
                "`{key}` needs an operator table, e.g. {key} = {{ contains = \"…\" }} (operators: contains, equals, in, starts_with, ends_with, regex)"
            ),
        );
        return None;
    }
    let mut t = val.into_table("a text test")?;
    let case_sensitive = t.boolean("case_sensitive").is_some_and(|b| b.value);
    let norm = |s: String| if case_sensitive { s } else { s.to_lowercase() };
    let mut ops = Vec::new();
    let mut ok = true;
    if let Some(list) = t.strings("contains") {
        let pats: Vec<String> = list.into_iter().map(|p| norm(p.value)).collect();
        match AhoCorasick::new(&pats) {
            Ok(ac) => ops.push(TextOp::Contains(ac)),
            Err(e) => {
                ok = false;
                ctx.error(
                    t.span.clone(),
                    format!("cannot build the `contains` matcher: {e}"),
                );
            }
        }
    }
    let mut equals: Vec<String> = Vec::new();
    for key in ["equals", "in"] {
        if let Some(list) = t.strings(key) {
            equals.extend(list.into_iter().map(|p| norm(p.value)));
        }
    }
    if !equals.is_empty() {
        ops.push(TextOp::Equals(equals));
    }
    if let Some(list) = t.strings("starts_with") {
        ops.push(TextOp::StartsWith(
            list.into_iter().map(|p| norm(p.value)).collect(),
        ));
    }
    if let Some(list) = t.strings("ends_with") {
        ops.push(TextOp::EndsWith(
            list.into_iter().map(|p| norm(p.value)).collect(),
        ));
    }
    if let Some(list) = t.strings("regex") {
        let mut res = Vec::new();
        for p in list {
            match RegexBuilder::new(&p.value)
                .case_insensitive(!case_sensitive)
                .size_limit(1 << 20)
                .build()
            {
                Ok(r) => res.push(r),
                Err(e) => {
                    ok = false;
                    let msg = e.to_string();
                    let detail = msg
                        .lines()
                        .filter(|l| l.starts_with("error:"))
                        .map(|l| l.trim_start_matches("error:").trim())
                        .next()
                        .unwrap_or(msg.lines().last().unwrap_or(""))
                        .to_string();
                    ctx.error(p.span, format!("invalid regex {:?}: {detail}", p.value));
                }
            }
        }
        ops.push(TextOp::Regex(res));
    }
    let span = t.span.clone();
    t.finish();
    if ops.is_empty() && ok {
        ctx.error(
            span,
            "a text test needs an operator: contains, equals, in, starts_with, ends_with or regex",
        );
        return None;
    }
    ok.then_some(TextTest {
        case_sensitive,
        ops,
    })
}
