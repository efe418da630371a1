//! Events -> runs: which workflows an event starts, when the run begins, and
//! whether its trigger still holds before each step.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::model::{Category, Reason, add_span};
use crate::store::{self, Conn, ConsentScope, Contact, Event, EventKind, Run, RunStart, SuppressionReason};
use crate::workflow::{ExitOn, Team, Trigger, Workflow};

/// Whether `trigger` takes events of `kind`, whatever change they name.
pub(crate) fn takes_kind(trigger: &Trigger, kind: EventKind) -> bool {
    let taken = match trigger {
        Trigger::ContactCreated => EventKind::ContactCreated,
        Trigger::FollowUpLogged => EventKind::FollowUpLogged,
        Trigger::FollowUpOverdue { .. } => EventKind::FollowUpOverdue,
        Trigger::InquiryReceived { .. } => EventKind::InquiryReceived,
        // Segment runs come from a pass over all contacts, not from one event.
        Trigger::Segment { .. } => return false,
        Trigger::StageChanged { .. } => EventKind::StageChanged,
        Trigger::TierChanged { .. } => EventKind::TierChanged,
        Trigger::RfmChanged { .. } => EventKind::RfmChanged,
        Trigger::BecameDormant => EventKind::BecameDormant,
        Trigger::BecameActive => EventKind::BecameActive,
        Trigger::FirstOrder => EventKind::FirstOrder,
        Trigger::OrderPlaced => EventKind::OrderPlaced,
    };
    taken == kind
}

/// Whether `workflow`'s trigger matches `event` (the `when` condition is checked separately).
pub(crate) fn matches(trigger: &Trigger, event: &Event) -> bool {
    let payload = &event.payload.0;
    let field = |name: &str| payload.get(name).and_then(|v| v.as_str());
    let from_to = |from: &Option<String>, to: &Option<String>| {
        from.as_deref().is_none_or(|f| field("from") == Some(f)) && to.as_deref().is_none_or(|t| field("to") == Some(t))
    };
    takes_kind(trigger, event.kind)
        && match trigger {
            Trigger::StageChanged { from, to }
            | Trigger::TierChanged { from, to }
            | Trigger::RfmChanged { from, to } => from_to(from, to),
            _ => true,
        }
}

/// The event as conditions and templates see it (see `workflow::event_schema`).
pub(crate) fn event_context(event: &Event) -> serde_json::Value {
    let p = &event.payload.0;
    json!({
        "kind": event.kind,
        "from": p.get("from").and_then(|v| v.as_str()).unwrap_or(""),
        "to": p.get("to").and_then(|v| v.as_str()).unwrap_or(""),
        "inquiry_id": p.get("inquiry_id").and_then(|v| v.as_i64()).unwrap_or(0),
    })
}

/// When a run of `workflow` for `event` begins: now, or later for an overdue
/// grace period or an inquiry's response SLA.
pub(crate) fn start_at(workflow: &Workflow, event: &Event, contact: &Contact, team: &Team) -> i64 {
    match &workflow.trigger {
        Trigger::FollowUpOverdue { grace } => {
            let due = event
                .payload
                .0
                .get("due_at")
                .and_then(|v| v.as_i64())
                .unwrap_or(event.occurred_at);
            add_span(due, *grace, &contact.time_zone)
        }
        Trigger::InquiryReceived {
            sla: Some(sla),
            business_clock,
        } => {
            let allowed = sla.for_tier(contact.value_tier.as_deref());
            // On the business clock the SLA runs in the owner's working hours only.
            match team.member(&contact.owner).filter(|_| *business_clock) {
                Some(owner) => owner.add_business(event.occurred_at, allowed),
                None => add_span(event.occurred_at, allowed, &contact.time_zone),
            }
        }
        _ => event.occurred_at,
    }
}

/// What the exit checks of a batch of runs need from the database, read in
/// at most three queries for the whole batch.
#[derive(Default)]
pub(crate) struct ExitFacts {
    /// Suppression reasons and scopes by normalised address.
    suppressed: HashMap<String, Vec<(SuppressionReason, ConsentScope)>>,
    /// Kinds of the events that came after each run's own event, by run id.
    later: HashMap<i64, Vec<EventKind>>,
    /// Inquiries among those the runs wait on that are still unanswered.
    open_inquiries: HashSet<i64>,
}

/// Events that end a run through the `replied` and `ordered` exit conditions.
const EXIT_EVENTS: [EventKind; 4] = [
    EventKind::FollowUpLogged,
    EventKind::InquiryReceived,
    EventKind::Replied,
    EventKind::OrderPlaced,
];

impl ExitFacts {
    /// Reads the facts for `runs`, each with its workflow and contact, inside the
    /// transaction that applies their steps. Steps never write suppressions,
    /// those events or inquiry answers, so the facts hold for the whole batch.
    pub(crate) async fn load(conn: &mut Conn, runs: &[(&Workflow, &Run, &Contact)]) -> anyhow::Result<ExitFacts> {
        let exits = |w: &Workflow, wanted: &[ExitOn]| w.exit.on.iter().any(|e| wanted.contains(e));
        let addresses: Vec<String> = runs
            .iter()
            // Marketing steps also skip a contact who unsubscribed from marketing.
            .filter(|(w, ..)| exits(w, &[ExitOn::Unsubscribed, ExitOn::Bounced]) || w.category == Category::Marketing)
            .flat_map(|(_, _, c)| [&c.email, &c.phone])
            .flatten()
            .map(|a| store::normalise_address(a))
            .collect();
        let after: Vec<RunStart> = runs
            .iter()
            .filter(|(w, ..)| exits(w, &[ExitOn::Replied, ExitOn::Ordered]))
            .map(|(_, r, c)| RunStart {
                run_id: r.id,
                contact_id: c.id,
                event_id: r.event_id,
            })
            .collect();
        let inquiries: Vec<i64> = runs
            .iter()
            .filter(|(w, ..)| matches!(w.trigger, Trigger::InquiryReceived { sla: Some(_), .. }))
            .filter_map(|(_, r, _)| r.context.0.get("inquiry_id").and_then(|v| v.as_i64()))
            .collect();
        Ok(ExitFacts {
            suppressed: store::suppression_reasons(conn, &addresses).await?,
            later: store::event_kinds_after_runs(conn, &after, &EXIT_EVENTS).await?,
            open_inquiries: store::open_inquiries(conn, &inquiries).await?,
        })
    }
}

