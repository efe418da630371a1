//! A workflow's `[trigger]`: which event starts its runs, narrowed by the keys
//! that trigger takes (`from`/`to`, `grace`, `sla`, `start`/`every`); a key
//! another trigger takes is refused rather than ignored.

use std::collections::BTreeMap;
use std::ops::Range;

use jiff::Span;
use serde::Deserialize;
use toml::Spanned;

use super::check::{Problems, at, duration, one_of};
use crate::model::{RFM_GRADES, STAGES, TIERS, add_span};
use crate::workflow::diagnostic::Diagnostic;
use crate::workflow::{Sla, Trigger};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrigger {
    on: Spanned<String>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    sla: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    sla_clock: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
}

const TRIGGERS: &[&str] = &[
    "contact_created",
    "stage_changed",
    "follow_up_logged",
    "follow_up_overdue",
    "inquiry_received",
    "segment",
    "tier_changed",
    "rfm_changed",
    "became_dormant",
    "became_active",
    "first_order",
    "order_placed",
];

/// The shortest `every` of a segment: each pass reads every contact.
const SEGMENT_EVERY_FLOOR_MS: i64 = 60_000;

pub(super) fn parse_trigger(path: &str, raw: &Spanned<RawTrigger>, problems: &mut Problems) -> Option<Trigger> {
    let t = raw.get_ref();
    if !one_of(path, &t.on, TRIGGERS, "trigger", problems) {
        return None;
    }
    let on = t.on.get_ref().as_str();
    let ok = keys_apply(path, t, problems);
    let from = t.from.as_ref().map(|s| s.get_ref().clone());
    let to = t.to.as_ref().map(|s| s.get_ref().clone());
    let trigger = match on {
        "contact_created" => Trigger::ContactCreated,
        "follow_up_logged" => Trigger::FollowUpLogged,
        "stage_changed" => Trigger::StageChanged { from, to },
        "tier_changed" => Trigger::TierChanged { from, to },
        "rfm_changed" => Trigger::RfmChanged { from, to },
        "became_dormant" => Trigger::BecameDormant,
        "became_active" => Trigger::BecameActive,
        "first_order" => Trigger::FirstOrder,
        "order_placed" => Trigger::OrderPlaced,
        "follow_up_overdue" => Trigger::FollowUpOverdue {
            grace: match &t.grace {
                Some(g) => duration(path, g, problems)?,
                None => Span::new(),
            },
        },
        "inquiry_received" => Trigger::InquiryReceived {
            sla: match &t.sla {
                None => None,
                Some(sla) => Some(parse_sla(path, sla, problems)?),
            },
            business_clock: sla_clock(path, t, problems)?,
        },
        "segment" => Trigger::Segment {
            start: match &t.start {
                None => None,
                Some(start) => Some(segment_start(path, start, problems)?),
            },
            every: match &t.every {
                None => None,
                Some(every) => Some(segment_every(path, every, problems)?),
            },
        },
        _ => unreachable!("checked against TRIGGERS"),
    };
    ok.then_some(trigger)
}

/// Whether every key given applies to the trigger `on`; each that does not is a problem.
fn keys_apply(path: &str, t: &RawTrigger, problems: &mut Problems) -> bool {
    let on = t.on.get_ref().as_str();
    let not_here = |key: &str, span: Range<usize>| {
        Diagnostic::new(path, span, format!("`{key}` does not apply to trigger `{on}`"))
            .help(format!("remove `{key}`, or use a trigger that takes it"))
    };
    let mut ok = true;
    // `from` and `to` narrow the triggers that report a change of one field.
    let changed_values = match on {
        "stage_changed" => Some((STAGES, "stage")),
        "tier_changed" => Some((TIERS, "value tier")),
        "rfm_changed" => Some((RFM_GRADES, "RFM grade")),
        _ => None,
    };
    for (key, value) in [("from", &t.from), ("to", &t.to)] {
        if let Some(v) = value {
            match changed_values {
                None => {
                    problems.push(not_here(key, at(v)));
                    ok = false;
                }
                Some((allowed, what)) => ok &= one_of(path, v, allowed, what, problems),
            }
        }
    }
    let only_for = [
        ("grace", t.grace.as_ref().map(at), "follow_up_overdue"),
        ("sla", t.sla.as_ref().map(at), "inquiry_received"),
        ("sla_clock", t.sla_clock.as_ref().map(at), "inquiry_received"),
        ("start", t.start.as_ref().map(at), "segment"),
        ("every", t.every.as_ref().map(at), "segment"),
    ];
    for (key, span, trigger) in only_for {
        if let Some(span) = span
            && on != trigger
        {
            problems.push(not_here(key, span));
            ok = false;
        }
    }
    ok
}

