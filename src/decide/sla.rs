//! Service levels: when a conversation must have a person's answer.
//!
//! A queue promises a first response within `first_response` and an
//! answer to each follow-up within `follow_up`, counted in business hours
//! (`hours`, `timezone`, `holidays`) when they are given. Deadlines are a
//! pure function of (start, duration, calendar), so they are tested with
//! any clock; the daemon stores them with the conversation and checks
//! them on a timer.

use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::knowledge::team::Window;

/// When work is counted.
#[derive(Debug, Clone)]
pub struct Calendar {
    /// Weekly working windows; empty: around the clock.
    pub hours: Vec<Window>,
    pub timezone: TimeZone,
    /// Days without work (local dates).
    pub holidays: Vec<Date>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            hours: Vec::new(),
            timezone: TimeZone::UTC,
            holidays: Vec::new(),
        }
    }
}

/// A queue's promises.
#[derive(Debug, Clone, Default)]
pub struct ServiceLevel {
    pub first_response: Option<Duration>,
    pub follow_up: Option<Duration>,
    /// After a deadline passed and the reminder went out, how long until
    /// the conversation is escalated to the queue's supervisor folder.
    pub escalate_after: Duration,
    pub calendar: Calendar,
    /// After a person's answer, a conversation whose customer stays
    /// silent this long (calendar time) is marked solved.
    pub close_after: Option<Duration>,
    /// Template of the one "was your problem solved?" message sent when
    /// the conversation is marked solved.
    pub check_in: Option<String>,
    /// With the overdue reminder, mail the assigned representative.
    pub remind_by_mail: bool,
}

impl ServiceLevel {
    /// Whether the timer has anything to do for the queue.
    pub fn is_set(&self) -> bool {
        self.first_response.is_some() || self.follow_up.is_some() || self.close_after.is_some()
    }

    /// Whether routing to the queue starts a deadline.
    pub fn has_deadlines(&self) -> bool {
        self.first_response.is_some() || self.follow_up.is_some()
    }
}

/// Which promise a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueKind {
    FirstResponse,
    FollowUp,
}

impl DueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DueKind::FirstResponse => "first_response",
            DueKind::FollowUp => "follow_up",
        }
    }
}

/// `start_ms` plus `d` of working time (ms since the epoch). Without
/// working hours: plain addition (holidays still skipped as whole days).
pub fn due(start_ms: i64, d: Duration, cal: &Calendar) -> i64 {
    let need_ms = d.as_millis().min(i64::MAX as u128) as i64;
    let Ok(start) = Timestamp::from_millisecond(start_ms) else {
        return start_ms.saturating_add(need_ms);
    };
    let windows: Vec<Window> = if cal.hours.is_empty() {
        vec![Window {
            days: 0x7f,
            start: 0,
            end: 24 * 60,
        }]
    } else {
        cal.hours.clone()
    };
    if cal.hours.is_empty() && cal.holidays.is_empty() {
        return start_ms.saturating_add(need_ms);
    }
    let zoned = start.to_zoned(cal.timezone.clone());
    // From the day before: a window that began yesterday evening may
    // still be open.
    let mut day: Date = zoned
        .date()
        .checked_sub(1.day())
        .unwrap_or_else(|_| zoned.date());
    let mut left = need_ms;
    let mut from_ms = start_ms;
    // A working interval of one local day: [day + start, day + end).
    let at = |day: Date, minute: u16| -> Option<i64> {
        let (h, m) = (i64::from(minute / 60), i64::from(minute % 60));
        let base = day.at(0, 0, 0, 0).to_zoned(cal.timezone.clone()).ok()?;
        let t = base.checked_add(h.hours().minutes(m)).ok()?;
        Some(t.timestamp().as_millisecond())
    };
    // Two years of calendar at most (a calendar without working time).
    for _ in 0..800 {
        if !cal.holidays.contains(&day) {
            let wd = day.weekday().to_monday_zero_offset();
            let mut spans: Vec<(i64, i64)> = Vec::new();
            for w in &windows {
                if w.days & (1 << wd) == 0 {
                    continue;
                }
                let end = if w.end > w.start {
                    at_end(day, w.end, &at)
                } else {
                    // Overnight: ends on the next day.
                    day.checked_add(1.day()).ok().and_then(|d| at(d, w.end))
                };
                if let (Some(a), Some(b)) = (at(day, w.start), end) {
                    spans.push((a, b));
                }
            }
            spans.sort_unstable();
            for (a, b) in spans {
                let a = a.max(from_ms);
                if b <= a {
                    continue;
                }
                if b - a >= left {
                    return a + left;
                }
                left -= b - a;
                from_ms = b;
            }
        }
        let Ok(next) = day.checked_add(1.day()) else {
            break;
        };
        day = next;
    }
    start_ms.saturating_add(need_ms)
}

