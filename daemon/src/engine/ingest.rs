//! Events -> triggers -> runs started. The engine takes unprocessed events in
//! batches (`ingest_events`); the API's stage changes are taken in the very
//! transaction that wrote them, together with the first step of each run they
//! start (`take_events`), so that their messages are queued when the write
//! commits instead of one engine cycle or two later.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use serde_json::json;
use tracing::{debug, info, warn};

use super::batch::Applied;
use super::{BATCH, Contacts, Engine, traces, triggers};
use crate::model::Reason;
use crate::store::{self, Contact, EventDecision, EventKind, Run, RunStatus, RunTimer, TakenEvent};
use crate::trace;
use crate::workflow::{Workflow, WorkflowSet};

/// The time a stage-change group may spend rendering its runs' first steps
/// while it holds the turn to write; a render not begun by then is left to the
/// engine, which renders outside the turn.
const TURN_RENDER_BUDGET: std::time::Duration = std::time::Duration::from_millis(20);
/// How long groups leave their first steps to the engine after one ran past
/// that budget: a slow plugin must not hold up every writer, group after group.
const TURN_RENDER_PAUSE: std::time::Duration = std::time::Duration::from_secs(60);

/// A run an event starts: its workflow, event and contact, and when it begins.
type Start<'a> = (&'a Workflow, &'a store::Event, &'a Contact, i64);

/// What taking a group's events did, told once the group's commit is durable
/// (`Engine::taken_committed`): the runs started ready (run id, event id), the
/// events' kinds, and the runs whose first steps were taken and what those did.
#[derive(Default)]
pub(crate) struct Taken {
    pub(crate) started: Vec<(i64, i64)>,
    kinds: Vec<EventKind>,
    first_steps: Option<(Vec<i64>, Applied)>,
}

/// Counts the events taken in, by kind, once their transaction has committed.
fn count_events(kinds: &[EventKind]) {
    let metrics = crate::metrics::get();
    for kind in kinds {
        metrics.event_in(kind.as_str());
    }
}

impl Engine {
    pub(super) async fn ingest_events(&self) -> anyhow::Result<usize> {
        // The events and their contacts are read before the turn to write: they
        // are matched as of a moment before the batch commits, as they would be
        // had it come a little earlier.
        let (events, contacts) = {
            let mut conn = self.store.pool.acquire().await?;
            let events = store::unprocessed_events(&mut conn, BATCH).await?;
            if events.is_empty() {
                return Ok(0);
            }
            let contact_ids: Vec<i64> = events.iter().map(|e| e.contact_id).collect();
            let contacts = store::contacts_with_context(&mut conn, &contact_ids).await?;
            (events, contacts)
        };
        let mut tx = self.store.write().await?;
        let ready = self.start_runs(&mut tx, &events, &contacts).await?;
        tx.commit().await?;
        count_events(&events.iter().map(|e| e.kind).collect::<Vec<_>>());
        // Events come in id order, so every event up to the last is taken.
        let last = events.last().map(|e| e.id).unwrap_or_default();
        self.admission
            .events_taken(last, ready.iter().map(|run| (run.id, run.event_id)));
        Ok(events.len())
    }

    /// Takes the events `ids` in `conn`, the transaction that wrote them: the
    /// path of `ingest_events` then `advance_runs`, taken in one transaction.
    /// Their runs start as `ingest_events` starts them (`start_runs`), and the
    /// first step of each run started ready is taken as `advance_runs` takes it
    /// (`first_steps`). The API's stage changes go this way, so that their
    /// messages are queued when the write commits instead of one engine cycle
    /// or two later.
    pub(crate) async fn take_events(&self, conn: &mut store::Conn, ids: RangeInclusive<i64>) -> anyhow::Result<Taken> {
        let (events, mut contacts) = store::events_with_contacts(conn, ids).await?;
        let ready = self.start_runs(conn, &events, &contacts).await?;
        Ok(Taken {
            started: ready.iter().map(|run| (run.id, run.event_id)).collect(),
            kinds: events.iter().map(|e| e.kind).collect(),
            first_steps: self.first_steps(conn, ready, &mut contacts).await?,
        })
    }

