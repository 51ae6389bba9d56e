//! Representatives: the people behind the queues.
//!
//! ```toml
//! [[rep]]
//! id = "ann"
//! name = "Ann Lee"
//! email = "ann@northwind.example"
//! folder = "Reps/Ann"                  # default: Reps/<id>
//! queues = ["billing", "support"]
//! hours = ["Mon-Fri 09:00-17:00"]      # default: always
//! timezone = "Europe/London"           # default: the server's zone
//! max_open = 25                        # optional
//! away = false                         # true: gets nothing new
//! ```
//!
//! Availability is a pure function of the representative, a moment and
//! the live facts (away until, open load) so it is easy to test.

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

use crate::diag::Location;
use crate::tomlread::{Ctx, Table};

/// One representative.
#[derive(Debug, Clone)]
pub struct Rep {
    pub id: String,
    pub name: String,
    pub email: String,
    /// Personal queue folder.
    pub folder: String,
    /// Queues (skills) this person serves, with where each is named.
    pub queues: Vec<(String, Location)>,
    /// Working hours; `None`: always available.
    pub hours: Option<Vec<Window>>,
    pub timezone: TimeZone,
    pub timezone_name: String,
    /// Maximum open messages in the personal folder.
    pub max_open: Option<u32>,
    /// Marked away in the config.
    pub away: bool,
    pub location: Location,
}

/// A weekly working window: on `days`, from `start` to `end` minutes after
/// midnight (local time). `end < start` spans midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Bit 0 = Monday … bit 6 = Sunday.
    pub days: u8,
    pub start: u16,
    pub end: u16,
}

/// Why someone cannot take new work right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    Away,
    AwayUntil(i64),
    OffHours,
    Full { load: u32, max: u32 },
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Away => write!(f, "away"),
            Unavailable::AwayUntil(t) => write!(f, "away until {}", crate::util::format_ms(*t)),
            Unavailable::OffHours => write!(f, "outside working hours"),
            Unavailable::Full { load, max } => {
                write!(f, "has {load} open messages (max_open = {max})")
            }
        }
    }
}

impl Rep {
    /// Whether the person takes new work at `now_ms`. `away_until` is the
    /// away mark from `switchboard rep away` (`Some(i64::MAX)`: until
    /// further notice), `load` the open messages in the personal folder.
    pub fn availability(
        &self,
        now_ms: i64,
        away_until: Option<i64>,
        load: Option<u32>,
    ) -> Result<(), Unavailable> {
        if self.away {
            return Err(Unavailable::Away);
        }
        match away_until {
            Some(i64::MAX) => return Err(Unavailable::Away),
            Some(t) if t > now_ms => return Err(Unavailable::AwayUntil(t)),
            _ => {}
        }
        if let Some(hours) = &self.hours
            && !in_hours(hours, &self.timezone, now_ms)
        {
            return Err(Unavailable::OffHours);
        }
        if let (Some(max), Some(load)) = (self.max_open, load)
            && load >= max
        {
            return Err(Unavailable::Full { load, max });
        }
        Ok(())
    }

    pub fn serves(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| q.0 == queue)
    }
}

/// Whether `now_ms` falls into one of the windows, in `tz`.
pub fn in_hours(windows: &[Window], tz: &TimeZone, now_ms: i64) -> bool {
    let Ok(ts) = Timestamp::from_millisecond(now_ms) else {
        return false;
    };
    let z = ts.to_zoned(tz.clone());
    let day = weekday_index(z.weekday());
    let minute = u16::from(z.hour() as u8) * 60 + u16::from(z.minute() as u8);
    let yesterday = (day + 6) % 7;
    windows.iter().any(|w| {
        if w.start < w.end {
            w.days & (1 << day) != 0 && minute >= w.start && minute < w.end
        } else {
            // Overnight: the evening part today, the morning part belongs
            // to the window that started yesterday.
            (w.days & (1 << day) != 0 && minute >= w.start)
                || (w.days & (1 << yesterday) != 0 && minute < w.end)
        }
    })
}

