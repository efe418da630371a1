//! Workflow runs and the record of their finished steps.

use serde::Serialize;

use super::Conn;
use super::stored_text::stored_text;
use crate::model::Reason;

stored_text! {
    /// Where a run is: `ready` for its next step now, `waiting` for a timer,
    /// or ended (`done`, `cancelled` when its trigger no longer holds, `failed`).
    pub(crate) enum RunStatus {
        Ready = "ready",
        Waiting = "waiting",
        Done = "done",
        Cancelled = "cancelled",
        Failed = "failed",
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Run {
    pub(crate) id: i64,
    pub(crate) workflow: String,
    pub(crate) set_hash: String,
    pub(crate) contact_id: i64,
    pub(crate) event_id: i64,
    pub(crate) status: RunStatus,
    pub(crate) next_step: i64,
    pub(crate) context: sqlx::types::Json<serde_json::Value>,
    pub(crate) started_at: i64,
    /// The contact's stage when the run began (or when the run itself last set it).
    pub(crate) start_stage: Option<String>,
    /// When the run last changed: for a ready run, since when it is ready
    /// (`ready_runs` reads it; 0 where it is not read).
    #[sqlx(default)]
    pub(crate) updated_at: i64,
    /// The trace its work continues (W3C traceparent, see `trace.rs`): as
    /// stored, its `run` span's; while a step is taken, that step's span's, so
    /// the message it queues carries it on to delivery. None unless exported.
    #[sqlx(default)]
    pub(crate) traceparent: Option<String>,
}

/// The span a run's log lines are written in, so that each names its run,
/// workflow and contact: the engine's steps of the run and the delivery of the
/// messages it queued. A message no run queued has none of them. At the
/// highest level, so that it is on whatever level the log is filtered to: a
/// run's warnings name it too when only warnings are logged.
pub(crate) fn run_span(run_id: Option<i64>, workflow: Option<&str>, contact_id: Option<i64>) -> tracing::Span {
    tracing::error_span!(
        "run",
        run_id,
        workflow = workflow.map(tracing::field::display),
        contact_id
    )
}

impl Run {
    pub(crate) fn span(&self) -> tracing::Span {
        run_span(Some(self.id), Some(&self.workflow), Some(self.contact_id))
    }
}

/// A run about to start.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NewRun<'a> {
    pub(crate) workflow: &'a str,
    pub(crate) set_hash: &'a str,
    pub(crate) contact_id: i64,
    pub(crate) event_id: i64,
    /// `Ready`, or `Waiting` for a delayed start.
    pub(crate) status: RunStatus,
    /// The trigger's data (the event payload and kind).
    pub(crate) context: &'a serde_json::Value,
    pub(crate) start_stage: &'a str,
    /// Its workflow category's priority: lower is stepped first (`ready_runs`).
    pub(crate) priority: i64,
    /// Its `run` span's context, if traces are exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
}

/// Why an event started no run of a workflow whose trigger takes its kind
/// (stored with the event, in `events.decisions`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct EventDecision {
    pub(crate) workflow: String,
    pub(crate) reason: Reason,
    /// For a condition: the part that was false (or the error).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) part: Option<String>,
    /// For a condition: the values of the fields it read, as the contact had them.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) values: Option<serde_json::Value>,
}

/// An event taken, with the workflows it did not start.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TakenEvent {
    pub(crate) id: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) decisions: Vec<EventDecision>,
}

#[cfg(test)]
impl TakenEvent {
    /// An event that every workflow it could start did start.
    pub(crate) fn plain(id: i64) -> TakenEvent {
        TakenEvent {
            id,
            decisions: Vec::new(),
        }
    }
}

