//! The report's queries: every figure is counted over stored rows of the
//! contacts in scope (`FILTER`) and the period. One file per section of the
//! report: the funnel, the follow-up rates (response, conversion, overdue),
//! the inquiry SLA and the engagement of workflows; here, what they share and
//! the report they make together.

use std::collections::HashMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::{Measure, Report, ReportScope};
use crate::model::add_days;
use crate::store::Conn;
use crate::workflow::{ClassificationRules, WorkflowSet};

/// The period's bounds in unix ms, [from, to).
#[derive(Debug, Clone, Copy)]
struct Period {
    from_ms: i64,
    to_ms: i64,
}

impl Period {
    /// The scope's days in `time_zone`: from the start of its first to the start of the day after its last.
    fn of(scope: &ReportScope, time_zone: &TimeZone) -> anyhow::Result<Period> {
        let start_ms = |d: Date| d.to_zoned(time_zone.clone()).map(|z| z.timestamp().as_millisecond());
        Ok(Period {
            from_ms: start_ms(scope.from)?,
            to_ms: start_ms(add_days(scope.to, jiff::Span::new().days(1)))?,
        })
    }
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

mod engagement;
mod follow_ups;
mod funnel;
mod sla;
#[cfg(test)]
mod tests;

use engagement::engagement;
pub(crate) use engagement::engagement_in;
use follow_ups::{conversion_rate, overdue_by_owner, response_rate};
use funnel::{entered_by_stage, funnel, moved_on_by_stage, stage_counts};
use sla::sla_compliance;

/// The contact filter every query shares: ?1 owner, ?2 value tier, ?3 source (NULL: any);
/// ?4 and ?5 are the period's bounds in unix ms, [from, to).
pub(super) const FILTER: &str =
    "(?1 IS NULL OR c.owner = ?1) AND (?2 IS NULL OR c.value_tier = ?2) AND (?3 IS NULL OR c.source = ?3)";

/// The stage a contact was created at: the one its first stage change left, else the one it is at.
pub(super) const FIRST_STAGE: &str =
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
    let period = Period::of(&scope, &rules.time_zone)?;
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
