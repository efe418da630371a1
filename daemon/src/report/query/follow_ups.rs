//! The follow-up section: response and conversion rates, overdue follow-ups.

use serde::Serialize;

use super::{FILTER, Period};
use crate::model::add_days;
use crate::report::{Measure, ReportScope};
use crate::store::Conn;
use crate::workflow::ClassificationRules;

/// Response rate: of the contacts followed up in the period, those who answered:
/// a follow-up in the period records their feedback, or after the first of them they
/// sent an inquiry or a reply was recorded (`POST /replies`), within the period.
pub(super) async fn response_rate(conn: &mut Conn, scope: &ReportScope, period: Period) -> anyhow::Result<Measure> {
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
pub(super) async fn conversion_rate(
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

/// Contacts whose next follow-up is due by `now`, per owner, most first.
pub(super) async fn overdue_by_owner(
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
