//! `team.toml`: who is on the sales team (docs/domain.md §2 "owner" column, §3
//! escalation): each member's manager, time zone, working hours and holidays, and
//! the roles (named lists of members) that workflows hand contacts to. Without the
//! file the team is empty: an owner is an address with no manager and no hours.
//!
//! Also the business-time arithmetic of a member's clock: the next moment they
//! work, and a span counted in their working time only (`sla_clock = "business"`).

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::{Diagnostic, did_you_mean};
use super::parse::check::{Problems, at, serde_problem};
use super::sending::{RawRule, Window, windows};
use super::{Trigger, Workflow};
use crate::model::add_span;

/// The file of the folder that holds the team.
pub(crate) const TEAM_FILE: &str = "team.toml";

/// Who a `notify` step writes to (docs/domain.md §3: the owner, then the owner's manager).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NotifyTo {
    Owner,
    /// The owner's manager in team.toml; the owner when none is known.
    Manager,
    /// A member of a role of team.toml, picked per contact.
    Role(String),
}

impl NotifyTo {
    /// Tells the recipient's message apart from the contact's in the idempotency key.
    pub(crate) fn key_suffix(&self) -> &'static str {
        match self {
            NotifyTo::Owner => "-owner",
            NotifyTo::Manager => "-manager",
            NotifyTo::Role(_) => "-role",
        }
    }
}

/// The new owner a `set_owner` step names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnerRef {
    /// An email address, as written.
    Address(String),
    /// A member of a role of team.toml, picked per contact.
    Role(String),
}

impl Workflow {
    /// Whether the workflow counts time in its owner's working hours (`sla_clock = "business"`).
    pub(crate) fn business_clock(&self) -> bool {
        matches!(
            self.trigger,
            Trigger::InquiryReceived {
                business_clock: true,
                ..
            }
        )
    }
}

/// The team; empty when the folder has no `team.toml`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Team {
    /// By email address, lower-cased.
    members: BTreeMap<String, Member>,
    /// Role name -> member addresses, in the file's order.
    roles: BTreeMap<String, Vec<String>>,
}

/// One member of the team.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) manager: Option<String>,
    pub(crate) time_zone: TimeZone,
    /// When the member works, in their time zone; `None`: always.
    hours: Option<Window>,
    /// Days off (the team's and their own), as local dates.
    holidays: BTreeSet<Date>,
}

/// How far the business-time arithmetic looks: ten years of days off in a row
/// is a file that never opens, and is reported as the far future.
const MAX_STEPS: usize = 3700;
const FAR_FUTURE_MS: i64 = i64::MAX / 2;

impl Team {
    pub(crate) fn member(&self, address: &str) -> Option<&Member> {
        self.members.get(&address.trim().to_lowercase())
    }

    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    pub(crate) fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// The member of `role` for a contact: round-robin by contact id. The same
    /// contact always gets the same member (after a retry, a restart or a reload
    /// of an unchanged team), the choice needs no query, and two contacts handed
    /// over in one batch cannot both land on whoever looked least busy.
    pub(crate) fn pick(&self, role: &str, contact_id: i64) -> Option<&str> {
        let members = self.roles.get(role)?;
        let n = i64::try_from(members.len()).ok().filter(|n| *n > 0)?;
        members.get(contact_id.rem_euclid(n) as usize).map(String::as_str)
    }

    /// The manager of `owner`, or why there is none.
    pub(crate) fn manager_of(&self, owner: &str) -> Result<&str, String> {
        if self.members.is_empty() {
            return Err("no team.toml, so no manager is known".into());
        }
        match self.member(owner) {
            None => Err(format!("{owner} is not in team.toml")),
            Some(m) => m
                .manager
                .as_deref()
                .ok_or_else(|| format!("{owner} has no manager in team.toml")),
        }
    }
}

impl Member {
    fn works_on(&self, date: Date) -> bool {
        !self.holidays.contains(&date) && self.hours.as_ref().is_none_or(|h| h.opens_on(date))
    }

    /// The earliest moment at or after `at` inside the member's working hours
    /// (skipping their holidays); `at` itself for a member with no hours.
    pub(crate) fn next_working(&self, at: Timestamp) -> Timestamp {
        let Some(hours) = &self.hours else { return at };
        let mut t = at;
        for _ in 0..MAX_STEPS {
            t = hours.next_open(t, &self.time_zone);
            let date = t.to_zoned(self.time_zone.clone()).date();
            if !self.holidays.contains(&date) && hours.open_until(t, &self.time_zone).is_some() {
                return t;
            }
            t = start_of_next_day(date, &self.time_zone).unwrap_or(far_future());
        }
        far_future()
    }

