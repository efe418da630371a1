//! Workflow runs and the record of their finished steps.

use super::Conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub id: i64,
    pub workflow: String,
    pub set_hash: String,
    pub contact_id: i64,
    pub event_id: i64,
    pub status: String,
    pub next_step: i64,
    pub context: sqlx::types::Json<serde_json::Value>,
}

/// A run about to start.
pub struct NewRun<'a> {
    pub workflow: &'a str,
    pub set_hash: &'a str,
    pub contact_id: i64,
    pub event_id: i64,
    /// `ready`, or `waiting` for a delayed start.
    pub status: &'a str,
    /// The trigger's data (the event payload and kind).
    pub context: &'a serde_json::Value,
}

/// Starts a run; `None` if this workflow already ran for this event.
pub async fn insert_run(conn: &mut Conn, run: &NewRun<'_>, now: i64) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO runs (workflow, set_hash, contact_id, event_id, status, context, started_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workflow, event_id) DO NOTHING RETURNING id",
    )
    .bind(run.workflow)
    .bind(run.set_hash)
    .bind(run.contact_id)
    .bind(run.event_id)
    .bind(run.status)
    .bind(sqlx::types::Json(run.context))
    .bind(now)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?)
}

pub async fn load_run(conn: &mut Conn, id: i64) -> anyhow::Result<Option<Run>> {
    Ok(sqlx::query_as(
        "SELECT id, workflow, set_hash, contact_id, event_id, status, next_step, context FROM runs WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

pub async fn ready_runs(conn: &mut Conn, limit: i64) -> anyhow::Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM runs WHERE status = 'ready' ORDER BY id LIMIT ?")
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// Records step `step` as finished and moves the run on to the next one, with
/// `status`; false (and nothing to commit) if the run is no longer at that step.
pub async fn finish_step(
    conn: &mut Conn,
    run: &Run,
    kind: &str,
    detail: &str,
    status: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let moved = sqlx::query(
        "UPDATE runs SET next_step = next_step + 1, status = ?, updated_at = ?
         WHERE id = ? AND status = 'ready' AND next_step = ?",
    )
    .bind(status)
    .bind(now)
    .bind(run.id)
    .bind(run.next_step)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO run_steps (run_id, step, kind, detail, finished_at) VALUES (?, ?, ?, ?, ?)")
        .bind(run.id)
        .bind(run.next_step)
        .bind(kind)
        .bind(detail)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Ends a run: `done`, `cancelled` (its trigger no longer holds) or `failed`.
pub async fn end_run(conn: &mut Conn, run_id: i64, status: &str, outcome: &str, now: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE runs SET status = ?, outcome = ?, updated_at = ? WHERE id = ?")
        .bind(status)
        .bind(outcome)
        .bind(now)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Wakes a waiting run; false if it was not waiting (cancelled meanwhile, or woken already).
pub async fn wake_run(conn: &mut Conn, run_id: i64, now: i64) -> anyhow::Result<bool> {
    let done = sqlx::query("UPDATE runs SET status = 'ready', updated_at = ? WHERE id = ? AND status = 'waiting'")
        .bind(now)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
