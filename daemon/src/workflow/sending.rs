//! `sending.toml`: when and how often messages may reach a contact, across all
//! workflows. Send windows and quiet hours are local times in the contact's own
//! IANA time zone; frequency caps count messages per contact and channel.

use std::collections::BTreeMap;
use std::ops::Range;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::{Diagnostic, did_you_mean};
use super::parse::check::{Problems, serde_problem, unknown_channel};
use crate::model::{Category, parse_duration};

/// Every rule of `sending.toml`; empty (no limits) when the file is absent.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendingPolicy {
    pub(crate) windows: BTreeMap<String, Window>,
    pub(crate) quiet_hours: Option<QuietHours>,
    pub(crate) caps: Vec<Cap>,
}

/// Local times when a message may go: one or more (days, hour ranges) rules.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    rules: Vec<WindowRule>,
}

#[derive(Debug, Clone, PartialEq)]
struct WindowRule {
    /// Monday first.
    days: [bool; 7],
    /// Minutes after local midnight, start < end <= 1440.
    ranges: Vec<(u16, u16)>,
}

/// Local hours when messages of some categories never go (e.g. 21:00-08:00).
#[derive(Debug, Clone)]
pub(crate) struct QuietHours {
    /// The complement of the quiet hours, as a window that is open every day.
    open: Window,
    pub(crate) categories: Vec<Category>,
}

/// At most `max` messages of `categories` on `channel` per contact in any `per`.
#[derive(Debug, Clone)]
pub(crate) struct Cap {
    pub(crate) channel: String,
    pub(crate) categories: Vec<Category>,
    pub(crate) max: i64,
    pub(crate) per: Span,
    /// e.g. "2 marketing email per 7d", for the reason a message waits.
    pub(crate) label: String,
}

/// How far ahead to look for an opening: a week covers every weekly pattern.
const LOOKAHEAD_DAYS: i64 = 8;

impl Window {
    /// The earliest instant at or after `at` when the window is open, in `tz`.
    /// A local start time that does not exist (a DST gap) moves forward past the
    /// gap; one that happens twice (DST ends) is taken the first time, once.
    pub(crate) fn next_open(&self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        let today = at.to_zoned(tz.clone()).date();
        let mut best: Option<Timestamp> = None;
        for offset in 0..LOOKAHEAD_DAYS {
            let Ok(date) = today.checked_add(Span::new().days(offset)) else {
                break;
            };
            let weekday = date.weekday().to_monday_zero_offset() as usize;
            for rule in self.rules.iter().filter(|r| r.days[weekday]) {
                for &(start, end) in &rule.ranges {
                    let (Some(open), Some(close)) = (local(date, start, tz), local(date, end, tz)) else {
                        continue;
                    };
                    if at < close && open < close {
                        let candidate = open.max(at);
                        best = Some(best.map_or(candidate, |b| b.min(candidate)));
                    }
                }
            }
            if best.is_some() {
                break;
            }
        }
        best.unwrap_or(at)
    }

    /// When the opening `at` falls in closes (the latest end of the ranges holding
    /// it, that day); `None` when the window is shut at `at`.
    pub(crate) fn open_until(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let date = at.to_zoned(tz.clone()).date();
        let weekday = date.weekday().to_monday_zero_offset() as usize;
        self.rules
            .iter()
            .filter(|r| r.days[weekday])
            .flat_map(|r| &r.ranges)
            .filter_map(|&(start, end)| Some((local(date, start, tz)?, local(date, end, tz)?)))
            .filter(|(open, close)| *open <= at && at < *close)
            .map(|(_, close)| close)
            .max()
    }

    /// A window open all day, every day.
    pub(crate) fn always() -> Window {
        Window {
            rules: vec![WindowRule {
                days: [true; 7],
                ranges: vec![(0, 1440)],
            }],
        }
    }

