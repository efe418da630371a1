//! The funnel section: contacts at, entering and moving on from each stage.

use std::collections::HashMap;

use super::{FILTER, FIRST_STAGE, Period};
use crate::model::STAGES;
use crate::report::{FunnelStage, ReportScope, percent};
use crate::store::Conn;

/// What one pass over the contacts tells of a stage.
#[derive(sqlx::FromRow)]
pub(super) struct StageCounts {
    pub(super) stage: String,
    /// Contacts at the stage now.
    pub(super) now: i64,
    /// Of those, created in the period.
    pub(super) created: i64,
    /// Of those, customers (with orders), and churned ones.
    pub(super) customers: i64,
    pub(super) churned: i64,
}

pub(super) async fn stage_counts(
    conn: &mut Conn,
    scope: &ReportScope,
    period: Period,
) -> anyhow::Result<Vec<StageCounts>> {
    Ok(bound!(
        sqlx::query_as(&format!(
            "SELECT c.stage AS stage, COUNT(*) AS now, SUM(c.created_at >= ?4 AND c.created_at < ?5) AS created,
                    SUM(c.customer_since IS NOT NULL) AS customers,
                    COUNT(CASE WHEN c.behaviour = 'churned' THEN 1 END) AS churned
             FROM contacts c WHERE {FILTER} GROUP BY c.stage"
        )),
        scope,
        period
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Entries into each stage in the period: a contact created in the period enters
/// its first stage (the one its first stage change left, else the one it is at),
/// and every stage change enters a stage; a contact counts once per stage.
pub(super) async fn entered_by_stage(
    conn: &mut Conn,
    scope: &ReportScope,
    period: Period,
    by_stage: &[StageCounts],
) -> anyhow::Result<HashMap<String, i64>> {
    let mut entered: HashMap<String, i64> = by_stage.iter().map(|s| (s.stage.clone(), s.created)).collect();
    // Contacts created in the period that changed stage since: their first stage is not
    // the one they are at. Found from the stage changes, which are few beside the contacts.
    let moved: Vec<(String, String)> = bound!(
        sqlx::query_as(&format!(
            "SELECT c.stage, {FIRST_STAGE} FROM contacts c
             WHERE c.id IN (SELECT h.contact_id FROM contact_history h WHERE h.field = 'stage')
               AND c.created_at >= ?4 AND c.created_at < ?5 AND {FILTER}"
        )),
        scope,
        period
    )
    .fetch_all(&mut *conn)
    .await?;
    for (now_at, first) in moved {
        *entered.entry(first).or_default() += 1;
        *entered.entry(now_at).or_default() -= 1;
    }
    // Stage changes in the period, but not back into the stage a contact created in the
    // period entered first (counted already).
    let changes: Vec<(String, i64)> = bound!(
        sqlx::query_as(&format!(
            "SELECT h.to_value, COUNT(DISTINCT h.contact_id) FROM contact_history h JOIN contacts c ON c.id = h.contact_id
             WHERE h.field = 'stage' AND h.at >= ?4 AND h.at < ?5 AND {FILTER}
               AND NOT (c.created_at >= ?4 AND c.created_at < ?5 AND h.to_value IS {FIRST_STAGE})
             GROUP BY h.to_value"
        )),
        scope,
        period
    )
    .fetch_all(&mut *conn)
    .await?;
    for (stage, n) in changes {
        *entered.entry(stage).or_default() += n;
    }
    Ok(entered)
}

/// The funnel's steps: the stages up to the side exits (dormant, churned).
fn funnel_steps() -> &'static [&'static str] {
    &STAGES[..STAGES.iter().position(|s| *s == "dormant").unwrap_or(STAGES.len())]
}

/// Of the contacts that entered each step of the funnel in the period (as counted by
/// `entered_by_stage`), those that reached any later step after entering it, up to now.
/// A contact that skips a stage is not in its cohort; one that skips the next stage
/// moves on all the same.
pub(super) async fn moved_on_by_stage(
    conn: &mut Conn,
    scope: &ReportScope,
    period: Period,
) -> anyhow::Result<HashMap<String, i64>> {
    // Every stage change since the period began, of the contacts in scope, with the
    // stage each contact created in the period was created at: the entries into stages
    // in the period (and the later ones, which count as moving on) in order per contact.
    type Row = (i64, bool, i64, String, i64, String);
    let rows: Vec<Row> = bound!(
        sqlx::query_as(&format!(
            "SELECT c.id, c.created_at >= ?4 AND c.created_at < ?5, c.created_at, {FIRST_STAGE}, h.at, h.to_value
             FROM contact_history h JOIN contacts c ON c.id = h.contact_id
             WHERE h.field = 'stage' AND h.at >= ?4 AND h.to_value IS NOT NULL AND {FILTER}
             ORDER BY c.id, h.at, h.id"
        )),
        scope,
        period
    )
    .fetch_all(&mut *conn)
    .await?;
    let steps = funnel_steps();
    let step = |stage: &str| steps.iter().position(|s| *s == stage);
    let mut moved_on: HashMap<String, i64> = HashMap::new();
    let mut count = |entries: &[(i64, String)]| {
        // Per step entered in the period: whether a later step was entered after it.
        let mut counted = vec![false; steps.len()];
        for (i, (at, stage)) in entries.iter().enumerate() {
            let Some(s) = step(stage) else { continue };
            if *at >= period.to_ms || counted[s] {
                continue;
            }
            if entries[i + 1..]
                .iter()
                .any(|(_, later)| step(later).is_some_and(|l| l > s))
            {
                counted[s] = true;
                *moved_on.entry(steps[s].to_string()).or_default() += 1;
            }
        }
    };
    let mut entries: Vec<(i64, String)> = Vec::new();
    let mut contact = None;
    for (id, created_in_period, created_at, first, at, to) in rows {
        if contact != Some(id) {
            count(&entries);
            entries.clear();
            contact = Some(id);
            if created_in_period {
                entries.push((created_at, first));
            }
        }
        entries.push((at, to));
    }
    count(&entries);
    Ok(moved_on)
}

/// The funnel over every stage, and its step with the lowest conversion
/// (percent, `from -> to`). "To next" is the share of a step's cohort (the contacts
/// that entered it in the period) that moved on to any later step.
pub(super) fn funnel(
    now_by_stage: &HashMap<String, i64>,
    entered_by_stage: &HashMap<String, i64>,
    moved_on_by_stage: &HashMap<String, i64>,
) -> (Vec<FunnelStage>, Option<(f64, String)>) {
    let count = |by_stage: &HashMap<String, i64>, stage: &str| by_stage.get(stage).copied().unwrap_or(0);
    // The side exits (dormant, churned) are not steps of the funnel.
    let steps = funnel_steps();
    let mut funnel = Vec::new();
    let mut bottleneck: Option<(f64, String)> = None;
    for (i, stage) in STAGES.iter().enumerate() {
        let entered = count(entered_by_stage, stage);
        let next = steps.get(i + 1);
        let to_next_percent = next.and_then(|_| percent(count(moved_on_by_stage, stage), entered));
        if let (Some(p), Some(n)) = (to_next_percent, next)
            && bottleneck.as_ref().is_none_or(|(worst, _)| p < *worst)
        {
            bottleneck = Some((p, format!("{stage} -> {n}")));
        }
        funnel.push(FunnelStage {
            stage: stage.to_string(),
            now: count(now_by_stage, stage),
            entered,
            to_next_percent,
        });
    }
    (funnel, bottleneck)
}