/// `sla_clock`: "wall" (the default) or "business" (the owner's working hours, team.toml).
fn sla_clock(path: &str, t: &RawTrigger, problems: &mut Problems) -> Option<bool> {
    let Some(clock) = &t.sla_clock else {
        return Some(false);
    };
    if !one_of(path, clock, &["wall", "business"], "SLA clock", problems) {
        return None;
    }
    if t.sla.is_none() {
        problems.push(
            Diagnostic::new(path, at(clock), "`sla_clock` without an `sla`")
                .help("add `sla = { default = \"15m\" }`, or remove `sla_clock`"),
        );
        return None;
    }
    Some(clock.get_ref() == "business")
}

/// A segment's first pass: an RFC 3339 time, or a civil date and time in UTC.
fn segment_start(path: &str, start: &Spanned<String>, problems: &mut Problems) -> Option<i64> {
    let parsed = start
        .get_ref()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .or_else(|_| {
            start.get_ref().parse::<jiff::civil::DateTime>().map(|d| {
                d.to_zoned(jiff::tz::TimeZone::UTC)
                    .map_or(0, |z| z.timestamp().as_millisecond())
            })
        });
    match parsed {
        Ok(ms) => Some(ms),
        Err(_) => {
            problems.push(
                Diagnostic::new(path, at(start), format!("`{}` is not a time", start.get_ref()))
                    .help("write a time such as \"2026-12-01T09:00:00Z\" or \"2026-12-01 09:00\" (UTC)"),
            );
            None
        }
    }
}

fn segment_every(path: &str, every: &Spanned<String>, problems: &mut Problems) -> Option<Span> {
    let span = duration(path, every, problems)?;
    if add_span(0, span, "UTC") < SEGMENT_EVERY_FLOOR_MS {
        problems.lint(
            Diagnostic::new(path, at(every), format!("`every = \"{}\"` is shorter than a minute", every.get_ref()))
                .help("each pass of a segment looks at every contact: repeat it every minute at most, e.g. \"1h\" or \"1d\" (leave `every` out for a single pass)"),
        );
        // (A stored set keeps its `every`: its passes are computed, not stepped through.)
    }
    Some(span)
}

fn parse_sla(
    path: &str,
    raw: &Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    problems: &mut Problems,
) -> Option<Sla> {
    let mut default = None;
    let mut by_tier = BTreeMap::new();
    let before = problems.len();
    for (key, value) in raw.get_ref() {
        let span = duration(path, value, problems);
        if key.get_ref() == "default" {
            default = span;
        } else if one_of(path, key, TIERS, "value tier", problems)
            && let Some(span) = span
        {
            by_tier.insert(key.get_ref().clone(), span);
        }
    }
    if problems.len() > before {
        return None;
    }
    match default {
        Some(default) => Some(Sla { default, by_tier }),
        None => {
            problems.push(
                Diagnostic::new(path, at(raw), "the SLA has no `default`")
                    .help("add `default = \"15m\"`: it applies to contacts whose tier has no entry"),
            );
            None
        }
    }
}
