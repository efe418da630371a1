//! Run history as an operator reads it: runs page by page, newest first, and
//! one run with each step's effect, its timers and the messages it queued.

use serde::Serialize;

use super::{AttemptOutcome, Conn, OutboxStatus, RunStatus, TimerKind};

/// One run in a list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct RunSummary {
    pub(crate) id: i64,
    pub(crate) workflow: String,
    pub(crate) contact_id: i64,
    pub(crate) contact_name: String,
    pub(crate) status: RunStatus,
    /// Steps finished (the index of the step it is at).
    pub(crate) steps_taken: i64,
    pub(crate) started_at: i64,
    /// When the run last moved (a step, a wait, its end).
    pub(crate) updated_at: i64,
    /// Why a waiting run waits (a wait step has none: its timer says until when).
    pub(crate) waiting_reason: Option<String>,
    /// When a waiting run's timer fires.
    pub(crate) waiting_until: Option<i64>,
    pub(crate) outcome: Option<String>,
    /// The reason code (`model::Reason`) of `waiting_reason` while it waits, of `outcome` once it ended.
    pub(crate) reason: Option<String>,
}

/// Which runs a list shows, and where its page begins.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunFilter {
    pub(crate) contact_id: Option<i64>,
    pub(crate) workflow: Option<String>,
    pub(crate) status: Option<RunStatus>,
    /// Runs started at or after this time.
    pub(crate) since: Option<i64>,
    /// The page after this run (the `next` of the page before).
    pub(crate) before: Option<i64>,
    pub(crate) limit: i64,
}

const SUMMARY: &str = "SELECT r.id, r.workflow, r.contact_id, COALESCE(c.name, '') AS contact_name, r.status,
            r.next_step AS steps_taken, r.started_at, r.updated_at, r.waiting_reason,
            CASE WHEN r.status = 'waiting' THEN
                (SELECT MIN(t.due_at) FROM timers t WHERE t.run_id = r.id AND t.fired_at IS NULL) END AS waiting_until,
            r.outcome, r.reason
     FROM runs r LEFT JOIN contacts c ON c.id = r.contact_id";

/// A page of runs, newest first (by start, then id), and the run the next page
/// begins after, if there is one. Keyed by (started_at, id), never an offset:
/// a page deep in millions of runs costs what the first one does, through the
/// indexes on (contact_id | workflow | nothing, started_at).
pub(crate) async fn list_runs(conn: &mut Conn, filter: &RunFilter) -> anyhow::Result<(Vec<RunSummary>, Option<i64>)> {
    let limit = filter.limit.max(1);
    // Only the filters given are in the query: SQLite plans a statement once,
    // and `(? IS NULL OR r.contact_id = ?)` would be planned as a scan.
    let mut conditions = Vec::new();
    if filter.contact_id.is_some() {
        conditions.push("r.contact_id = ?");
    }
    if filter.workflow.is_some() {
        conditions.push("r.workflow = ?");
    }
    if filter.status.is_some() {
        conditions.push("r.status = ?");
    }
    if filter.since.is_some() {
        conditions.push("r.started_at >= ?");
    }
    if filter.before.is_some() {
        conditions.push("(r.started_at, r.id) < (SELECT b.started_at, b.id FROM runs b WHERE b.id = ?)");
    }
    let mut sql = SUMMARY.to_string();
    if !conditions.is_empty() {
        sql += &format!(" WHERE {}", conditions.join(" AND "));
    }
    sql += " ORDER BY r.started_at DESC, r.id DESC LIMIT ?";
    let mut query = sqlx::query_as::<_, RunSummary>(&sql);
    if let Some(contact_id) = filter.contact_id {
        query = query.bind(contact_id);
    }
    if let Some(workflow) = &filter.workflow {
        query = query.bind(workflow);
    }
    if let Some(status) = filter.status {
        query = query.bind(status);
    }
    if let Some(since) = filter.since {
        query = query.bind(since);
    }
    if let Some(before) = filter.before {
        query = query.bind(before);
    }
    let mut runs = query.bind(limit + 1).fetch_all(&mut *conn).await?;
    let more = runs.len() as i64 > limit;
    runs.truncate(limit as usize);
    let next = more.then(|| runs.last().map(|r| r.id)).flatten();
    Ok((runs, next))
}

/// A finished step and what it did.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct StepRecord {
    pub(crate) step: i64,
    pub(crate) kind: String,
    pub(crate) detail: String,
    pub(crate) finished_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct RunTimerRecord {
    pub(crate) id: i64,
    pub(crate) kind: TimerKind,
    pub(crate) due_at: i64,
    pub(crate) fired_at: Option<i64>,
}

/// One delivery attempt of a message.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct AttemptRecordRow {
    pub(crate) attempt: i64,
    pub(crate) started_at: i64,
    pub(crate) finished_at: i64,
    pub(crate) outcome: AttemptOutcome,
    pub(crate) detail: String,
}

