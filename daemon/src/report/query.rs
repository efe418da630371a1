//! The report's queries: every figure is counted over stored rows of the
//! contacts in scope (`FILTER`) and the period.

use std::collections::HashMap;

use jiff::civil::Date;
use serde::Serialize;

use super::{Engagement, FunnelStage, Measure, Report, ReportScope, VariantEngagement, WorkflowEngagement, percent};
use crate::model::{STAGES, add_days, add_span};
use crate::store::Conn;
use crate::workflow::{ClassificationRules, Sla, Trigger, WorkflowSet};

/// The period's bounds in unix ms, [from, to).
#[derive(Debug, Clone, Copy)]
struct Period {
    from_ms: i64,
    to_ms: i64,
}

/// Binds the parameters `FILTER` and the period use (?1 to ?5) to a query.
macro_rules! bound {
    ($query:expr, $scope:expr, $period:expr) => {
        $query
            .bind(&$scope.owner)
            .bind(&$scope.tier)
            .bind(&$scope.source)
            .bind($period.from_ms)
            .bind($period.to_ms)
    };
}

/// Per workflow (and variant) over the messages to contacts queued in the period:
/// what happened to them since, up to now. A click counts as an open too: the
/// pixel of a mail read with images blocked never loads, but its link was followed.
async fn engagement(conn: &mut Conn, scope: &ReportScope, period: Period) -> anyhow::Result<Vec<WorkflowEngagement>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        workflow: String,
        variant: Option<String>,
        #[sqlx(flatten)]
        counts: Engagement,
    }
    let rows: Vec<Row> = bound!(
        sqlx::query_as(&format!(
            "SELECT r.workflow, o.variant, COUNT(*) AS sent, SUM(o.status = 'sent') AS delivered,
                SUM(o.status = 'sent' AND EXISTS (SELECT 1 FROM engagement e WHERE e.outbox_id = o.id
                                                   AND e.kind IN ('opened', 'clicked'))) AS opened,
                SUM(o.status = 'sent' AND EXISTS (SELECT 1 FROM engagement e WHERE e.outbox_id = o.id
                                                   AND e.kind = 'clicked')) AS clicked,
                SUM(o.status = 'sent' AND EXISTS (SELECT 1 FROM engagement e WHERE e.outbox_id = o.id
                                                   AND e.kind = 'replied')) AS replied,
                SUM((SELECT COUNT(*) FROM engagement e WHERE e.outbox_id = o.id AND e.kind = 'opened')) AS opens,
                SUM((SELECT COUNT(*) FROM engagement e WHERE e.outbox_id = o.id AND e.kind = 'clicked')) AS clicks,
                SUM(o.tracked) AS tracked_messages
         FROM outbox o JOIN runs r ON r.id = o.run_id JOIN contacts c ON c.id = o.contact_id
         WHERE o.created_at >= ?4 AND o.created_at < ?5 AND o.category != 'internal' AND {FILTER}
         GROUP BY r.workflow, o.variant ORDER BY r.workflow, o.variant IS NOT NULL, o.variant"
        )),
        scope,
        period
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut workflows: Vec<WorkflowEngagement> = Vec::new();
    for row in rows {
        if workflows.last().is_none_or(|w| w.workflow != row.workflow) {
            workflows.push(WorkflowEngagement {
                workflow: row.workflow.clone(),
                all: Engagement::default(),
                variants: Vec::new(),
            });
        }
        let w = workflows.last_mut().expect("pushed above");
        w.all.add(&row.counts);
        if let Some(variant) = row.variant {
            w.variants.push(VariantEngagement {
                variant,
                counts: row.counts.with_rates(),
            });
        }
    }
    for w in &mut workflows {
        w.all = std::mem::take(&mut w.all).with_rates();
    }
    Ok(workflows)
}

