//! The inbox: every source writes events here; the engine turns them into runs.

use serde::Serialize;

use super::Conn;
use super::stored_text::stored_text;

stored_text! {
    /// What happened to a contact: the `kind` of an event, which triggers and
    /// exit conditions match on.
    pub(crate) enum EventKind {
        ContactCreated = "contact_created",
        StageChanged = "stage_changed",
        FollowUpLogged = "follow_up_logged",
        FollowUpOverdue = "follow_up_overdue",
        InquiryReceived = "inquiry_received",
        Replied = "replied",
        OrderPlaced = "order_placed",
        FirstOrder = "first_order",
        TierChanged = "tier_changed",
        RfmChanged = "rfm_changed",
        BecameDormant = "became_dormant",
        BecameActive = "became_active",
        SegmentEntered = "segment_entered",
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Event {
    pub(crate) id: i64,
    pub(crate) kind: EventKind,
    pub(crate) contact_id: i64,
    pub(crate) payload: sqlx::types::Json<serde_json::Value>,
    pub(crate) occurred_at: i64,
}

pub(crate) async fn insert_event(
    conn: &mut Conn,
    kind: EventKind,
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
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NewEvent {
    pub(crate) kind: EventKind,
    pub(crate) contact_id: i64,
    pub(crate) payload: serde_json::Value,
}

/// Writes events in one statement, in the order given.
pub(crate) async fn insert_events(conn: &mut Conn, events: &[NewEvent], now: i64) -> anyhow::Result<()> {
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
pub(crate) async fn last_event_id(conn: &mut Conn) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events")
        .fetch_one(&mut *conn)
        .await?)
}

pub(crate) async fn unprocessed_events(conn: &mut Conn, limit: i64) -> anyhow::Result<Vec<Event>> {
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
pub(crate) async fn events_with_contacts(
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
    let events: Vec<(i64, EventKind, i64, serde_json::Value, i64)> =
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

/// A fired follow-up timer, for `insert_overdue_events`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OverdueFollowUp {
    pub(crate) contact_id: i64,
    pub(crate) due_at: i64,
}

/// A `follow_up_overdue` event for each fired follow-up timer, in one
/// statement; a timer the contact's newer follow-up date made stale is left out.
pub(crate) async fn insert_overdue_events(conn: &mut Conn, due: &[OverdueFollowUp], now: i64) -> anyhow::Result<()> {
    if due.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO events (kind, contact_id, payload, occurred_at)
         SELECT ?, c.id, json_object('due_at', j.value ->> 'due_at'), ?
         FROM json_each(?) AS j
         JOIN contacts c ON c.id = j.value ->> 'contact_id' AND c.next_follow_up_at = j.value ->> 'due_at'
         ORDER BY j.key",
    )
    .bind(EventKind::FollowUpOverdue)
    .bind(now)
    .bind(serde_json::to_string(due)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A run and the event that started it, for `event_kinds_after_runs`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunStart {
    pub(crate) run_id: i64,
    pub(crate) contact_id: i64,
    pub(crate) event_id: i64,
}

/// For each run, which of `kinds` of events its contact has after the event
/// that started it, in one query. Event ids order what happened without
/// depending on clock resolution.
pub(crate) async fn event_kinds_after_runs(
    conn: &mut Conn,
    runs: &[RunStart],
    kinds: &[EventKind],
) -> anyhow::Result<std::collections::HashMap<i64, Vec<EventKind>>> {
    let mut later: std::collections::HashMap<i64, Vec<EventKind>> = Default::default();
    if runs.is_empty() {
        return Ok(later);
    }
    let rows: Vec<(i64, EventKind)> = sqlx::query_as(
        "SELECT DISTINCT r.value ->> 'run_id', e.kind FROM json_each(?) AS r
         JOIN events e ON e.contact_id = r.value ->> 'contact_id' AND e.id > r.value ->> 'event_id'
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::testing::{TestStore, contact, run};

    type EventRow = (EventKind, i64, String, i64, Option<i64>);

    async fn events(conn: &mut Conn) -> Vec<EventRow> {
        sqlx::query_as("SELECT kind, contact_id, payload, occurred_at, processed_at FROM events ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_batch_of_events_lands_field_by_field_in_order() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let (a, b) = (
            contact(&mut conn, "a@x.test").await,
            contact(&mut conn, "b@x.test").await,
        );
        sqlx::query("DELETE FROM events").execute(&mut *conn).await.unwrap();
        let batch = [
            NewEvent {
                kind: EventKind::OrderPlaced,
                contact_id: b,
                payload: json!({ "order_id": 7 }),
            },
            NewEvent {
                kind: EventKind::FirstOrder,
                contact_id: a,
                payload: json!({ "date": "2026-01-02" }),
            },
        ];
        insert_events(&mut conn, &batch, 40).await.unwrap();
        assert_eq!(
            events(&mut conn).await,
            vec![
                (EventKind::OrderPlaced, b, r#"{"order_id":7}"#.into(), 40, None),
                (EventKind::FirstOrder, a, r#"{"date":"2026-01-02"}"#.into(), 40, None),
            ]
        );
    }

    #[tokio::test]
    async fn an_overdue_event_is_written_only_for_the_contacts_current_follow_up() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let (a, b) = (
            contact(&mut conn, "a@x.test").await,
            contact(&mut conn, "b@x.test").await,
        );
        crate::store::set_next_follow_up(&mut conn, a, Some(500), None, 1)
            .await
            .unwrap();
        crate::store::set_next_follow_up(&mut conn, b, Some(900), None, 1)
            .await
            .unwrap();
        sqlx::query("DELETE FROM events").execute(&mut *conn).await.unwrap();
        let due = [
            OverdueFollowUp {
                contact_id: a,
                due_at: 500,
            },
            // Stale: b's follow-up moved to 900 since.
            OverdueFollowUp {
                contact_id: b,
                due_at: 700,
            },
        ];
        insert_overdue_events(&mut conn, &due, 60).await.unwrap();
        assert_eq!(
            events(&mut conn).await,
            vec![(EventKind::FollowUpOverdue, a, r#"{"due_at":500}"#.into(), 60, None)]
        );
    }

    #[tokio::test]
    async fn the_kinds_after_a_run_are_those_of_its_contact_after_its_event() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        // Distinct numbers for run, contact and event ids, so no two can stand in for each other.
        for i in 0..3 {
            contact(&mut conn, &format!("c{i}@x.test")).await;
        }
        let c = contact(&mut conn, "c@x.test").await;
        let other = contact(&mut conn, "other@x.test").await;
        let run_id = run(&mut conn, "w", c).await;
        let (event_id,): (i64,) = sqlx::query_as("SELECT event_id FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(run_id != c && c != event_id && run_id != event_id);
        for (kind, who) in [
            (EventKind::Replied, c),
            (EventKind::StageChanged, c),
            (EventKind::OrderPlaced, other),
        ] {
            insert_event(&mut conn, kind, who, &json!({}), 9).await.unwrap();
        }
        let runs = [RunStart {
            run_id,
            contact_id: c,
            event_id,
        }];
        let later = event_kinds_after_runs(&mut conn, &runs, &[EventKind::Replied, EventKind::OrderPlaced])
            .await
            .unwrap();
        assert_eq!(later, [(run_id, vec![EventKind::Replied])].into());
    }
}
