//! The one source of "now". Nothing else in nudge reads the wall clock: the
//! virtual clock lets tests and the simulator run months of cadence in
//! milliseconds, and a daemon restarted on virtual time resumes where it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;

/// System time, or a virtual time that moves only when told (`nudge clock`).
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// Milliseconds since the epoch; the store holds the authoritative value
    /// and the daemon refreshes this copy whenever the database changes.
    Virtual(Arc<AtomicI64>),
}

impl Clock {
    pub fn virtual_at(now: Timestamp) -> Clock {
        Clock::Virtual(Arc::new(AtomicI64::new(now.as_millisecond())))
    }

    pub(crate) fn now_ms(&self) -> i64 {
        match self {
            Clock::System => Timestamp::now().as_millisecond(),
            Clock::Virtual(ms) => ms.load(Ordering::SeqCst),
        }
    }

    /// Moves a virtual clock; returns whether it changed. A system clock ignores it.
    pub(crate) fn set_virtual_ms(&self, now_ms: i64) -> bool {
        match self {
            Clock::System => false,
            Clock::Virtual(ms) => ms.swap(now_ms, Ordering::SeqCst) != now_ms,
        }
    }

    pub(crate) fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual(_))
    }
}

/// The first and last days nudge takes from people and files (report periods,
/// order dates): wide enough for any real order or report, and narrow enough
/// that every day, and the day after it, is a time in every time zone.
pub(crate) const FIRST_DAY: jiff::civil::Date = jiff::civil::date(1970, 1, 1);
pub(crate) const LAST_DAY: jiff::civil::Date = jiff::civil::date(2199, 12, 31);

/// The day, if it is one nudge works with; else a message naming the range.
pub(crate) fn check_day(day: jiff::civil::Date) -> Result<jiff::civil::Date, String> {
    if (FIRST_DAY..=LAST_DAY).contains(&day) {
        Ok(day)
    } else {
        Err(format!(
            "{day} is outside the days nudge works with ({FIRST_DAY} to {LAST_DAY})"
        ))
    }
}

/// Renders a stored millisecond time for people, in UTC.
pub(crate) fn display_ms(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Reads a time given by a person: a duration from now (`3d`, `2h 30m`), an
/// RFC 3339 timestamp, or a local date-time (`2026-11-25 10:00`) in `time_zone`.
pub(crate) fn parse_time(text: &str, now_ms: i64, time_zone: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(span) = crate::model::parse_duration(text) {
        return Ok(crate::model::add_span(now_ms, span, time_zone));
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    let tz = jiff::tz::TimeZone::get(time_zone).map_err(|e| e.to_string())?;
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(tz)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| e.to_string());
    }
    Err(format!(
        "`{text}` is neither a duration (3d), an RFC 3339 time nor a local date-time (2026-11-25 10:00)"
    ))
}
