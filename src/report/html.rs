//! The report as one HTML page: inline CSS, inline SVG charts, no
//! scripts, no fonts, no images, no links to anywhere.

use std::fmt::Write;

use super::Report;

/// HTML-escapes text (also for attribute values).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn date(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// A bar chart: (label, total, highlighted part of it).
fn bars(rows: &[(String, i64, i64)], width: u32, height: u32, caption: &str) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let n = rows.len().max(1) as f64;
    let plot_h = f64::from(height) - 30.0;
    let bw = ((f64::from(width) - 40.0) / n).min(60.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#,
        esc(caption)
    );
    let _ = write!(
        s,
        r#"<text x="0" y="12" class="axis">{max}</text><line x1="36" y1="{plot_h}" x2="{width}" y2="{plot_h}" class="base"/>"#
    );
    for (i, (label, total, part)) in rows.iter().enumerate() {
        let x = 40.0 + bw * i as f64;
        let h = plot_h * *total as f64 / max as f64;
        let hp = plot_h * *part as f64 / max as f64;
        let w = (bw - 2.0).max(1.0);
        let _ = write!(
            s,
            r#"<g><title>{}: {total} ({part})</title><rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" class="all"/><rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{hp:.1}" class="auto"/></g>"#,
            esc(label),
            plot_h - h,
            plot_h - hp
        );
        // Every few labels, so they do not overlap.
        let every = (rows.len() / 12).max(1);
        if i % every == 0 {
            let _ = write!(
                s,
                r#"<text x="{x:.1}" y="{}" class="axis">{}</text>"#,
                height - 4,
                esc(label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The page.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let title = format!(
        "{} support report, {} to {}",
        if r.company.is_empty() {
            "Switchboard"
        } else {
            &r.company
        },
        date(r.since),
        date(r.until)
    );
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>{}</title><style>{}</style></head><body>",
        esc(&title),
        CSS
    );
    let _ = write!(s, "<h1>{}</h1>", esc(&title));
    let to_person = r.by_decision.get("route").copied().unwrap_or(0)
        + r.by_decision.get("escalate").copied().unwrap_or(0);
    let _ = write!(
        s,
        "<section class=\"tiles\"><div><b>{}</b>messages</div><div><b>{}</b>answered automatically</div>\
         <div><b>{to_person}</b>to a person</div><div><b>{}</b>first response by a person (median / 90%)</div></section>",
        r.messages,
        pct(r.answered_automatically),
        r.first_response_minutes.map_or_else(
            || "–".into(),
            |(m, p)| format!("{} / {}", minutes(m), minutes(p))
        )
    );
    s.push_str("<h2>Volume per day</h2>");
    let days: Vec<(String, i64, i64)> = r
        .per_day
        .iter()
        .map(|(d, (n, a))| (d.clone(), *n, *a))
        .collect();
    s.push_str(&bars(
        &days,
        900,
        220,
        "messages per day; dark: answered automatically",
    ));
    s.push_str("<p class=\"legend\"><span class=\"k all\"></span> all messages <span class=\"k auto\"></span> answered automatically</p>");
    s.push_str("<h2>Volume per hour of day (UTC)</h2>");
    let hours: Vec<(String, i64, i64)> = r
        .per_hour
        .iter()
        .enumerate()
        .map(|(h, n)| (format!("{h:02}"), *n, 0))
        .collect();
    s.push_str(&bars(&hours, 900, 180, "messages per hour of day"));
    s.push_str(
        "<h2>Decisions</h2><table><tr><th>decision</th><th>messages</th><th>share</th></tr>",
    );
    for (d, n) in &r.by_decision {
        let share = if r.messages > 0 {
            *n as f64 / r.messages as f64
        } else {
            0.0
        };
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"n\">{n}</td><td class=\"n\">{}</td></tr>",
            esc(d),
            pct(share)
        );
    }
    s.push_str("</table>");
    s.push_str("<h2>Queues and service levels</h2><table><tr><th>queue</th><th>routed</th><th>escalated</th><th>with a first-response deadline</th><th>answered in time</th><th>attainment</th><th>deadlines missed</th><th>overdue now</th></tr>");
    for q in &r.queues {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&q.queue),
            q.routed,
            q.escalated,
            q.with_deadline,
            q.in_time,
            q.attainment.map_or_else(|| "–".into(), pct),
            q.breaches,
            q.overdue
        );
    }
    s.push_str("</table>");
    if !r.reps.is_empty() {
        s.push_str("<h2>Load per representative</h2>");
        let reps: Vec<(String, i64, i64)> =
            r.reps.iter().map(|(k, n)| (k.clone(), *n, 0)).collect();
        s.push_str(&bars(
            &reps,
            600,
            180,
            "messages assigned per representative",
        ));
    }
    s.push_str(
        "<h2>Why mail went to a person</h2><table><tr><th>reason</th><th>messages</th></tr>",
    );
    for (why, n) in r.to_person.iter().take(15) {
        let _ = write!(s, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(why));
    }
    s.push_str("</table>");
    let _ = write!(
        s,
        "<h2>What to add to the FAQ</h2><p>Groups among {} questions that went to a person because no FAQ entry answered them confidently. Each suggestion can be pasted into a file in <code>rules/faq/</code>; write its template, then run <code>switchboard eval</code>.</p>",
        r.gap_questions
    );
    if r.gaps.is_empty() {
        s.push_str("<p>No group of similar unanswered questions yet.</p>");
    }
    for g in &r.gaps {
        let _ = write!(
            s,
            "<div class=\"gap\"><h3>{} <span class=\"count\">{} questions</span></h3><ul>",
            esc(&g.title),
            g.questions
        );
        for e in &g.examples {
            let _ = write!(s, "<li>{}</li>", esc(e));
        }
        let _ = write!(s, "</ul><pre>{}</pre></div>", esc(&g.toml()));
    }
    let _ = writeln!(
        s,
        "<footer>Made by switchboard {} from its state store.</footer></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    s
}

