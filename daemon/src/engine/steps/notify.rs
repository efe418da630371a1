//! `notify`: an internal email about the contact to someone on the team (the
//! owner, the owner's manager, or a member of a role of team.toml), never to the
//! contact: no unsubscribe link, consent or frequency cap. It waits for the
//! recipient's working hours (docs/domain.md §3: an SLA escalation is urgent and
//! goes at once, unless its workflow counts business time).

use super::{Action, Applying, Outcome, PreparedStep, Preparing};
use crate::engine::Engine;
use crate::engine::effects::Effects;
use crate::engine::message::Outgoing;
use crate::model::{Category, Reason};
use crate::store::Contact;
use crate::workflow::{NotifyTo, Team};

/// Who gets the message, and why not whom the step named, if so.
pub(super) struct Recipient {
    pub(super) address: Option<String>,
    /// Their name in team.toml, for the To header.
    pub(super) name: String,
    pub(super) note: Option<String>,
}

pub(super) fn recipient(team: &Team, contact: &Contact, to: &NotifyTo) -> Recipient {
    let mut recipient = addressee(team, contact, to);
    if let Some(member) = recipient.address.as_deref().and_then(|a| team.member(a)) {
        recipient.name = member.name.clone();
    }
    recipient
}

fn addressee(team: &Team, contact: &Contact, to: &NotifyTo) -> Recipient {
    let owner = Some(contact.owner.trim().to_string()).filter(|o| o.contains('@'));
    let to_address = |address: Option<String>| Recipient {
        address,
        name: String::new(),
        note: None,
    };
    match to {
        NotifyTo::Owner => to_address(owner),
        NotifyTo::Manager => match owner.as_deref().map(|o| team.manager_of(o)) {
            Some(Ok(manager)) => to_address(Some(manager.to_string())),
            Some(Err(why)) => Recipient {
                note: Some(format!("no manager: {why}; sent to the owner")),
                ..to_address(owner)
            },
            None => to_address(None),
        },
        NotifyTo::Role(role) => to_address(team.pick(role, contact.id).map(str::to_string)),
    }
}

/// Whether the message waits for its recipient's working hours: notes do, but
/// an SLA escalation (a note of a `category = "sla"` workflow) only in a workflow
/// on the business clock. Either way the message is internal in the outbox, so
/// the report never counts it as a message to the contact.
pub(super) fn held(at: &Preparing<'_>, recipient: &Recipient) -> anyhow::Result<Option<Action>> {
    let urgent = at.workflow.category == Category::Sla && !at.workflow.business_clock();
    let member = recipient.address.as_deref().and_then(|a| at.set.team.member(a));
    let (Some(member), false) = (member, urgent) else {
        return Ok(None);
    };
    let now = jiff::Timestamp::from_millisecond(at.now)?;
    let next = member.next_working(now);
    if next <= now {
        return Ok(None);
    }
    let zone = member.time_zone.iana_name().unwrap_or("UTC");
    let reason = format!(
        "outside the working hours of {}; next opening {} ({zone})",
        recipient.address.as_deref().unwrap_or_default(),
        next.to_zoned(member.time_zone.clone()).strftime("%a %Y-%m-%d %H:%M %Z"),
    );
    Ok(Some(Action::Defer {
        until: next.as_millisecond(),
        code: Reason::WorkingHours,
        reason,
    }))
}

/// The email to the recipient, if there is one.
pub(super) fn outgoing(recipient: &Recipient, to: &NotifyTo, template: &str) -> Option<Outgoing> {
    recipient.address.clone().map(|address| Outgoing {
        channel: "email".into(),
        template: template.to_string(),
        name: recipient.name.clone(),
        address,
        key_suffix: to.key_suffix(),
        withheld: None,
    })
}

pub(super) fn apply(engine: &Engine, at: &Applying, step: &PreparedStep, effects: &mut Effects) -> Outcome {
    let (Some(out), Some(rendered)) = (&step.outgoing, &step.rendered) else {
        let detail = "skipped: nobody to notify (the contact has no owner email)";
        return Outcome::Skipped(Reason::NoRecipient, detail.into());
    };
    let detail = engine.queue(at, step, out, rendered, effects);
    Outcome::Done(match &step.note {
        Some(note) => format!("{detail} ({note})"),
        None => detail,
    })
}

#[cfg(test)]
mod tests;