impl ExitFacts {
    /// The suppressions (reason, scope) of the contact's addresses.
    fn of(&self, contact: &Contact) -> impl Iterator<Item = &(SuppressionReason, ConsentScope)> {
        [&contact.email, &contact.phone]
            .into_iter()
            .flatten()
            .filter_map(|a| self.suppressed.get(&store::normalise_address(a)))
            .flatten()
    }

    /// Why marketing to the contact is withheld by a marketing-only
    /// suppression of one of their addresses, if it is (for marketing runs).
    pub(crate) fn marketing_suppressed(&self, contact: &Contact) -> Option<SuppressionReason> {
        self.of(contact)
            .find(|(_, scope)| *scope == ConsentScope::Marketing)
            .map(|(reason, _)| *reason)
    }
}

/// Why a run must stop before its next step, if it must: the situation that
/// started it no longer holds (the follow-up was logged, the inquiry answered),
/// or one of the workflow's exit conditions is met.
pub(crate) fn stop_reason(
    facts: &ExitFacts,
    workflow: &Workflow,
    run: &Run,
    contact: &Contact,
    contact_ctx: &serde_json::Value,
) -> Option<(Reason, String)> {
    if let Some(reason) = trigger_gone(facts, &workflow.trigger, &run.context.0, contact) {
        return Some((Reason::TriggerGone, reason.to_string()));
    }
    let suppressed_for = |reasons: &[SuppressionReason]| facts.of(contact).any(|(r, _)| reasons.contains(r));
    // An unsubscribe ends the runs whose messages it withholds: marketing only, or all.
    let unsubscribed = || {
        contact.consent_withholds(workflow.category)
            || facts
                .of(contact)
                .any(|&(r, scope)| r == SuppressionReason::Unsubscribed && scope.covers(workflow.category))
    };
    let later = facts.later.get(&run.id).map(Vec::as_slice).unwrap_or_default();
    let happened = |kinds: &[EventKind]| later.iter().any(|k| kinds.contains(k));
    // The weightiest reason first: an unsubscribe explains more than the stage change it came with.
    let mut exits = workflow.exit.on.clone();
    exits.sort_by_key(|e| ExitOn::MARKETING_DEFAULT.iter().position(|d| d == e));
    for exit in &exits {
        let met = match exit {
            ExitOn::StageChanged => run.start_stage.as_deref().is_some_and(|s| s != contact.stage),
            ExitOn::Replied => happened(&[
                EventKind::FollowUpLogged,
                EventKind::InquiryReceived,
                EventKind::Replied,
            ]),
            ExitOn::Ordered => happened(&[EventKind::OrderPlaced]),
            ExitOn::Unsubscribed => unsubscribed(),
            ExitOn::Bounced => suppressed_for(&[
                SuppressionReason::HardBounce,
                SuppressionReason::SoftBounce,
                SuppressionReason::Complaint,
            ]),
        };
        if met {
            return Some((exit_reason(exit), format!("exit condition met: {}", exit.name())));
        }
    }
    if let Some(condition) = &workflow.exit.condition {
        let event = json!({ "kind": run.context.0.get("kind").cloned().unwrap_or_default() });
        if condition.evaluate(contact_ctx, &event).unwrap_or(false) {
            return Some((Reason::ExitCondition, "exit condition met: exit_if".to_string()));
        }
    }
    None
}

/// The code of an exit condition met.
fn exit_reason(exit: &ExitOn) -> Reason {
    match exit {
        ExitOn::StageChanged => Reason::ExitStageChanged,
        ExitOn::Replied => Reason::ExitReplied,
        ExitOn::Ordered => Reason::ExitOrdered,
        ExitOn::Unsubscribed => Reason::ExitUnsubscribed,
        ExitOn::Bounced => Reason::ExitBounced,
    }
}

/// Whether the trigger's situation has been dealt with.
fn trigger_gone(
    facts: &ExitFacts,
    trigger: &Trigger,
    context: &serde_json::Value,
    contact: &Contact,
) -> Option<&'static str> {
    match trigger {
        Trigger::FollowUpOverdue { .. } => {
            let due = context.get("due_at").and_then(|v| v.as_i64());
            (contact.next_follow_up_at != due || due.is_none()).then_some("a follow-up was logged since it fell due")
        }
        Trigger::InquiryReceived { sla: Some(_), .. } => {
            let id = context.get("inquiry_id").and_then(|v| v.as_i64()).unwrap_or(0);
            (!facts.open_inquiries.contains(&id)).then_some("the inquiry was answered")
        }
        // Reactivation is for customers still dormant: one who ordered again needs none.
        Trigger::BecameDormant => {
            (contact.behaviour.as_deref() != Some("dormant")).then_some("the customer is no longer dormant")
        }
        _ => None,
    }
}
