//! Lookups: the customer's own data (an order's status, an account's
//! renewal date) fetched while a batch is decided, so that an automatic
//! answer can say "your order 48213 shipped on 20 November with DHL".
//!
//! A lookup is defined in `[[lookup]]` tables (in `rules/*.toml` or
//! `switchboard.toml`, reloaded with the rules):
//!
//! ```toml
//! [[lookup]]
//! name = "order"
//! extract = { regex = '(?i)order\s*(?:no\.?|nr\.?|#)?\s*(\d{5,8})' }
//! kind = "sql"
//! url = "sqlite://orders.db"
//! query = "SELECT status, carrier, tracking, customer_email FROM orders WHERE id = $1"
//! owner = "customer_email"
//! ```
//!
//! The value is extracted from the message ([`Extract`]), looked up in a
//! backend ([`Backend`]: HTTP GET with a JSON answer, one read-only SQL
//! query, or a program printing JSON), and the answer becomes a fact of
//! the message ([`Outcome`]) that rules test (`lookup.order.status`),
//! rules and FAQ entries require (`needs = ["order"]`) and templates use
//! (`{{ lookup.order.tracking }}`).
//!
//! Safety:
//! - **Ownership.** An answer is used only when its `owner` field holds
//!   the sender's address; otherwise it is [`Outcome::NotOwner`]: no data
//!   in any reply, and the message goes to a person.
//! - **Failure.** A timeout, an HTTP error, malformed JSON or a missing
//!   field is [`Outcome::Failed`]; whatever needed the data goes to a
//!   person. Failures are never cached, so a retry looks up again.
//! - **Bounded.** Each lookup has a timeout (3 s), a concurrency cap (4),
//!   an optional rate cap, a cache (60 s) and a breaker: after 5
//!   failures in a row it is not asked for 30 s, so a hanging backend
//!   costs a backlog seconds, not minutes.
//! - **Quiet.** Extracted values and answers are logged at debug level
//!   only.

mod backend;
mod def;

pub use def::{Backend, Extract, HeaderValue, LookupDef, read_lookup};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::parse::Message;

/// What a lookup found out for one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// The backend answered, and the answer belongs to the sender. (The
    /// audit log records which fields it had, not their values.)
    Found {
        #[serde(serialize_with = "field_names")]
        data: serde_json::Value,
    },
    /// The backend has no such record (HTTP 404, no row, `null`).
    NotFound,
    /// The answer belongs to someone else (the owner field does not hold
    /// the sender's address).
    NotOwner,
    /// No usable answer: timeout, error, malformed answer.
    Failed { error: String },
}

impl Outcome {
    /// Short description for reasons and `test --explain`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Found { .. } => "found".into(),
            Outcome::NotFound => "no such record".into(),
            Outcome::NotOwner => "the record belongs to someone else".into(),
            Outcome::Failed { error } => format!("failed: {error}"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Outcome::Found { .. } => "found",
            Outcome::NotFound => "not_found",
            Outcome::NotOwner => "not_owner",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// One lookup done for one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LookupResult {
    pub name: String,
    /// The value extracted from the message (an order number, the
    /// sender's address). Not written to the audit log.
    #[serde(skip)]
    pub value: String,
    pub outcome: Outcome,
    /// Answered from the cache.
    pub cached: bool,
    /// Time spent, in milliseconds.
    pub millis: f64,
    /// Where it asked (kind and host / file / program), for explanations.
    pub source: String,
}

/// The lookups of one message, by name. A lookup whose value was not
/// found in the message is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LookupFacts {
    pub results: Vec<LookupResult>,
}

impl LookupFacts {
    pub fn get(&self, name: &str) -> Option<&LookupResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// The data of a lookup that was found (and belongs to the sender).
    pub fn data(&self, name: &str) -> Option<&serde_json::Value> {
        match &self.get(name)?.outcome {
            Outcome::Found { data } => Some(data),
            _ => None,
        }
    }