/// The contact filter every query shares: ?1 owner, ?2 value tier, ?3 source (NULL: any);
/// ?4 and ?5 are the period's bounds in unix ms, [from, to).
const FILTER: &str =
    "(?1 IS NULL OR c.owner = ?1) AND (?2 IS NULL OR c.value_tier = ?2) AND (?3 IS NULL OR c.source = ?3)";

/// The stage a contact was created at: the one its first stage change left, else the one it is at.
const FIRST_STAGE: &str =
    "COALESCE((SELECT f.from_value FROM contact_history f WHERE f.contact_id = c.id AND f.field = 'stage'
                                     ORDER BY f.at, f.id LIMIT 1), c.stage)";

/// Computes the report as of `now`. `rules` give the time zone and targets; `set`
/// gives the inquiry SLA (of the first enabled `inquiry_received` workflow that has one).
pub(crate) async fn build(
    conn: &mut Conn,
    rules: &ClassificationRules,
    set: &WorkflowSet,
    scope: ReportScope,
    now: i64,
) -> anyhow::Result<Report> {
    let start_ms = |d: Date| {
        d.to_zoned(rules.time_zone.clone())
            .map(|z| z.timestamp().as_millisecond())
    };
    let period = Period {
        from_ms: start_ms(scope.from)?,
        to_ms: start_ms(add_days(scope.to, jiff::Span::new().days(1)))?,
    };
    let by_stage = stage_counts(conn, &scope, period).await?;
    let (customers, churned) = by_stage
        .iter()
        .fold((0, 0), |(c, n), s| (c + s.customers, n + s.churned));
    let entered = entered_by_stage(conn, &scope, period, &by_stage).await?;
    let moved_on = moved_on_by_stage(conn, &scope, period).await?;
    let now_by_stage: HashMap<String, i64> = by_stage.into_iter().map(|s| (s.stage, s.now)).collect();
    let (funnel, bottleneck) = funnel(&now_by_stage, &entered, &moved_on);

    let mut response = response_rate(conn, &scope, period).await?;
    let mut conversion = conversion_rate(conn, rules, &scope, period).await?;
    // Churn rate: of the customers (contacts with orders), those churned now.
    let mut churn = Measure::new("churn rate", churned, customers);
    if let Some(t) = &rules.report {
        response = response.target(t.response_rate_min, true);
        conversion = conversion.target(t.conversion_rate_min, true);
        churn = churn.target(t.churn_rate_max, false);
    }
    let mut measures = vec![response, conversion, churn];
    measures.extend(sla_compliance(conn, set, &scope, period, now).await?);
    let overdue_by_owner = overdue_by_owner(conn, &scope, period, now).await?;
    let engagement = engagement(conn, &scope, period).await?;
    Ok(Report {
        scope,
        funnel,
        bottleneck: bottleneck.map(|(p, step)| format!("{step} ({p:.1} %)")),
        measures,
        overdue_by_owner,
        engagement,
    })
}

/// What one pass over the contacts tells of a stage.
#[derive(sqlx::FromRow)]
struct StageCounts {
    stage: String,
    /// Contacts at the stage now.
    now: i64,
    /// Of those, created in the period.
    created: i64,
    /// Of those, customers (with orders), and churned ones.
    customers: i64,
    churned: i64,
}