    /// The first steps of runs just started ready, taken in `conn` as
    /// `advance_runs` takes a step (`prepare_all`, then `apply_in`), but
    /// rendered within TURN_RENDER_BUDGET: `conn` holds the turn to write. A
    /// run whose step cannot be prepared or rendered in time is left ready,
    /// for the engine to take it (and record why) as any other. None while
    /// groups leave their first steps to the engine (a render ran past the
    /// budget): the runs wait for it.
    async fn first_steps(
        &self,
        conn: &mut store::Conn,
        ready: Vec<Run>,
        contacts: &mut Contacts,
    ) -> anyhow::Result<Option<(Vec<i64>, Applied)>> {
        let paused = self
            .turn_renders_paused
            .lock()
            .unwrap()
            .is_some_and(|until| until > tokio::time::Instant::now());
        if paused {
            return Ok(None);
        }
        let began = std::time::Instant::now();
        let mut batch = self.prepare_all(ready, contacts, Some(TURN_RENDER_BUDGET)).await?;
        if began.elapsed() > TURN_RENDER_BUDGET {
            *self.turn_renders_paused.lock().unwrap() = Some(tokio::time::Instant::now() + TURN_RENDER_PAUSE);
            warn!(
                "rendering a group's first steps took over {TURN_RENDER_BUDGET:?} while it held the turn to write; \
                 the engine takes them for the next {TURN_RENDER_PAUSE:?}"
            );
        }
        batch.retain_prepared();
        let applied = self.apply_in(conn, &batch.runs, contacts, self.span()).await?;
        Ok(Some((batch.run_ids(), applied)))
    }

    /// Once the transaction that took events has committed: counts them, and
    /// tells admission control and delivery what their first steps did, as
    /// `write_batch` does for the engine's own batches.
    pub(crate) fn taken_committed(&self, taken: Taken) {
        count_events(&taken.kinds);
        if let Some((runs, applied)) = taken.first_steps {
            self.steps_committed(&runs, applied);
        }
    }

    /// Starts the runs `events` trigger (each enabled workflow whose trigger and
    /// condition match, as of `contacts`) and marks the events processed, in
    /// a query or two for the events of one time (`Engine::at`: on the live
    /// daemon all are taken now); returns the runs started ready.
    async fn start_runs(
        &self,
        conn: &mut store::Conn,
        events: &[store::Event],
        contacts: &Contacts,
    ) -> anyhow::Result<Vec<Run>> {
        let (now, until) = self.span();
        let mut ready = Vec::new();
        for group in events.chunk_by(|a, b| a.occurred_at.clamp(now, until) == b.occurred_at.clamp(now, until)) {
            let at = group[0].occurred_at.clamp(now, until);
            ready.extend(self.start_runs_at(conn, group, contacts, at).await?);
        }
        Ok(ready)
    }

    /// `start_runs` for events taken at `now`.
    async fn start_runs_at(
        &self,
        conn: &mut store::Conn,
        events: &[store::Event],
        contacts: &Contacts,
        now: i64,
    ) -> anyhow::Result<Vec<Run>> {
        let set = self.current();
        let (starts, contexts, taken) = matching(&set, events, contacts);
        // Each event's span, and under it each run's, whose context the run keeps.
        let event_spans = traces::event_spans(events);
        let run_spans: Vec<tracing::Span> = starts
            .iter()
            .map(|(workflow, event, contact, _)| traces::run_span(&event_spans[&event.id], workflow, contact))
            .collect();
        let new_runs: Vec<store::NewRun> = starts
            .iter()
            .zip(&contexts)
            .zip(&run_spans)
            .map(|(((workflow, event, contact, start), context), span)| store::NewRun {
                workflow: &workflow.name,
                set_hash: &set.hash,
                contact_id: contact.id,
                event_id: event.id,
                status: if *start <= now {
                    RunStatus::Ready
                } else {
                    RunStatus::Waiting
                },
                context,
                start_stage: &contact.stage,
                priority: workflow.category.priority(),
                traceparent: trace::traceparent(span),
            })
            .collect();
        let started = store::start_runs(conn, &new_runs, &taken, now).await?;
        let start_of: HashMap<(&str, i64), usize> = starts
            .iter()
            .enumerate()
            .map(|(i, (workflow, event, ..))| ((workflow.name.as_str(), event.id), i))
            .collect();
        let mut timers = Vec::new();
        let mut ready = Vec::new();
        for (run_id, workflow, event_id) in &started {
            let i = start_of[&(workflow.as_str(), *event_id)];
            let (_, _, contact, start) = starts[i];
            run_spans[i].record("run_id", run_id);
            if start > now {
                timers.push(RunTimer {
                    run_id: *run_id,
                    due_at: start,
                });
            } else {
                ready.push(started_ready(*run_id, &new_runs[i], contact, now));
            }
            info!(run_id, workflow = %workflow, contact_id = contact.id, event_id, "run started");
        }
        store::insert_run_timers(conn, &timers).await?;
        Ok(ready)
    }
}