    /// Why the lookups `needs` cannot be used: `None` when every one was
    /// found. `Some(None)`: a value was not in the message (the rule or
    /// entry does not apply); `Some(Some(why))`: looked up without a
    /// usable answer (the message goes to a person).
    pub fn unmet(&self, needs: &[String]) -> Option<Option<String>> {
        for n in needs {
            match self.get(n) {
                None => return Some(None),
                Some(r) => match &r.outcome {
                    Outcome::Found { .. } => {}
                    o => return Some(Some(format!("lookup {n}: {}", o.describe()))),
                },
            }
        }
        None
    }

    /// The first lookup whose record belongs to someone else.
    pub fn not_owner(&self) -> Option<&LookupResult> {
        self.results
            .iter()
            .find(|r| matches!(r.outcome, Outcome::NotOwner))
    }

    /// The template variable `lookup`: found data by lookup name. Empty
    /// (null) fields are left out, so that a template using one cannot
    /// render ("tracking number None" is never sent; a person answers).
    pub fn template_value(&self) -> serde_json::Value {
        fn without_nulls(v: &serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(o) => serde_json::Value::Object(
                    o.iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k.clone(), without_nulls(v)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        let mut map = serde_json::Map::new();
        for r in &self.results {
            if let Outcome::Found { data } = &r.outcome {
                map.insert(r.name.clone(), without_nulls(data));
            }
        }
        serde_json::Value::Object(map)
    }
}

/// After this many failures in a row a lookup is not asked for
/// [`BREAKER_OPEN`].
const BREAKER_FAILURES: u32 = 5;
const BREAKER_OPEN: Duration = Duration::from_secs(30);
/// Cached answers per lookup, at most.
const CACHE_MAX: usize = 10_000;

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// A lookup ready to run: its definition, cache, caps and connections.
pub struct Lookup {
    pub def: LookupDef,
    cache: Mutex<HashMap<String, (Instant, Outcome)>>,
    permits: tokio::sync::Semaphore,
    next_slot: tokio::sync::Mutex<Instant>,
    breaker: Mutex<Breaker>,
    backend: backend::Runtime,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("name", &self.def.name)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Lookup {
    pub fn new(def: LookupDef) -> Lookup {
        Lookup {
            permits: tokio::sync::Semaphore::new(def.concurrency.max(1)),
            next_slot: tokio::sync::Mutex::new(Instant::now()),
            backend: backend::Runtime::new(def.concurrency),
            cache: Mutex::new(HashMap::new()),
            breaker: Mutex::new(Breaker::default()),
            def,
        }
    }

    /// The value to look up in `m`, if the message has one.
    pub fn extract(&self, m: &Message, sender: &str) -> Option<String> {
        match &self.def.extract {
            Extract::Sender => (!sender.is_empty()).then(|| sender.to_string()),
            Extract::Patterns(res) => {
                let body = crate::util::truncate_str(&m.body, 64 * 1024);
                res.iter().find_map(|re| {
                    [m.subject.as_str(), body].iter().find_map(|text| {
                        let c = re.captures(text)?;
                        let v = c.get(1).or_else(|| c.get(0))?.as_str().trim();
                        (!v.is_empty() && v.len() <= 200).then(|| v.to_string())
                    })
                })
            }
        }
    }

    /// Looks `value` up for `sender` (cache, caps, timeout, owner check).
    pub async fn run(&self, value: &str, sender: &str) -> LookupResult {
        let started = Instant::now();
        let name = self.def.name.clone();
        let source = self.def.backend.describe();
        let cached = {
            let c = lock(&self.cache);
            c.get(value)
                .filter(|(at, _)| at.elapsed() < self.def.cache)
                .map(|(_, o)| o.clone())
        };
        let (answer, cached) = match cached {
            Some(o) => (o, true),
            None => (self.ask(value).await, false),
        };
        let outcome = match self.owned(answer, sender) {
            // Driver and server messages may quote the value (e.g. a
            // PostgreSQL cast error): reasons and the audit log do not.
            Outcome::Failed { error } if value.len() >= 3 && error.contains(value) => {
                Outcome::Failed {
                    error: error.replace(value, "<value>"),
                }
            }
            o => o,
        };
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        metrics::histogram!("switchboard_lookup_seconds", "lookup" => name.clone())
            .record(millis / 1000.0);
        if !matches!(outcome, Outcome::Found { .. } | Outcome::NotFound) {
            metrics::counter!("switchboard_lookup_errors_total", "lookup" => name.clone(), "kind" => outcome.kind())
                .increment(1);
        }
        tracing::debug!(lookup = %name, value, outcome = %outcome.describe(), cached, millis, "lookup");
        LookupResult {
            name,
            value: value.to_string(),
            outcome,
            cached,
            millis,
            source,
        }
    }

    /// Why the breaker keeps the backend from being asked, if it does.
    fn breaker_open(&self) -> Option<Outcome> {
        let b = lock(&self.breaker);
        let until = b.open_until?;
        (Instant::now() < until).then(|| Outcome::Failed {
            error: format!(
                "not asked: the last {BREAKER_FAILURES} lookups failed (retrying in {}s)",
                until.saturating_duration_since(Instant::now()).as_secs() + 1
            ),
        })
    }

    /// Asks the backend (not the cache), within the caps. Everything —
    /// waiting for a free slot, the rate cap and the backend — happens
    /// within the lookup's `timeout`.
    async fn ask(&self, value: &str) -> Outcome {
        if let Some(o) = self.breaker_open() {
            return o;
        }
        // Secrets for request headers are read once, outside the timeout
        // (a secret command may take longer than a lookup).
        if let Err(error) = self.backend.prepare(&self.def.backend).await {
            return Outcome::Failed { error };
        }
        let deadline = tokio::time::Instant::now() + self.def.timeout;
        let _permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Outcome::Failed {
                    error: "lookup closed".into(),
                };
            }
            Err(_) => {
                return Outcome::Failed {
                    error: format!(
                        "busy: {} lookups in flight, none finished within {:?}",
                        self.def.concurrency, self.def.timeout
                    ),
                };
            }
        };
        // Others may have failed while this one waited.
        if let Some(o) = self.breaker_open() {
            return o;
        }
        if let Some(rate) = self.def.rate {
            let gap = Duration::from_secs_f64(1.0 / rate.max(0.1));
            let at = {
                let mut next = self.next_slot.lock().await;
                let now = Instant::now();
                let at = (*next).max(now);
                *next = at + gap;
                at
            };
            let at = tokio::time::Instant::from_std(at);
            if at >= deadline {
                return Outcome::Failed {
                    error: format!(
                        "rate cap of {rate}/s: no slot within {:?}",
                        self.def.timeout
                    ),
                };
            }
            tokio::time::sleep_until(at).await;
        }
        let answer =
            match tokio::time::timeout_at(deadline, self.backend.query(&self.def.backend, value))
                .await
            {
                Ok(Ok(Some(data))) => Outcome::Found { data },
                Ok(Ok(None)) => Outcome::NotFound,
                Ok(Err(error)) => Outcome::Failed { error },
                Err(_) => Outcome::Failed {
                    error: format!("no answer within {:?}", self.def.timeout),
                },
            };
        let failed = matches!(answer, Outcome::Failed { .. });
        {
            let mut b = lock(&self.breaker);
            if failed {
                b.failures += 1;
                if b.failures >= BREAKER_FAILURES {
                    b.open_until = Some(Instant::now() + BREAKER_OPEN);
                    b.failures = 0;
                    tracing::warn!(lookup = %self.def.name, "{BREAKER_FAILURES} lookups failed in a row: not asking for {}s", BREAKER_OPEN.as_secs());
                }
            } else {
                b.failures = 0;
                b.open_until = None;
            }
        }
        if !failed && !self.def.cache.is_zero() {
            let mut c = lock(&self.cache);
            if c.len() >= CACHE_MAX {
                let ttl = self.def.cache;
                c.retain(|_, (at, _)| at.elapsed() < ttl);
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
            }
            c.insert(value.to_string(), (Instant::now(), answer.clone()));
        }
        answer
    }

    /// Applies the owner check to an answer.
    fn owned(&self, answer: Outcome, sender: &str) -> Outcome {
        let Outcome::Found { data } = answer else {
            return answer;
        };
        if !data.is_object() {
            return Outcome::Failed {
                error: "the answer is not a JSON object".into(),
            };
        }
        let Some(path) = &self.def.owner else {
            return Outcome::Found { data };
        };
        match field(&data, path) {
            Some(serde_json::Value::String(owner))
                if !sender.is_empty() && owner.trim().eq_ignore_ascii_case(sender.trim()) =>
            {
                Outcome::Found { data }
            }
            Some(serde_json::Value::String(_)) => Outcome::NotOwner,
            Some(_) => Outcome::Failed {
                error: format!("the owner field {path} is not a string"),
            },
            None => Outcome::Failed {
                error: format!("the answer has no owner field {path}"),
            },
        }
    }
}

fn field_names<S: serde::Serializer>(v: &serde_json::Value, s: S) -> Result<S::Ok, S::Error> {
    let names: Vec<&String> = v
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    serde::Serialize::serialize(&names, s)
}

/// A JSON answer as a template value.
pub fn to_template(v: &serde_json::Value) -> minijinja::Value {
    use serde_json::Value as J;
    match v {
        J::Null => minijinja::Value::from(()),
        J::Bool(b) => minijinja::Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => minijinja::Value::from(i),
            (None, Some(f)) => minijinja::Value::from(f),
            _ => minijinja::Value::from(n.to_string()),
        },
        J::String(s) => minijinja::Value::from(s.clone()),
        J::Array(a) => minijinja::Value::from(a.iter().map(to_template).collect::<Vec<_>>()),
        J::Object(o) => minijinja::Value::from(
            o.iter()
                .map(|(k, v)| (k.clone(), to_template(v)))
                .collect::<std::collections::BTreeMap<String, minijinja::Value>>(),
        ),
    }
}

