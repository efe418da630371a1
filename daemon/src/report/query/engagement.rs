//! The engagement section: what happened to each workflow's messages.

use jiff::tz::TimeZone;

use super::{FILTER, Period};
use crate::report::{Engagement, ReportScope, VariantEngagement, WorkflowEngagement};
use crate::store::Conn;

/// The report's engagement section alone, for the scope's days in `time_zone`
/// (the console's workflows page).
pub(crate) async fn engagement_in(
    conn: &mut Conn,
    scope: &ReportScope,
    time_zone: &TimeZone,
) -> anyhow::Result<Vec<WorkflowEngagement>> {
    engagement(conn, scope, Period::of(scope, time_zone)?).await
}

/// Per workflow (and variant) over the messages to contacts queued in the period:
/// what happened to them since, up to now. A click counts as an open too: the
/// pixel of a mail read with images blocked never loads, but its link was followed.
pub(super) async fn engagement(
    conn: &mut Conn,
    scope: &ReportScope,
    period: Period,
) -> anyhow::Result<Vec<WorkflowEngagement>> {
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