    /// Whether the window opens at all on `date`'s day of the week.
    pub(crate) fn opens_on(&self, date: Date) -> bool {
        let weekday = date.weekday().to_monday_zero_offset() as usize;
        self.rules.iter().any(|r| r.days[weekday])
    }
}

/// The instant of a local time of day (minutes after midnight; 1440 is the next midnight).
fn local(date: Date, minutes: u16, tz: &TimeZone) -> Option<Timestamp> {
    let (date, minutes) = if minutes >= 1440 {
        (date.tomorrow().ok()?, 0)
    } else {
        (date, minutes)
    };
    let time = jiff::civil::Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).ok()?;
    // `to_zoned` resolves a gap by moving forward and a fold by taking the earlier instant.
    date.to_datetime(time).to_zoned(tz.clone()).ok().map(|z| z.timestamp())
}

impl SendingPolicy {
    /// When a message of `category` may go at the earliest, from `at`: within
    /// `window` (if the workflow names one) and outside quiet hours.
    pub(crate) fn next_slot(
        &self,
        window: Option<&str>,
        category: Category,
        at: Timestamp,
        tz: &TimeZone,
    ) -> Timestamp {
        let window = window.and_then(|w| self.windows.get(w));
        let quiet = self.quiet_hours.as_ref().filter(|q| q.categories.contains(&category));
        let mut t = at;
        // Alternate until both agree; each pass only moves forward.
        for _ in 0..16 {
            let mut next = t;
            if let Some(w) = window {
                next = w.next_open(next, tz);
            }
            if let Some(q) = quiet {
                next = q.open.next_open(next, tz);
            }
            if next == t {
                return t;
            }
            t = next;
        }
        t
    }

    /// Whether `at` falls in the quiet hours for messages of `category` (so a
    /// message held then is held by them, not by its window).
    pub(crate) fn in_quiet_hours(&self, category: Category, at: Timestamp, tz: &TimeZone) -> bool {
        let quiet = self.quiet_hours.as_ref().filter(|q| q.categories.contains(&category));
        quiet.is_some_and(|q| q.open.next_open(at, tz) > at)
    }

    /// The caps that apply to a message.
    pub(crate) fn caps_for<'a>(&'a self, channel: &'a str, category: Category) -> impl Iterator<Item = &'a Cap> + 'a {
        self.caps
            .iter()
            .filter(move |c| c.channel == channel && c.categories.contains(&category))
    }

    /// The cap that counts the longest past, and how many days it reaches back
    /// (whole days, rounded up): the history a retention setting must keep.
    pub(crate) fn longest_cap(&self) -> Option<(&Cap, i64)> {
        const DAY_MS: i64 = 86_400_000;
        self.caps
            .iter()
            .map(|c| (c, (crate::model::add_span(0, c.per, "UTC") + DAY_MS - 1) / DAY_MS))
            .max_by_key(|&(_, days)| days)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// Each window is an array of tables: one `[[windows.<name>]]` block per (days, hours) rule.
    #[serde(default)]
    windows: BTreeMap<Spanned<String>, Vec<RawRule>>,
    quiet_hours: Option<Spanned<RawQuiet>>,
    #[serde(default)]
    caps: Vec<Spanned<RawCap>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    days: Spanned<Vec<Spanned<String>>>,
    hours: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuiet {
    hours: Spanned<String>,
    categories: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCap {
    channel: Spanned<String>,
    categories: Option<Vec<Spanned<String>>>,
    max: Spanned<i64>,
    per: Spanned<String>,
}

const DAY_NAMES: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

pub(super) fn parse(path: &str, source: &str, channels: &[String], problems: &mut Problems) -> SendingPolicy {
    let raw: RawPolicy = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(serde_problem(path, e));
            return SendingPolicy::default();
        }
    };
    SendingPolicy {
        windows: windows(path, raw.windows, problems),
        quiet_hours: raw
            .quiet_hours
            .and_then(|quiet| quiet_hours(path, quiet.into_inner(), problems)),
        caps: raw
            .caps
            .into_iter()
            .filter_map(|cap| parse_cap(path, cap.into_inner(), channels, problems))
            .collect(),
    }
}