async fn stage_counts(conn: &mut Conn, scope: &ReportScope, period: Period) -> anyhow::Result<Vec<StageCounts>> {
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
async fn entered_by_stage(
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
async fn moved_on_by_stage(
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
fn funnel(
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

/// Response rate: of the contacts followed up in the period, those who answered:
/// a follow-up in the period records their feedback, or after the first of them they
/// sent an inquiry or a reply was recorded (`POST /replies`), within the period.
async fn response_rate(conn: &mut Conn, scope: &ReportScope, period: Period) -> anyhow::Result<Measure> {
    let (followed_up, responded): (i64, Option<i64>) = bound!(
        sqlx::query_as(&format!(
            "SELECT COUNT(*), SUM(feedback OR EXISTS (SELECT 1 FROM inquiries i WHERE i.contact_id = f.contact_id
                                                      AND i.received_at > f.first_at AND i.received_at < ?5)
                                   OR EXISTS (SELECT 1 FROM engagement e WHERE e.contact_id = f.contact_id
                                              AND e.kind = 'replied' AND e.at > f.first_at AND e.at < ?5))
             FROM (SELECT f.contact_id, MIN(f.at) AS first_at, MAX(f.feedback != '') AS feedback
                   FROM follow_ups f JOIN contacts c ON c.id = f.contact_id
                   WHERE f.at >= ?4 AND f.at < ?5 AND {FILTER} GROUP BY f.contact_id) f"
        )),
        scope,
        period
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Measure::new("response rate", responded.unwrap_or(0), followed_up))
}

/// A follow-up and the days (in the rules' zone) an order after it would count on.
#[derive(Serialize)]
struct ConversionWindow {
    contact_id: i64,
    first_day: String,
    last_day: String,
}

/// Conversion rate: follow-ups in the period after which the contact ordered (on the
/// follow-up's day or within the conversion window after it).
async fn conversion_rate(
    conn: &mut Conn,
    rules: &ClassificationRules,
    scope: &ReportScope,
    period: Period,
) -> anyhow::Result<Measure> {
    let follow_ups: Option<String> = bound!(
        sqlx::query_scalar(&format!(
            "SELECT json_group_array(json_array(f.contact_id, f.at))
             FROM follow_ups f JOIN contacts c ON c.id = f.contact_id
             WHERE f.at >= ?4 AND f.at < ?5 AND {FILTER}"
        )),
        scope,
        period
    )
    .fetch_one(&mut *conn)
    .await?;
    let follow_ups: Vec<(i64, i64)> = serde_json::from_str(follow_ups.as_deref().unwrap_or("[]"))?;
    let window = rules.report.as_ref().map(|r| r.conversion_window);
    let windows: Vec<ConversionWindow> = follow_ups
        .iter()
        .map(|&(contact_id, at)| {
            let day = rules.date_of(at);
            let last_day = window.map_or(day, |w| add_days(day, w));
            ConversionWindow {
                contact_id,
                first_day: day.to_string(),
                last_day: last_day.to_string(),
            }
        })
        .collect();
    let converted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM json_each(?) AS j WHERE EXISTS (
             SELECT 1 FROM orders o WHERE o.contact_id = j.value ->> 'contact_id'
                                      AND o.ordered_on >= j.value ->> 'first_day'
                                      AND o.ordered_on <= j.value ->> 'last_day')",
    )
    .bind(serde_json::to_string(&windows)?)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Measure::new("conversion rate", converted, follow_ups.len() as i64))
}

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
async fn sla_compliance(
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

/// Contacts whose next follow-up is due by `now`, per owner, most first.
async fn overdue_by_owner(
    conn: &mut Conn,
    scope: &ReportScope,
    period: Period,
    now: i64,
) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(bound!(
        sqlx::query_as(&format!(
            "SELECT c.owner, COUNT(*) FROM contacts c
             WHERE c.next_follow_up_at IS NOT NULL AND c.next_follow_up_at <= ?6 AND {FILTER} AND ?4 = ?4 AND ?5 = ?5
             GROUP BY c.owner ORDER BY COUNT(*) DESC, c.owner"
        )),
        scope,
        period
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::{self, NewContact, NewFollowUp, OrderRow, Store};

    const DAY: i64 = 86_400_000;

    /// A contact followed up five days ago, with an order on `ordered_days_ago`.
    async fn followed_up(conn: &mut Conn, rules: &ClassificationRules, email: &str, now: i64, ordered_days_ago: i64) {
        let new = NewContact {
            name: email.into(),
            email: Some(email.into()),
            ..NewContact::default()
        };
        let id = store::insert_contact(conn, &new, now - 60 * DAY).await.unwrap();
        let contact = store::contact_by_id(conn, id).await.unwrap().unwrap();
        let follow_up = NewFollowUp {
            at: Some(now - 5 * DAY),
            channel: "phone".into(),
            ..NewFollowUp::default()
        };
        store::log_follow_up(conn, &contact, &follow_up, now - 5 * DAY)
            .await
            .unwrap();
        let day = rules.date_of(now - ordered_days_ago * DAY).to_string();
        let order = OrderRow {
            external_id: email,
            contact_id: id,
            amount_minor: 100,
            currency: "CNY",
            base_amount_minor: 100,
            ordered_on: &day,
            items: "",
        };
        store::insert_orders(conn, &[order], now).await.unwrap();
    }

    /// The conversion windows go to SQLite as objects read by name: an order
    /// within the window after a follow-up counts, one before it does not.
    #[tokio::test]
    async fn conversion_counts_the_orders_within_the_window_after_each_follow_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let rules = crate::insight::load_rules(Path::new("../workflows")).unwrap();
        let set = WorkflowSet::compile(Vec::new(), &[]).unwrap();
        let now = 1_781_510_400_000; // 2026-06-15, 16:00 in Shanghai
        followed_up(&mut conn, &rules, "converted@x.test", now, 3).await;
        followed_up(&mut conn, &rules, "ordered-before@x.test", now, 10).await;
        let scope = ReportScope::new(&rules, now, None, None, [None, None, None]).unwrap();
        let report = build(&mut conn, &rules, &set, scope, now).await.unwrap();
        let conversion = report.measures.iter().find(|m| m.name == "conversion rate").unwrap();
        assert_eq!((conversion.numerator, conversion.denominator), (1, 2));
        let response = report.measures.iter().find(|m| m.name == "response rate").unwrap();
        assert_eq!((response.numerator, response.denominator), (0, 2));
    }

    /// A contact created in the period at `stage` (ten days before `now`); its id.
    async fn created_at_stage(conn: &mut Conn, email: &str, stage: &str, now: i64) -> i64 {
        let new = NewContact {
            name: email.into(),
            email: Some(email.into()),
            stage: Some(stage.into()),
            ..NewContact::default()
        };
        store::insert_contact(conn, &new, now - 10 * DAY).await.unwrap()
    }

    /// "To next" is the share of a stage's cohort that moved on to any later stage:
    /// contacts created at a later stage, or skipping one, never push it above 100 %.
    #[tokio::test]
    async fn to_next_is_the_share_of_the_cohort_that_reached_a_later_stage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let rules = crate::insight::load_rules(Path::new("../workflows")).unwrap();
        let set = WorkflowSet::compile(Vec::new(), &[]).unwrap();
        let now = 1_781_510_400_000;
        let a = created_at_stage(&mut conn, "a@x.test", "lead", now).await;
        store::set_stage(&mut conn, a, "lead", "inquiry", "cli", now - 5 * DAY)
            .await
            .unwrap();
        // Skips inquiry and intent.
        let d = created_at_stage(&mut conn, "d@x.test", "lead", now).await;
        store::set_stage(&mut conn, d, "lead", "sample", "cli", now - 5 * DAY)
            .await
            .unwrap();
        created_at_stage(&mut conn, "e@x.test", "lead", now).await;
        created_at_stage(&mut conn, "b@x.test", "inquiry", now).await;
        created_at_stage(&mut conn, "c@x.test", "inquiry", now).await;
        created_at_stage(&mut conn, "f@x.test", "inquiry", now).await;
        let scope = ReportScope::new(&rules, now, None, None, [None, None, None]).unwrap();
        let report = build(&mut conn, &rules, &set, scope, now).await.unwrap();
        let stage = |name: &str| report.funnel.iter().find(|f| f.stage == name).unwrap();
        let round = |p: Option<f64>| p.map(|p| (p * 10.0).round() / 10.0);
        assert_eq!(
            (stage("lead").entered, round(stage("lead").to_next_percent)),
            (3, Some(66.7))
        );
        assert_eq!(
            (stage("inquiry").entered, stage("inquiry").to_next_percent),
            (4, Some(0.0))
        );
        assert_eq!((stage("intent").entered, stage("intent").to_next_percent), (0, None));
        assert_eq!(
            (stage("sample").entered, stage("sample").to_next_percent),
            (1, Some(0.0))
        );
        assert!(
            report
                .funnel
                .iter()
                .all(|f| f.to_next_percent.is_none_or(|p| p <= 100.0))
        );
    }

    /// A reply recorded by `POST /replies` after a follow-up is a response; one
    /// before the follow-up is not.
    #[tokio::test]
    async fn a_recorded_reply_after_a_follow_up_is_a_response() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let rules = crate::insight::load_rules(Path::new("../workflows")).unwrap();
        let set = WorkflowSet::compile(Vec::new(), &[]).unwrap();
        let now = 1_781_510_400_000;
        followed_up(&mut conn, &rules, "replied@x.test", now, 3).await;
        followed_up(&mut conn, &rules, "replied-before@x.test", now, 3).await;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM contacts ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        store::record_reply(&mut conn, ids[0], None, now - 2 * DAY)
            .await
            .unwrap();
        store::record_reply(&mut conn, ids[1], None, now - 7 * DAY)
            .await
            .unwrap();
        let scope = ReportScope::new(&rules, now, None, None, [None, None, None]).unwrap();
        let report = build(&mut conn, &rules, &set, scope, now).await.unwrap();
        let response = report.measures.iter().find(|m| m.name == "response rate").unwrap();
        assert_eq!((response.numerator, response.denominator), (1, 2));
    }

    /// An inquiry is judged by the SLA of the tier the contact had when it came: a
    /// high-value contact answered after 10 minutes missed its 5, even though it is
    /// low value (30 minutes) now.
    #[tokio::test]
    async fn sla_compliance_judges_an_inquiry_by_the_tier_at_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let rules = crate::insight::load_rules(Path::new("../workflows")).unwrap();
        let sla = "[trigger]\non = \"inquiry_received\"\nsla = { high = \"5m\", low = \"30m\", default = \"15m\" }\n\n[[steps]]\ntag = \"inquiry\"\n";
        let set = WorkflowSet::compile(vec![("inquiry-sla.toml".into(), sla.into())], &[]).unwrap();
        let now = 1_781_510_400_000;
        const MINUTE: i64 = 60_000;
        let id = created_at_stage(&mut conn, "was-high@x.test", "inquiry", now).await;
        let contact = store::contact_by_id(&mut conn, id).await.unwrap().unwrap();
        let tier = store::Classification::ValueTier;
        store::set_classification_by(&mut conn, &contact, tier, "high", "cli", now - 3 * DAY)
            .await
            .unwrap();
        let received = now - 2 * DAY;
        store::add_inquiry(&mut conn, id, "price?", "email", received)
            .await
            .unwrap();
        sqlx::query("UPDATE inquiries SET answered_at = ?")
            .bind(received + 10 * MINUTE)
            .execute(&mut *conn)
            .await
            .unwrap();
        let contact = store::contact_by_id(&mut conn, id).await.unwrap().unwrap();
        store::set_classification_by(&mut conn, &contact, tier, "low", "classification", now - DAY)
            .await
            .unwrap();
        let scope = ReportScope::new(&rules, now, None, None, [None, None, None]).unwrap();
        let report = build(&mut conn, &rules, &set, scope, now).await.unwrap();
        let sla = report
            .measures
            .iter()
            .find(|m| m.name == "inquiry SLA compliance")
            .unwrap();
        assert_eq!(
            (sla.numerator, sla.denominator),
            (0, 1),
            "judged by high (5m), not low (30m)"
        );
    }
}
