//! Passes of segment workflows over all contacts: each enrols the matching
//! contacts in batches, from a cursor, so a pass over millions of contacts
//! keeps memory flat, survives restarts and shows its progress.

use serde::Serialize;

use super::stored_text::stored_text;
use super::{Conn, EventKind, RunStatus};

stored_text! {
    pub(crate) enum EnrolmentStatus {
        Running = "running",
        Done = "done",
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct Enrolment {
    pub(crate) id: i64,
    pub(crate) workflow: String,
    pub(crate) set_hash: String,
    pub(crate) due_at: i64,
    pub(crate) cursor: i64,
    pub(crate) scanned: i64,
    pub(crate) enrolled: i64,
    pub(crate) total: i64,
    pub(crate) status: EnrolmentStatus,
    pub(crate) started_at: i64,
    pub(crate) finished_at: Option<i64>,
}

/// The scheduled time of the workflow's latest pass.
pub(crate) async fn last_enrolment_due(conn: &mut Conn, workflow: &str) -> anyhow::Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MAX(due_at) FROM enrolments WHERE workflow = ?")
            .bind(workflow)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Opens a pass (once per workflow and scheduled time).
pub(crate) async fn open_enrolment(
    conn: &mut Conn,
    workflow: &str,
    set_hash: &str,
    due_at: i64,
    now: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO enrolments (workflow, set_hash, due_at, total, started_at)
         VALUES (?, ?, ?, (SELECT COUNT(*) FROM contacts), ?) ON CONFLICT (workflow, due_at) DO NOTHING",
    )
    .bind(workflow)
    .bind(set_hash)
    .bind(due_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn running_enrolments(conn: &mut Conn) -> anyhow::Result<Vec<Enrolment>> {
    Ok(sqlx::query_as("SELECT * FROM enrolments WHERE status = ? ORDER BY id")
        .bind(EnrolmentStatus::Running)
        .fetch_all(&mut *conn)
        .await?)
}

pub(crate) async fn list_enrolments(conn: &mut Conn, limit: i64) -> anyhow::Result<Vec<Enrolment>> {
    Ok(sqlx::query_as("SELECT * FROM enrolments ORDER BY id DESC LIMIT ?")
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?)
}

/// Records a batch's progress; `done` closes the pass.
pub(crate) async fn advance_enrolment(
    conn: &mut Conn,
    id: i64,
    cursor: i64,
    scanned: i64,
    enrolled: i64,
    done: bool,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE enrolments SET cursor = ?, scanned = scanned + ?, enrolled = enrolled + ?,
                status = CASE WHEN ? THEN ? ELSE status END,
                finished_at = CASE WHEN ? THEN ? ELSE finished_at END
         WHERE id = ?",
    )
    .bind(cursor)
    .bind(scanned)
    .bind(enrolled)
    .bind(done)
    .bind(EnrolmentStatus::Done)
    .bind(done)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A run `enrol_contacts` starts.
#[derive(Serialize)]
struct EnrolledRun<'a> {
    contact_id: i64,
    event_id: i64,
    start_stage: Option<&'a str>,
}

/// Enrols contacts in a segment workflow: one `segment_entered` event (already
/// processed) and one ready run each, in two statements for the whole batch.
/// `contacts` are (id, current stage). Returns how many runs were created.
pub(crate) async fn enrol_contacts(
    conn: &mut Conn,
    workflow: &str,
    set_hash: &str,
    contacts: &[(i64, &str)],
    context: &serde_json::Value,
    priority: i64,
    now: i64,
) -> anyhow::Result<u64> {
    if contacts.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = contacts.iter().map(|(id, _)| *id).collect();
    let events: Vec<(i64, i64)> = sqlx::query_as(
        "INSERT INTO events (kind, contact_id, payload, occurred_at, processed_at)
         SELECT ?, value, ?, ?, ? FROM json_each(?) RETURNING id, contact_id",
    )
    .bind(EventKind::SegmentEntered)
    .bind(sqlx::types::Json(context))
    .bind(now)
    .bind(now)
    .bind(serde_json::to_string(&ids)?)
    .fetch_all(&mut *conn)
    .await?;
    let stage_of: std::collections::HashMap<i64, &str> = contacts.iter().copied().collect();
    let rows: Vec<EnrolledRun> = events
        .iter()
        .map(|&(event_id, contact_id)| EnrolledRun {
            contact_id,
            event_id,
            start_stage: stage_of.get(&contact_id).copied(),
        })
        .collect();
    let done = sqlx::query(
        "INSERT INTO runs (workflow, set_hash, contact_id, event_id, status, context, start_stage, priority,
                           started_at, updated_at)
         SELECT ?, ?, value ->> 'contact_id', value ->> 'event_id', ?, ?, value ->> 'start_stage', ?, ?, ?
         FROM json_each(?)",
    )
    .bind(workflow)
    .bind(set_hash)
    .bind(RunStatus::Ready)
    .bind(sqlx::types::Json(context))
    .bind(priority)
    .bind(now)
    .bind(now)
    .bind(serde_json::to_string(&rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::testing::{SET, TestStore, contact, run};

    #[tokio::test]
    async fn enrolled_contacts_get_a_processed_event_and_a_ready_run_field_by_field() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        // A run first, so that event, run and contact ids differ.
        let (a, b) = (
            contact(&mut conn, "a@x.test").await,
            contact(&mut conn, "b@x.test").await,
        );
        run(&mut conn, "other", a).await;
        assert!(open_enrolment(&mut conn, "seg", SET, 100, 5).await.unwrap());
        assert!(!open_enrolment(&mut conn, "seg", SET, 100, 6).await.unwrap());
        let context = json!({ "kind": "segment", "enrolment": 1 });
        let created = enrol_contacts(&mut conn, "seg", SET, &[(b, "intent"), (a, "sample")], &context, 2, 40).await;
        assert_eq!(created.unwrap(), 2);
        let priorities: Vec<i64> = sqlx::query_scalar("SELECT priority FROM runs WHERE workflow = 'seg'")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(priorities, [2, 2]);
        type Row = (
            String,
            String,
            i64,
            i64,
            RunStatus,
            String,
            Option<String>,
            i64,
            EventKind,
            Option<i64>,
        );
        let runs: Vec<Row> = sqlx::query_as(
            "SELECT r.workflow, r.set_hash, r.contact_id, r.event_id, r.status, r.context, r.start_stage, r.started_at,
                    e.kind, e.processed_at
             FROM runs r JOIN events e ON e.id = r.event_id AND e.contact_id = r.contact_id
             WHERE r.workflow = 'seg' ORDER BY r.id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let row = |contact_id: i64, event_id: i64, stage: &str| {
            let context = context.to_string();
            (
                "seg".to_string(),
                SET.to_string(),
                contact_id,
                event_id,
                RunStatus::Ready,
                context,
                Some(stage.to_string()),
                40,
                EventKind::SegmentEntered,
                Some(40),
            )
        };
        assert_eq!(runs.len(), 2);
        assert_eq!(runs, vec![row(b, runs[0].3, "intent"), row(a, runs[1].3, "sample")]);
        assert!(runs[0].3 != b && runs[1].3 != a);

        let passes = running_enrolments(&mut conn).await.unwrap();
        assert_eq!(
            passes
                .iter()
                .map(|p| (p.workflow.as_str(), p.status))
                .collect::<Vec<_>>(),
            [("seg", EnrolmentStatus::Running)]
        );
        advance_enrolment(&mut conn, passes[0].id, b, 2, 2, true, 50)
            .await
            .unwrap();
        assert!(running_enrolments(&mut conn).await.unwrap().is_empty());
        let pass = &list_enrolments(&mut conn, 1).await.unwrap()[0];
        assert_eq!(
            (pass.status, pass.cursor, pass.scanned, pass.enrolled, pass.finished_at),
            (EnrolmentStatus::Done, b, 2, 2, Some(50))
        );
        assert_eq!(last_enrolment_due(&mut conn, "seg").await.unwrap(), Some(100));
    }
}
