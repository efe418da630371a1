//! The outbox: one row per message to deliver, written in the same transaction
//! as the run step that decided to send it; and the record of every attempt.

use serde::{Deserialize, Serialize};

use super::Conn;

/// A rendered message as the delivery worker needs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutboundMessage {
    pub to_name: String,
    pub to_address: String,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Channel-specific parts from the plugin (e.g. SMS template parameters).
    #[serde(default)]
    pub extra: Vec<(String, String)>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub idempotency_key: String,
    pub message_id: String,
    pub channel: String,
    pub recipient: String,
    pub message: sqlx::types::Json<OutboundMessage>,
    pub attempts: i64,
}

pub struct NewOutboxRow<'a> {
    pub idempotency_key: &'a str,
    pub message_id: &'a str,
    pub run_id: Option<i64>,
    pub contact_id: Option<i64>,
    pub channel: &'a str,
    pub message: &'a OutboundMessage,
}

/// Queues a message; a second row with the same idempotency key is ignored.
pub async fn insert_outbox(conn: &mut Conn, row: &NewOutboxRow<'_>, now: i64) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO outbox (idempotency_key, message_id, run_id, contact_id, channel, recipient, message, next_attempt_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(row.idempotency_key)
    .bind(row.message_id)
    .bind(row.run_id)
    .bind(row.contact_id)
    .bind(row.channel)
    .bind(&row.message.to_address)
    .bind(sqlx::types::Json(row.message))
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn due_outbox(conn: &mut Conn, now: i64, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
    Ok(sqlx::query_as(
        "SELECT id, idempotency_key, message_id, channel, recipient, message, attempts FROM outbox
         WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

pub async fn next_outbox_due(conn: &mut Conn) -> anyhow::Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Worth trying again later (4xx, connection trouble).
    Transient(String),
    /// Will never succeed as it is (5xx, bad address).
    Permanent(String),
}

/// Records an attempt and the row's new state; `retry_at` is when a transient failure is retried,
/// `None` when retries are exhausted.
pub async fn record_attempt(
    conn: &mut Conn,
    row: &OutboxRow,
    started_at: i64,
    outcome: &Outcome,
    retry_at: Option<i64>,
    now: i64,
) -> anyhow::Result<()> {
    let (name, detail) = match outcome {
        Outcome::Sent => ("sent", ""),
        Outcome::Transient(d) => ("transient", d.as_str()),
        Outcome::Permanent(d) => ("permanent", d.as_str()),
    };
    sqlx::query(
        "INSERT INTO deliveries (outbox_id, attempt, started_at, finished_at, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(row.id)
    .bind(row.attempts + 1)
    .bind(started_at)
    .bind(now)
    .bind(name)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    let (status, next) = match (outcome, retry_at) {
        (Outcome::Sent, _) => ("sent", now),
        (Outcome::Transient(_), Some(at)) => ("pending", at),
        _ => ("failed", now),
    };
    sqlx::query(
        "UPDATE outbox SET status = ?, attempts = attempts + 1, next_attempt_at = ?,
                           sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
    )
    .bind(status)
    .bind(next)
    .bind(status)
    .bind(now)
    .bind(row.id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