    /// `span` after `at`, counted in the member's working time only: whole days
    /// and weeks are working days (the same local time on the n-th next day the
    /// member works), hours and minutes are working hours; months and years
    /// count on the calendar. Without working hours, plain calendar time.
    pub(crate) fn add_business(&self, at_ms: i64, span: Span) -> i64 {
        let tz_name = self.time_zone.iana_name().unwrap_or("UTC");
        let Some(hours) = &self.hours else {
            return add_span(at_ms, span, tz_name);
        };
        let calendar = Span::new().years(span.get_years()).months(span.get_months());
        let Ok(start) = Timestamp::from_millisecond(add_span(at_ms, calendar, tz_name)) else {
            return FAR_FUTURE_MS;
        };
        let days = i64::from(span.get_weeks()) * 7 + i64::from(span.get_days());
        let mut t = start;
        if days > 0 {
            let zoned = t.to_zoned(self.time_zone.clone());
            let mut date = zoned.date();
            for _ in 0..days {
                match self.next_working_day(date) {
                    Some(next) => date = next,
                    None => return FAR_FUTURE_MS,
                }
            }
            t = match date.to_datetime(zoned.time()).to_zoned(self.time_zone.clone()) {
                Ok(z) => z.timestamp(),
                Err(_) => return FAR_FUTURE_MS,
            };
        }
        let mut left = clock_ms(span);
        for _ in 0..MAX_STEPS {
            if left <= 0 {
                return t.as_millisecond();
            }
            t = self.next_working(t);
            let Some(close) = hours.open_until(t, &self.time_zone) else {
                return FAR_FUTURE_MS;
            };
            let open = close.as_millisecond() - t.as_millisecond();
            if open >= left {
                return t.as_millisecond() + left;
            }
            left -= open;
            t = close;
        }
        FAR_FUTURE_MS
    }

    fn next_working_day(&self, mut date: Date) -> Option<Date> {
        for _ in 0..MAX_STEPS {
            date = date.tomorrow().ok()?;
            if self.works_on(date) {
                return Some(date);
            }
        }
        None
    }
}

/// The fixed-length part of a span (hours and smaller), in milliseconds.
fn clock_ms(span: Span) -> i64 {
    span.get_hours() as i64 * 3_600_000
        + span.get_minutes() * 60_000
        + span.get_seconds() * 1000
        + span.get_milliseconds()
}

fn far_future() -> Timestamp {
    Timestamp::from_millisecond(FAR_FUTURE_MS).unwrap_or(Timestamp::MAX)
}

fn start_of_next_day(date: Date, tz: &TimeZone) -> Option<Timestamp> {
    let next = date.tomorrow().ok()?;
    next.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeam {
    /// Days off for everyone.
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
    #[serde(default)]
    working_hours: BTreeMap<Spanned<String>, Vec<RawRule>>,
    #[serde(default)]
    members: BTreeMap<Spanned<String>, RawMember>,
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: Option<String>,
    manager: Option<Spanned<String>>,
    time_zone: Option<Spanned<String>>,
    working_hours: Option<Spanned<String>>,
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
}

pub(super) fn parse(path: &str, source: &str, problems: &mut Problems) -> Team {
    let raw: RawTeam = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(serde_problem(path, e));
            return Team::default();
        }
    };
    let schedules = windows(path, raw.working_hours, problems);
    let everyone: BTreeSet<Date> = dates(path, &raw.holidays, problems);
    let addresses: Vec<String> = raw.members.keys().map(|k| k.get_ref().trim().to_lowercase()).collect();
    let mut members = BTreeMap::new();
    for (address, m) in &raw.members {
        if address.get_ref().parse::<lettre::Address>().is_err() {
            problems.push(
                Diagnostic::new(path, at(address), format!("`{}` is not an email address", address.get_ref()))
                    .help("key each member by the email address that contacts name as their owner, e.g. [members.\"li.na@example.com\"]"),
            );
            continue;
        }
        if let Some(manager) = &m.manager
            && !addresses.contains(&manager.get_ref().trim().to_lowercase())
        {
            problems.push(unknown_member(path, manager, &addresses, "manager"));
        }
        let time_zone = match &m.time_zone {
            None => TimeZone::UTC,
            Some(zone) => TimeZone::get(zone.get_ref()).unwrap_or_else(|_| {
                problems.push(
                    Diagnostic::new(path, at(zone), format!("unknown time zone `{}`", zone.get_ref()))
                        .help("write an IANA time zone name, e.g. \"Asia/Shanghai\" or \"Europe/Berlin\""),
                );
                TimeZone::UTC
            }),
        };
        let hours = m.working_hours.as_ref().and_then(|name| {
            let found = schedules.get(name.get_ref()).cloned();
            if found.is_none() {
                let help = did_you_mean(name.get_ref(), schedules.keys().map(String::as_str))
                    .unwrap_or_else(|| "define it as a [[working_hours.<name>]] block in team.toml".into());
                problems.push(
                    Diagnostic::new(path, at(name), format!("unknown working hours `{}`", name.get_ref())).help(help),
                );
            }
            found
        });
        let mut holidays = everyone.clone();
        holidays.extend(dates(path, &m.holidays, problems));
        // Days off count for a member without hours too: they work all day, other days.
        let hours = hours.or_else(|| (!holidays.is_empty()).then(Window::always));
        let key = address.get_ref().trim().to_lowercase();
        if members.contains_key(&key) {
            problems.push(
                Diagnostic::new(path, at(address), format!("`{}` is a member twice", address.get_ref()))
                    .help("addresses are compared without case: keep one [members.\"...\"] table per person"),
            );
        }
        let manager = m.manager.as_ref().map(|s| s.get_ref().trim().to_lowercase());
        let name = m.name.clone().unwrap_or_else(|| key.clone());
        members.insert(
            key,
            Member {
                name,
                manager,
                time_zone,
                hours,
                holidays,
            },
        );
    }
    check_cycles(path, &raw.members, &members, problems);
    let roles = roles(path, raw.roles, &addresses, problems);
    Team { members, roles }
}

