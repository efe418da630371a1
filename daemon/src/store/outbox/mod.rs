//! The outbox: one row per message to deliver, written in the same transaction
//! as the run step that decided to send it; and the record of every attempt.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Conn;
use super::stored_text::stored_text;
use crate::model::{Category, Reason};

stored_text! {
    /// Where an outbox row is: `pending` until an attempt settles it, then sent,
    /// given up (`failed`, `dead` after its retries), held (`unknown`: it may
    /// have gone out), `suppressed`, or `dropped` by an operator.
    pub(crate) enum OutboxStatus {
        Pending = "pending",
        Sent = "sent",
        Failed = "failed",
        Dead = "dead",
        Unknown = "unknown",
        Suppressed = "suppressed",
        Dropped = "dropped",
    }
}

stored_text! {
    /// How an attempt ended, as the record of deliveries keeps it.
    pub(crate) enum AttemptOutcome {
        Sent = "sent",
        Transient = "transient",
        Permanent = "permanent",
        Unknown = "unknown",
        Suppressed = "suppressed",
    }
}

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
    /// Marketing email: where the List-Unsubscribe headers point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Unsubscribe>,
}

/// The two List-Unsubscribe targets of RFC 2369 / RFC 8058.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unsubscribe {
    /// One-click POST target (and a confirmation page on GET).
    pub(crate) https: String,
    /// `mailto:` fallback for clients without one-click.
    pub(crate) mailto: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub(crate) id: i64,
    /// The run whose step queued it, if any.
    pub(crate) run_id: Option<i64>,
    /// That run's workflow and the contact it is about, for its log lines.
    pub(crate) workflow: Option<String>,
    pub(crate) contact_id: Option<i64>,
    pub(crate) idempotency_key: String,
    pub(crate) message_id: String,
    pub(crate) channel: String,
    pub(crate) recipient: String,
    pub(crate) message: sqlx::types::Json<OutboundMessage>,
    pub(crate) attempts: i64,
    /// Why the recipient is suppressed on this channel, if they are (checked when claimed).
    pub(crate) suppressed: Option<String>,
    /// Whether an earlier attempt ended with an unknown outcome.
    pub(crate) had_unknown: bool,
    /// Parts (HTTP requests of a plugin channel) the provider accepted, in order;
    /// after an attempt, those accepted by then.
    pub(crate) parts_done: i64,
    /// When it was queued, on the daemon's clock (a run's first step queues it
    /// in its event's transaction): where `nudge_message_latency_seconds` starts.
    pub(crate) created_at: i64,
    /// What it is for (`model::Category`): the warm-up plan counts marketing only.
    pub(crate) category: String,
    /// Attempts a provider's throttling reply ended: not charged to the retry budget.
    pub(crate) throttled: i64,
    /// The span of the step that queued it (W3C traceparent), which its
    /// delivery's span continues; None unless traces are exported.
    #[sqlx(default)]
    pub(crate) traceparent: Option<String>,
}

pub struct NewOutboxRow {
    pub idempotency_key: String,
    pub message_id: String,
    pub run_id: Option<i64>,
    /// The workflow of that run: for the log, and stored on the row so the
    /// console's workflow filter reads one index (`outbox_workflow`, 0022).
    pub workflow: Option<String>,
    pub contact_id: Option<i64>,
    pub channel: String,
    pub category: Category,
    pub message: OutboundMessage,
    /// The A/B variant of the send step this message is, if the step has variants.
    pub variant: Option<String>,
    /// Whether its opens and clicks are tracked (an HTML part with the pixel).
    pub tracked: bool,
    /// The span of the step that queues it (`OutboxRow::traceparent`).
    pub traceparent: Option<String>,
}

/// A queued row as `queue_and_finish` writes it.
#[derive(Serialize)]
struct QueuedRow<'a> {
    idempotency_key: &'a str,
    message_id: &'a str,
    run_id: Option<i64>,
    workflow: Option<&'a str>,
    contact_id: Option<i64>,
    channel: &'a str,
    recipient: &'a str,
    message: &'a OutboundMessage,
    category: Category,
    priority: i64,
    variant: Option<&'a str>,
    tracked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

