//! The inquiry SLA section: inquiries answered within their tier's SLA.

use super::{FILTER, Period};
use crate::model::add_span;
use crate::report::{Measure, ReportScope};
use crate::store::Conn;
use crate::workflow::{Sla, Trigger, WorkflowSet};

/// The value tier of contact `c` when inquiry `i` was received: the last change at or
/// before it, else what the first later change changed from, else the tier now.
const TIER_AT_RECEIPT: &str = "CASE
    WHEN EXISTS (SELECT 1 FROM contact_history h WHERE h.contact_id = c.id AND h.field = 'value_tier' AND h.at <= i.received_at)
    THEN (SELECT h.to_value FROM contact_history h WHERE h.contact_id = c.id AND h.field = 'value_tier' AND h.at <= i.received_at ORDER BY h.at DESC, h.id DESC LIMIT 1)
    WHEN EXISTS (SELECT 1 FROM contact_history h WHERE h.contact_id = c.id AND h.field = 'value_tier' AND h.at > i.received_at)
    THEN (SELECT h.from_value FROM contact_history h WHERE h.contact_id = c.id AND h.field = 'value_tier' AND h.at > i.received_at ORDER BY h.at, h.id LIMIT 1)
    ELSE c.value_tier
END";

/// Inquiry SLA: inquiries received in the period that were answered within the SLA of
/// the value tier the contact had when the inquiry came (as the escalation judged it,
/// from the contact's history), counted on the clock of the workflow that watched them
/// (`sla_clock = "business"`: the owner's working hours in team.toml); those still
/// within it are pending and left out. None without an SLA.
pub(super) async fn sla_compliance(
    conn: &mut Conn,
    set: &WorkflowSet,
    scope: &ReportScope,
    period: Period,
    now: i64,
) -> anyhow::Result<Option<Measure>> {
    let sla = set.workflows.iter().find_map(|w| match &w.trigger {
        Trigger::InquiryReceived {
            sla: Some(sla),
            business_clock,
        } if w.enabled => Some((sla.clone(), *business_clock)),
        _ => None,
    });
    let inquiries: Vec<(i64, Option<i64>, Option<String>, String)> = bound!(
        sqlx::query_as(&format!(
            "SELECT i.received_at, i.answered_at, {TIER_AT_RECEIPT}, c.owner
             FROM inquiries i JOIN contacts c ON c.id = i.contact_id
             WHERE i.received_at >= ?4 AND i.received_at < ?5 AND {FILTER}"
        )),
        scope,
        period
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(sla.map(|(sla, business): (Sla, bool)| {
        let (mut in_time, mut missed, mut pending) = (0, 0, 0);
        for (received, answered, tier, owner) in &inquiries {
            let allowed = sla.for_tier(tier.as_deref());
            let deadline = match set.team.member(owner).filter(|_| business) {
                Some(owner) => owner.add_business(*received, allowed),
                None => add_span(*received, allowed, "UTC"),
            };
            match answered {
                Some(a) if *a <= deadline => in_time += 1,
                None if now <= deadline => pending += 1,
                _ => missed += 1,
            }
        }
        let mut m = Measure::new("inquiry SLA compliance", in_time, in_time + missed);
        m.pending = Some(pending);
        m
    }))
}
