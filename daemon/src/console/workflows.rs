//! The workflows page, read-only (the files are the source of truth): each
//! workflow of the set in force with its trigger (as `explain` names it), its
//! category, and its runs not done by state (the runs done are counted for all
//! workflows: per workflow that is a walk of millions); then its messages of
//! the last days sent, delivered, opened, clicked and replied, in all and per
//! A/B variant, as the report counts them (`report::engagement_in`).

use axum::extract::State;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::auth::Viewer;
use super::{ConsoleState, Page};
use crate::app::explain;
use crate::model::sub_days;
use crate::report::{self, Engagement, ReportScope, WorkflowEngagement};
use crate::store;

/// The days of messages shown, today's included: the report's week. A longer
/// period is the report's (`/console/reports`), which reads as many messages as it covers.
const DAYS: i64 = 7;

#[derive(Serialize)]
struct WorkflowRow {
    name: String,
    trigger: String,
    category: String,
    enabled: bool,
    runs: Vec<(String, i64)>,
}

/// One line of the messages table: a workflow's messages in all, or one A/B variant's.
#[derive(Serialize)]
struct EngagementLine<'a> {
    workflow: &'a str,
    /// Empty on the workflow's line.
    variant: &'a str,
    counts: &'a Engagement,
}

fn engagement_lines(messages: &[WorkflowEngagement]) -> Vec<EngagementLine<'_>> {
    let mut lines = Vec::new();
    for w in messages {
        lines.push(EngagementLine {
            workflow: &w.workflow,
            variant: "",
            counts: &w.all,
        });
        lines.extend(w.variants.iter().map(|v| EngagementLine {
            workflow: &w.workflow,
            variant: &v.variant,
            counts: &v.counts,
        }));
    }
    lines
}

/// The last `DAYS` days up to today in `time_zone`, all contacts.
fn last_days(now: i64, time_zone: &TimeZone) -> anyhow::Result<ReportScope> {
    let to = jiff::Timestamp::from_millisecond(now)?
        .to_zoned(time_zone.clone())
        .date();
    Ok(ReportScope {
        from: sub_days(to, jiff::Span::new().days(DAYS - 1)),
        to,
        owner: None,
        tier: None,
        source: None,
    })
}

pub(super) async fn workflows(State(s): State<ConsoleState>, viewer: Viewer) -> Page {
    let set = s.engine.current();
    // The report's days: those of the classification rules' time zone when there are rules.
    let time_zone = (set.classification.as_ref()).map_or(TimeZone::UTC, |rules| rules.time_zone.clone());
    let scope = last_days(s.clock.now_ms(), &time_zone)?;
    let mut conn = s.store.pool.acquire().await?;
    let known = explain::known_workflows(&mut conn).await?;
    let (runs, done) = store::runs_by_workflow(&mut conn).await?;
    let messages: Vec<WorkflowEngagement> = report::engagement_in(&mut conn, &scope, &time_zone).await?;
    drop(conn);
    let rows: Vec<WorkflowRow> = (set.workflows.iter())
        .map(|w| WorkflowRow {
            name: w.name.clone(),
            trigger: (known.iter().find(|k| k.name == w.name))
                .map(|k| k.trigger.clone())
                .unwrap_or_default(),
            category: w.category.as_str().to_string(),
            enabled: w.enabled,
            runs: (runs.iter())
                .filter(|(name, ..)| *name == w.name)
                .map(|(_, status, n)| (status.clone(), *n))
                .collect(),
        })
        .collect();
    let values = serde_json::json!({
        "page": "workflows",
        "rows": rows,
        "done": done,
        "messages": engagement_lines(&messages),
        "from": scope.from.to_string(),
        "to": scope.to.to_string(),
        "time_zone": time_zone.iana_name().unwrap_or("UTC"),
    });
    s.render("workflows.html", &viewer, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A week of days, today's included, in the rules' time zone: at 23:30 UTC
    /// it is already the next day in Shanghai.
    #[test]
    fn the_days_are_the_last_week_in_the_time_zone() {
        let now = jiff::Timestamp::from_second(1_795_390_200).unwrap(); // 2026-11-22T23:30:00Z
        let utc = last_days(now.as_millisecond(), &TimeZone::UTC).unwrap();
        assert_eq!(
            (utc.from.to_string(), utc.to.to_string()),
            ("2026-11-16".into(), "2026-11-22".into())
        );
        let shanghai = TimeZone::get("Asia/Shanghai").unwrap();
        let there = last_days(now.as_millisecond(), &shanghai).unwrap();
        assert_eq!(
            (there.from.to_string(), there.to.to_string()),
            ("2026-11-17".into(), "2026-11-23".into())
        );
    }
}