impl<'a> From<&'a NewOutboxRow> for QueuedRow<'a> {
    fn from(r: &'a NewOutboxRow) -> Self {
        QueuedRow {
            idempotency_key: &r.idempotency_key,
            message_id: &r.message_id,
            run_id: r.run_id,
            workflow: r.workflow.as_deref(),
            contact_id: r.contact_id,
            channel: &r.channel,
            recipient: &r.message.to_address,
            message: &r.message,
            category: r.category,
            priority: r.category.priority(),
            variant: r.variant.as_deref(),
            tracked: r.tracked,
            traceparent: r.traceparent.as_deref(),
        }
    }
}

/// The condition under which a suppression `s` withholds an outbox row (its
/// columns prefixed by `$row`): bounces and complaints stop all mail to the
/// address; a scope (`ConsentScope::covers`) stops marketing, or every
/// customer-facing message, but never internal mail to staff.
macro_rules! suppression_covers {
    ($row:literal) => {
        concat!(
            "(s.reason IN ('hard_bounce', 'soft_bounce', 'complaint') OR ",
            $row,
            "category = 'marketing' OR (s.scope = 'all' AND ",
            $row,
            "category <> 'internal'))"
        )
    };
}

/// Queues messages (a row whose idempotency key is queued already is left
/// out) and records finished steps, moving their runs on: what a batch of steps
/// writes under the turn, in one round trip to SQLite's thread. Fails (and the
/// caller rolls back) if any run is no longer ready at the step it ran.
/// Returns the rows queued, as a claim would read them.
pub async fn queue_and_finish(
    conn: &mut Conn,
    rows: Vec<NewOutboxRow>,
    steps: &[super::FinishedStep],
    now: i64,
) -> anyhow::Result<Vec<OutboxRow>> {
    if rows.is_empty() && steps.is_empty() {
        return Ok(Vec::new());
    }
    let payload: Vec<QueuedRow> = rows.iter().map(QueuedRow::from).collect();
    // Three statements, one query; the rows queued and the runs moved come back
    // as rows of one shape, told apart by their first column. `WHERE true` lets
    // SQLite parse the upsert clause after a SELECT.
    let returned: Vec<(String, i64, Option<String>, Option<String>)> = sqlx::query_as(concat!(
        "INSERT INTO outbox (idempotency_key, message_id, run_id, workflow, contact_id, channel, recipient, message,
                             category, priority, next_attempt_at, created_at, variant, tracked, traceparent)
         SELECT value ->> 'idempotency_key', value ->> 'message_id', value ->> 'run_id', value ->> 'workflow',
                value ->> 'contact_id',
                value ->> 'channel', value ->> 'recipient', value -> 'message', value ->> 'category',
                value ->> 'priority', ?1, ?1, value ->> 'variant', value ->> 'tracked', value ->> 'traceparent'
         FROM json_each(?2) WHERE true ORDER BY key
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING 'queued', id, idempotency_key,
                   (SELECT s.reason FROM suppressions s WHERE s.address = lower(recipient)
                     AND s.channel IN ('*', channel) AND ",
        suppression_covers!(""),
        " LIMIT 1);
         INSERT INTO run_steps (run_id, step, kind, detail, reason, finished_at)
         SELECT value ->> 'run_id', value ->> 'step', value ->> 'kind', value ->> 'detail', value ->> 'reason', ?1
         FROM json_each(?3);
         UPDATE runs SET next_step = runs.next_step + 1, status = j.status, updated_at = ?1, step_errors = 0,
                         waiting_reason = NULL,
                         outcome = CASE WHEN j.status = 'done' THEN 'all steps done' ELSE runs.outcome END,
                         reason = CASE WHEN j.status = 'done' THEN 'completed' END
         FROM (SELECT value ->> 'run_id' AS id, value ->> 'step' AS step, value ->> 'status' AS status
               FROM json_each(?3)) AS j
         WHERE runs.id = j.id AND runs.status = 'ready' AND runs.next_step = j.step
         RETURNING 'moved', runs.id, NULL, NULL",
    ))
    .bind(now)
    .bind(serde_json::to_string(&payload)?)
    .bind(serde_json::to_string(steps)?)
    .fetch_all(&mut *conn)
    .await?;
    let mut queued: HashMap<String, (i64, Option<String>)> = HashMap::new();
    let mut moved = 0;
    for (what, id, key, suppressed) in returned {
        match (what.as_str(), key) {
            ("queued", Some(key)) => {
                queued.insert(key, (id, suppressed));
            }
            _ => moved += 1,
        }
    }
    anyhow::ensure!(
        moved == steps.len(),
        "{} of {} runs are no longer at the step they ran",
        steps.len() - moved,
        steps.len()
    );
    Ok(as_claimed(rows, queued, now))
}

