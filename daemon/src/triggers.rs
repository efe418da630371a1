//! Events -> runs: which workflows an event starts, when the run begins, and
//! whether its trigger still holds before each step.

use serde_json::json;

use crate::store::{self, Conn, Contact, Event, Run};
use crate::workflow::{ExitOn, Trigger, Workflow, add_span};

/// Whether `workflow`'s trigger matches `event` (the `when` condition is checked separately).
pub fn matches(trigger: &Trigger, event: &Event) -> bool {
    let payload = &event.payload.0;
    let field = |name: &str| payload.get(name).and_then(|v| v.as_str());
    let from_to = |from: &Option<String>, to: &Option<String>| {
        from.as_deref().is_none_or(|f| field("from") == Some(f)) && to.as_deref().is_none_or(|t| field("to") == Some(t))
    };
    match trigger {
        Trigger::ContactCreated => event.kind == "contact_created",
        Trigger::FollowUpLogged => event.kind == "follow_up_logged",
        Trigger::FollowUpOverdue { .. } => event.kind == "follow_up_overdue",
        Trigger::InquiryReceived { .. } => event.kind == "inquiry_received",
        // Segment runs come from a pass over all contacts, not from one event.
        Trigger::Segment { .. } => false,
        Trigger::StageChanged { from, to } => {
            event.kind == "stage_changed"
                && from.as_deref().is_none_or(|f| field("from") == Some(f))
                && to.as_deref().is_none_or(|t| field("to") == Some(t))
        }
        Trigger::TierChanged { from, to } => event.kind == "tier_changed" && from_to(from, to),
        Trigger::RfmChanged { from, to } => event.kind == "rfm_changed" && from_to(from, to),
        Trigger::BecameDormant => event.kind == "became_dormant",
        Trigger::BecameActive => event.kind == "became_active",
        Trigger::FirstOrder => event.kind == "first_order",
    }
}

/// The event as conditions and templates see it (see `workflow::event_schema`).
pub fn event_context(event: &Event) -> serde_json::Value {
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
pub fn start_at(workflow: &Workflow, event: &Event, contact: &Contact) -> i64 {
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
        Trigger::InquiryReceived { sla: Some(sla) } => add_span(
            event.occurred_at,
            sla.for_tier(contact.value_tier.as_deref()),
            &contact.time_zone,
        ),
        _ => event.occurred_at,
    }
}

/// Why a run must stop before its next step, if it must: the situation that
/// started it no longer holds (the follow-up was logged, the inquiry answered),
/// or one of the workflow's exit conditions is met.
pub async fn stop_reason(
    conn: &mut Conn,
    workflow: &Workflow,
    run: &Run,
    contact: &Contact,
    contact_ctx: &serde_json::Value,
) -> anyhow::Result<Option<String>> {
    if let Some(reason) = trigger_gone(conn, &workflow.trigger, &run.context.0, contact).await? {
        return Ok(Some(reason.to_string()));
    }
    // One query for what the exit conditions need from suppressions, one for later events.
    let exits = &workflow.exit.on;
    let suppressed = if exits
        .iter()
        .any(|e| matches!(e, ExitOn::Unsubscribed | ExitOn::Bounced))
    {
        store::contact_suppression_reasons(conn, contact).await?
    } else {
        Vec::new()
    };
    let later = if exits.iter().any(|e| matches!(e, ExitOn::Replied | ExitOn::Ordered)) {
        let kinds = ["follow_up_logged", "inquiry_received", "replied", "order_placed"];
        store::event_kinds_after(conn, contact.id, run.event_id, &kinds).await?
    } else {
        Vec::new()
    };
    let suppressed_for = |reasons: &[&str]| suppressed.iter().any(|r| reasons.contains(&r.as_str()));
    let happened = |kinds: &[&str]| later.iter().any(|k| kinds.contains(&k.as_str()));
    // The weightiest reason first: an unsubscribe explains more than the stage change it came with.
    let mut exits = exits.clone();
    exits.sort_by_key(|e| ExitOn::MARKETING_DEFAULT.iter().position(|d| d == e));
    for exit in &exits {
        let met = match exit {
            ExitOn::StageChanged => run.start_stage.as_deref().is_some_and(|s| s != contact.stage),
            ExitOn::Replied => happened(&["follow_up_logged", "inquiry_received", "replied"]),
            ExitOn::Ordered => happened(&["order_placed"]),
            ExitOn::Unsubscribed => contact.consent == "withdrawn" || suppressed_for(&["unsubscribed"]),
            ExitOn::Bounced => suppressed_for(&["hard_bounce", "soft_bounce", "complaint"]),
        };
        if met {
            return Ok(Some(format!("exit condition met: {}", exit.name())));
        }
    }
    if let Some(condition) = &workflow.exit.condition {
        let event = json!({ "kind": run.context.0.get("kind").cloned().unwrap_or_default() });
        if condition.evaluate(contact_ctx, &event).unwrap_or(false) {
            return Ok(Some("exit condition met: exit_if".to_string()));
        }
    }
    Ok(None)
}

/// Whether the trigger's situation has been dealt with.
async fn trigger_gone(
    conn: &mut Conn,
    trigger: &Trigger,
    context: &serde_json::Value,
    contact: &Contact,
) -> anyhow::Result<Option<&'static str>> {
    Ok(match trigger {
        Trigger::FollowUpOverdue { .. } => {
            let due = context.get("due_at").and_then(|v| v.as_i64());
            (contact.next_follow_up_at != due || due.is_none()).then_some("a follow-up was logged since it fell due")
        }
        Trigger::InquiryReceived { sla: Some(_) } => {
            let id = context.get("inquiry_id").and_then(|v| v.as_i64()).unwrap_or(0);
            (!store::inquiry_open(conn, id).await?).then_some("the inquiry was answered")
        }
        // Reactivation is for customers still dormant: one who ordered again needs none.
        Trigger::BecameDormant => {
            (contact.behaviour.as_deref() != Some("dormant")).then_some("the customer is no longer dormant")
        }
        _ => None,
    })
}