fn weekday_index(w: Weekday) -> u8 {
    (w.to_monday_zero_offset()) as u8
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `Mon-Fri 09:00-17:00`, `Sat,Sun 10:00-14:00`, `Daily 22:00-06:00`.
pub fn parse_window(s: &str) -> Result<Window, String> {
    let s = s.trim();
    let (days, times) = s.split_once(char::is_whitespace).ok_or_else(|| {
        format!("expected \"DAYS HH:MM-HH:MM\" like \"Mon-Fri 09:00-17:00\", found {s:?}")
    })?;
    let mut mask = 0u8;
    for part in days.split(',') {
        let part = part.trim().to_ascii_lowercase();
        if part == "daily" || part == "every" || part == "all" {
            mask = 0x7f;
            continue;
        }
        let day = |d: &str| {
            let d3: String = d.chars().take(3).collect();
            DAYS.iter()
                .position(|x| *x == d3 && d.len() >= 3)
                .ok_or_else(|| format!("{d:?} is not a day: use Mon, Tue, Wed, Thu, Fri, Sat, Sun"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a.trim())?, day(b.trim())?);
                let mut i = a;
                loop {
                    mask |= 1 << i;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => mask |= 1 << day(&part)?,
        }
    }
    let (a, b) = times.trim().split_once('-').ok_or_else(|| {
        format!(
            "expected a time range like 09:00-17:00, found {:?}",
            times.trim()
        )
    })?;
    let (start, end) = (parse_hhmm(a)?, parse_hhmm(b)?);
    if start == end {
        return Err("the working window is empty (start equals end)".into());
    }
    Ok(Window {
        days: mask,
        start,
        end,
    })
}

fn parse_hhmm(s: &str) -> Result<u16, String> {
    let s = s.trim();
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a time: use HH:MM (24-hour)"))?;
    let h: u16 = h
        .parse()
        .map_err(|_| format!("{s:?} is not a time: use HH:MM (24-hour)"))?;
    let m: u16 = m
        .parse()
        .map_err(|_| format!("{s:?} is not a time: use HH:MM (24-hour)"))?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

/// Reads one `[[rep]]` table.
pub fn read_rep(mut t: Table<'_>) -> Option<Rep> {
    let ctx: &Ctx = t.ctx();
    let start = t.span.clone();
    let id = t.required_string("id");
    if let Some(i) = &id {
        t.set_what(format!("rep {:?}", i.value));
        if i.value.is_empty()
            || !i
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            ctx.error(
                i.span.clone(),
                "a rep id may only contain letters, digits, '-', '_' and '.' (it is used in commands and logs)",
            );
        }
    }
    let name = t.string("name");
    let email = t.string("email");
    if let Some(e) = &email
        && !e.value.contains('@')
    {
        ctx.error(
            e.span.clone(),
            format!("{:?} is not an e-mail address", e.value),
        );
    }
    let folder = t.string("folder");
    if let Some(f) = &folder
        && (f.value.trim().is_empty() || f.value.contains(['*', '%', '\r', '\n']))
    {
        ctx.error(
            f.span.clone(),
            "folder names cannot be empty or contain '*', '%' or line breaks",
        );
    }
    let queues: Vec<(String, Location)> = t
        .strings("queues")
        .unwrap_or_default()
        .into_iter()
        .map(|q| {
            let l = ctx.location(&q.span);
            (q.value, l)
        })
        .collect();
    let hours_value = t.take("hours");
    let hours_span = hours_value.as_ref().map(|v| v.span.clone());
    let raw_hours = hours_value.and_then(|v| v.into_strings());
    let hours_listed = raw_hours.as_ref().map_or(0, Vec::len);
    let hours = raw_hours.map(|v| {
        v.into_iter()
            .filter_map(|h| match parse_window(&h.value) {
                Ok(w) => Some(w),
                Err(e) => {
                    ctx.error(h.span.clone(), e);
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    if let (Some(_), Some(span)) = (&hours, hours_span)
        && hours_listed == 0
    {
        ctx.error(
            span,
            "`hours` is empty, so this rep would never get anything: list windows like \"Mon-Fri 09:00-17:00\", or remove `hours` for always",
        );
    }
    let tz = t.string("timezone");
    let (timezone, timezone_name) = match &tz {
        Some(z) => match TimeZone::get(&z.value) {
            Ok(tz) => (tz, z.value.clone()),
            Err(_) => {
                ctx.error(
                    z.span.clone(),
                    format!(
                        "unknown time zone {:?}: use an IANA name such as \"Europe/London\" or \"America/New_York\"",
                        z.value
                    ),
                );
                (TimeZone::UTC, "UTC".into())
            }
        },
        None => (
            TimeZone::system(),
            jiff::tz::TimeZone::system()
                .iana_name()
                .unwrap_or("local")
                .to_string(),
        ),
    };
    let max_open = t
        .integer("max_open")
        .and_then(|m| match u32::try_from(m.value) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                ctx.error(m.span, "max_open must be a positive number");
                None
            }
        });
    let away = t.boolean("away").is_some_and(|a| a.value);
    t.finish();
    let id = id?.value;
    Some(Rep {
        name: name.map_or_else(|| id.clone(), |n| n.value),
        email: email.map(|e| e.value.to_lowercase()).unwrap_or_default(),
        folder: folder.map_or_else(|| format!("Reps/{id}"), |f| f.value),
        id,
        queues,
        hours,
        timezone,
        timezone_name,
        max_open,
        away,
        location: ctx.location(&start),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>()
            .map(|t| t.as_millisecond())
            .unwrap_or(0)
    }

    #[test]
    fn windows_parse() {
        let w = parse_window("Mon-Fri 09:00-17:00").unwrap();
        assert_eq!(w.days, 0b0011111);
        assert_eq!((w.start, w.end), (540, 1020));
        assert_eq!(parse_window("Sat,Sun 10:00-14:30").unwrap().days, 0b1100000);
        assert_eq!(parse_window("Fri-Mon 08:00-09:00").unwrap().days, 0b1110001);
        assert_eq!(parse_window("daily 22:00-06:00").unwrap().days, 0x7f);
        assert!(parse_window("Mon-Fry 09:00-17:00").is_err());
        assert!(parse_window("Mon 9-17").is_err());
        assert!(parse_window("Mon 09:00-09:00").is_err());
        assert!(parse_window("Mon 25:00-26:00").is_err());
    }

    #[test]
    fn hours_in_a_time_zone() {
        let w = vec![parse_window("Mon-Fri 09:00-17:00").unwrap()];
        let ny = TimeZone::get("America/New_York").unwrap();
        // Monday 2026-11-23 14:30 UTC = 09:30 in New York.
        assert!(in_hours(&w, &ny, ms("2026-11-23T14:30:00Z")));
        // 13:30 UTC = 08:30 in New York: not yet.
        assert!(!in_hours(&w, &ny, ms("2026-11-23T13:30:00Z")));
        // Saturday.
        assert!(!in_hours(&w, &ny, ms("2026-11-28T15:00:00Z")));
        assert!(in_hours(&w, &TimeZone::UTC, ms("2026-11-23T16:59:00Z")));
        assert!(!in_hours(&w, &TimeZone::UTC, ms("2026-11-23T17:00:00Z")));
    }

    #[test]
    fn overnight_windows() {
        let w = vec![parse_window("Fri 22:00-06:00").unwrap()];
        let utc = TimeZone::UTC;
        assert!(in_hours(&w, &utc, ms("2026-11-27T23:00:00Z"))); // Fri night
        assert!(in_hours(&w, &utc, ms("2026-11-28T05:00:00Z"))); // Sat morning
        assert!(!in_hours(&w, &utc, ms("2026-11-27T05:00:00Z"))); // Fri morning
        assert!(!in_hours(&w, &utc, ms("2026-11-28T23:00:00Z"))); // Sat night
    }

    fn rep() -> Rep {
        Rep {
            id: "ann".into(),
            name: "Ann".into(),
            email: "ann@x.test".into(),
            folder: "Reps/ann".into(),
            queues: vec![],
            hours: None,
            timezone: TimeZone::UTC,
            timezone_name: "UTC".into(),
            max_open: Some(3),
            away: false,
            location: Location::default(),
        }
    }

    #[test]
    fn availability() {
        let r = rep();
        let now = ms("2026-11-23T10:00:00Z");
        assert_eq!(r.availability(now, None, Some(2)), Ok(()));
        assert_eq!(
            r.availability(now, None, Some(3)),
            Err(Unavailable::Full { load: 3, max: 3 })
        );
        assert_eq!(
            r.availability(now, Some(now + 1), None),
            Err(Unavailable::AwayUntil(now + 1))
        );
        assert_eq!(r.availability(now, Some(now - 1), None), Ok(()));
        assert_eq!(
            r.availability(now, Some(i64::MAX), None),
            Err(Unavailable::Away)
        );
        let mut off = rep();
        off.hours = Some(vec![parse_window("Sat 09:00-10:00").unwrap()]);
        assert_eq!(
            off.availability(now, None, None),
            Err(Unavailable::OffHours)
        );
        let mut away = rep();
        away.away = true;
        assert_eq!(away.availability(now, None, None), Err(Unavailable::Away));
    }
}
