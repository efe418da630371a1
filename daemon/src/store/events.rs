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

/// An event for `insert_events`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub contact_id: i64,
    pub payload: serde_json::Value,
}

/// Writes events in one statement, in the order given.
pub async fn insert_events(conn: &mut Conn, events: &[NewEvent<'_>], now: i64) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO events (kind, contact_id, payload, occurred_at)
         SELECT value ->> 'kind', value ->> 'contact_id', value -> 'payload', ? FROM json_each(?) ORDER BY key",
    )
    .bind(now)
    .bind(serde_json::to_string(events)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The newest event's id (0 when there is none).
pub async fn last_event_id(conn: &mut Conn) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events")
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

/// The events with ids in `ids`, in id order, and their contacts with their
/// contexts, in one statement: what taking a group's events reads under the
/// turn to write, where every round trip to SQLite's thread holds up the others.
pub async fn events_with_contacts(
    conn: &mut Conn,
    ids: std::ops::RangeInclusive<i64>,
) -> anyhow::Result<(
    Vec<Event>,
    std::collections::HashMap<i64, (super::Contact, serde_json::Value)>,
)> {
    let contacts =
        super::contacts::contacts_json_sql("WHERE c.id IN (SELECT contact_id FROM events WHERE id BETWEEN ?1 AND ?2)");
    let (events, contacts): (Option<String>, Option<String>) = sqlx::query_as(&format!(
        "SELECT (SELECT json_group_array(json_array(id, kind, contact_id, json(payload), occurred_at))
                 FROM events WHERE id BETWEEN ?1 AND ?2),
                ({contacts})"
    ))
    .bind(ids.start())
    .bind(ids.end())
    .fetch_one(&mut *conn)
    .await?;
    let events: Vec<(i64, String, i64, serde_json::Value, i64)> =
        serde_json::from_str(events.as_deref().unwrap_or("[]"))?;
    let mut events: Vec<Event> = events
        .into_iter()
        .map(|(id, kind, contact_id, payload, occurred_at)| Event {
            id,
            kind,
            contact_id,
            payload: sqlx::types::Json(payload),
            occurred_at,
        })
        .collect();
    // The aggregate need not keep the rows' order.
    events.sort_unstable_by_key(|e| e.id);
    Ok((
        events,
        super::contacts::with_contexts(super::contacts::parse_contact_rows(contacts)?),
    ))
}

/// A `follow_up_overdue` event for each fired follow-up timer, each (contact id,
/// due at), in one statement; a timer the contact's newer follow-up date made
/// stale is left out.
pub async fn insert_overdue_events(conn: &mut Conn, due: &[(i64, i64)], now: i64) -> anyhow::Result<()> {
    if due.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO events (kind, contact_id, payload, occurred_at)
         SELECT 'follow_up_overdue', c.id, json_object('due_at', j.value ->> 1), ?
         FROM json_each(?) AS j JOIN contacts c ON c.id = j.value ->> 0 AND c.next_follow_up_at = j.value ->> 1
         ORDER BY j.key",
    )
    .bind(now)
    .bind(serde_json::to_string(due)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// For each (run id, contact id, event id), which of `kinds` of events the
/// contact has after that event (the one that started the run), in one query.
/// Event ids order what happened without depending on clock resolution.
pub async fn event_kinds_after_runs(
    conn: &mut Conn,
    runs: &[(i64, i64, i64)],
    kinds: &[&str],
) -> anyhow::Result<std::collections::HashMap<i64, Vec<String>>> {
    let mut later: std::collections::HashMap<i64, Vec<String>> = Default::default();
    if runs.is_empty() {
        return Ok(later);
    }
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT DISTINCT r.value ->> 0, e.kind FROM json_each(?) AS r
         JOIN events e ON e.contact_id = r.value ->> 1 AND e.id > r.value ->> 2
         WHERE e.kind IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(runs)?)
    .bind(serde_json::to_string(kinds)?)
    .fetch_all(&mut *conn)
    .await?;
    for (run_id, kind) in rows {
        later.entry(run_id).or_default().push(kind);
    }
    Ok(later)
}
