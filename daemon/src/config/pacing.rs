//! `[delivery.pacing]`, `[delivery.domains."<domain>"]` and `[delivery.warmup]`:
//! how fast email goes to each recipient domain, and how much marketing email
//! a new From domain may send a day while receivers learn to trust it
//! (docs/domain.md §5: nurture email must reach the inbox to count). The
//! numbers are the defaults below, shown in README "Pacing and warm-up".

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::Config;

/// The pace of every recipient domain and how a throttling reply slows one.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PacingConfig {
    /// Messages a minute to a domain not listed under `[delivery.domains]`; 0:
    /// no pace of its own (only a throttling reply slows it).
    pub(crate) per_minute: Spanned<i64>,
    /// Replies that mean "you send too fast" rather than "this message is
    /// wrong": `"<code>"` or `"<code> <enhanced status code or its start>"`.
    pub(crate) throttle_replies: Vec<Spanned<String>>,
    /// A throttled domain pauses this long, doubling while it keeps throttling ...
    pub(crate) backoff_first_secs: Spanned<i64>,
    /// ... up to this long.
    pub(crate) backoff_max_secs: Spanned<i64>,
    /// Messages in a row a slowed domain accepts before its rate doubles, back up
    /// to where it was when it throttled.
    pub(crate) recover_after: Spanned<i64>,
}

impl Default for PacingConfig {
    fn default() -> Self {
        let replies = ["421 4.7", "450 4.2.1", "451 4.7", "452 4.2.2", "454 4.7"];
        PacingConfig {
            per_minute: Spanned::new(0..0, 0),
            throttle_replies: replies.iter().map(|r| Spanned::new(0..0, r.to_string())).collect(),
            backoff_first_secs: Spanned::new(0..0, 60),
            backoff_max_secs: Spanned::new(0..0, 900),
            recover_after: Spanned::new(0..0, 20),
        }
    }
}

/// One recipient domain's limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DomainPace {
    /// Messages a minute at most, spread evenly (one every 60/N seconds).
    pub(crate) per_minute: Spanned<i64>,
}

/// A new From domain's daily volume of marketing email.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WarmupConfig {
    /// The plan's first day, `YYYY-MM-DD` in `zone`.
    pub(crate) start: Spanned<String>,
    /// Marketing emails a day, one number a day from `start`; after the last
    /// day the plan is over and the From domain sends without a daily cap.
    pub(crate) daily: Spanned<Vec<i64>>,
    /// The zone whose midnight starts a day (IANA name).
    #[serde(default = "default_zone")]
    pub(crate) zone: Spanned<String>,
}

fn default_zone() -> Spanned<String> {
    Spanned::new(0..0, "UTC".into())
}

impl WarmupConfig {
    /// The first day of the plan, checked by `Config::check_pacing`.
    pub(crate) fn start_date(&self) -> Option<jiff::civil::Date> {
        self.start.get_ref().parse().ok()
    }

    pub(crate) fn time_zone(&self) -> Option<jiff::tz::TimeZone> {
        jiff::tz::TimeZone::get(self.zone.get_ref()).ok()
    }
}

/// Whether `reply` is `<3 digits>` or `<3 digits> <d>.<digits>[.<digits>]`, or a start of one.
fn reply_pattern_ok(reply: &str) -> bool {
    let mut parts = reply.splitn(2, ' ');
    let code = parts.next().unwrap_or_default();
    let code_ok = code.len() == 3 && code.starts_with('4') && code.bytes().all(|b| b.is_ascii_digit());
    let enhanced_ok = parts.next().is_none_or(|e| {
        !e.is_empty() && e.starts_with('4') && e.chars().all(|c| c.is_ascii_digit() || c == '.') && !e.contains("..")
    });
    code_ok && enhanced_ok
}

type Problem = (Range<usize>, String, String);

impl Config {
    /// Refuses pacing and warm-up settings that cannot work.
    pub(super) fn check_pacing(&self) -> anyhow::Result<()> {
        match pacing_problem(&self.delivery.pacing, &self.delivery.domains)
            .or_else(|| self.delivery.warmup.as_ref().and_then(warmup_problem))
        {
            Some((span, message, help)) => Err(self.setting_error(span, message, Some(help))),
            None => Ok(()),
        }
    }
}

fn at_least(value: &Spanned<i64>, least: i64, key: &str, help: &str) -> Option<Problem> {
    let v = *value.get_ref();
    (v < least).then(|| {
        (
            value.span(),
            format!("{key} = {v} must be at least {least}"),
            help.to_string(),
        )
    })
}