/// The value at a dotted path (`customer.email`) of a JSON object.
pub fn field<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

/// Runs every lookup whose value is in `m`, concurrently.
pub async fn run_all(lookups: &[Arc<Lookup>], m: &Message, sender: &str) -> LookupFacts {
    let jobs = lookups.iter().filter_map(|l| {
        let value = l.extract(m, sender)?;
        Some(async move { l.run(&value, sender).await })
    });
    LookupFacts {
        results: futures::future::join_all(jobs).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmet_needs() {
        let f = LookupFacts {
            results: vec![
                LookupResult {
                    name: "order".into(),
                    value: "48213".into(),
                    outcome: Outcome::Found {
                        data: serde_json::json!({"status": "shipped"}),
                    },
                    cached: false,
                    millis: 1.0,
                    source: "sql".into(),
                },
                LookupResult {
                    name: "account".into(),
                    value: "a@x".into(),
                    outcome: Outcome::Failed {
                        error: "timeout".into(),
                    },
                    cached: false,
                    millis: 1.0,
                    source: "http".into(),
                },
            ],
        };
        assert_eq!(f.unmet(&["order".into()]), None);
        assert_eq!(f.unmet(&["refund".into()]), Some(None));
        assert_eq!(
            f.unmet(&["order".into(), "account".into()]),
            Some(Some("lookup account: failed: timeout".into()))
        );
        assert_eq!(
            f.template_value(),
            serde_json::json!({"order": {"status": "shipped"}})
        );
        // Empty fields are left out: a template using one cannot render.
        let mut g = f.clone();
        g.results[0].outcome = Outcome::Found {
            data: serde_json::json!({"status": "shipped", "tracking": null, "c": {"d": null}}),
        };
        assert_eq!(
            g.template_value(),
            serde_json::json!({"order": {"status": "shipped", "c": {}}})
        );
        assert_eq!(
            field(&serde_json::json!({"a": {"b": "c"}}), "a.b"),
            Some(&serde_json::json!("c"))
        );
    }
}