/// The end of a window: minute 1440 is the next day's midnight.
fn at_end(day: Date, minute: u16, at: &dyn Fn(Date, u16) -> Option<i64>) -> Option<i64> {
    if minute >= 24 * 60 {
        at(day.checked_add(1.day()).ok()?, 0)
    } else {
        at(day, minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::team::parse_window;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>()
            .map(|t| t.as_millisecond())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn cal(hours: &[&str], tz: &str, holidays: &[&str]) -> Calendar {
        Calendar {
            hours: hours
                .iter()
                .map(|h| parse_window(h).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            timezone: TimeZone::get(tz).unwrap_or_else(|e| panic!("{e}")),
            holidays: holidays
                .iter()
                .map(|d| d.parse().unwrap_or_else(|e| panic!("{e}")))
                .collect(),
        }
    }

    #[test]
    fn around_the_clock() {
        let c = Calendar::default();
        let start = ms("2026-11-27T16:00:00Z");
        assert_eq!(
            due(start, Duration::from_secs(4 * 3600), &c),
            ms("2026-11-27T20:00:00Z")
        );
    }

    #[test]
    fn business_hours_skip_nights_and_weekends() {
        let c = cal(&["Mon-Fri 09:00-17:00"], "Europe/London", &[]);
        // Friday 16:00 + 4h: one hour on Friday, three on Monday.
        assert_eq!(
            due(
                ms("2026-11-27T16:00:00Z"),
                Duration::from_secs(4 * 3600),
                &c
            ),
            ms("2026-11-30T12:00:00Z")
        );
        // Saturday: the clock starts on Monday 09:00.
        assert_eq!(
            due(ms("2026-11-28T10:00:00Z"), Duration::from_secs(3600), &c),
            ms("2026-11-30T10:00:00Z")
        );
        // One day = 24 working hours = three working days.
        assert_eq!(
            due(
                ms("2026-11-30T09:00:00Z"),
                Duration::from_secs(24 * 3600),
                &c
            ),
            ms("2026-12-02T17:00:00Z")
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // New York, 09:00-17:00 local = 14:00-22:00 UTC in winter.
        let c = cal(&["Mon-Fri 09:00-17:00"], "America/New_York", &[]);
        assert_eq!(
            due(ms("2026-11-30T13:00:00Z"), Duration::from_secs(3600), &c),
            ms("2026-11-30T15:00:00Z")
        );
        // Across the March change (8 March 2026): 09:00 local is 13:00 UTC after.
        assert_eq!(
            due(ms("2026-03-06T21:30:00Z"), Duration::from_secs(3600), &c),
            ms("2026-03-09T13:30:00Z")
        );
    }

    #[test]
    fn holidays_and_night_shifts() {
        let c = cal(&["Mon-Fri 09:00-17:00"], "UTC", &["2026-12-25"]);
        // Thursday 24 Dec 16:00 + 2h: 1h on the 24th, the 25th is a
        // holiday, the 26th/27th a weekend: Monday 28th 10:00.
        assert_eq!(
            due(
                ms("2026-12-24T16:00:00Z"),
                Duration::from_secs(2 * 3600),
                &c
            ),
            ms("2026-12-28T10:00:00Z")
        );
        // A window across midnight, started the evening before.
        let n = cal(&["Mon-Sun 22:00-06:00"], "UTC", &[]);
        assert_eq!(
            due(
                ms("2026-11-30T23:00:00Z"),
                Duration::from_secs(2 * 3600),
                &n
            ),
            ms("2026-12-01T01:00:00Z")
        );
        assert_eq!(
            due(
                ms("2026-12-01T05:00:00Z"),
                Duration::from_secs(2 * 3600),
                &n
            ),
            ms("2026-12-01T23:00:00Z")
        );
    }
}