/// The rows of `rows` that went in, by idempotency key in `queued` (their ids
/// and suppressions), as a claim would read them, in id order.
fn as_claimed(rows: Vec<NewOutboxRow>, mut queued: HashMap<String, (i64, Option<String>)>, now: i64) -> Vec<OutboxRow> {
    let mut rows: Vec<OutboxRow> = rows
        .into_iter()
        .filter_map(|r| {
            let (id, suppressed) = queued.remove(&r.idempotency_key)?;
            Some(OutboxRow {
                id,
                run_id: r.run_id,
                workflow: r.workflow,
                contact_id: r.contact_id,
                recipient: r.message.to_address.clone(),
                idempotency_key: r.idempotency_key,
                message_id: r.message_id,
                channel: r.channel,
                message: sqlx::types::Json(r.message),
                attempts: 0,
                parts_done: 0,
                suppressed,
                had_unknown: false,
                created_at: now,
                category: r.category.as_str().to_string(),
                throttled: 0,
                traceparent: r.traceparent,
            })
        })
        .collect();
    rows.sort_by_key(|r| r.id);
    rows
}

/// Due rows, most urgent category first, leaving out the rows `in_flight` and those of
/// the channels in `full_channels` (which hold all their delivery slots).
pub async fn due_outbox(
    conn: &mut Conn,
    now: i64,
    limit: i64,
    in_flight: &[i64],
    full_channels: &[String],
) -> anyhow::Result<Vec<OutboxRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT o.id, o.run_id, (SELECT r.workflow FROM runs r WHERE r.id = o.run_id) AS workflow, o.contact_id,
                o.idempotency_key, o.message_id, o.channel, o.recipient, o.message, o.attempts, o.parts_done,
                o.created_at, o.category, o.throttled, o.traceparent, (SELECT s.reason FROM suppressions s WHERE s.address = lower(o.recipient)
                  AND s.channel IN ('*', o.channel) AND ",
        suppression_covers!("o."),
        " LIMIT 1) AS suppressed,
                EXISTS (SELECT 1 FROM deliveries d WHERE d.outbox_id = o.id AND d.outcome = 'unknown') AS had_unknown
         FROM outbox o
         WHERE o.status = 'pending' AND o.next_attempt_at <= ?
           AND o.id NOT IN (SELECT value FROM json_each(?))
           AND o.channel NOT IN (SELECT value FROM json_each(?))
         ORDER BY o.priority, o.next_attempt_at, o.id LIMIT ?",
    ))
    .bind(now)
    .bind(serde_json::to_string(in_flight)?)
    .bind(serde_json::to_string(full_channels)?)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

pub(crate) async fn next_outbox_due(conn: &mut Conn) -> anyhow::Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// One finished attempt at a row, and where the row goes next.
pub struct AttemptRecord<'a> {
    pub row: &'a OutboxRow,
    pub started_at: i64,
    pub outcome: &'a Outcome,
    pub next: Next,
}

/// An attempt as `record_attempts` writes it.
#[derive(Serialize)]
struct AttemptRow<'a> {
    outbox_id: i64,
    attempt: i64,
    started_at: i64,
    outcome: AttemptOutcome,
    detail: &'a str,
    status: OutboxStatus,
    next_at: i64,
    parts_done: i64,
    /// Whether a deliveries row is written (not for a held row).
    tried: bool,
    throttled: i64,
    held_reason: Option<Reason>,
}

