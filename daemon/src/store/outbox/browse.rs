//! The outbox as the console browses it: filtered pages walked by id (keyset,
//! so the thousandth page costs what the first does), counts since a moment,
//! rows given up grouped by their error, and one message's attempts.

use serde::Serialize;

use super::OutboxStatus;
use crate::store::Conn;

/// What the outbox page is filtered by; `before` is the keyset cursor (the
/// smallest id of the page before).
#[derive(Debug, Default, Clone)]
pub(crate) struct OutboxFilter {
    pub(crate) status: Option<OutboxStatus>,
    pub(crate) workflow: Option<String>,
    pub(crate) channel: Option<String>,
    /// The recipient's domain (`example.com`), matched case-insensitively.
    pub(crate) domain: Option<String>,
    pub(crate) before: Option<i64>,
}

/// One row of the outbox page.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct OutboxLine {
    pub(crate) id: i64,
    pub(crate) status: OutboxStatus,
    pub(crate) workflow: Option<String>,
    pub(crate) channel: String,
    pub(crate) category: String,
    pub(crate) recipient: String,
    pub(crate) attempts: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) contact_id: Option<i64>,
}

/// The partial index holding the rows of each rare status, with its WHERE
/// (a query must repeat it for SQLite to use the index): a rare status's page
/// is then a range of that index instead of a walk down the whole outbox.
fn status_index_where(status: OutboxStatus) -> Option<&'static str> {
    match status {
        OutboxStatus::Unknown | OutboxStatus::Dead | OutboxStatus::Failed => {
            Some("o.status IN ('unknown', 'dead', 'failed')")
        }
        OutboxStatus::Suppressed | OutboxStatus::Dropped => Some("o.status IN ('suppressed', 'dropped')"),
        OutboxStatus::Pending => Some("o.status = 'pending'"),
        OutboxStatus::Sent => None,
    }
}

/// The lowered domain of a recipient, as index `outbox_domain` (0022) holds it.
const RECIPIENT_DOMAIN: &str = "lower(substr(o.recipient, instr(o.recipient, '@') + 1))";

/// The page's query: only the filters given, each a term an index can serve
/// (a `?N IS NULL OR ...` term would keep SQLite from any index). The status
/// is an enum's own spelling, so it is written in the text, which lets SQLite
/// match it to a partial index.
fn browse_sql(filter: &OutboxFilter) -> String {
    let mut terms = vec!["o.id < ?1".to_string()];
    if let Some(status) = filter.status {
        terms.push(format!("o.status = {}", quoted(status.as_str())));
        terms.extend(status_index_where(status).map(str::to_string));
    }
    if filter.workflow.is_some() {
        terms.push("o.workflow = ?2".into());
    }
    if filter.channel.is_some() {
        terms.push("o.channel = ?3".into());
    }
    if filter.domain.is_some() {
        terms.push(format!("{RECIPIENT_DOMAIN} = ?4"));
    }
    format!(
        "SELECT o.id, o.status, o.workflow, o.channel, o.category, o.recipient, o.attempts, o.last_error,
                o.created_at, o.contact_id
         FROM outbox o WHERE {} ORDER BY o.id DESC LIMIT ?5",
        terms.join(" AND ")
    )
}

fn quoted(text: &str) -> String {
    format!("'{text}'")
}

/// Up to `limit` rows matching `filter`, newest first, from below its cursor.
pub(crate) async fn browse_outbox(
    conn: &mut Conn,
    filter: &OutboxFilter,
    limit: i64,
) -> anyhow::Result<Vec<OutboxLine>> {
    let domain = (filter.domain.as_deref()).map(|d| d.trim().trim_start_matches('@').to_lowercase());
    Ok(sqlx::query_as(&browse_sql(filter))
        .bind(filter.before.unwrap_or(i64::MAX))
        .bind(filter.workflow.as_deref())
        .bind(filter.channel.as_deref())
        .bind(domain)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?)
}

/// Read from `outbox_created_status` (0022) alone: no row is read.
const COUNTS_SINCE: &str = "SELECT status, COUNT(*) FROM outbox WHERE created_at >= ? GROUP BY status ORDER BY status";

/// Messages queued since `since`, by status.
pub(crate) async fn outbox_counts_since(conn: &mut Conn, since: i64) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(COUNTS_SINCE).bind(since).fetch_all(&mut *conn).await?)
}

/// The pending rows found by `outbox_pending` (as many reads as messages
/// wait), not by `outbox_created_status`, which SQLite would pick for the
/// order: it walks every message sent before the oldest pending one first.
const OLDEST_PENDING: &str = "SELECT id, created_at FROM outbox INDEXED BY outbox_pending
     WHERE status = 'pending' ORDER BY created_at, id LIMIT 1";

/// The oldest message still waiting to go: its id and when it was queued.
pub(crate) async fn oldest_pending(conn: &mut Conn) -> anyhow::Result<Option<(i64, i64)>> {
    Ok(sqlx::query_as(OLDEST_PENDING).fetch_optional(&mut *conn).await?)
}

/// Rows given up or held (dead, failed, unknown) that share a status and an error.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct GivenUpGroup {
    pub(crate) status: OutboxStatus,
    pub(crate) error: String,
    pub(crate) messages: i64,
    pub(crate) newest: i64,
}

/// The groups of given-up rows, largest first; read through the partial index
/// of unsettled rows.
pub(crate) async fn given_up_groups(conn: &mut Conn) -> anyhow::Result<Vec<GivenUpGroup>> {
    Ok(sqlx::query_as(
        "SELECT status, COALESCE(last_error, '') AS error, COUNT(*) AS messages, MAX(created_at) AS newest
         FROM outbox WHERE status IN ('unknown', 'dead', 'failed')
         GROUP BY status, COALESCE(last_error, '') ORDER BY messages DESC, status, error",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// The ids of one group of `given_up_groups`.
pub(crate) async fn given_up_ids(conn: &mut Conn, status: OutboxStatus, error: &str) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM outbox WHERE status = ? AND status IN ('unknown', 'dead', 'failed')
           AND COALESCE(last_error, '') = ? ORDER BY id",
    )
    .bind(status)
    .bind(error)
    .fetch_all(&mut *conn)
    .await?)
}

/// One delivery attempt and the server's reply.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct AttemptLine {
    pub(crate) attempt: i64,
    pub(crate) started_at: i64,
    pub(crate) finished_at: i64,
    pub(crate) outcome: String,
    pub(crate) detail: String,
}

/// The attempts at outbox row `id`, in order.
pub(crate) async fn attempts_of(conn: &mut Conn, id: i64) -> anyhow::Result<Vec<AttemptLine>> {
    Ok(sqlx::query_as(
        "SELECT attempt, started_at, finished_at, outcome, detail FROM deliveries WHERE outbox_id = ? ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?)
}

/// One message with what it says, as the recipient sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct MessageLine {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub(crate) line: OutboxLine,
    pub(crate) message_id: String,
    pub(crate) message: sqlx::types::Json<super::OutboundMessage>,
}

/// Outbox row `id`, if there is one.
pub(crate) async fn outbox_message(conn: &mut Conn, id: i64) -> anyhow::Result<Option<MessageLine>> {
    Ok(sqlx::query_as(
        "SELECT o.id, o.status, o.workflow, o.channel, o.category, o.recipient, o.attempts, o.last_error,
                o.created_at, o.contact_id, o.message_id, o.message
         FROM outbox o WHERE o.id = ?",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

#[cfg(test)]
#[path = "browse_tests.rs"]
mod tests;