/// A message a run queued, with its attempts.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct RunMessage {
    pub(crate) id: i64,
    pub(crate) channel: String,
    pub(crate) category: String,
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) message_id: String,
    pub(crate) status: OutboxStatus,
    pub(crate) attempts: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) sent_at: Option<i64>,
    #[sqlx(skip)]
    pub(crate) deliveries: Vec<AttemptRecordRow>,
}

/// One run whole: what it is, every step's effect, its timers, its messages.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunDetail {
    #[serde(flatten)]
    pub(crate) run: RunSummary,
    pub(crate) event_id: i64,
    pub(crate) set_hash: String,
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) timers: Vec<RunTimerRecord>,
    pub(crate) messages: Vec<RunMessage>,
}

/// The run `id`, whole, if it exists (or is not pruned yet).
pub(crate) async fn run_detail(conn: &mut Conn, id: i64) -> anyhow::Result<Option<RunDetail>> {
    let Some(run) = sqlx::query_as::<_, RunSummary>(&format!("{SUMMARY} WHERE r.id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let (event_id, set_hash): (i64, String) = sqlx::query_as("SELECT event_id, set_hash FROM runs WHERE id = ?")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    let steps = sqlx::query_as("SELECT step, kind, detail, finished_at FROM run_steps WHERE run_id = ? ORDER BY step")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    let timers = sqlx::query_as("SELECT id, kind, due_at, fired_at FROM timers WHERE run_id = ? ORDER BY due_at, id")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    let mut messages: Vec<RunMessage> = sqlx::query_as(
        "SELECT id, channel, category, recipient, COALESCE(message ->> 'subject', '') AS subject, message_id,
                status, attempts, last_error, created_at, sent_at
         FROM outbox WHERE run_id = ? ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    for message in &mut messages {
        message.deliveries = sqlx::query_as(
            "SELECT attempt, started_at, finished_at, outcome, detail FROM deliveries WHERE outbox_id = ? ORDER BY id",
        )
        .bind(message.id)
        .fetch_all(&mut *conn)
        .await?;
    }
    Ok(Some(RunDetail {
        run,
        event_id,
        set_hash,
        steps,
        timers,
        messages,
    }))
}

/// Read from `runs_workflow_unfinished` (0022) alone, already in group order.
const RUNS_UNFINISHED_BY_WORKFLOW: &str = "SELECT workflow, status, COUNT(*) FROM runs WHERE status <> 'done'
     GROUP BY workflow, status ORDER BY workflow, status";
/// Counted from an index's page counts, no row read.
const RUNS_TOTAL: &str = "SELECT COUNT(*) FROM runs";

/// Runs not done by workflow and status, and the runs done of all workflows,
/// for the console's workflows page.
pub(crate) async fn runs_by_workflow(conn: &mut Conn) -> anyhow::Result<(Vec<(String, String, i64)>, i64)> {
    let unfinished: Vec<(String, String, i64)> = sqlx::query_as(RUNS_UNFINISHED_BY_WORKFLOW)
        .fetch_all(&mut *conn)
        .await?;
    let total: i64 = sqlx::query_scalar(RUNS_TOTAL).fetch_one(&mut *conn).await?;
    let done = total - unfinished.iter().map(|(.., n)| n).sum::<i64>();
    Ok((unfinished, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{TestStore, contact, query_plan, run};

    /// The workflows page counts runs from indexes: the table holds millions.
    #[tokio::test]
    async fn the_runs_by_workflow_are_read_from_indexes() {
        let store = TestStore::open().await;
        let mut conn = store.conn().await;
        for sql in [RUNS_UNFINISHED_BY_WORKFLOW, RUNS_TOTAL] {
            let plan = query_plan(&mut conn, sql).await;
            assert!(plan.iter().all(|d| d.contains("COVERING INDEX")), "{sql}: {plan:?}");
        }
        let plan = query_plan(&mut conn, RUNS_UNFINISHED_BY_WORKFLOW).await;
        assert!(plan.iter().any(|d| d.contains("runs_workflow_unfinished")), "{plan:?}");
        let ann = contact(&mut conn, "ann@x.test").await;
        for (workflow, status) in [
            ("b", "waiting"),
            ("a", "done"),
            ("b", "waiting"),
            ("b", "done"),
            ("a", "failed"),
        ] {
            let id = run(&mut conn, workflow, ann).await;
            sqlx::query("UPDATE runs SET status = ? WHERE id = ?")
                .bind(status)
                .bind(id)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        let (unfinished, done) = runs_by_workflow(&mut conn).await.unwrap();
        assert_eq!(
            unfinished,
            vec![("a".into(), "failed".into(), 1), ("b".into(), "waiting".into(), 2)]
        );
        assert_eq!(done, 2);
    }
}