/// Named windows of `[[<table>.<name>]]` blocks: sending.toml's send windows and
/// team.toml's working hours are read alike.
pub(super) fn windows(
    path: &str,
    raw: BTreeMap<Spanned<String>, Vec<RawRule>>,
    problems: &mut Problems,
) -> BTreeMap<String, Window> {
    let mut windows = BTreeMap::new();
    for (name, rules) in raw {
        let rules: Vec<WindowRule> = rules.iter().filter_map(|r| parse_rule(path, r, problems)).collect();
        if rules.is_empty() {
            problems.push(
                Diagnostic::new(path, name.span(), format!("window `{}` is never open", name.get_ref()))
                    .help("give it a `[[windows.<name>]]` block with days and hours, e.g. days = [\"mon-fri\"], hours = [\"10:00-11:00\"]"),
            );
            continue;
        }
        windows.insert(name.into_inner(), Window { rules });
    }
    windows
}

fn quiet_hours(path: &str, quiet: RawQuiet, problems: &mut Problems) -> Option<QuietHours> {
    let (start, end) = hour_range(path, &quiet.hours, true, problems)?;
    // Open outside [start, end), which may wrap past midnight.
    let ranges = if start < end {
        vec![(0, start), (end, 1440)]
    } else {
        vec![(end, start)]
    };
    let ranges: Vec<(u16, u16)> = ranges.into_iter().filter(|(a, b)| a < b).collect();
    if ranges.is_empty() {
        problems.lint(
            Diagnostic::new(path, quiet.hours.span(), format!("quiet hours `{}` cover the whole day", quiet.hours.get_ref()))
                .help("their messages could never go: leave some hours open, e.g. \"21:00-08:00\"; to send none of a kind, disable the workflows that send them (`enabled = false`)"),
        );
    }
    let categories = categories(path, quiet.categories.as_deref(), problems);
    Some(QuietHours {
        open: Window {
            rules: vec![WindowRule {
                days: [true; 7],
                ranges,
            }],
        },
        categories,
    })
}

fn parse_cap(path: &str, cap: RawCap, channels: &[String], problems: &mut Problems) -> Option<Cap> {
    if !channels.contains(cap.channel.get_ref()) {
        problems.push(unknown_channel(path, &cap.channel, channels));
        return None;
    }
    if *cap.max.get_ref() < 1 {
        problems.push(
            Diagnostic::new(path, cap.max.span(), "`max` must be at least 1")
                .help("to stop a channel altogether, disable the workflows that use it"),
        );
        return None;
    }
    let per = match parse_duration(cap.per.get_ref()) {
        Ok(per) if !per.is_zero() => per,
        _ => {
            problems.push(
                Diagnostic::new(path, cap.per.span(), format!("`{}` is not a period", cap.per.get_ref()))
                    .help("write a duration such as \"7d\" or \"1w\""),
            );
            return None;
        }
    };
    let categories = categories(path, cap.categories.as_deref(), problems);
    Some(Cap {
        label: format!(
            "{} {} {} per {}",
            cap.max.get_ref(),
            categories.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("/"),
            cap.channel.get_ref(),
            cap.per.get_ref()
        ),
        channel: cap.channel.into_inner(),
        categories,
        max: cap.max.into_inner(),
        per,
    })
}

/// Categories named in the file (default: marketing).
fn categories(path: &str, raw: Option<&[Spanned<String>]>, problems: &mut Problems) -> Vec<Category> {
    let Some(raw) = raw else {
        return vec![Category::Marketing];
    };
    raw.iter()
        .filter_map(|c| {
            let parsed = Category::parse(c.get_ref());
            if parsed.is_none() {
                let help = did_you_mean(c.get_ref(), Category::ALL.iter().copied())
                    .unwrap_or_else(|| format!("a category is one of: {}", Category::ALL.join(", ")));
                problems
                    .push(Diagnostic::new(path, c.span(), format!("unknown category `{}`", c.get_ref())).help(help));
            }
            parsed
        })
        .collect()
}

