//! A workflow's `[[steps]]`: each table does exactly one thing, and what it names
//! (a channel, a template, a cadence, a stage) must exist. A `send` step may
//! carry an A/B test as `[[steps.variants]]`.

use serde::Deserialize;
use toml::Spanned;

use super::check::{Folder, Problems, at, duration, one_of, unknown_channel, window};
use crate::model::{INTENT_GRADES, STAGES, TIERS};
use crate::workflow::diagnostic::{Diagnostic, did_you_mean};
use crate::workflow::{FollowUpAfter, NotifyTo, OwnerRef, Step, Template, Variant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) send: Option<Spanned<RawSend>>,
    pub(super) notify: Option<Spanned<RawNotify>>,
    /// The step `notify` replaced: refused in new files, still run in stored sets.
    pub(super) notify_owner: Option<Spanned<RawNotifyOwner>>,
    wait: Option<Spanned<String>>,
    schedule_follow_up: Option<Spanned<RawSchedule>>,
    set_stage: Option<Spanned<String>>,
    set_tier: Option<Spanned<String>>,
    set_intent: Option<Spanned<String>>,
    tag: Option<Spanned<String>>,
    untag: Option<Spanned<String>>,
    /// `"address"` or `{ role = "name" }`.
    set_owner: Option<Spanned<toml::Value>>,
    /// An A/B test of a `send` step: `[[steps.variants]]` tables.
    pub(super) variants: Option<Spanned<Vec<Spanned<RawVariant>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVariant {
    pub(super) name: Spanned<String>,
    weight: Option<Spanned<i64>>,
    pub(super) subject: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSend {
    channel: Spanned<String>,
    pub(super) template: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    to: Spanned<String>,
    pub(super) template: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifyOwner {
    pub(super) template: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(rename = "in")]
    after: Option<Spanned<String>>,
    cadence: Option<Spanned<String>>,
    /// With `in`: the window the due time moves into (a cadence has its own `at`).
    window: Option<Spanned<toml::Value>>,
    goal: Option<String>,
}

impl RawStep {
    /// How many actions the table holds; a step does exactly one.
    fn actions(&self) -> usize {
        [
            self.send.is_some(),
            self.notify.is_some(),
            self.notify_owner.is_some(),
            self.wait.is_some(),
            self.schedule_follow_up.is_some(),
            self.set_stage.is_some(),
            self.set_tier.is_some(),
            self.set_intent.is_some(),
            self.tag.is_some(),
            self.untag.is_some(),
            self.set_owner.is_some(),
        ]
        .into_iter()
        .filter(|x| *x)
        .count()
    }
}

pub(super) fn parse_step(path: &str, folder: &Folder, raw: &Spanned<RawStep>, problems: &mut Problems) -> Option<Step> {
    let s = raw.get_ref();
    let set = s.actions();
    if set != 1 {
        problems.push(
            Diagnostic::new(path, at(raw), format!("a step does exactly one thing; this one has {set} actions"))
                .help("give each `[[steps]]` table one of: send, notify, wait, schedule_follow_up, set_stage, set_tier, set_intent, tag, untag, set_owner"),
        );
        return None;
    }
    if let Some(send) = &s.send {
        return parse_send(path, folder, send.get_ref(), s.variants.as_ref(), problems);
    }
    if let Some(variants) = &s.variants {
        problems.push(
            Diagnostic::new(path, at(variants), "only a `send` step has variants")
                .help("move the `[[steps.variants]]` tables under the `[[steps]]` table that has `send = ...`"),
        );
        return None;
    }
    if let Some(notify) = &s.notify {
        return parse_notify(path, folder, notify.get_ref(), problems);
    }
    if let Some(old) = &s.notify_owner {
        let template = &old.get_ref().template;
        problems.lint(
            Diagnostic::new(path, at(old), "`notify_owner` is now `notify`")
                .help(format!(
                    "write `notify = {{ to = \"owner\", template = \"{}\" }}` (or to = \"manager\", or \"role:<name>\" of team.toml)",
                    template.get_ref()
                )),
        );
        return template_ref(path, folder, template, None, problems).then(|| Step::Notify {
            to: NotifyTo::Owner,
            template: template.get_ref().clone(),
        });
    }
    if let Some(wait) = &s.wait {
        return duration(path, wait, problems).map(Step::Wait);
    }
    if let Some(schedule) = &s.schedule_follow_up {
        return parse_schedule(path, folder, schedule, problems);
    }
    if let Some(stage) = &s.set_stage {
        return checked(path, stage, STAGES, "stage", problems).map(Step::SetStage);
    }
    if let Some(tier) = &s.set_tier {
        return checked(path, tier, TIERS, "value tier", problems).map(Step::SetTier);
    }
    if let Some(grade) = &s.set_intent {
        return checked(path, grade, INTENT_GRADES, "intent grade", problems).map(Step::SetIntent);
    }
    if let Some(t) = &s.tag {
        return tag(path, t, problems).map(Step::Tag);
    }
    if let Some(t) = &s.untag {
        return tag(path, t, problems).map(Step::Untag);
    }
    if let Some(owner) = &s.set_owner {
        return set_owner(path, folder, owner, problems).map(Step::SetOwner);
    }
    None
}

fn parse_send(
    path: &str,
    folder: &Folder,
    send: &RawSend,
    variants: Option<&Spanned<Vec<Spanned<RawVariant>>>>,
    problems: &mut Problems,
) -> Option<Step> {
    let channel_ok = folder.channels.contains(send.channel.get_ref());
    if !channel_ok {
        problems.push(unknown_channel(path, &send.channel, folder.channels));
    }
    let template_ok = template_ref(path, folder, &send.template, Some(&send.channel), problems);
    let variants = match variants {
        Some(raw) => parse_variants(path, raw, folder.templates.get(send.template.get_ref()), problems)?,
        None => Vec::new(),
    };
    (channel_ok && template_ok).then(|| Step::Send {
        channel: send.channel.get_ref().clone(),
        template: send.template.get_ref().clone(),
        variants,
    })
}

/// Whether the template `name` exists and is for `channel` (for email, when a
/// step sends to the owner rather than on a channel of its choice).
fn template_ref(
    path: &str,
    folder: &Folder,
    name: &Spanned<String>,
    channel: Option<&Spanned<String>>,
    problems: &mut Problems,
) -> bool {
    let Some(t) = folder.templates.get(name.get_ref()) else {
        let help = did_you_mean(name.get_ref(), folder.templates.keys().map(String::as_str))
            .unwrap_or_else(|| "define it in a file under templates/".to_string());
        problems.push(Diagnostic::new(path, at(name), format!("unknown template `{}`", name.get_ref())).help(help));
        return false;
    };
    match channel {
        Some(c) if *c.get_ref() != t.channel => {
            problems.push(
                Diagnostic::new(
                    path,
                    at(name),
                    format!(
                        "template `{}` is for channel `{}`, not `{}`",
                        t.name,
                        t.channel,
                        c.get_ref()
                    ),
                )
                .help("use a template written for this channel"),
            );
            false
        }
        None if t.channel != "email" => {
            problems.push(
                Diagnostic::new(
                    path,
                    at(name),
                    format!("`notify` sends email; template `{}` is for `{}`", t.name, t.channel),
                )
                .help("use an email template"),
            );
            false
        }
        _ => true,
    }
}

fn parse_schedule(
    path: &str,
    folder: &Folder,
    schedule: &Spanned<RawSchedule>,
    problems: &mut Problems,
) -> Option<Step> {
    let r = schedule.get_ref();
    let after = match (&r.after, &r.cadence) {
        (Some(after), None) => FollowUpAfter::Fixed(duration(path, after, problems)?),
        (None, Some(cadence)) => {
            if !folder.cadences.contains_key(cadence.get_ref()) {
                let help = did_you_mean(cadence.get_ref(), folder.cadences.keys().map(String::as_str))
                    .unwrap_or_else(|| "define it in cadences.toml".to_string());
                problems.push(
                    Diagnostic::new(path, at(cadence), format!("unknown cadence `{}`", cadence.get_ref())).help(help),
                );
                return None;
            }
            FollowUpAfter::Cadence(cadence.get_ref().clone())
        }
        _ => {
            problems.push(
                Diagnostic::new(
                    path,
                    at(schedule),
                    "`schedule_follow_up` needs exactly one of `in` and `cadence`",
                )
                .help("write `{ in = \"3d\" }` or `{ cadence = \"intent\" }`"),
            );
            return None;
        }
    };
    let window = match (&r.window, &after) {
        (None, _) => None,
        (Some(w), FollowUpAfter::Fixed(_)) => Some(window(path, "window", w, folder, problems)?),
        (Some(w), FollowUpAfter::Cadence(name)) => {
            problems.push(
                Diagnostic::new(path, at(w), "a follow-up by cadence falls in the cadence's own windows").help(
                    format!(
                        "remove `window`, and give the values their windows with `at` in [{name}] of cadences.toml"
                    ),
                ),
            );
            return None;
        }
    };
    Some(Step::ScheduleFollowUp {
        after,
        window,
        goal: r.goal.clone(),
    })
}

/// The value, if it is one of `allowed`.
fn checked(
    path: &str,
    value: &Spanned<String>,
    allowed: &[&str],
    what: &str,
    problems: &mut Problems,
) -> Option<String> {
    one_of(path, value, allowed, what, problems).then(|| value.get_ref().clone())
}

fn tag(path: &str, value: &Spanned<String>, problems: &mut Problems) -> Option<String> {
    let t = value.get_ref().trim();
    if t.is_empty() {
        problems.push(Diagnostic::new(path, at(value), "a tag cannot be empty").help("write the tag's name"));
        return None;
    }
    Some(t.to_string())
}

/// `notify = { to = "owner" | "manager" | "role:<name>", template = "..." }`.
fn parse_notify(path: &str, folder: &Folder, notify: &RawNotify, problems: &mut Problems) -> Option<Step> {
    let to = match notify.to.get_ref().as_str() {
        "owner" => Some(NotifyTo::Owner),
        "manager" => Some(NotifyTo::Manager),
        other => match other.strip_prefix("role:") {
            Some(role) => role_ref(path, folder, &notify.to, role.trim(), problems).map(NotifyTo::Role),
            None => {
                problems.push(
                    Diagnostic::new(path, at(&notify.to), format!("`{other}` is not a recipient"))
                        .help("write to = \"owner\", \"manager\" (the owner's manager in team.toml) or \"role:<name>\" (a role of team.toml)"),
                );
                None
            }
        },
    };
    let template_ok = template_ref(path, folder, &notify.template, None, problems);
    let to = to?;
    template_ok.then(|| Step::Notify {
        to,
        template: notify.template.get_ref().clone(),
    })
}

/// The role, if team.toml defines it.
fn role_ref(
    path: &str,
    folder: &Folder,
    at_: &Spanned<impl Sized>,
    role: &str,
    problems: &mut Problems,
) -> Option<String> {
    if folder.team.has_role(role) {
        return Some(role.to_string());
    }
    let help = did_you_mean(role, folder.team.role_names())
        .unwrap_or_else(|| format!("define it under [roles] in team.toml, e.g. {role} = [\"someone@example.com\"]"));
    problems.push(Diagnostic::new(path, at(at_), format!("unknown role `{role}`")).help(help));
    None
}

/// `set_owner = "address"` or `set_owner = { role = "name" }`.
fn set_owner(path: &str, folder: &Folder, owner: &Spanned<toml::Value>, problems: &mut Problems) -> Option<OwnerRef> {
    let shape = || {
        Diagnostic::new(path, at(owner), "`set_owner` takes an email address or a role")
            .help("write set_owner = \"someone@example.com\" or set_owner = { role = \"key_accounts\" } (a role of team.toml)")
    };
    match owner.get_ref() {
        toml::Value::String(address) => {
            if address.parse::<lettre::Address>().is_err() {
                problems.push(
                    Diagnostic::new(path, at(owner), format!("`{address}` is not an email address"))
                        .help("an owner is the email address that gets `notify` messages, e.g. \"li.na@example.com\"; or name a role: { role = \"key_accounts\" }"),
                );
                return None;
            }
            Some(OwnerRef::Address(address.trim().to_string()))
        }
        toml::Value::Table(table) if table.len() == 1 => match table.get("role") {
            Some(toml::Value::String(role)) => role_ref(path, folder, owner, role.trim(), problems).map(OwnerRef::Role),
            _ => {
                problems.push(shape());
                None
            }
        },
        _ => {
            problems.push(shape());
            None
        }
    }
}

/// The variants of an A/B test: two or more, each named, with a positive weight
/// (names are checked once per workflow by the caller).
fn parse_variants(
    path: &str,
    raw: &Spanned<Vec<Spanned<RawVariant>>>,
    template: Option<&Template>,
    problems: &mut Problems,
) -> Option<Vec<Variant>> {
    let before = problems.len();
    if raw.get_ref().len() < 2 {
        problems.push(
            Diagnostic::new(path, at(raw), "an A/B test needs at least two variants").help(
                "add another `[[steps.variants]]` table, or remove the variants and let the template speak alone",
            ),
        );
    }
    let mut variants = Vec::new();
    for v in raw.get_ref().iter().map(Spanned::get_ref) {
        let name = v.name.get_ref().trim();
        if name.is_empty() {
            problems.push(
                Diagnostic::new(path, at(&v.name), "a variant needs a name")
                    .help("write e.g. `name = \"a\"`: the report shows each variant's figures under it"),
            );
        }
        let weight = match &v.weight {
            None => 1,
            Some(w) if (1..=1_000_000).contains(w.get_ref()) => *w.get_ref() as u32,
            Some(w) => {
                problems.push(
                    Diagnostic::new(path, at(w), format!("weight {} is not a positive whole number", w.get_ref()))
                        .help("write a weight from 1 to 1000000; each variant gets weight / total of the contacts (e.g. 50 and 50)"),
                );
                1
            }
        };
        if let (Some(subject), Some(t)) = (&v.subject, template)
            && t.languages().next().is_some()
        {
            problems.push(
                Diagnostic::new(
                    path,
                    at(subject),
                    format!(
                        "template `{}` is written in several languages; one subject would replace them all",
                        t.name
                    ),
                )
                .help("vary a template written once for everyone, or send each language from its own workflow"),
            );
        } else if let (Some(subject), Some(t)) = (&v.subject, template)
            && !t.texts.values().flatten().any(|(k, _)| k == "subject")
        {
            problems.push(
                Diagnostic::new(
                    path,
                    at(subject),
                    format!("template `{}` has no subject to vary", t.name),
                )
                .help("vary the subject of a template that has one (an email template), or remove `subject`"),
            );
        }
        let delay = v.delay.as_ref().and_then(|d| duration(path, d, problems));
        variants.push(Variant {
            name: name.to_string(),
            weight,
            subject: v.subject.as_ref().map(|s| s.get_ref().clone()),
            delay,
        });
    }
    (problems.len() == before).then_some(variants)
}