fn minutes(m: f64) -> String {
    if m < 90.0 {
        format!("{m:.0} min")
    } else if m < 48.0 * 60.0 {
        format!("{:.1} h", m / 60.0)
    } else {
        format!("{:.1} d", m / 1440.0)
    }
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:960px;color:#222;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}\
.tiles{display:flex;gap:1em;flex-wrap:wrap}.tiles div{flex:1;min-width:150px;background:#f4f6f8;padding:.8em;border-radius:6px}\
.tiles b{display:block;font-size:1.6em}table{border-collapse:collapse;width:100%}\
th,td{border-bottom:1px solid #eee;padding:.3em .5em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
svg .all{fill:#9db7d5}svg .auto{fill:#2f5f8f}svg .axis{font-size:10px;fill:#666}svg .base{stroke:#999}\
.legend .k{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em}.legend .all{background:#9db7d5}.legend .auto{background:#2f5f8f}\
.gap{background:#fafafa;border:1px solid #eee;border-radius:6px;padding:.5em 1em;margin:1em 0}.count{color:#777;font-weight:normal;font-size:.85em}\
pre{background:#f0f0f0;padding:.6em;overflow-x:auto;font-size:.85em}footer{margin-top:3em;color:#888;font-size:.85em}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_nothing_is_loaded() {
        let r = Report {
            company: "<script>alert(1)</script>".into(),
            messages: 3,
            gaps: vec![super::super::Gap {
                title: "Invoice \"VAT\"".into(),
                id: "invoice".into(),
                terms: vec![],
                questions: 2,
                examples: vec!["<img src=x onerror=alert(1)>".into()],
            }],
            ..Report::default()
        };
        let html = render(&r);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x"), "{html}");
        // The only URL is the SVG namespace (an identifier, never loaded).
        let urls = html.matches("http:").count() + html.matches("https:").count();
        let ns = html.matches("http://www.w3.org/2000/svg").count();
        assert_eq!(urls, ns, "{html}");
    }
}
