//! A contact's runs: each step taken (or skipped, with its code), each hold
//! at a step (from the `run_holds` journal: `runs.waiting_reason` keeps only
//! the latest), and how the run ended or where it waits.

use std::collections::HashMap;

use serde::Serialize;

use super::{Entry, Moment, What, Why};
use crate::store::Conn;

/// A run as `explain` reads it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RunRow {
    pub(crate) id: i64,
    pub(crate) workflow: String,
    pub(crate) event_id: i64,
    status: String,
    next_step: i64,
    outcome: Option<String>,
    reason: Option<String>,
    waiting_reason: Option<String>,
    updated_at: i64,
}

/// The contact's runs started by `at`.
pub(super) async fn read(conn: &mut Conn, contact_id: i64, at: i64) -> anyhow::Result<Vec<RunRow>> {
    Ok(sqlx::query_as(
        "SELECT id, workflow, event_id, status, next_step, outcome, reason, waiting_reason, updated_at
         FROM runs WHERE contact_id = ? AND started_at <= ? ORDER BY id",
    )
    .bind(contact_id)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?)
}

#[derive(Debug, Serialize)]
pub(crate) struct StepEntry {
    pub(crate) run_id: i64,
    pub(crate) step: i64,
    pub(crate) step_kind: String,
    pub(crate) detail: String,
    /// Why the step happened without its message, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<Why>,
}

#[derive(Debug, Serialize)]
pub(crate) struct HoldEntry {
    pub(crate) run_id: i64,
    pub(crate) step: i64,
    pub(crate) reason: Option<Why>,
    pub(crate) detail: String,
    /// Until when: the next allowed slot.
    pub(crate) until: Moment,
    /// That slot in the contact's own zone, as a window or cap reads it.
    pub(crate) until_local: String,
    /// For a frequency cap: the messages that counted against it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) counted: Vec<Counted>,
}

/// A message that counted against a frequency cap.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub(crate) struct Counted {
    pub(crate) outbox_id: i64,
    pub(crate) message_id: String,
    pub(crate) workflow: Option<String>,
    pub(crate) queued_at: i64,
}

/// A run that has not ended by the moment asked about.
#[derive(Debug, Serialize)]
pub(crate) struct OpenEntry {
    pub(crate) run_id: i64,
    pub(crate) status: String,
    pub(crate) next_step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<Why>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EndedEntry {
    pub(crate) run_id: i64,
    pub(crate) status: String,
    pub(crate) reason: Option<Why>,
    pub(crate) outcome: String,
}

/// The entries of `runs` up to `at`: steps, holds, and the end or current state.
pub(super) async fn entries(
    conn: &mut Conn,
    runs: &[RunRow],
    time_zone: &str,
    at: i64,
) -> anyhow::Result<Vec<(String, Entry)>> {
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let by_id: HashMap<i64, &str> = runs.iter().map(|r| (r.id, r.workflow.as_str())).collect();
    let workflow_of = |run_id: i64| by_id.get(&run_id).copied().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for (run_id, step, step_kind, detail, reason, finished_at) in steps(conn, &ids, at).await? {
        let what = What::Step(StepEntry {
            run_id,
            step,
            step_kind,
            detail,
            reason: Why::stored(reason.as_deref()),
        });
        out.push((workflow_of(run_id), entry(finished_at, what)));
    }
    for (hold, held_at) in holds(conn, &ids, time_zone, at).await? {
        out.push((workflow_of(hold.run_id), entry(held_at, What::Hold(hold))));
    }
    for run in runs {
        let ended = matches!(run.status.as_str(), "done" | "cancelled" | "failed") && run.updated_at <= at;
        let what = if ended {
            What::Ended(EndedEntry {
                run_id: run.id,
                status: run.status.clone(),
                reason: Why::stored(run.reason.as_deref()),
                outcome: run.outcome.clone().unwrap_or_default(),
            })
        } else if run.updated_at <= at {
            What::Open(OpenEntry {
                run_id: run.id,
                status: run.status.clone(),
                next_step: run.next_step,
                reason: Why::stored(run.reason.as_deref()).filter(|_| run.status == "waiting"),
                detail: run.waiting_reason.clone().filter(|_| run.status == "waiting"),
            })
        } else {
            // Its state at `at` is what its steps and holds up to then show.
            continue;
        };
        out.push((run.workflow.clone(), entry(run.updated_at.min(at), what)));
    }
    Ok(out)
}

fn entry(at: i64, what: What) -> Entry {
    Entry {
        when: Moment::of(at),
        what,
    }
}

type StepRow = (i64, i64, String, String, Option<String>, i64);

async fn steps(conn: &mut Conn, runs: &[i64], at: i64) -> anyhow::Result<Vec<StepRow>> {
    Ok(sqlx::query_as(
        "SELECT run_id, step, kind, detail, reason, finished_at FROM run_steps
         WHERE run_id IN (SELECT value FROM json_each(?)) AND finished_at <= ? ORDER BY finished_at, run_id, step",
    )
    .bind(serde_json::to_string(runs)?)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?)
}

/// run, step, at, until, code, detail, counted ids.
type HoldRow = (i64, i64, i64, i64, String, String, Option<String>);

/// The holds of `runs` up to `at`, with the messages each cap counted.
async fn holds(conn: &mut Conn, runs: &[i64], time_zone: &str, at: i64) -> anyhow::Result<Vec<(HoldEntry, i64)>> {
    let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let local = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z").to_string())
            .unwrap_or_default()
    };
    let rows: Vec<HoldRow> = sqlx::query_as(
        "SELECT run_id, step, at, until, reason, detail, counted FROM run_holds
         WHERE run_id IN (SELECT value FROM json_each(?)) AND at <= ? ORDER BY at, rowid",
    )
    .bind(serde_json::to_string(runs)?)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    let mut holds = Vec::with_capacity(rows.len());
    for (run_id, step, held_at, until, reason, detail, counted) in rows {
        let counted = match counted {
            Some(ids) => counted_messages(conn, &ids).await?,
            None => Vec::new(),
        };
        let hold = HoldEntry {
            run_id,
            step,
            reason: Why::stored(Some(&reason)),
            detail,
            until: Moment::of(until),
            until_local: local(until),
            counted,
        };
        holds.push((hold, held_at));
    }
    Ok(holds)
}

/// The outbox rows `ids` (a JSON array) names.
async fn counted_messages(conn: &mut Conn, ids: &str) -> anyhow::Result<Vec<Counted>> {
    Ok(sqlx::query_as(
        "SELECT o.id AS outbox_id, o.message_id, r.workflow, o.created_at AS queued_at
         FROM outbox o LEFT JOIN runs r ON r.id = o.run_id
         WHERE o.id IN (SELECT value FROM json_each(?)) ORDER BY o.id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?)
}