impl<'a> AttemptRow<'a> {
    fn new(a: &'a AttemptRecord<'a>, now: i64) -> Self {
        let attempted = !matches!(a.outcome, Outcome::Suppressed(_) | Outcome::Held { .. });
        let throttled = matches!(a.outcome, Outcome::Throttled { .. });
        AttemptRow {
            outbox_id: a.row.id,
            attempt: a.row.attempts + i64::from(attempted),
            started_at: a.started_at,
            outcome: a.outcome.recorded_as(),
            detail: a.outcome.detail(),
            status: a.next.status(),
            next_at: match a.next {
                Next::RetryAt(at) | Next::Held(at, _) => at,
                _ => now,
            },
            parts_done: a.row.parts_done,
            tried: !matches!(a.outcome, Outcome::Held { .. }),
            throttled: a.row.throttled + i64::from(throttled),
            held_reason: match a.next {
                Next::Held(_, reason) => Some(reason),
                _ => None,
            },
        }
    }
}

/// Records attempts and the rows' new states, in two statements for the batch.
pub async fn record_attempts(conn: &mut Conn, attempts: &[AttemptRecord<'_>], now: i64) -> anyhow::Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let rows: Vec<AttemptRow> = attempts.iter().map(|a| AttemptRow::new(a, now)).collect();
    // Both statements in one query: one round trip to SQLite's thread instead of two.
    sqlx::query(
        "INSERT INTO deliveries (outbox_id, attempt, started_at, finished_at, outcome, detail)
         SELECT value ->> 'outbox_id', value ->> 'attempt', value ->> 'started_at', ?1, value ->> 'outcome',
                value ->> 'detail'
         FROM json_each(?2) WHERE value ->> 'tried';
         UPDATE outbox SET status = j.status, attempts = j.attempts, next_attempt_at = j.next_at,
                           last_error = CASE WHEN j.held IS NULL THEN NULLIF(j.detail, '') ELSE last_error END,
                           parts_done = j.parts_done, throttled = j.throttled, held_reason = j.held,
                           sent_at = CASE WHEN j.status = 'sent' THEN ?1 ELSE sent_at END
         FROM (SELECT value ->> 'outbox_id' AS id, value ->> 'attempt' AS attempts, value ->> 'detail' AS detail,
                      value ->> 'status' AS status, value ->> 'next_at' AS next_at,
                      value ->> 'parts_done' AS parts_done, value ->> 'throttled' AS throttled,
                      value ->> 'held_reason' AS held
               FROM json_each(?2)) AS j
         WHERE outbox.id = j.id",
    )
    .bind(now)
    .bind(serde_json::to_string(&rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An outbox row as `nudge outbox list` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct OutboxEntry {
    pub(crate) id: i64,
    pub(crate) status: OutboxStatus,
    pub(crate) channel: String,
    pub(crate) category: String,
    pub(crate) recipient: String,
    pub(crate) message_id: String,
    pub(crate) attempts: i64,
    pub(crate) next_attempt_at: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) created_at: i64,
}

/// Rows with one of `statuses` (all rows when empty), newest first.
pub(crate) async fn list_outbox(
    conn: &mut Conn,
    statuses: &[OutboxStatus],
    limit: i64,
) -> anyhow::Result<Vec<OutboxEntry>> {
    Ok(sqlx::query_as(
        "SELECT id, status, channel, category, recipient, message_id, attempts, next_attempt_at, last_error, created_at
         FROM outbox WHERE (? = '[]' OR status IN (SELECT value FROM json_each(?))) ORDER BY id DESC LIMIT ?",
    )
    .bind(serde_json::to_string(statuses)?)
    .bind(serde_json::to_string(statuses)?)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// Rows an operator may act on: given up (failed, dead), held (unknown) or suppressed.
const SETTLED_UNSENT: &str = "('failed', 'dead', 'unknown', 'suppressed')";

/// Puts given-up or held rows back in the queue, due now, with a fresh set of attempts.
/// The Message-ID stays the same, so a receiver that got an `unknown` one can tell.
pub(crate) async fn retry_outbox(conn: &mut Conn, ids: &[i64], now: i64) -> anyhow::Result<u64> {
    Ok(sqlx::query(&format!(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?
         WHERE id IN (SELECT value FROM json_each(?)) AND status IN {SETTLED_UNSENT}"
    ))
    .bind(now)
    .bind(serde_json::to_string(ids)?)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

impl OutboxRow {
    /// The span of its run, for the log lines of its delivery.
    pub(crate) fn span(&self) -> tracing::Span {
        super::run_span(self.run_id, self.workflow.as_deref(), self.contact_id)
    }
}

/// Marks rows as dropped by an operator: pending or given-up rows, never sent ones.
pub(crate) async fn drop_outbox(conn: &mut Conn, ids: &[i64], now: i64) -> anyhow::Result<u64> {
    Ok(sqlx::query(&format!(
        "UPDATE outbox SET status = 'dropped', next_attempt_at = ?
         WHERE id IN (SELECT value FROM json_each(?)) AND (status = 'pending' OR status IN {SETTLED_UNSENT})"
    ))
    .bind(now)
    .bind(serde_json::to_string(ids)?)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Ids of rows with a status, for `--all`.
pub(crate) async fn outbox_ids_with_status(conn: &mut Conn, status: OutboxStatus) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar("SELECT id FROM outbox WHERE status = ? ORDER BY id")
        .bind(status)
        .fetch_all(&mut *conn)
        .await?)
}

/// The ids of the messages of `categories` queued for a contact on a channel
/// since `since`, and when the oldest was queued: what a frequency cap counts.
pub(crate) async fn recent_sends(
    conn: &mut Conn,
    contact_id: i64,
    channel: &str,
    categories: &[String],
    since: i64,
) -> anyhow::Result<(Vec<i64>, Option<i64>)> {
    let (ids, oldest): (String, Option<i64>) = sqlx::query_as(
        "SELECT json_group_array(id), MIN(created_at) FROM outbox
         WHERE contact_id = ? AND channel = ? AND created_at > ?
           AND category IN (SELECT value FROM json_each(?))
           AND status NOT IN ('failed', 'dead', 'suppressed', 'dropped')",
    )
    .bind(contact_id)
    .bind(channel)
    .bind(since)
    .bind(serde_json::to_string(categories)?)
    .fetch_one(&mut *conn)
    .await?;
    Ok((serde_json::from_str(&ids)?, oldest))
}

/// A message as a bounce report finds it: where it went and what it was called.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct ReturnedMessage {
    pub(crate) id: i64,
    pub(crate) recipient: String,
    pub(crate) channel: String,
    pub(crate) message_id: String,
}

/// The message of outbox row `id`.
pub(crate) async fn returned_message(conn: &mut Conn, id: i64) -> anyhow::Result<Option<ReturnedMessage>> {
    Ok(
        sqlx::query_as("SELECT id, recipient, channel, message_id FROM outbox WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The message with this Message-ID (with or without angle brackets). Its local
/// part is the row's idempotency key, which is indexed; the whole ID must match.
pub(crate) async fn returned_message_by_id(
    conn: &mut Conn,
    message_id: &str,
) -> anyhow::Result<Option<ReturnedMessage>> {
    let bare = message_id.trim().trim_start_matches('<').trim_end_matches('>');
    let Some((key, _)) = bare.rsplit_once('@') else {
        return Ok(None);
    };
    Ok(sqlx::query_as(
        "SELECT id, recipient, channel, message_id FROM outbox WHERE idempotency_key = ? AND message_id = ?",
    )
    .bind(key)
    .bind(format!("<{bare}>"))
    .fetch_optional(&mut *conn)
    .await?)
}
mod browse;
mod outcome;
mod simulation;
pub(crate) use browse::*;
pub use outcome::{Next, Outcome};
pub(crate) use simulation::*;

#[cfg(test)]
mod tests;

/// Marketing email sent since `since`: what the warm-up plan had counted of
/// today when the daemon (re)starts. Once a start: no index is worth it.
pub(crate) async fn marketing_email_sent_since(conn: &mut Conn, since: i64) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE channel = 'email' AND category = 'marketing' AND sent_at >= ?",
    )
    .bind(since)
    .fetch_one(&mut *conn)
    .await?)
}
