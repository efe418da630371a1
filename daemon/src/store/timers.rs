//! Timers: rows with a due time, fired by the scheduler, which survive restarts.

use serde::Serialize;

use super::Conn;
use super::stored_text::stored_text;

stored_text! {
    pub(crate) enum TimerKind {
        /// A run's wait (or delayed start) is over.
        ResumeRun = "resume_run",
        /// A contact's next follow-up time has come.
        FollowUpDue = "follow_up_due",
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Timer {
    pub(crate) id: i64,
    pub(crate) due_at: i64,
    pub(crate) kind: TimerKind,
    pub(crate) run_id: Option<i64>,
    pub(crate) contact_id: Option<i64>,
}

pub(crate) async fn due_timers(conn: &mut Conn, now: i64, limit: i64) -> anyhow::Result<Vec<Timer>> {
    Ok(sqlx::query_as(
        "SELECT id, due_at, kind, run_id, contact_id FROM timers WHERE fired_at IS NULL AND due_at <= ? ORDER BY due_at, id LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// Marks timers fired; returns the ids that had not fired yet (only their effects may happen).
pub(crate) async fn mark_timers_fired(conn: &mut Conn, ids: &[i64], now: i64) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "UPDATE timers SET fired_at = ? WHERE id IN (SELECT value FROM json_each(?)) AND fired_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(serde_json::to_string(ids)?)
    .fetch_all(&mut *conn)
    .await?)
}

/// When a waiting run resumes, for `insert_run_timers`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunTimer {
    pub(crate) run_id: i64,
    pub(crate) due_at: i64,
}

/// Timers that resume runs, in one statement.
pub(crate) async fn insert_run_timers(conn: &mut Conn, timers: &[RunTimer]) -> anyhow::Result<()> {
    if timers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO timers (due_at, kind, run_id) SELECT value ->> 'due_at', ?, value ->> 'run_id' FROM json_each(?)",
    )
    .bind(TimerKind::ResumeRun)
    .bind(serde_json::to_string(timers)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn next_timer_due(conn: &mut Conn) -> anyhow::Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(due_at) FROM timers WHERE fired_at IS NULL")
            .fetch_one(&mut *conn)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{TestStore, contact, run};

    #[tokio::test]
    async fn run_timers_land_field_by_field_and_fire_once() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let c = contact(&mut conn, "a@x.test").await;
        let (r1, r2) = (run(&mut conn, "w1", c).await, run(&mut conn, "w2", c).await);
        let timers = [
            RunTimer {
                run_id: r2,
                due_at: 300,
            },
            RunTimer {
                run_id: r1,
                due_at: 100,
            },
        ];
        insert_run_timers(&mut conn, &timers).await.unwrap();
        crate::store::set_next_follow_up(&mut conn, c, Some(200), None, 1)
            .await
            .unwrap();
        let due = due_timers(&mut conn, 250, 10).await.unwrap();
        let due: Vec<(i64, TimerKind, Option<i64>, Option<i64>)> =
            due.iter().map(|t| (t.due_at, t.kind, t.run_id, t.contact_id)).collect();
        assert_eq!(
            due,
            vec![
                (100, TimerKind::ResumeRun, Some(r1), None),
                (200, TimerKind::FollowUpDue, None, Some(c))
            ]
        );
        assert_eq!(next_timer_due(&mut conn).await.unwrap(), Some(100));
        let ids: Vec<i64> = due_timers(&mut conn, 1_000, 10)
            .await
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(mark_timers_fired(&mut conn, &ids, 5).await.unwrap().len(), 3);
        assert!(mark_timers_fired(&mut conn, &ids, 6).await.unwrap().is_empty());
        assert_eq!(next_timer_due(&mut conn).await.unwrap(), None);
    }
}
