//! The events that could start each workflow: the run one started, or why it
//! started none, as the engine recorded it when it took the event
//! (`events.decisions`: the trigger did not match, the `when` condition was
//! false, with the part that was false and the contact's values then).

use serde::Serialize;

use super::runs::RunRow;
use super::{Entry, Moment, What, Why};
use crate::store::{Conn, EventDecision};

#[derive(Debug, Serialize)]
pub(crate) struct EventEntry {
    pub(crate) event_id: i64,
    pub(crate) event: String,
    /// What the event carried (a stage change's `from` and `to`, ...).
    pub(crate) payload: serde_json::Value,
    /// The run it started, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) started_run: Option<i64>,
    /// Why it started none, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<Why>,
    /// The part of the `when` condition that was false (or its error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) condition_part: Option<String>,
    /// The values that part read, as the contact had them then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) values: Option<serde_json::Value>,
}

type EventRow = (i64, String, String, i64, Option<i64>, Option<String>);

/// Each event of the contact up to `at`, under each workflow it started or
/// was decided against.
pub(super) async fn read(
    conn: &mut Conn,
    contact_id: i64,
    runs: &[RunRow],
    at: i64,
) -> anyhow::Result<Vec<(String, Entry)>> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, kind, payload, occurred_at, processed_at, decisions FROM events
         WHERE contact_id = ? AND occurred_at <= ? ORDER BY id",
    )
    .bind(contact_id)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for (id, kind, payload, occurred_at, processed_at, decisions) in rows {
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        let event = |started_run, decision: Option<EventDecision>| EventEntry {
            event_id: id,
            event: kind.clone(),
            payload: payload.clone(),
            started_run,
            reason: decision.as_ref().map(|d| Why::of(d.reason)),
            condition_part: decision.as_ref().and_then(|d| d.part.clone()),
            values: decision.and_then(|d| d.values),
        };
        // The decision was made when the event was taken (a delayed run starts then too).
        let when = Moment::of(processed_at.unwrap_or(occurred_at));
        for run in runs.iter().filter(|r| r.event_id == id) {
            let what = What::Event(event(Some(run.id), None));
            out.push((
                run.workflow.clone(),
                Entry {
                    when: when.clone(),
                    what,
                },
            ));
        }
        let decided: Vec<EventDecision> = decisions
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        for decision in decided {
            let workflow = decision.workflow.clone();
            let what = What::Event(event(None, Some(decision)));
            out.push((
                workflow,
                Entry {
                    when: when.clone(),
                    what,
                },
            ));
        }
    }
    Ok(out)
}
