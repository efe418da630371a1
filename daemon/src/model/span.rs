//! Spans of time as people and workflow files write them (`3d`, `2d 12h`, `1w`),
//! and the calendar arithmetic on them: a day is a local day in the contact's
//! time zone, so "3d" keeps the hour across a DST change.

use jiff::Span;
use jiff::civil::Date;

/// Parses a duration such as `3d`, `24h`, `15m`, `2d 12h` or `1w`.
pub(crate) fn parse_duration(text: &str) -> Result<Span, String> {
    let span: Span = text.trim().parse().map_err(|_| format!("`{text}` is not a duration"))?;
    if span.is_negative() {
        return Err(format!("`{text}` is negative"));
    }
    Ok(span)
}

/// Adds a span to a time in a contact's time zone, so "3d" means the same local
/// time three days later even across a DST change.
pub(crate) fn add_span(at_ms: i64, span: Span, time_zone: &str) -> i64 {
    let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let at = jiff::Timestamp::from_millisecond(at_ms).expect("stored times are in range");
    at.to_zoned(tz)
        .checked_add(span)
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(i64::MAX / 2)
}

/// Adds a whole-day span (checked at load) to a date; far-future on overflow.
pub(crate) fn add_days(date: Date, span: Span) -> Date {
    date.checked_add(span).unwrap_or(Date::MAX)
}

/// Subtracts a whole-day span from a date; far-past on overflow.
pub(crate) fn sub_days(date: Date, span: Span) -> Date {
    date.checked_sub(span).unwrap_or(Date::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3d").unwrap().get_days(), 3);
        assert_eq!(parse_duration("15m").unwrap().get_minutes(), 15);
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-3d").is_err());
        assert_eq!(parse_duration("520w").unwrap().get_weeks(), 520);
    }

    #[test]
    fn days_are_local_days_across_dst() {
        // 2026-03-07 09:00 in New York is 14:00 UTC; DST starts 2026-03-08.
        let start = jiff::Timestamp::from_second(1_772_892_000).unwrap().as_millisecond();
        let later = add_span(start, parse_duration("2d").unwrap(), "America/New_York");
        assert_eq!(later - start, (48 - 1) * 3_600_000);
        let utc = add_span(start, parse_duration("2d").unwrap(), "UTC");
        assert_eq!(utc - start, 48 * 3_600_000);
    }
}