/// The runs `events` start: each enabled workflow of `set` whose trigger and
/// condition match, with the context each run keeps (the event's payload and
/// kind); and for each event, why it started none of the other workflows whose
/// trigger takes its kind (stored with the event, for `nudge explain`).
fn matching<'a>(
    set: &'a WorkflowSet,
    events: &'a [store::Event],
    contacts: &'a Contacts,
) -> (Vec<Start<'a>>, Vec<serde_json::Value>, Vec<TakenEvent>) {
    let mut starts = Vec::new();
    let mut contexts = Vec::new();
    let mut taken = Vec::with_capacity(events.len());
    for event in events {
        let mut decisions = Vec::new();
        if let Some((contact, contact_ctx)) = contacts.get(&event.contact_id) {
            let event_ctx = triggers::event_context(event);
            let candidates = set
                .workflows
                .iter()
                .filter(|w| triggers::takes_kind(&w.trigger, event.kind));
            for workflow in candidates {
                match decide(workflow, event, contact, contact_ctx, &event_ctx) {
                    Some(decision) => decisions.push(decision),
                    None => {
                        let mut context = event.payload.0.clone();
                        context["kind"] = json!(event.kind);
                        contexts.push(context);
                        let start = triggers::start_at(workflow, event, contact, &set.team);
                        starts.push((workflow, event, contact, start));
                    }
                }
            }
        }
        taken.push(TakenEvent {
            id: event.id,
            decisions,
        });
    }
    (starts, contexts, taken)
}

/// Why `event` starts no run of `workflow` (whose trigger takes its kind), or
/// `None` if it starts one.
fn decide(
    workflow: &Workflow,
    event: &store::Event,
    contact: &Contact,
    contact_ctx: &serde_json::Value,
    event_ctx: &serde_json::Value,
) -> Option<EventDecision> {
    let decision = |reason, part, values| {
        Some(EventDecision {
            workflow: workflow.name.clone(),
            reason,
            part,
            values,
        })
    };
    if !workflow.enabled {
        return decision(Reason::WorkflowDisabled, None, None);
    }
    if !triggers::matches(&workflow.trigger, event) {
        return decision(Reason::TriggerMismatch, None, None);
    }
    let condition = workflow.when.as_ref()?;
    match condition.evaluate(contact_ctx, event_ctx) {
        Ok(true) => None,
        Ok(false) => {
            let why = condition.explain_false(contact_ctx, event_ctx);
            debug!(workflow = %workflow.name, contact_id = contact.id, event_id = event.id,
                   reason = %Reason::ConditionFalse, part = %why.part, "no run: the `when` condition is false");
            decision(Reason::ConditionFalse, Some(why.part), Some(json!(why.values)))
        }
        Err(e) => {
            warn!(workflow = %workflow.name, contact_id = contact.id, reason = %Reason::ConditionError, "condition failed: {e}");
            decision(Reason::ConditionError, Some(e), None)
        }
    }
}

/// A run just started ready, as `ready_runs` would read it back.
fn started_ready(id: i64, new: &store::NewRun, contact: &Contact, now: i64) -> Run {
    Run {
        id,
        workflow: new.workflow.to_string(),
        set_hash: new.set_hash.to_string(),
        contact_id: contact.id,
        event_id: new.event_id,
        status: RunStatus::Ready,
        next_step: 0,
        context: sqlx::types::Json(new.context.clone()),
        started_at: now,
        start_stage: Some(contact.stage.clone()),
        updated_at: now,
        traceparent: new.traceparent.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{Fixture, workflow};
    use crate::store::EventKind;

    const SEND: &str = "send = { channel = \"email\", template = \"hello\" }";

    /// What `nudge explain` shows for an event that started no run: recorded
    /// with the event when it was taken, with the false part and its values.
    #[tokio::test]
    async fn an_event_keeps_why_it_started_no_run_of_a_workflow() {
        let f = Fixture::new(vec![
            workflow("plain", "category = \"transactional\"", &[SEND]),
            workflow(
                "vip",
                "category = \"transactional\"\nwhen = 'contact.intent_grade == \"A\" && contact.stage == \"lead\"'",
                &[SEND],
            ),
            workflow("off", "category = \"transactional\"\nenabled = false", &[SEND]),
        ])
        .await;
        let li = f
            .contact(json!({ "email": "li@test.example", "intent_grade": "B" }))
            .await;
        f.event(EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (decisions,): (String,) = f
            .row(
                "SELECT decisions FROM events WHERE contact_id = ? AND kind = 'inquiry_received'",
                li,
            )
            .await;
        let decisions: serde_json::Value = serde_json::from_str(&decisions).unwrap();
        assert_eq!(
            decisions,
            json!([
                { "workflow": "vip", "reason": "condition_false", "part": "contact.intent_grade == \"A\"",
                  "values": { "contact.intent_grade": "B" } },
                { "workflow": "off", "reason": "workflow_disabled" },
            ])
        );
        let (runs,): (String,) = f
            .row("SELECT group_concat(workflow) FROM runs WHERE contact_id = ?", li)
            .await;
        assert_eq!(
            runs, "plain",
            "the decisions are the workflows not started, the runs the others"
        );
    }
}