fn pacing_problem(pacing: &PacingConfig, domains: &BTreeMap<String, DomainPace>) -> Option<Problem> {
    at_least(
        &pacing.per_minute,
        0,
        "[delivery.pacing] per_minute",
        "write 0 to give domains without a limit of their own no pace (the default)",
    )
    .or_else(|| {
        at_least(&pacing.backoff_first_secs, 1, "[delivery.pacing] backoff_first_secs", "the default is 60")
    })
    .or_else(|| {
        let (first, max) = (*pacing.backoff_first_secs.get_ref(), *pacing.backoff_max_secs.get_ref());
        (max < first).then(|| {
            (
                pacing.backoff_max_secs.span(),
                format!("[delivery.pacing] backoff_max_secs = {max} is shorter than backoff_first_secs = {first}"),
                "the longest pause must be at least the first; the defaults are 60 and 900".into(),
            )
        })
    })
    .or_else(|| at_least(&pacing.recover_after, 1, "[delivery.pacing] recover_after", "the default is 20"))
    .or_else(|| {
        pacing.throttle_replies.iter().find(|r| !reply_pattern_ok(r.get_ref())).map(|r| {
            (
                r.span(),
                format!("[delivery.pacing] throttle_replies: \"{}\" is not a 4xx reply", r.get_ref()),
                "write a reply code and, if needed, the start of its enhanced status code, e.g. \"421 4.7\" or \"450 4.2.1\""
                    .into(),
            )
        })
    })
    .or_else(|| {
        domains.iter().find_map(|(domain, pace)| {
            at_least(
                &pace.per_minute,
                1,
                &format!("[delivery.domains.\"{domain}\"] per_minute"),
                "a domain's limit is messages a minute, 1 or more; remove the table for no limit",
            )
        })
    })
}

fn warmup_problem(warmup: &WarmupConfig) -> Option<Problem> {
    if warmup.start_date().is_none() {
        return Some((
            warmup.start.span(),
            format!("[delivery.warmup] start = \"{}\" is not a date", warmup.start.get_ref()),
            "write the plan's first day as YYYY-MM-DD, e.g. \"2026-12-01\"".into(),
        ));
    }
    if warmup.time_zone().is_none() {
        return Some((
            warmup.zone.span(),
            format!(
                "[delivery.warmup] zone = \"{}\" is not a time zone",
                warmup.zone.get_ref()
            ),
            "write an IANA zone name, e.g. \"Asia/Shanghai\" or \"UTC\"".into(),
        ));
    }
    let daily = warmup.daily.get_ref();
    if daily.is_empty() || daily.iter().any(|&n| n < 1) {
        return Some((
            warmup.daily.span(),
            "[delivery.warmup] daily must list one number of 1 or more for each day of the plan".into(),
            "e.g. daily = [50, 100, 200, 400, 800, 1600]; remove [delivery.warmup] for no plan".into(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::config::load_text as load;

    fn error(toml: &str) -> String {
        load(toml).unwrap_err().to_string()
    }

    #[test]
    fn bad_pacing_settings_are_named_with_their_line_and_column() {
        let err = error("[delivery.domains.\"gmail.com\"]\nper_minute = 0\n");
        assert!(
            err.contains("nudge.toml:2:14: [delivery.domains.\"gmail.com\"] per_minute = 0"),
            "{err}"
        );
        let err = error("[delivery.pacing]\nthrottle_replies = [\"421 4.7\", \"550 5.7.1\"]\n");
        assert!(
            err.contains("nudge.toml:2:32: [delivery.pacing] throttle_replies: \"550 5.7.1\""),
            "{err}"
        );
        let err = error("[delivery.pacing]\nbackoff_first_secs = 60\nbackoff_max_secs = 10\n");
        assert!(
            err.contains("nudge.toml:3:20: [delivery.pacing] backoff_max_secs = 10"),
            "{err}"
        );
        let err = error("[delivery.warmup]\nstart = \"2026-13-01\"\ndaily = [10]\n");
        assert!(err.contains("nudge.toml:2:9: [delivery.warmup] start"), "{err}");
        assert!(err.contains("YYYY-MM-DD"), "{err}");
        let err = error("[delivery.warmup]\nstart = \"2026-12-01\"\ndaily = [10, 0]\nzone = \"UTC\"\n");
        assert!(err.contains("nudge.toml:3:9: [delivery.warmup] daily"), "{err}");
        let err = error("[delivery.warmup]\nstart = \"2026-12-01\"\ndaily = [10]\nzone = \"Mars/Base\"\n");
        assert!(err.contains("nudge.toml:4:8: [delivery.warmup] zone"), "{err}");
    }

    #[test]
    fn good_settings_load() {
        let config = load(
            "[delivery.domains.\"gmail.com\"]\nper_minute = 120\n[delivery.warmup]\nstart = \"2026-12-01\"\n\
             daily = [10, 20]\nzone = \"Asia/Shanghai\"\n",
        )
        .unwrap();
        assert_eq!(*config.delivery.domains["gmail.com"].per_minute.get_ref(), 120);
        assert_eq!(config.delivery.warmup.unwrap().daily.get_ref(), &[10, 20]);
        assert_eq!(*config.delivery.pacing.per_minute.get_ref(), 0);
    }
}