fn parse_rule(path: &str, raw: &RawRule, problems: &mut Problems) -> Option<WindowRule> {
    let mut days = [false; 7];
    let before = problems.len();
    for day in raw.days.get_ref() {
        let text = day.get_ref().to_lowercase();
        let index = |name: &str| DAY_NAMES.iter().position(|d| *d == name);
        let (from, to) = match text.split_once('-') {
            Some((a, b)) => (index(a), index(b)),
            None => (index(&text), index(&text)),
        };
        match (from, to) {
            (Some(a), Some(b)) if a <= b => (a..=b).for_each(|d| days[d] = true),
            _ => problems.push(
                Diagnostic::new(
                    path,
                    day.span(),
                    format!("`{}` is not a day or a range of days", day.get_ref()),
                )
                .help("write days as mon, tue, wed, thu, fri, sat, sun, or a range such as \"mon-fri\""),
            ),
        }
    }
    if raw.days.get_ref().is_empty() {
        problems.push(Diagnostic::new(path, raw.days.span(), "no days given").help("e.g. days = [\"mon-fri\"]"));
    }
    let ranges: Vec<(u16, u16)> = raw
        .hours
        .iter()
        .filter_map(|h| hour_range(path, h, false, problems))
        .collect();
    (problems.len() == before && !ranges.is_empty()).then_some(WindowRule { days, ranges })
}

