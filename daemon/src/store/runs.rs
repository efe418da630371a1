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
    pub started_at: i64,
    /// The contact's stage when the run began (or when the run itself last set it).
    pub start_stage: Option<String>,
    pub step_errors: i64,
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
    pub start_stage: &'a str,
}

/// Starts a run; `None` if this workflow already ran for this event.
pub async fn insert_run(conn: &mut Conn, run: &NewRun<'_>, now: i64) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO runs (workflow, set_hash, contact_id, event_id, status, context, start_stage, started_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workflow, event_id) DO NOTHING RETURNING id",
    )
    .bind(run.workflow)
    .bind(run.set_hash)
    .bind(run.contact_id)
    .bind(run.event_id)
    .bind(run.status)
    .bind(sqlx::types::Json(run.context))
    .bind(run.start_stage)
    .bind(now)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?)
}

pub async fn load_run(conn: &mut Conn, id: i64) -> anyhow::Result<Option<Run>> {
    Ok(sqlx::query_as(
        "SELECT id, workflow, set_hash, contact_id, event_id, status, next_step, context, started_at, start_stage, step_errors
         FROM runs WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The oldest ready runs.
pub async fn ready_runs(conn: &mut Conn, limit: i64) -> anyhow::Result<Vec<Run>> {
    Ok(sqlx::query_as(
        "SELECT id, workflow, set_hash, contact_id, event_id, status, next_step, context, started_at, start_stage, step_errors
         FROM runs WHERE status = 'ready' ORDER BY id LIMIT ?",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
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
        "UPDATE runs SET next_step = next_step + 1, status = ?, updated_at = ?, step_errors = 0, waiting_reason = NULL
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

/// Puts a ready run to sleep at its current step until `until` (a send window
/// opens, a frequency cap frees up, a retry after an error), saying why.
pub async fn defer_run(conn: &mut Conn, run: &Run, until: i64, reason: &str, now: i64) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET status = 'waiting', waiting_reason = ?, updated_at = ?
         WHERE id = ? AND status = 'ready' AND next_step = ?",
    )
    .bind(reason)
    .bind(now)
    .bind(run.id)
    .bind(run.next_step)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    super::insert_timer(conn, until, super::TimerKind::ResumeRun, Some(run.id), None).await?;
    Ok(true)
}

/// Counts an error at a run's current step; returns the count so far.
pub async fn count_step_error(conn: &mut Conn, run_id: i64) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("UPDATE runs SET step_errors = step_errors + 1 WHERE id = ? RETURNING step_errors")
            .bind(run_id)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// After a run changes the contact's stage itself, that stage is its new baseline
/// (so the `stage_changed` exit condition does not stop it).
pub async fn rebase_run_stage(conn: &mut Conn, run_id: i64, stage: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE runs SET start_stage = ? WHERE id = ?")
        .bind(stage)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Contacts with ids in `first..=last` that `workflow` ever ran for (a segment enrols a contact once).
pub async fn enrolled_between(
    conn: &mut Conn,
    workflow: &str,
    first: i64,
    last: i64,
) -> anyhow::Result<std::collections::HashSet<i64>> {
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT DISTINCT contact_id FROM runs WHERE workflow = ? AND contact_id BETWEEN ? AND ?")
            .bind(workflow)
            .bind(first)
            .bind(last)
            .fetch_all(&mut *conn)
            .await?;
    Ok(ids.into_iter().collect())
}

/// When a run reached its current step: when the step before finished, or when
/// the run started. A delay counted from here survives deferrals and restarts.
pub async fn step_reached_at(conn: &mut Conn, run: &Run) -> anyhow::Result<i64> {
    if run.next_step == 0 {
        return Ok(run.started_at);
    }
    let finished: Option<i64> = sqlx::query_scalar("SELECT finished_at FROM run_steps WHERE run_id = ? AND step = ?")
        .bind(run.id)
        .bind(run.next_step - 1)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(finished.unwrap_or(run.started_at))
}
