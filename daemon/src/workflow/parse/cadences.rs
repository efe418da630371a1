//! `cadences.toml`: named tables of follow-up intervals, each keyed by one contact
//! field (e.g. intent grade A -> 3d, B -> 7d), that `schedule_follow_up` steps name,
//! each value perhaps with the send window of `sending.toml` its follow-ups fall in
//! (e.g. A -> weekday_mornings). Read after `sending.toml`, whose windows it names.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Problems, at, duration, one_of, serde_problem};
use crate::model::{INTENT_GRADES, STAGES, TIERS};
use crate::workflow::diagnostic::{Diagnostic, did_you_mean};
use crate::workflow::{CADENCE_KEYS, Cadence, SendingPolicy};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCadence {
    by: Spanned<String>,
    every: BTreeMap<Spanned<String>, Spanned<String>>,
    default: Option<Spanned<String>>,
    #[serde(default)]
    at: BTreeMap<Spanned<String>, Spanned<String>>,
}

pub(super) fn parse_cadences(
    path: &str,
    source: &str,
    sending: &SendingPolicy,
    cadences: &mut BTreeMap<String, Cadence>,
    problems: &mut Problems,
) {
    let raw: BTreeMap<String, RawCadence> = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => return problems.push(serde_problem(path, e)),
    };
    for (name, raw) in raw {
        one_of(path, &raw.by, CADENCE_KEYS, "cadence key", problems);
        let values = match raw.by.get_ref().as_str() {
            "intent_grade" => Some((INTENT_GRADES, "intent grade")),
            "value_tier" => Some((TIERS, "value tier")),
            "stage" => Some((STAGES, "stage")),
            _ => None,
        };
        let mut every = BTreeMap::new();
        for (value, interval) in &raw.every {
            check_value(path, &name, value, values, problems);
            if let Some(span) = duration(path, interval, problems) {
                every.insert(value.get_ref().clone(), span);
            }
        }
        let mut windows = BTreeMap::new();
        for (value, window) in &raw.at {
            check_value(path, &name, value, values, problems);
            if check_window(path, window, sending, problems) {
                windows.insert(value.get_ref().clone(), window.get_ref().clone());
            }
        }
        let default = raw.default.as_ref().and_then(|d| duration(path, d, problems));
        cadences.insert(
            name,
            Cadence {
                by: raw.by.into_inner(),
                every,
                default,
                at: windows,
            },
        );
    }
}

/// A row for a value the field never has would never be used: the contact falls to the default.
fn check_value(
    path: &str,
    name: &str,
    value: &Spanned<String>,
    values: Option<(&[&str], &str)>,
    problems: &mut Problems,
) {
    let Some((allowed, what)) = values else { return };
    if allowed.contains(&value.get_ref().as_str()) {
        return;
    }
    let same_but_case = allowed.iter().find(|a| a.eq_ignore_ascii_case(value.get_ref()));
    let help = same_but_case
        .map(|a| format!("did you mean `{a}`? values are case-sensitive"))
        .or_else(|| did_you_mean(value.get_ref(), allowed.iter().copied()))
        .unwrap_or_else(|| format!("{what} is one of: {}", allowed.join(", ")));
    problems.lint(
        Diagnostic::new(
            path,
            at(value),
            format!(
                "cadence `{name}` is by {what}, and no contact has {what} `{}`",
                value.get_ref()
            ),
        )
        .help(help),
    );
}

/// An `at` window must be one of `sending.toml`'s windows.
fn check_window(path: &str, window: &Spanned<String>, sending: &SendingPolicy, problems: &mut Problems) -> bool {
    if sending.windows.contains_key(window.get_ref()) {
        return true;
    }
    let help = did_you_mean(window.get_ref(), sending.windows.keys().map(String::as_str))
        .unwrap_or_else(|| "name a window of sending.toml, or define it there as [[windows.<name>]]".to_string());
    problems.lint(Diagnostic::new(path, at(window), format!("unknown send window `{}`", window.get_ref())).help(help));
    false
}
