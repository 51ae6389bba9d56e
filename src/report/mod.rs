//! `switchboard report`: what happened in a period and what to improve,
//! as one self-contained HTML page (inline CSS and SVG; no scripts, fonts
//! or images from anywhere) or as JSON.
//!
//! Volume per day and per hour, the share answered automatically,
//! first-response times and service-level attainment per queue, load per
//! representative, the top reasons mail went to a person, and **FAQ
//! gaps**: routed questions that no FAQ entry answered confidently,
//! grouped by the words they share (TF-IDF, cosine similarity), each
//! group with a suggested entry ready to paste into an FAQ file.

mod gaps;
mod html;

pub use gaps::{Gap, find_gaps};
pub use html::render;

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use crate::record::{Store, StoreError};

/// Everything the report shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub company: String,
    pub since: i64,
    pub until: i64,
    pub messages: i64,
    /// Decision → count.
    pub by_decision: BTreeMap<String, i64>,
    pub answered_automatically: f64,
    /// Day (YYYY-MM-DD, UTC) → (messages, answered automatically).
    pub per_day: BTreeMap<String, (i64, i64)>,
    /// Hour of day (UTC) → messages.
    pub per_hour: [i64; 24],
    pub queues: Vec<QueueLine>,
    /// Representative → messages assigned.
    pub reps: BTreeMap<String, i64>,
    /// Why mail went to a person: (reason, count), most first.
    pub to_person: Vec<(String, i64)>,
    /// First response times of people, minutes: median and 90th percentile.
    pub first_response_minutes: Option<(f64, f64)>,
    pub gaps: Vec<Gap>,
    /// Routed questions the gaps were looked for in.
    pub gap_questions: usize,
}

/// One queue's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueLine {
    pub queue: String,
    pub routed: i64,
    pub escalated: i64,
    pub with_deadline: i64,
    pub in_time: i64,
    pub attainment: Option<f64>,
    pub breaches: i64,
    pub overdue: i64,
}

/// Routed questions looked at for FAQ gaps, at most (the newest).
const GAP_SAMPLE: i64 = 3_000;

/// Gathers the report for `[since, until)` from the store.
pub async fn gather(
    store: &Store,
    company: &str,
    since: i64,
    until: i64,
) -> Result<Report, StoreError> {
    let mut r = Report {
        company: company.to_string(),
        since,
        until,
        ..Report::default()
    };
    let pool = store.pool();
    for row in sqlx::query(
        "SELECT CAST(received_at / 3600000 AS BIGINT) AS hour, verdict, COUNT(*) AS n \
         FROM messages WHERE received_at >= $1 AND received_at < $2 GROUP BY 1, 2",
    )
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await?
    {
        let hour: i64 = row.try_get("hour")?;
        let verdict: String = row.try_get("verdict")?;
        let n: i64 = row.try_get("n")?;
        r.messages += n;
        *r.by_decision.entry(verdict.clone()).or_default() += n;
        let day = jiff::Timestamp::from_second(hour * 3600)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let e = r.per_day.entry(day).or_default();
        e.0 += n;
        if verdict == "reply" {
            e.1 += n;
        }
        r.per_hour[hour.rem_euclid(24) as usize] += n;
    }
    let replied = r.by_decision.get("reply").copied().unwrap_or(0);
    r.answered_automatically = if r.messages > 0 {
        replied as f64 / r.messages as f64
    } else {
        0.0
    };
    let mut queues: BTreeMap<String, QueueLine> = BTreeMap::new();
    for row in sqlx::query(
        "SELECT verdict, COALESCE(queue, '') AS queue, COALESCE(rep, '') AS rep, \
         COALESCE(rule, '') AS rule, COUNT(*) AS n FROM messages \
         WHERE received_at >= $1 AND received_at < $2 AND verdict IN ('route', 'escalate') \
         GROUP BY 1, 2, 3, 4",
    )
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await?
    {
        let verdict: String = row.try_get("verdict")?;
        let queue: String = row.try_get("queue")?;
        let rep: String = row.try_get("rep")?;
        let rule: String = row.try_get("rule")?;
        let n: i64 = row.try_get("n")?;
        if !queue.is_empty() {
            let q = queues.entry(queue.clone()).or_insert_with(|| QueueLine {
                queue: queue.clone(),
                ..QueueLine::default()
            });
            if verdict == "escalate" {
                q.escalated += n;
            } else {
                q.routed += n;
            }
        }
        if !rep.is_empty() {
            *r.reps.entry(rep).or_default() += n;
        }
        let reason = if rule.is_empty() {
            "no rule decided and no confident FAQ answer".to_string()
        } else {
            format!("rule {rule}")
        };
        let reason = if verdict == "escalate" {
            format!("{reason} (escalated)")
        } else {
            reason
        };
        if let Some(e) = r.to_person.iter_mut().find(|(x, _)| *x == reason) {
            e.1 += n;
        } else {
            r.to_person.push((reason, n));
        }
    }
    r.to_person
        .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for s in store.sla_stats(since, until).await? {
        let q = queues.entry(s.queue.clone()).or_insert_with(|| QueueLine {
            queue: s.queue.clone(),
            ..QueueLine::default()
        });
        q.with_deadline = s.with_deadline;
        q.in_time = s.met;
        q.attainment = (s.with_deadline > 0).then(|| s.met as f64 / s.with_deadline as f64);
        q.breaches = s.breaches;
        q.overdue = s.overdue;
    }
    r.queues = queues
        .into_values()
        .filter(|q| !q.queue.is_empty())
        .collect();
    let mut waits: Vec<i64> = sqlx::query_scalar(
        "SELECT first_response_at - created_at FROM conversations \
         WHERE first_response_at IS NOT NULL AND created_at >= $1 AND created_at < $2",
    )
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await?;
    waits.sort_unstable();
    if !waits.is_empty() {
        let at = |q: f64| waits[((waits.len() - 1) as f64 * q).round() as usize] as f64 / 60_000.0;
        r.first_response_minutes = Some((at(0.5), at(0.9)));
    }
    // FAQ gaps: questions routed by the default policy because no entry
    // answered them confidently (from the decisions' evidence).
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT data FROM audit WHERE event = 'decided' AND at >= $1 AND at < $2 \
         AND detail LIKE 'route:%' AND data IS NOT NULL ORDER BY at DESC LIMIT $3",
    )
    .bind(since)
    .bind(until)
    .bind(GAP_SAMPLE)
    .fetch_all(pool)
    .await?;
    let questions: Vec<String> = rows.iter().filter_map(|d| unanswered_question(d)).collect();
    r.gap_questions = questions.len();
    r.gaps = find_gaps(&questions);
    Ok(r)
}

/// The question of a routed decision that no rule decided and no FAQ
/// entry answered confidently.
fn unanswered_question(data: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    if !v.get("rule").is_none_or(serde_json::Value::is_null) {
        return None;
    }
    let faq = v.get("evidence")?.get("faq")?;
    if faq.get("confident").and_then(serde_json::Value::as_bool) == Some(true) {
        return None;
    }
    let q = faq.get("evidence")?.get("scored")?.as_str()?.trim();
    (!q.is_empty()).then(|| crate::util::ellipsize(q, 300))
}
