//! The inbox: every source writes events here; the engine turns them into runs.

use super::Conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub contact_id: i64,
    pub payload: sqlx::types::Json<serde_json::Value>,
    pub occurred_at: i64,
}

pub async fn insert_event(
    conn: &mut Conn,
    kind: &str,
    contact_id: i64,
    payload: &serde_json::Value,
    now: i64,
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO events (kind, contact_id, payload, occurred_at) VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(kind)
    .bind(contact_id)
    .bind(sqlx::types::Json(payload))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?)
}

pub async fn unprocessed_events(conn: &mut Conn, limit: i64) -> anyhow::Result<Vec<Event>> {
    Ok(sqlx::query_as(
        "SELECT id, kind, contact_id, payload, occurred_at FROM events WHERE processed_at IS NULL ORDER BY id LIMIT ?",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

pub async fn mark_event_processed(conn: &mut Conn, id: i64, now: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE events SET processed_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Whether the contact answered since `since`: a follow-up logged or an inquiry received.
pub async fn replied_since(conn: &mut Conn, contact_id: i64, since: i64) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM follow_ups WHERE contact_id = ? AND logged_at > ?)
             OR EXISTS (SELECT 1 FROM inquiries WHERE contact_id = ? AND received_at > ?)",
    )
    .bind(contact_id)
    .bind(since)
    .bind(contact_id)
    .bind(since)
    .fetch_one(&mut *conn)
    .await?)
}

/// Whether the contact placed an order since `since` (an `order_placed` event).
pub async fn ordered_since(conn: &mut Conn, contact_id: i64, since: i64) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE contact_id = ? AND kind = 'order_placed' AND occurred_at > ?)",
    )
    .bind(contact_id)
    .bind(since)
    .fetch_one(&mut *conn)
    .await?)
}