/// "HH:MM-HH:MM" as minutes after midnight; `24:00` ends a day. Only quiet hours may wrap past midnight.
fn hour_range(path: &str, text: &Spanned<String>, may_wrap: bool, problems: &mut Problems) -> Option<(u16, u16)> {
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let parsed = text
        .get_ref()
        .split_once('-')
        .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)));
    let span: Range<usize> = text.span();
    match parsed {
        Some((a, b)) if a < b || (may_wrap && a != b) => Some((a, b)),
        Some(_) => {
            problems.push(
                Diagnostic::new(path, span, format!("`{}` ends before it starts", text.get_ref())).help(
                    "write the earlier time first, e.g. \"09:00-12:00\"; split a range past midnight in two: \"20:00-24:00\" and \"00:00-02:00\"",
                ),
            );
            None
        }
        None => {
            problems.push(
                Diagnostic::new(
                    path,
                    span,
                    format!("`{}` is not a range of local times", text.get_ref()),
                )
                .help("write it as \"HH:MM-HH:MM\", e.g. \"09:00-12:00\""),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(source: &str) -> SendingPolicy {
        let mut problems = Problems::default();
        let policy = parse("sending.toml", source, &["email".to_string()], &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        policy
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    const WEEKDAY_MORNINGS: &str = r#"
        [[windows.mornings]]
        days = ["mon-fri"]
        hours = ["09:00-12:00"]
    "#;

    #[test]
    fn outside_the_window_waits_for_the_next_opening_in_local_time() {
        let p = policy(WEEKDAY_MORNINGS);
        let ny = TimeZone::get("America/New_York").unwrap();
        // Friday 2026-11-20 13:00 local (18:00Z) -> Monday 09:00 local (14:00Z).
        let next = p.next_slot(Some("mornings"), Category::Marketing, at("2026-11-20T18:00:00Z"), &ny);
        assert_eq!(next, at("2026-11-23T14:00:00Z"));
        // Inside the window: now.
        let inside = at("2026-11-20T15:30:00Z");
        assert_eq!(p.next_slot(Some("mornings"), Category::Marketing, inside, &ny), inside);
    }

    #[test]
    fn a_start_in_the_dst_gap_moves_forward_and_a_repeated_hour_counts_once() {
        let p = policy(
            r#"
            [[windows.night]]
            days = ["sun"]
            hours = ["02:30-04:00"]
            [[windows.fold]]
            days = ["sun"]
            hours = ["01:30-01:45"]
            "#,
        );
        let ny = TimeZone::get("America/New_York").unwrap();
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist and moves
        // forward by the gap to 03:30 EDT = 07:30Z; the window still closes at 04:00 EDT.
        let next = p.next_slot(Some("night"), Category::Marketing, at("2026-03-08T05:00:00Z"), &ny);
        assert_eq!(next, at("2026-03-08T07:30:00Z"));
        // The next Sunday is a normal day: 02:30 EDT = 06:30Z.
        let next = p.next_slot(Some("night"), Category::Marketing, at("2026-03-08T08:00:00Z"), &ny);
        assert_eq!(next, at("2026-03-15T06:30:00Z"));
        // 2026-11-01: 01:30 happens twice (EDT then EST); the first one is taken.
        let next = p.next_slot(Some("fold"), Category::Marketing, at("2026-11-01T04:00:00Z"), &ny);
        assert_eq!(next, at("2026-11-01T05:30:00Z"));
        // Once past it, the repeated local hour does not open the window again that day.
        let after = p.next_slot(Some("fold"), Category::Marketing, at("2026-11-01T05:50:00Z"), &ny);
        assert_eq!(after, at("2026-11-08T06:30:00Z"));
    }

    #[test]
    fn quiet_hours_wrap_midnight_and_apply_to_their_categories_only() {
        let p = policy(
            r#"
            [quiet_hours]
            hours = "21:00-08:00"
            categories = ["marketing"]
            "#,
        );
        let shanghai = TimeZone::get("Asia/Shanghai").unwrap();
        // 23:00 in Shanghai (15:00Z) -> 08:00 next day (00:00Z).
        let late = at("2026-11-20T15:00:00Z");
        assert_eq!(
            p.next_slot(None, Category::Marketing, late, &shanghai),
            at("2026-11-21T00:00:00Z")
        );
        assert_eq!(p.next_slot(None, Category::Sla, late, &shanghai), late);
        // What `nudge explain` tells apart: held by the quiet hours, not by a window.
        assert!(p.in_quiet_hours(Category::Marketing, late, &shanghai));
        assert!(!p.in_quiet_hours(Category::Sla, late, &shanghai));
        assert!(!p.in_quiet_hours(Category::Marketing, at("2026-11-21T02:00:00Z"), &shanghai));
    }

    #[test]
    fn window_and_quiet_hours_combine() {
        let p = policy(
            r#"
            [[windows.evening]]
            days = ["mon-sun"]
            hours = ["20:00-22:00"]
            [quiet_hours]
            hours = "21:00-08:00"
            "#,
        );
        let utc = TimeZone::UTC;
        // 21:30 is in the window but quiet -> tomorrow 20:00.
        assert_eq!(
            p.next_slot(Some("evening"), Category::Marketing, at("2026-11-20T21:30:00Z"), &utc),
            at("2026-11-21T20:00:00Z")
        );
    }

    #[test]
    fn mistakes_are_reported_with_their_position() {
        let mut problems = Problems::default();
        let source = r#"
[[windows.bad]]
days = ["mon-fry"]
hours = ["12:00-09:00"]

[[caps]]
channel = "emial"
max = 2
per = "7d"
"#;
        parse("sending.toml", source, &["email".to_string()], &mut problems);
        let messages: Vec<String> = problems
            .into_vec()
            .iter()
            .map(|p| {
                let (line, col) = p.line_col(source);
                format!("{line}:{col} {}", p.message)
            })
            .collect();
        assert!(
            messages.contains(&"3:9 `mon-fry` is not a day or a range of days".to_string()),
            "{messages:?}"
        );
        assert!(
            messages.contains(&"4:10 `12:00-09:00` ends before it starts".to_string()),
            "{messages:?}"
        );
        assert!(
            messages.contains(&"7:11 unknown channel `emial`".to_string()),
            "{messages:?}"
        );
    }
}