/// Takes `events`: marks them processed (with the decisions of the workflows
/// they did not start) and starts the runs they trigger, in one query; a
/// workflow that already ran for an event is left out. Returns (run id,
/// workflow, event id) of each run started.
pub(crate) async fn start_runs(
    conn: &mut Conn,
    runs: &[NewRun<'_>],
    events: &[TakenEvent],
    now: i64,
) -> anyhow::Result<Vec<(i64, String, i64)>> {
    // Both statements in one query: one round trip to SQLite's thread instead of two.
    // `WHERE true` lets SQLite parse the upsert clause after a SELECT.
    Ok(sqlx::query_as(
        "UPDATE events SET processed_at = ?1, decisions = j.decisions
         FROM (SELECT value ->> 'id' AS id, value -> 'decisions' AS decisions FROM json_each(?2)) AS j
         WHERE events.id = j.id;
         INSERT INTO runs (workflow, set_hash, contact_id, event_id, status, context, start_stage, priority,
                           started_at, updated_at, traceparent)
         SELECT value ->> 'workflow', value ->> 'set_hash', value ->> 'contact_id', value ->> 'event_id',
                value ->> 'status', value -> 'context', value ->> 'start_stage', value ->> 'priority', ?1, ?1,
                value ->> 'traceparent'
         FROM json_each(?3) WHERE true
         ON CONFLICT (workflow, event_id) DO NOTHING RETURNING id, workflow, event_id",
    )
    .bind(now)
    .bind(serde_json::to_string(events)?)
    .bind(serde_json::to_string(runs)?)
    .fetch_all(&mut *conn)
    .await?)
}

pub(crate) async fn load_run(conn: &mut Conn, id: i64) -> anyhow::Result<Option<Run>> {
    Ok(sqlx::query_as(
        "SELECT id, workflow, set_hash, contact_id, event_id, status, next_step, context, started_at, start_stage,
                traceparent
         FROM runs WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The most urgent ready runs, oldest first within a priority, but for those in
/// `in_flight` (a batch being applied).
pub(crate) async fn ready_runs(conn: &mut Conn, limit: i64, in_flight: &[i64]) -> anyhow::Result<Vec<Run>> {
    Ok(sqlx::query_as(
        "SELECT id, workflow, set_hash, contact_id, event_id, status, next_step, context, started_at, start_stage,
                updated_at, traceparent
         FROM runs WHERE status = 'ready' AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY priority, id LIMIT ?",
    )
    .bind(serde_json::to_string(in_flight)?)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// A finished step: its run moves past it, to `status`.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedStep {
    pub(crate) run_id: i64,
    pub(crate) step: i64,
    pub(crate) kind: &'static str,
    pub(crate) detail: String,
    /// `Ready` for the next step now, `Waiting` for a timer, `Done` after the last step.
    pub(crate) status: RunStatus,
    /// Why the step happened without its message, if it did (consent, suppression, no address).
    pub(crate) reason: Option<Reason>,
}

/// An ended run, for `end_runs`: `Done`, `Cancelled` (its trigger no longer
/// holds, an exit condition is met) or `Failed`, with the code and the words.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EndedRun {
    pub(crate) id: i64,
    pub(crate) status: RunStatus,
    pub(crate) reason: Reason,
    pub(crate) outcome: String,
}

/// Ends runs.
pub(crate) async fn end_runs(conn: &mut Conn, ended: &[EndedRun], now: i64) -> anyhow::Result<()> {
    if ended.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE runs SET status = j.status, outcome = j.outcome, reason = j.reason, updated_at = ?
         FROM (SELECT value ->> 'id' AS id, value ->> 'status' AS status, value ->> 'outcome' AS outcome,
                      value ->> 'reason' AS reason
               FROM json_each(?)) AS j
         WHERE runs.id = j.id",
    )
    .bind(now)
    .bind(serde_json::to_string(ended)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Wakes waiting runs whose timers fired (a run cancelled meanwhile stays as it is).
pub(crate) async fn wake_runs(conn: &mut Conn, ids: &[i64], now: i64) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE runs SET status = 'ready', updated_at = ?
         WHERE id IN (SELECT value FROM json_each(?)) AND status = 'waiting'",
    )
    .bind(now)
    .bind(serde_json::to_string(ids)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A ready run put to sleep at its current step until `until` (a send window
/// opens, a frequency cap frees up, a retry after an error), saying why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeferredRun {
    pub(crate) run_id: i64,
    pub(crate) step: i64,
    pub(crate) until: i64,
    /// The words, for `waiting_reason` and the log.
    pub(crate) reason: String,
    pub(crate) code: Reason,
    /// For a frequency cap: the outbox ids of the messages that counted against it.
    pub(crate) counted: Vec<i64>,
}

/// Defers runs, sets their timers and journals the holds (`run_holds`), in two
/// queries. Fails (and the caller rolls back) if any run is no longer ready at
/// that step.
pub(crate) async fn defer_runs(conn: &mut Conn, deferred: &[DeferredRun], now: i64) -> anyhow::Result<()> {
    if deferred.is_empty() {
        return Ok(());
    }
    let done = sqlx::query(
        "UPDATE runs SET status = 'waiting', waiting_reason = j.reason, reason = j.code, updated_at = ?
         FROM (SELECT value ->> 'run_id' AS id, value ->> 'step' AS step, value ->> 'reason' AS reason,
                      value ->> 'code' AS code
               FROM json_each(?)) AS j
         WHERE runs.id = j.id AND runs.status = 'ready' AND runs.next_step = j.step",
    )
    .bind(now)
    .bind(serde_json::to_string(deferred)?)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    anyhow::ensure!(
        done == deferred.len() as u64,
        "{} of {} runs are no longer at the step they were to wait at",
        deferred.len() as u64 - done,
        deferred.len()
    );
    // The timers and the journal in one query: one round trip to SQLite's thread.
    sqlx::query(
        "INSERT INTO timers (due_at, kind, run_id) SELECT value ->> 'until', ?2, value ->> 'run_id' FROM json_each(?1);
         INSERT INTO run_holds (run_id, step, at, until, reason, detail, counted)
         SELECT value ->> 'run_id', value ->> 'step', ?3, value ->> 'until', value ->> 'code', value ->> 'reason',
                CASE WHEN json_array_length(value -> 'counted') > 0 THEN value -> 'counted' END
         FROM json_each(?1)",
    )
    .bind(serde_json::to_string(deferred)?)
    .bind(super::TimerKind::ResumeRun)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Counts an error at a run's current step; returns the count so far.
pub(crate) async fn count_step_error(conn: &mut Conn, run_id: i64) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("UPDATE runs SET step_errors = step_errors + 1 WHERE id = ? RETURNING step_errors")
            .bind(run_id)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// After a run changes the contact's stage itself, that stage is its new baseline
/// (so the `stage_changed` exit condition does not stop it).
pub(crate) async fn rebase_run_stage(conn: &mut Conn, run_id: i64, stage: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE runs SET start_stage = ? WHERE id = ?")
        .bind(stage)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Contacts with ids in `first..=last` that `workflow` ever ran for (a segment enrols a contact once).
pub(crate) async fn enrolled_between(
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
pub(crate) async fn step_reached_at(conn: &mut Conn, run: &Run) -> anyhow::Result<i64> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::testing::{SET, TestStore, contact, run};
    use crate::store::{EventKind, insert_event};

    async fn status_of(conn: &mut Conn, id: i64) -> (RunStatus, Option<String>, Option<String>, i64) {
        sqlx::query_as("SELECT status, outcome, waiting_reason, updated_at FROM runs WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn ready_runs_come_most_urgent_first_then_oldest_first() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let a = contact(&mut conn, "a@x.test").await;
        sqlx::query("INSERT INTO workflow_sets (hash, files, loaded_at) VALUES (?, '[]', 1)")
            .bind(SET)
            .execute(&mut *conn)
            .await
            .unwrap();
        let context = json!({});
        let mut new = vec![];
        let mut events = vec![];
        for _ in 0..4 {
            events.push(
                insert_event(&mut conn, EventKind::Replied, a, &context, 5)
                    .await
                    .unwrap(),
            );
        }
        for (event_id, (workflow, priority)) in events.iter().zip([("m1", 2), ("t", 1), ("m2", 2), ("sla", 0)]) {
            new.push(NewRun {
                workflow,
                set_hash: SET,
                contact_id: a,
                event_id: *event_id,
                status: RunStatus::Ready,
                context: &context,
                start_stage: "lead",
                priority,
                traceparent: None,
            });
        }
        let taken: Vec<TakenEvent> = events.iter().map(|&e| TakenEvent::plain(e)).collect();
        start_runs(&mut conn, &new, &taken, 7).await.unwrap();
        let order = |runs: Vec<Run>| runs.into_iter().map(|r| r.workflow).collect::<Vec<_>>();
        let all = ready_runs(&mut conn, 10, &[]).await.unwrap();
        assert_eq!(order(all), ["sla", "t", "m1", "m2"]);
        // A batch of two while the SLA run is being applied: the next most urgent.
        let sla_id = ready_runs(&mut conn, 1, &[]).await.unwrap()[0].id;
        assert_eq!(order(ready_runs(&mut conn, 2, &[sla_id]).await.unwrap()), ["t", "m1"]);
    }

    #[tokio::test]
    async fn started_runs_land_field_by_field_and_take_their_events() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let (a, b) = (
            contact(&mut conn, "a@x.test").await,
            contact(&mut conn, "b@x.test").await,
        );
        sqlx::query("INSERT INTO workflow_sets (hash, files, loaded_at) VALUES ('other-set', '[]', 1)")
            .execute(&mut *conn)
            .await
            .unwrap();
        run(&mut conn, "warm-up", a).await;
        let e1 = insert_event(&mut conn, EventKind::Replied, b, &json!({}), 5)
            .await
            .unwrap();
        let e2 = insert_event(&mut conn, EventKind::Replied, a, &json!({}), 5)
            .await
            .unwrap();
        let (c1, c2) = (json!({ "kind": "replied", "n": 1 }), json!({ "n": 2 }));
        let new = [
            NewRun {
                workflow: "first",
                set_hash: SET,
                contact_id: b,
                event_id: e1,
                status: RunStatus::Ready,
                context: &c1,
                start_stage: "intent",
                priority: 0,
                traceparent: None,
            },
            NewRun {
                workflow: "second",
                set_hash: "other-set",
                contact_id: a,
                event_id: e2,
                status: RunStatus::Waiting,
                context: &c2,
                start_stage: "sample",
                priority: 2,
                traceparent: None,
            },
        ];
        let not_started = EventDecision {
            workflow: "vip".into(),
            reason: Reason::ConditionFalse,
            part: Some("contact.intent_grade == \"A\"".into()),
            values: Some(json!({ "contact.intent_grade": "B" })),
        };
        let taken = [
            TakenEvent::plain(e1),
            TakenEvent {
                id: e2,
                decisions: vec![not_started],
            },
        ];
        let started = start_runs(&mut conn, &new, &taken, 70).await.unwrap();
        assert_eq!(started, vec![(2, "first".into(), e1), (3, "second".into(), e2)]);
        let priorities: Vec<i64> = sqlx::query_scalar("SELECT priority FROM runs WHERE id > 1 ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(priorities, [0, 2]);
        type Row = (
            String,
            String,
            i64,
            i64,
            RunStatus,
            String,
            Option<String>,
            i64,
            i64,
            i64,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT workflow, set_hash, contact_id, event_id, status, context, start_stage, started_at, updated_at,
                    next_step
             FROM runs WHERE id > 1 ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "first".into(),
                    SET.into(),
                    b,
                    e1,
                    RunStatus::Ready,
                    c1.to_string(),
                    Some("intent".into()),
                    70,
                    70,
                    0
                ),
                (
                    "second".into(),
                    "other-set".into(),
                    a,
                    e2,
                    RunStatus::Waiting,
                    c2.to_string(),
                    Some("sample".into()),
                    70,
                    70,
                    0
                ),
            ]
        );
        let unprocessed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE id IN (?, ?) AND processed_at = 70")
                .bind(e1)
                .bind(e2)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(unprocessed, 2);
        let decisions: Vec<Option<String>> =
            sqlx::query_scalar("SELECT decisions FROM events WHERE id IN (?, ?) ORDER BY id")
                .bind(e1)
                .bind(e2)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let recorded: serde_json::Value = serde_json::from_str(decisions[1].as_deref().unwrap()).unwrap();
        assert_eq!(
            decisions[0], None,
            "an event that started every workflow it could records nothing"
        );
        assert_eq!(
            recorded,
            json!([{ "workflow": "vip", "reason": "condition_false", "part": "contact.intent_grade == \"A\"",
                     "values": { "contact.intent_grade": "B" } }])
        );
        // A workflow that already ran for an event is left out.
        assert!(
            start_runs(&mut conn, &new[..1], &[TakenEvent::plain(e1)], 80)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn ended_runs_take_each_their_status_and_outcome() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let c = contact(&mut conn, "a@x.test").await;
        let (r1, r2) = (run(&mut conn, "w1", c).await, run(&mut conn, "w2", c).await);
        let ended = [
            EndedRun {
                id: r1,
                status: RunStatus::Cancelled,
                reason: Reason::TriggerGone,
                outcome: "trigger gone".to_string(),
            },
            EndedRun {
                id: r2,
                status: RunStatus::Failed,
                reason: Reason::StepFailed,
                outcome: "boom".into(),
            },
        ];
        end_runs(&mut conn, &ended, 90).await.unwrap();
        assert_eq!(
            status_of(&mut conn, r1).await,
            (RunStatus::Cancelled, Some("trigger gone".into()), None, 90)
        );
        assert_eq!(
            status_of(&mut conn, r2).await,
            (RunStatus::Failed, Some("boom".into()), None, 90)
        );
    }

    #[tokio::test]
    async fn deferred_runs_wait_with_their_reason_and_timer_and_wake_ready() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let c = contact(&mut conn, "a@x.test").await;
        let (r1, r2) = (run(&mut conn, "w1", c).await, run(&mut conn, "w2", c).await);
        let deferred = [
            DeferredRun {
                run_id: r1,
                step: 0,
                until: 1_000,
                reason: "window closed".into(),
                code: Reason::SendWindow,
                counted: Vec::new(),
            },
            DeferredRun {
                run_id: r2,
                step: 0,
                until: 2_000,
                reason: "capped".into(),
                code: Reason::FrequencyCap,
                counted: vec![7, 8],
            },
        ];
        defer_runs(&mut conn, &deferred, 50).await.unwrap();
        assert_eq!(
            status_of(&mut conn, r1).await,
            (RunStatus::Waiting, None, Some("window closed".into()), 50)
        );
        assert_eq!(
            status_of(&mut conn, r2).await,
            (RunStatus::Waiting, None, Some("capped".into()), 50)
        );
        let timers: Vec<(i64, crate::store::TimerKind, Option<i64>)> =
            sqlx::query_as("SELECT due_at, kind, run_id FROM timers ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            timers,
            vec![
                (1_000, crate::store::TimerKind::ResumeRun, Some(r1)),
                (2_000, crate::store::TimerKind::ResumeRun, Some(r2))
            ]
        );
        let holds: Vec<(i64, String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT h.run_id, h.reason, h.counted, r.reason FROM run_holds h JOIN runs r ON r.id = h.run_id ORDER BY h.run_id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            holds,
            vec![
                (r1, "send_window".into(), None, Some("send_window".into())),
                (
                    r2,
                    "frequency_cap".into(),
                    Some("[7,8]".into()),
                    Some("frequency_cap".into())
                )
            ],
            "every hold is journalled with its code, the run keeps the latest"
        );
        // No longer ready: a second deferral fails whole.
        assert!(defer_runs(&mut conn, &deferred[..1], 60).await.is_err());

        wake_runs(&mut conn, &[r1], 70).await.unwrap();
        assert_eq!(status_of(&mut conn, r1).await.0, RunStatus::Ready);
        assert_eq!(status_of(&mut conn, r2).await.0, RunStatus::Waiting);
    }

    #[tokio::test]
    async fn every_run_status_reads_back_as_written() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let c = contact(&mut conn, "a@x.test").await;
        let r = run(&mut conn, "w", c).await;
        for &status in RunStatus::ALL {
            let ended = EndedRun {
                id: r,
                status,
                reason: Reason::Completed,
                outcome: String::new(),
            };
            end_runs(&mut conn, &[ended], 1).await.unwrap();
            let text: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = ?")
                .bind(r)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(text, status.as_str());
            assert_eq!(load_run(&mut conn, r).await.unwrap().unwrap().status, status);
        }
    }
}
