//! The messages of a contact's runs: each outbox row with its A/B variant,
//! status, every delivery attempt with the server's reply, and the opens,
//! clicks and replies it drew.

use std::collections::HashMap;

use serde::Serialize;

use super::runs::RunRow;
use super::{Entry, Moment, What, Why};
use crate::model::Reason;
use crate::store::Conn;

#[derive(Debug, Serialize)]
pub(crate) struct MessageEntry {
    pub(crate) outbox_id: i64,
    pub(crate) run_id: Option<i64>,
    pub(crate) message_id: String,
    pub(crate) channel: String,
    pub(crate) recipient: String,
    pub(crate) category: String,
    pub(crate) subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
    /// Its status now (pending, sent, failed, dead, unknown, suppressed, dropped).
    pub(crate) status: String,
    /// Why it was not sent, where a suppression withheld it, or why it waits
    /// untried (its domain's pace, the warm-up plan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<Why>,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) engagement: Vec<Engaged>,
}

/// One delivery attempt and the server's (or plugin's) reply.
#[derive(Debug, Serialize)]
pub(crate) struct Attempt {
    pub(crate) attempt: i64,
    #[serde(flatten)]
    pub(crate) when: Moment,
    pub(crate) outcome: String,
    pub(crate) reply: String,
}

/// An open, a click (with where it went) or a reply.
#[derive(Debug, Serialize)]
pub(crate) struct Engaged {
    pub(crate) engagement: String,
    #[serde(flatten)]
    pub(crate) when: Moment,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
}

type OutboxRow = (
    i64,
    Option<i64>,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<String>,
);

/// The messages `runs` queued by `at`, under their workflows (each row names
/// the contact, the owner's notes about them too: read by the contact's index).
pub(super) async fn read(
    conn: &mut Conn,
    contact_id: i64,
    runs: &[RunRow],
    at: i64,
) -> anyhow::Result<Vec<(String, Entry)>> {
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT id, run_id, message_id, channel, recipient, category, COALESCE(message ->> 'subject', ''),
                variant, status, created_at, held_reason
         FROM outbox WHERE contact_id = ? AND run_id IN (SELECT value FROM json_each(?)) AND created_at <= ?
         ORDER BY id",
    )
    .bind(contact_id)
    .bind(serde_json::to_string(&ids)?)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    let outbox: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let mut attempts = attempts(conn, &outbox, at).await?;
    let mut engaged = engagement(conn, contact_id, at).await?;
    let workflow_of: HashMap<i64, &str> = runs.iter().map(|r| (r.id, r.workflow.as_str())).collect();
    let mut out = Vec::new();
    for (id, run_id, message_id, channel, recipient, category, subject, variant, status, created_at, held) in rows {
        let reason = match status.as_str() {
            "suppressed" => Some(Why::of(Reason::Suppressed)),
            "pending" => held.as_deref().and_then(Reason::parse).map(Why::of),
            _ => None,
        };
        let workflow = run_id.and_then(|r| workflow_of.get(&r)).copied().unwrap_or_default();
        let message = MessageEntry {
            outbox_id: id,
            run_id,
            message_id,
            channel,
            recipient,
            category,
            subject,
            variant,
            reason,
            status,
            attempts: attempts.remove(&id).unwrap_or_default(),
            engagement: engaged.remove(&Some(id)).unwrap_or_default(),
        };
        let what = What::Message(Box::new(message));
        out.push((
            workflow.to_string(),
            Entry {
                when: Moment::of(created_at),
                what,
            },
        ));
    }
    Ok(out)
}

/// The delivery attempts of `outbox` rows up to `at`, by row.
async fn attempts(conn: &mut Conn, outbox: &[i64], at: i64) -> anyhow::Result<HashMap<i64, Vec<Attempt>>> {
    let rows: Vec<(i64, i64, i64, String, String)> = sqlx::query_as(
        "SELECT outbox_id, attempt, finished_at, outcome, detail FROM deliveries
         WHERE outbox_id IN (SELECT value FROM json_each(?)) AND finished_at <= ? ORDER BY outbox_id, attempt",
    )
    .bind(serde_json::to_string(outbox)?)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_row: HashMap<i64, Vec<Attempt>> = HashMap::new();
    for (outbox_id, attempt, finished_at, outcome, reply) in rows {
        by_row.entry(outbox_id).or_default().push(Attempt {
            attempt,
            when: Moment::of(finished_at),
            outcome,
            reply,
        });
    }
    Ok(by_row)
}

/// The contact's opens, clicks and replies up to `at`, by outbox row (`None`:
/// a reply not tied to a message).
async fn engagement(conn: &mut Conn, contact_id: i64, at: i64) -> anyhow::Result<HashMap<Option<i64>, Vec<Engaged>>> {
    let rows: Vec<(Option<i64>, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT outbox_id, kind, url, at FROM engagement WHERE contact_id = ? AND at <= ? ORDER BY at, id",
    )
    .bind(contact_id)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_row: HashMap<Option<i64>, Vec<Engaged>> = HashMap::new();
    for (outbox_id, engagement, url, engaged_at) in rows {
        by_row.entry(outbox_id).or_default().push(Engaged {
            engagement,
            when: Moment::of(engaged_at),
            url,
        });
    }
    Ok(by_row)
}

/// When the contact replied, up to `at`.
pub(super) async fn replies(conn: &mut Conn, contact_id: i64, at: i64) -> anyhow::Result<Vec<Moment>> {
    let times: Vec<i64> = sqlx::query_scalar(
        "SELECT at FROM engagement WHERE contact_id = ? AND kind = 'replied' AND at <= ? ORDER BY at, id",
    )
    .bind(contact_id)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    Ok(times.into_iter().map(Moment::of).collect())
}