fn unknown_member(path: &str, name: &Spanned<String>, addresses: &[String], what: &str) -> Diagnostic {
    let help = did_you_mean(name.get_ref(), addresses.iter().map(String::as_str)).unwrap_or_else(|| {
        format!(
            "add a [members.\"{}\"] table, or name a member of the team",
            name.get_ref()
        )
    });
    Diagnostic::new(
        path,
        at(name),
        format!("{what} `{}` is not a member of the team", name.get_ref()),
    )
    .help(help)
}

/// A manager chain that comes back to where it started would escalate forever.
fn check_cycles(
    path: &str,
    raw: &BTreeMap<Spanned<String>, RawMember>,
    members: &BTreeMap<String, Member>,
    problems: &mut Problems,
) {
    for (address, m) in raw {
        let Some(manager) = &m.manager else { continue };
        let start = address.get_ref().trim().to_lowercase();
        let mut seen = BTreeSet::new();
        let mut next = members.get(&start).and_then(|m| m.manager.clone());
        while let Some(current) = next {
            if current == start {
                problems.push(
                    Diagnostic::new(
                        path,
                        at(manager),
                        format!("the managers of `{}` lead back to them", address.get_ref()),
                    )
                    .help(
                        "a manager chain must end with someone who has no `manager`: remove one `manager` of the loop",
                    ),
                );
                break;
            }
            if !seen.insert(current.clone()) {
                break;
            }
            next = members.get(&current).and_then(|m| m.manager.clone());
        }
    }
}

fn roles(
    path: &str,
    raw: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    addresses: &[String],
    problems: &mut Problems,
) -> BTreeMap<String, Vec<String>> {
    let mut roles = BTreeMap::new();
    for (name, list) in raw {
        if list.is_empty() {
            problems.push(
                Diagnostic::new(path, at(&name), format!("role `{}` has no members", name.get_ref()))
                    .help("list the addresses of the members who take this role, e.g. [\"li.na@example.com\"]"),
            );
            continue;
        }
        let mut members = Vec::new();
        for member in &list {
            let address = member.get_ref().trim().to_lowercase();
            if addresses.contains(&address) {
                members.push(address);
            } else {
                problems.push(unknown_member(path, member, addresses, "role member"));
            }
        }
        roles.insert(name.into_inner(), members);
    }
    roles
}

fn dates(path: &str, raw: &[Spanned<String>], problems: &mut Problems) -> BTreeSet<Date> {
    raw.iter()
        .filter_map(|d| match d.get_ref().parse::<Date>() {
            Ok(date) => Some(date),
            Err(_) => {
                problems.push(
                    Diagnostic::new(path, at(d), format!("`{}` is not a date", d.get_ref()))
                        .help("write a date as YYYY-MM-DD, e.g. \"2026-10-01\""),
                );
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
