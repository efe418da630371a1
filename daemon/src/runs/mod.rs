//! Durable step execution. Each step's effect (an outbox row, a timer, a
//! contact change) commits in one transaction with the run moving past that
//! step, so a crash at any point neither loses a step nor repeats one.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use futures::stream::{self, StreamExt};
use serde_json::json;
use sqlx::Acquire as _;
use tracing::{info, warn};

mod effects;

use crate::admission::{Admission, SteppedRuns};
use crate::clock::Clock;
use crate::delivery::Handoff;
use crate::model::{Category, add_span};
use crate::plugins::{PluginError, Plugins, Recipient, RenderedMessage};
use crate::store::{self, Contact, NewOutboxRow, OutboundMessage, OutboxRow, Run, Store};
use crate::triggers;
use crate::unsubscribe::Unsubscribe;
use effects::Effects;

use crate::workflow::{FollowUpAfter, Step, Trigger, Workflow, WorkflowSet, next_segment_due};
use crate::{tracking, variants};

/// Events and timers taken per transaction.
const BATCH: i64 = 512;
/// Runs advanced by one step each per transaction.
const RUN_BATCH: i64 = 256;
/// Runs prepared (loaded and checked) at once before their transaction.
const PREPARE_AHEAD: usize = 8;
/// Contacts looked at per transaction in a segment pass.
const SEGMENT_BATCH: i64 = 2000;
/// Time a tick gives to firing timers before it turns to the runs (the rest
/// follows on the next tick); keeps one kind of work from starving the others.
const WORK_SLICE: std::time::Duration = std::time::Duration::from_millis(300);
/// A segment pass gets longer slices: enrolling the whole segment quickly is what
/// an admin waits for, and each slice still ends within a second.
const SEGMENT_SLICE: std::time::Duration = std::time::Duration::from_millis(900);
/// The time a stage-change group may spend rendering its runs' first steps
/// while it holds the turn to write; a render not begun by then is left to the
/// engine, which renders outside the turn.
const TURN_RENDER_BUDGET: std::time::Duration = std::time::Duration::from_millis(20);
/// How long groups leave their first steps to the engine after one ran past
/// that budget: a slow plugin must not hold up every writer, group after group.
const TURN_RENDER_PAUSE: std::time::Duration = std::time::Duration::from_secs(60);
/// Errors in a row at one step before the run is given up as failed; until
/// then it is retried with backoff (a busy database, a plugin over its deadline).
const MAX_STEP_ERRORS: i64 = 8;

/// A message a step is about to send.
struct Outgoing {
    channel: String,
    template: String,
    name: String,
    address: String,
    /// Tells apart two messages of one step (the contact's and the owner's).
    key_suffix: &'static str,
}

/// A ready run's next move, worked out before its transaction.
struct Prepared {
    run: Run,
    set: Arc<WorkflowSet>,
    /// Index of the run's workflow in `set.workflows`.
    workflow: usize,
    action: Action,
}

impl Prepared {
    /// Whether its step is taken and writes the contact (see `Step::writes_contact`).
    fn writes_contact(&self) -> bool {
        let step = self.set.workflows[self.workflow].steps.get(self.run.next_step as usize);
        matches!(self.action, Action::Step(_)) && step.is_some_and(Step::writes_contact)
    }
}

enum Action {
    /// No steps left.
    Finish,
    /// Wait at this step until then (a send window is closed).
    Defer { until: i64, reason: String },
    /// Run the step; its message, if any, is rendered by then (`render_messages`).
    Step(Box<PreparedStep>),
}

struct PreparedStep {
    outgoing: Option<Outgoing>,
    /// What the message is rendered from, until it is.
    render: Option<Render>,
    rendered: Option<RenderedMessage>,
    unsubscribe: Option<store::Unsubscribe>,
    category: Category,
}

/// A message to render: the plugin's input.
struct Render {
    channel: String,
    template_name: String,
    fields: Vec<(String, String)>,
    /// The running set's version of the template, where it differs from the run's
    /// own: used if the run's own cannot render, so that a fixed template reaches
    /// the runs it held (which stay pinned to their set for everything else).
    fixed: Option<Vec<(String, String)>>,
    context: serde_json::Value,
}

/// What one `advance_runs` did.
#[derive(Default)]
struct Advanced {
    /// Whether work is due at once: a batch that went to be written, a run that goes
    /// straight on to its next step, or an event a step wrote (a stage change
    /// that starts runs).
    more: bool,
}

/// The engine: turns events into runs, fires timers, advances runs.
pub struct Engine {
    pub store: Store,
    pub clock: Clock,
    pub plugins: Plugins,
    pub message_id_domain: String,
    pub unsubscribe: Unsubscribe,
    /// Handed the outbox rows each batch of steps queued, once committed.
    pub delivery: Arc<Handoff>,
    /// Told where the API's events have got to.
    pub admission: Arc<Admission>,
    current: RwLock<Arc<WorkflowSet>>,
    /// Sets that runs are pinned to, by hash (the current one included).
    pinned: Mutex<HashMap<String, Arc<WorkflowSet>>>,
    /// The batch of steps being written, if any (`advance_runs`).
    writing: tokio::sync::Mutex<Option<Writing>>,
    /// Until when stage-change groups leave their first steps to the engine
    /// (`TURN_RENDER_PAUSE`); the machine's monotonic clock, as it is about its pace.
    turn_renders_paused: Mutex<Option<tokio::time::Instant>>,
}

/// A batch of steps handed to its write: its runs, and the task writing it.
struct Writing {
    runs: Vec<i64>,
    task: tokio::task::JoinHandle<anyhow::Result<Advanced>>,
}

impl Engine {
    pub async fn new(
        store: Store,
        clock: Clock,
        plugins: Plugins,
        workflows: WorkflowSet,
        message_id_domain: String,
        unsubscribe: Unsubscribe,
        admission: Arc<Admission>,
    ) -> anyhow::Result<Engine> {
        let set = Arc::new(workflows);
        let engine = Engine {
            store,
            clock,
            plugins,
            message_id_domain,
            unsubscribe,
            delivery: Arc::new(Handoff::default()),
            admission,
            current: RwLock::new(set.clone()),
            pinned: Mutex::new(HashMap::new()),
            writing: tokio::sync::Mutex::new(None),
            turn_renders_paused: Mutex::new(None),
        };
        engine.install(set).await?;
        Ok(engine)
    }

    /// Makes `set` the one new events are matched against. Runs already started
    /// keep the set they started with.
    pub async fn install(&self, set: Arc<WorkflowSet>) -> anyhow::Result<()> {
        self.store
            .save_workflow_set(&set.hash, &set.files, self.clock.now_ms())
            .await?;
        self.pinned.lock().unwrap().insert(set.hash.clone(), set.clone());
        *self.current.write().unwrap() = set;
        Ok(())
    }

    pub fn current(&self) -> Arc<WorkflowSet> {
        self.current.read().unwrap().clone()
    }

    /// The set a run is pinned to, recompiled from the database if this process never loaded it.
    async fn set_for(&self, hash: &str) -> anyhow::Result<Arc<WorkflowSet>> {
        if let Some(set) = self.pinned.lock().unwrap().get(hash) {
            return Ok(set.clone());
        }
        let files = self
            .store
            .workflow_set_files(hash)
            .await?
            .with_context(|| format!("workflow set {hash} is not stored"))?;
        let set = WorkflowSet::compile_stored(files, &self.plugins.get().channels())
            .map_err(|d| anyhow::anyhow!("stored workflow set {hash} no longer compiles:\n{d}"))?;
        let set = Arc::new(set);
        self.pinned.lock().unwrap().insert(hash.to_string(), set.clone());
        Ok(set)
    }

    /// Does whatever work is due; returns whether more may be due at once: a
    /// batch was full or went to be written, a segment pass is under way, or a
    /// step made work of its own (a run that goes straight on, a stage change
    /// that starts runs). What other tasks and processes write wakes the
    /// engine, so a tick that found less than a batch of everything need not
    /// look again. A batch of steps may still be being written when it returns
    /// (`written`, `settle`).
    pub async fn tick(self: &Arc<Self>) -> anyhow::Result<bool> {
        // Timers first and all of them (firing is cheap): a due SLA timer must not
        // wait behind a large batch of runs. Then the events, those of the timers
        // included, and right after them the runs they started: between an event's
        // commit and its run's step, as little as possible.
        let slice = std::time::Instant::now();
        let timers_left = loop {
            let fired = self.fire_timers().await?;
            if fired < BATCH as usize {
                break false;
            }
            if slice.elapsed() > WORK_SLICE {
                break true;
            }
        };
        let enrolled = self.enrol_segments().await?;
        let events = self.ingest_events().await?;
        let runs = self.advance_runs().await?;
        Ok(timers_left || enrolled > 0 || events == BATCH as usize || runs.more)
    }

    /// When the next timer falls due, if any.
    pub async fn next_due(&self) -> anyhow::Result<Option<i64>> {
        let mut conn = self.store.pool.acquire().await?;
        store::next_timer_due(&mut conn).await
    }

    async fn ingest_events(&self) -> anyhow::Result<usize> {
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
        // Events come in id order, so every event up to the last is taken.
        let last = events.last().map(|e| e.id).unwrap_or_default();
        self.admission
            .events_taken(last, ready.iter().map(|run| (run.id, run.event_id)));
        Ok(events.len())
    }

    /// Takes the events `ids` in `conn`, the transaction that wrote them: starts
    /// their runs as `ingest_events` would, reading them and their contacts there,
    /// and takes the first step of each run started ready there too, prepared and
    /// rendered as the engine would. The API's stage changes go this way, so that
    /// their messages are queued when the write commits instead of one engine
    /// cycle or two later. A run whose step cannot be prepared or rendered is left
    /// ready, for the engine to take it (and record why) as any other. What the
    /// steps did is told to admission control and delivery by `Taken::committed`.
    pub async fn take_events(
        self: &Arc<Self>,
        conn: &mut store::Conn,
        ids: RangeInclusive<i64>,
    ) -> anyhow::Result<store::Taken> {
        let (events, mut contacts) = store::events_with_contacts(conn, ids).await?;
        let ready = self.start_runs(conn, &events, &contacts).await?;
        let started: Vec<(i64, i64)> = ready.iter().map(|run| (run.id, run.event_id)).collect();
        let paused = self
            .turn_renders_paused
            .lock()
            .unwrap()
            .is_some_and(|until| until > tokio::time::Instant::now());
        if paused {
            return Ok(store::Taken {
                started,
                committed: Box::new(|| {}),
            });
        }
        let began = std::time::Instant::now();
        let mut prepared = self.prepare_all(ready, &contacts, Some(TURN_RENDER_BUDGET)).await?;
        if began.elapsed() > TURN_RENDER_BUDGET {
            *self.turn_renders_paused.lock().unwrap() = Some(tokio::time::Instant::now() + TURN_RENDER_PAUSE);
            warn!(
                "rendering a group's first steps took over {TURN_RENDER_BUDGET:?} while it held the turn to write; \
                 the engine takes them for the next {TURN_RENDER_PAUSE:?}"
            );
        }
        prepared.retain(|(_, p)| p.is_ok());
        let (stepped, queued) = self
            .apply_in(conn, &prepared, &mut contacts, self.clock.now_ms(), false)
            .await?;
        let runs: Vec<i64> = prepared.iter().map(|(run_id, _)| *run_id).collect();
        let engine = self.clone();
        Ok(store::Taken {
            started,
            committed: Box::new(move || {
                engine.admission.runs_stepped(&runs, &stepped);
                engine.delivery.hand(queued);
            }),
        })
    }

    /// Starts the runs `events` trigger (each enabled workflow whose trigger and
    /// condition match, as of `contacts`) and marks the events processed, in
    /// a query or two; returns the runs started ready.
    async fn start_runs(
        &self,
        conn: &mut store::Conn,
        events: &[store::Event],
        contacts: &HashMap<i64, (Contact, serde_json::Value)>,
    ) -> anyhow::Result<Vec<Run>> {
        let set = self.current();
        let mut starts = Vec::new();
        let mut contexts = Vec::new();
        for event in events {
            let Some((contact, contact_ctx)) = contacts.get(&event.contact_id) else {
                continue;
            };
            let event_ctx = triggers::event_context(event);
            for workflow in set
                .workflows
                .iter()
                .filter(|w| w.enabled && triggers::matches(&w.trigger, event))
            {
                if let Some(condition) = &workflow.when {
                    match condition.evaluate(contact_ctx, &event_ctx) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            warn!(workflow = %workflow.name, contact_id = contact.id, "condition failed: {e}");
                            continue;
                        }
                    }
                }
                let mut context = event.payload.0.clone();
                context["kind"] = json!(event.kind);
                contexts.push(context);
                starts.push((workflow, event, contact, triggers::start_at(workflow, event, contact)));
            }
        }
        let now = self.clock.now_ms();
        let new_runs: Vec<store::NewRun> = starts
            .iter()
            .zip(&contexts)
            .map(|((workflow, event, contact, start), context)| store::NewRun {
                workflow: &workflow.name,
                set_hash: &set.hash,
                contact_id: contact.id,
                event_id: event.id,
                status: if *start <= now { "ready" } else { "waiting" },
                context,
                start_stage: &contact.stage,
            })
            .collect();
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        let started = store::start_runs(conn, &new_runs, &ids, now).await?;
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
            if start > now {
                timers.push((*run_id, start));
            } else {
                // As `ready_runs` would read it back.
                ready.push(Run {
                    id: *run_id,
                    workflow: workflow.clone(),
                    set_hash: set.hash.clone(),
                    contact_id: contact.id,
                    event_id: *event_id,
                    status: "ready".into(),
                    next_step: 0,
                    context: sqlx::types::Json(contexts[i].clone()),
                    started_at: now,
                    start_stage: Some(contact.stage.clone()),
                    step_errors: 0,
                });
            }
            info!(run_id, workflow = %workflow, event_id, "run started");
        }
        store::insert_run_timers(conn, &timers).await?;
        Ok(ready)
    }

    async fn fire_timers(&self) -> anyhow::Result<usize> {
        let now = self.clock.now_ms();
        let timers = {
            let mut conn = self.store.pool.acquire().await?;
            store::due_timers(&mut conn, now, BATCH).await?
        };
        if timers.is_empty() {
            return Ok(0);
        }
        // One transaction and four statements for the batch, as for events.
        let mut tx = self.store.write().await?;
        let ids: Vec<i64> = timers.iter().map(|t| t.id).collect();
        let fired: std::collections::HashSet<i64> = store::mark_timers_fired(&mut tx, &ids, now)
            .await?
            .into_iter()
            .collect();
        let mut wake = Vec::new();
        let mut overdue = Vec::new();
        for timer in timers.iter().filter(|t| fired.contains(&t.id)) {
            match (timer.kind.as_str(), timer.run_id, timer.contact_id) {
                ("resume_run", Some(run_id), _) => wake.push(run_id),
                // The event is left out if a newer follow-up moved the date (a stale timer).
                ("follow_up_due", _, Some(contact_id)) => overdue.push((contact_id, timer.due_at)),
                (kind, ..) => warn!(timer_id = timer.id, "timer of kind {kind} has nothing to act on"),
            }
        }
        store::wake_runs(&mut tx, &wake, now).await?;
        store::insert_overdue_events(&mut tx, &overdue, now).await?;
        tx.commit().await?;
        Ok(timers.len())
    }

    /// Moves up to RUN_BATCH ready runs on by one step each, in one transaction:
    /// the batch is read and rendered first (several at once), then handed to a
    /// task that runs every step's checks inside the transaction and writes what
    /// they gathered for the whole batch at once. While that task waits for its
    /// turn to write and writes, the next tick reads and renders the next batch,
    /// so runs that become ready meanwhile wait for one stage, not for both. At
    /// most one batch is being written: a new one waits for the one before.
    async fn advance_runs(self: &Arc<Self>) -> anyhow::Result<Advanced> {
        let mut writing = self.writing.lock().await;
        let in_flight = writing.as_ref().map(|w| w.runs.clone()).unwrap_or_default();
        let batch = self.prepare_batch(&in_flight).await?;
        if batch.is_empty() && !writing.as_ref().is_some_and(|w| w.task.is_finished()) {
            // Nothing new: what is being written is collected by `written`.
            return Ok(Advanced::default());
        }
        let previous = match writing.take() {
            Some(w) => w.task.await.context("a batch's write panicked")??,
            None => Advanced::default(),
        };
        if batch.is_empty() {
            return Ok(previous);
        }
        let engine = self.clone();
        *writing = Some(Writing {
            runs: batch.iter().map(|(run_id, _)| *run_id).collect(),
            task: tokio::spawn(async move { engine.apply_prepared(&batch).await }),
        });
        // Look again: the next batch may be ready already.
        Ok(Advanced { more: true })
    }

    /// Waits until the batch of steps being written has committed and returns
    /// whether its steps made more work due at once; never returns while no
    /// batch is being written. Dropping the wait leaves the write going.
    pub async fn written(&self) -> anyhow::Result<bool> {
        match self.collect_written().await {
            Some(more) => more,
            None => std::future::pending().await,
        }
    }

    /// Like `written`, but returns false at once if no batch is being written:
    /// after `tick` said nothing more is due, everything due is done once this returns false.
    pub async fn settle(&self) -> anyhow::Result<bool> {
        self.collect_written().await.unwrap_or(Ok(false))
    }

    /// The end of the batch being written, `None` if there is none. The task's
    /// handle stays in place until it has ended, so a dropped wait loses nothing.
    async fn collect_written(&self) -> Option<anyhow::Result<bool>> {
        let mut writing = self.writing.lock().await;
        let done = (&mut writing.as_mut()?.task).await;
        *writing = None;
        Some(
            done.context("a batch's write panicked")
                .and_then(|applied| Ok(applied?.more)),
        )
    }

    /// Reads up to RUN_BATCH ready runs, leaving out `in_flight` (a batch being
    /// applied), and works out and renders each one's next move.
    async fn prepare_batch(&self, in_flight: &[i64]) -> anyhow::Result<Vec<(i64, anyhow::Result<Option<Prepared>>)>> {
        // The runs and their contacts are read for the whole batch at once.
        let (runs, contacts) = {
            let mut conn = self.store.pool.acquire().await?;
            let runs = store::ready_runs(&mut conn, RUN_BATCH, in_flight).await?;
            if runs.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<i64> = runs.iter().map(|r| r.contact_id).collect();
            let contacts = store::contacts_with_context(&mut conn, &ids).await?;
            (runs, contacts)
        };
        self.prepare_all(runs, &contacts, None).await
    }

    /// Works out and renders each run's next move (several at once), within
    /// `budget` if given (`render_messages`).
    async fn prepare_all(
        &self,
        runs: Vec<Run>,
        contacts: &HashMap<i64, (Contact, serde_json::Value)>,
        budget: Option<std::time::Duration>,
    ) -> anyhow::Result<Vec<(i64, anyhow::Result<Option<Prepared>>)>> {
        let mut prepared: Vec<(i64, anyhow::Result<Option<Prepared>>)> = stream::iter(runs)
            .map(|run| async move { (run.id, self.prepare(run, contacts).await) })
            .buffered(PREPARE_AHEAD)
            .collect()
            .await;
        self.render_messages(&mut prepared, budget).await?;
        Ok(prepared)
    }

    /// Applies a prepared batch in one transaction, or if that fails one step
    /// at a time, each under its own savepoint, so that one run's error undoes
    /// only that run's step.
    async fn apply_prepared(&self, prepared: &[(i64, anyhow::Result<Option<Prepared>>)]) -> anyhow::Result<Advanced> {
        let now = self.clock.now_ms();
        let (stepped, queued) = match self.apply_batch(prepared, now, false).await {
            Ok(applied) => applied,
            Err(e) => {
                let count = prepared.len();
                warn!("a batch of {count} steps failed as a whole ({e:#}); applying them one by one");
                self.apply_batch(prepared, now, true).await?
            }
        };
        self.delivery.hand(queued);
        Ok(Advanced {
            more: !stepped.continuing.is_empty()
                || prepared.iter().any(|(_, p)| {
                    p.as_ref()
                        .is_ok_and(|p| p.as_ref().is_some_and(Prepared::writes_contact))
                }),
        })
    }

    /// Applies prepared steps in one transaction (`apply_in`); returns the runs
    /// that queued a message and those that go straight on, and the messages queued.
    async fn apply_batch(
        &self,
        prepared: &[(i64, anyhow::Result<Option<Prepared>>)],
        now: i64,
        one_by_one: bool,
    ) -> anyhow::Result<(SteppedRuns, Vec<OutboxRow>)> {
        let mut tx = self.store.write().await?;
        // Read again under the write lock, where nothing but this batch changes them;
        // a step that changes its contact drops it from here, so the next reads it afresh.
        let ids: Vec<i64> = prepared
            .iter()
            .filter_map(|(_, p)| p.as_ref().ok()?.as_ref().map(|p| p.run.contact_id))
            .collect();
        let mut current = store::contacts_with_context(&mut tx, &ids).await?;
        let applied = self.apply_in(&mut tx, prepared, &mut current, now, one_by_one).await?;
        tx.commit().await?;
        let runs: Vec<i64> = prepared.iter().map(|(run_id, _)| *run_id).collect();
        self.admission.runs_stepped(&runs, &applied.0);
        Ok(applied)
    }

    /// Applies prepared steps in `tx`, a transaction that holds the write lock and
    /// in which `current` holds their contacts as they are; returns the runs that
    /// queued a message and those that go straight on, and the messages queued.
    /// `one_by_one`: each step under its own savepoint, an error recorded
    /// against its run; otherwise any error fails the whole batch.
    async fn apply_in(
        &self,
        tx: &mut store::Conn,
        prepared: &[(i64, anyhow::Result<Option<Prepared>>)],
        current: &mut HashMap<i64, (Contact, serde_json::Value)>,
        now: i64,
        one_by_one: bool,
    ) -> anyhow::Result<(SteppedRuns, Vec<OutboxRow>)> {
        let stepping: Vec<(&Workflow, &Run, &Contact)> = prepared
            .iter()
            .filter_map(|(_, p)| p.as_ref().ok()?.as_ref())
            .filter(|p| matches!(p.action, Action::Step(_)))
            .filter_map(|p| {
                let (contact, _) = current.get(&p.run.contact_id)?;
                Some((&p.set.workflows[p.workflow], &p.run, contact))
            })
            .collect();
        let facts = triggers::ExitFacts::load(tx, &stepping).await?;
        drop(stepping);
        let mut effects = Effects::default();
        let mut stepped = SteppedRuns::default();
        let mut queued = Vec::new();
        for (run_id, prepared) in prepared {
            let result = match prepared {
                Ok(None) => continue,
                Ok(Some(p)) if !one_by_one => {
                    self.apply(tx, p, current, &facts, &mut effects, now).await?;
                    continue;
                }
                Ok(Some(p)) => {
                    let mut savepoint = tx.begin().await?;
                    let applied = match self.apply(&mut savepoint, p, current, &facts, &mut effects, now).await {
                        Ok(()) => effects.flush(&mut savepoint, now).await,
                        Err(e) => Err(e),
                    };
                    match applied {
                        Ok(()) => {
                            savepoint.commit().await?;
                            stepped.append(std::mem::take(&mut effects.stepped));
                            queued.append(&mut effects.queued);
                            Ok(())
                        }
                        Err(e) => {
                            savepoint.rollback().await?;
                            effects.clear();
                            current.remove(&p.run.contact_id);
                            Err(e)
                        }
                    }
                }
                Err(e)
                    if e.chain()
                        .any(|e| matches!(e.downcast_ref(), Some(PluginError::Template { .. }))) =>
                {
                    Err(anyhow::Error::new(CannotRender(format!("{e:#}"))))
                }
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            };
            if let Err(e) = result {
                record_step_error(tx, *run_id, &e, now).await?;
            }
        }
        effects.flush(tx, now).await?;
        stepped.append(std::mem::take(&mut effects.stepped));
        queued.append(&mut effects.queued);
        Ok((stepped, queued))
    }

    /// Opens the passes of segment workflows that are due and enrols one batch
    /// of contacts for each pass under way; returns how many contacts it looked at.
    async fn enrol_segments(&self) -> anyhow::Result<usize> {
        let set = self.current();
        let now = self.clock.now_ms();
        let mut conn = self.store.pool.acquire().await?;
        for workflow in set.workflows.iter().filter(|w| w.enabled) {
            let Trigger::Segment { start, every } = &workflow.trigger else {
                continue;
            };
            let due = match (store::last_enrolment_due(&mut conn, &workflow.name).await?, every) {
                (None, _) => start.unwrap_or(now),
                (Some(last), Some(every)) => next_segment_due(last, *every, now),
                (Some(_), None) => continue,
            };
            if due <= now && store::open_enrolment(&mut conn, &workflow.name, &set.hash, due, now).await? {
                info!(workflow = %workflow.name, "segment pass started");
            }
        }
        let passes = store::running_enrolments(&mut conn).await?;
        drop(conn);
        let mut scanned = 0;
        for mut pass in passes {
            let slice = std::time::Instant::now();
            while pass.status == "running" && slice.elapsed() < SEGMENT_SLICE {
                scanned += self.enrol_batch(&mut pass).await?;
            }
        }
        Ok(scanned)
    }

    /// Enrols the next batch of a pass in one transaction: every contact that
    /// matches the workflow's `when` and was never enrolled in it gets a run.
    async fn enrol_batch(&self, pass: &mut store::Enrolment) -> anyhow::Result<usize> {
        let set = self.set_for(&pass.set_hash).await?;
        let now = self.clock.now_ms();
        let mut tx = self.store.write().await?;
        let contacts = store::contacts_after(&mut tx, pass.cursor, SEGMENT_BATCH).await?;
        let segment = |w: &&Workflow| w.enabled && matches!(w.trigger, Trigger::Segment { .. });
        let Some(workflow) = set.workflow(&pass.workflow).filter(segment) else {
            warn!(workflow = %pass.workflow, "not an enabled segment workflow: pass closed");
            store::advance_enrolment(&mut tx, pass.id, pass.cursor, 0, 0, true, now).await?;
            tx.commit().await?;
            pass.status = "done".into();
            return Ok(0);
        };
        let enrolled_before = match (contacts.first(), contacts.last()) {
            (Some(first), Some(last)) => {
                store::enrolled_between(&mut tx, &workflow.name, first.contact.id, last.contact.id).await?
            }
            _ => Default::default(),
        };
        let event_ctx = json!({ "kind": "segment", "from": "", "to": "", "inquiry_id": 0 });
        let mut joining: Vec<(i64, &str)> = Vec::new();
        for row in &contacts {
            let contact = &row.contact;
            if enrolled_before.contains(&contact.id) {
                continue;
            }
            let contact_ctx = contact.context(row.follow_up_count);
            let matched = match &workflow.when {
                Some(condition) => condition.evaluate(&contact_ctx, &event_ctx).unwrap_or_else(|e| {
                    warn!(workflow = %workflow.name, contact_id = contact.id, "segment condition failed: {e}");
                    false
                }),
                None => true,
            };
            if matched {
                joining.push((contact.id, &contact.stage));
            }
        }
        // The whole batch's events and runs in two statements: per-row inserts
        // would make the pass cost one round trip to SQLite's thread per contact.
        let context = json!({ "kind": "segment", "enrolment": pass.id });
        let enrolled = store::enrol_contacts(&mut tx, &workflow.name, &set.hash, &joining, &context, now).await? as i64;
        let cursor = contacts.last().map_or(pass.cursor, |r| r.contact.id);
        let done = (contacts.len() as i64) < SEGMENT_BATCH;
        store::advance_enrolment(&mut tx, pass.id, cursor, contacts.len() as i64, enrolled, done, now).await?;
        tx.commit().await?;
        pass.cursor = cursor;
        pass.enrolled += enrolled;
        if done {
            pass.status = "done".into();
            info!(workflow = %workflow.name, enrolled = pass.enrolled, "segment pass done");
        }
        Ok(contacts.len())
    }

    /// Works out a ready run's next move outside any transaction: the end of its
    /// steps, a send window that defers it, the rendering of its message. `None`: not ready.
    async fn prepare(
        &self,
        run: Run,
        contacts: &HashMap<i64, (Contact, serde_json::Value)>,
    ) -> anyhow::Result<Option<Prepared>> {
        let set = self.set_for(&run.set_hash).await?;
        let index = set
            .workflows
            .iter()
            .position(|w| w.name == run.workflow)
            .with_context(|| format!("workflow {} is not in its set", run.workflow))?;
        let workflow = &set.workflows[index];
        let prepared = |action| {
            Ok(Some(Prepared {
                run: run.clone(),
                set: set.clone(),
                workflow: index,
                action,
            }))
        };
        let Some(step) = workflow.steps.get(run.next_step as usize) else {
            return prepared(Action::Finish);
        };
        // Whether the run must stop is decided in `apply`, inside the transaction.
        let (contact, contact_ctx) = contacts.get(&run.contact_id).context("contact is gone")?;
        let now = self.clock.now_ms();
        let variant = variants::of_step(workflow, &run);
        if let Some((until, reason)) = variants::held_until(&self.store, &run, variant, &contact.time_zone, now).await?
        {
            return prepared(Action::Defer { until, reason });
        }
        // Outside its send window a message waits for the next opening (checked
        // before rendering, which the wait would make stale).
        if matches!(step, Step::Send { .. }) {
            let tz = jiff::tz::TimeZone::get(&contact.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
            let at = jiff::Timestamp::from_millisecond(now)?;
            let slot = set
                .sending
                .next_slot(workflow.send_window.as_deref(), workflow.category, at, &tz);
            if slot > at {
                let reason = format!(
                    "outside the send window{}; next opening {} ({})",
                    workflow
                        .send_window
                        .as_deref()
                        .map(|w| format!(" `{w}`"))
                        .unwrap_or_default(),
                    slot.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z"),
                    contact.time_zone
                );
                return prepared(Action::Defer {
                    until: slot.as_millisecond(),
                    reason,
                });
            }
        }
        let outgoing = match step {
            Step::Send { channel, template, .. } => {
                let recipient = self
                    .plugins
                    .get()
                    .for_channel(channel)
                    .map(|p| p.manifest.capabilities.recipient);
                let address = match recipient {
                    Ok(Recipient::Email) => contact.email.clone(),
                    Ok(Recipient::Phone) => contact.phone.clone(),
                    Ok(Recipient::None) => Some(String::new()),
                    Err(_) => None,
                };
                address
                    .filter(|_| contact.consent != "withdrawn")
                    .map(|address| Outgoing {
                        channel: channel.clone(),
                        template: template.clone(),
                        name: contact.name.clone(),
                        address,
                        key_suffix: "",
                    })
            }
            Step::NotifyOwner { template } => {
                Some(contact.owner.clone())
                    .filter(|o| o.contains('@'))
                    .map(|address| Outgoing {
                        channel: "email".into(),
                        template: template.clone(),
                        name: String::new(),
                        address,
                        key_suffix: "-owner",
                    })
            }
            _ => None,
        };
        let category = match step {
            Step::NotifyOwner { .. } => Category::Internal,
            _ => workflow.category,
        };
        // Marketing email carries an unsubscribe link (visible and in List-Unsubscribe).
        let unsubscribe = (category == Category::Marketing && outgoing.as_ref().is_some_and(|o| o.channel == "email"))
            .then(|| self.unsubscribe.links(contact.id));
        // Rendering is pure and may be slow, so it happens before the transaction
        // opens, for the whole batch at once (`render_messages`).
        let render = match &outgoing {
            Some(out) => {
                let template = set.templates.get(&out.template).cloned().context("template missing")?;
                let fixed = (self.current().templates.get(&out.template))
                    .filter(|t| t.channel == template.channel && t.fields != template.fields)
                    .map(|t| variants::template(t.clone(), variant).fields);
                let template = variants::template(template, variant);
                let context = json!({
                    "contact": contact_ctx, "vars": workflow.vars, "event": run.context.0,
                    "owner": { "email": contact.owner }, "workflow": workflow.name,
                    "unsubscribe_url": unsubscribe.as_ref().map(|u| u.https.clone()).unwrap_or_default(),
                });
                Some(Render {
                    channel: out.channel.clone(),
                    template_name: out.template.clone(),
                    fields: template.fields,
                    fixed,
                    context,
                })
            }
            None => None,
        };
        prepared(Action::Step(Box::new(PreparedStep {
            outgoing,
            render,
            rendered: None,
            unsubscribe,
            category,
        })))
    }

    /// Renders the messages of a batch's prepared steps, in one blocking call per
    /// core rather than one per message (each call is a hand-off to another
    /// thread and back). A message that fails to render fails its run's step.
    /// With a `budget`, a render not begun within it is not made (its step
    /// fails with "left to the engine").
    async fn render_messages(
        &self,
        prepared: &mut [(i64, anyhow::Result<Option<Prepared>>)],
        budget: Option<std::time::Duration>,
    ) -> anyhow::Result<()> {
        let mut renders: Vec<(usize, Render)> = prepared
            .iter_mut()
            .enumerate()
            .filter_map(|(i, (_, p))| match p {
                Ok(Some(Prepared {
                    action: Action::Step(step),
                    ..
                })) => Some((i, step.render.take()?)),
                _ => None,
            })
            .collect();
        if renders.is_empty() {
            return Ok(());
        }
        let began = std::time::Instant::now();
        let within = move || budget.is_none_or(|budget| began.elapsed() <= budget);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = renders.len().div_ceil(cores);
        let plugins = self.plugins.get();
        let mut calls = Vec::new();
        while !renders.is_empty() {
            let mine: Vec<(usize, Render)> = renders.drain(..share.min(renders.len())).collect();
            let plugins = plugins.clone();
            calls.push(tokio::task::spawn_blocking(move || {
                mine.into_iter()
                    .map(|(i, r)| {
                        let rendered =
                            within().then(|| match (plugins.render(&r.channel, &r.fields, &r.context), &r.fixed) {
                                (Err(PluginError::Template { .. }), Some(fixed)) => {
                                    plugins.render(&r.channel, fixed, &r.context)
                                }
                                (rendered, _) => rendered,
                            });
                        (i, r.template_name, rendered)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        for call in calls {
            for (i, template_name, result) in call.await? {
                let slot = &mut prepared[i].1;
                match result {
                    Some(Ok((message, _))) => {
                        if let Ok(Some(Prepared {
                            action: Action::Step(step),
                            ..
                        })) = slot
                        {
                            step.rendered = Some(message);
                        }
                    }
                    Some(Err(e)) => {
                        *slot = Err(anyhow::Error::new(e).context(format!("render template `{template_name}`")))
                    }
                    None => *slot = Err(anyhow::anyhow!("left to the engine: the renders ran past their budget")),
                }
            }
        }
        Ok(())
    }

    /// Works out a prepared move inside the batch's transaction: the checks and
    /// the contact's changes happen here, the run's own writes go to `effects`.
    async fn apply(
        &self,
        tx: &mut store::Conn,
        p: &Prepared,
        contacts: &mut HashMap<i64, (Contact, serde_json::Value)>,
        facts: &triggers::ExitFacts,
        effects: &mut Effects,
        now: i64,
    ) -> anyhow::Result<()> {
        let run = &p.run;
        let set = &p.set;
        let workflow = &set.workflows[p.workflow];
        let run_id = run.id;
        let (outgoing, rendered, unsubscribe, category) = match &p.action {
            Action::Finish => {
                effects.ended.push((run_id, "done", "all steps done".into()));
                info!(run_id, workflow = %workflow.name, "run done");
                return Ok(());
            }
            Action::Defer { until, reason } => {
                effects.deferred.push(store::DeferredRun {
                    run_id,
                    step: run.next_step,
                    until: *until,
                    reason: reason.clone(),
                });
                info!(run_id, workflow = %workflow.name, "{reason}");
                return Ok(());
            }
            Action::Step(step) => (&step.outgoing, &step.rendered, &step.unsubscribe, step.category),
        };
        let step = &workflow.steps[run.next_step as usize];
        let kind = step.kind();
        let mut status = "ready";
        // The checks of `prepare` ran before this transaction; repeat them inside it,
        // so a follow-up logged or consent withdrawn meanwhile still wins.
        let (contact, contact_ctx) = &match contacts.get(&run.contact_id) {
            Some(known) => known.clone(),
            None => store::contact_with_context(tx, run.contact_id)
                .await?
                .context("contact is gone")?,
        };
        // Steps that write the contact make the next run of this batch read it afresh.
        if step.writes_contact() {
            contacts.remove(&run.contact_id);
        }
        if let Some(reason) = triggers::stop_reason(facts, workflow, run, contact, contact_ctx) {
            info!(run_id, workflow = %workflow.name, reason, "run stopped");
            effects.ended.push((run_id, "cancelled", reason));
            return Ok(());
        }
        // Frequency caps count what other workflows queued too (in this very batch
        // as well), so they are checked here, in the transaction.
        if let (Step::Send { channel, .. }, Some(_)) = (step, outgoing)
            && let Some((until, reason)) = self.capped(tx, p, channel, contact, effects, now).await?
        {
            info!(run_id, workflow = %workflow.name, contact_id = contact.id, "{reason}");
            effects.deferred.push(store::DeferredRun {
                run_id,
                step: run.next_step,
                until,
                reason,
            });
            return Ok(());
        }
        let outgoing = outgoing
            .as_ref()
            .filter(|_| !(matches!(step, Step::Send { .. }) && contact.consent == "withdrawn"));
        let detail = match step {
            Step::Send { .. } | Step::NotifyOwner { .. } => match (outgoing, rendered) {
                (Some(out), Some(r)) => {
                    let key = format!(
                        "run{}-step{}-contact{}{}",
                        run.id, run.next_step, contact.id, out.key_suffix
                    );
                    let message_id = format!("<{key}@{}>", self.message_id_domain);
                    let (text, html) = match unsubscribe {
                        Some(links) => with_unsubscribe_footer(r.text.clone(), r.html.clone(), &links.https),
                        None => (r.text.clone(), r.html.clone()),
                    };
                    let html = tracking::html_for(&self.unsubscribe, workflow, category, &out.channel, &key, html);
                    let outbound = OutboundMessage {
                        to_name: out.name.clone(),
                        to_address: out.address.clone(),
                        subject: r.subject.clone().unwrap_or_default(),
                        text,
                        html,
                        extra: r.extra.clone(),
                        unsubscribe: unsubscribe.clone(),
                    };
                    let detail = format!("queued {message_id} to {}", out.address);
                    effects.outbox.push(NewOutboxRow {
                        idempotency_key: key,
                        message_id,
                        run_id: Some(run.id),
                        contact_id: Some(contact.id),
                        channel: out.channel.clone(),
                        category,
                        message: outbound,
                        variant: variants::of_step(workflow, run).map(|v| v.name.clone()),
                    });
                    detail
                }
                _ if matches!(step, Step::NotifyOwner { .. }) => "skipped: the contact has no owner email".into(),
                _ if contact.consent == "withdrawn" => "skipped: consent withdrawn".into(),
                _ => "skipped: the contact has no address for this channel".into(),
            },
            Step::Wait(span) => {
                let until = add_span(now, *span, &contact.time_zone);
                effects.timers.push((run.id, until));
                status = "waiting";
                format!("wait until {}", crate::clock::display_ms(until))
            }
            Step::ScheduleFollowUp { after, goal } => {
                let span = match after {
                    FollowUpAfter::Fixed(span) => Some(*span),
                    FollowUpAfter::Cadence(name) => {
                        let cadence = set.cadences.get(name).context("cadence missing")?;
                        let key = contact_ctx.get(&cadence.by).and_then(|v| v.as_str());
                        cadence.interval_for(key)
                    }
                };
                match span {
                    Some(span) => {
                        let at = add_span(now, span, &contact.time_zone);
                        store::set_next_follow_up(tx, contact.id, Some(at), goal.as_deref(), now).await?;
                        format!("next follow-up {}", crate::clock::display_ms(at))
                    }
                    None => "skipped: the cadence has no interval for this contact".into(),
                }
            }
            Step::SetStage(stage) => {
                store::set_stage(
                    tx,
                    contact.id,
                    &contact.stage,
                    stage,
                    &format!("workflow:{}", workflow.name),
                    now,
                )
                .await?;
                store::rebase_run_stage(tx, run.id, stage).await?;
                format!("stage {} -> {stage}", contact.stage)
            }
            Step::SetTier(value) | Step::SetIntent(value) => {
                let field = match step {
                    Step::SetTier(_) => store::Classification::ValueTier,
                    _ => store::Classification::IntentGrade,
                };
                let by = format!("workflow:{}", workflow.name);
                store::set_classification_by(tx, contact, field, value, &by, now).await?;
                format!("{} -> {value}", field.label())
            }
            Step::Tag(tag) | Step::Untag(tag) => {
                let present = matches!(step, Step::Tag(_));
                let mut tags = contact.tags.0.clone();
                tags.retain(|t| t != tag);
                if present {
                    tags.push(tag.clone());
                }
                if let Some((known, context)) = contacts.get_mut(&contact.id) {
                    known.tags.0 = tags.clone();
                    context["tags"] = json!(tags);
                }
                effects.tags.insert(contact.id, tags);
                format!("{} {tag}", if present { "tagged" } else { "untagged" })
            }
            Step::SetOwner(owner) => {
                store::set_owner(tx, contact, owner, &format!("workflow:{}", workflow.name), now).await?;
                format!("owner {} -> {owner}", contact.owner)
            }
        };
        info!(run_id, workflow = %workflow.name, step = run.next_step, kind, contact_id = contact.id, "{detail}");
        // After its last step a run is done at once, not in another batch.
        if status == "ready" && run.next_step + 1 >= workflow.steps.len() as i64 {
            status = "done";
            info!(run_id, workflow = %workflow.name, "run done");
        }
        effects.finished.push(store::FinishedStep {
            run_id,
            step: run.next_step,
            kind,
            detail,
            status,
        });
        Ok(())
    }
}

impl Engine {
    /// If a frequency cap holds this message back: until when, and why.
    async fn capped(
        &self,
        conn: &mut store::Conn,
        p: &Prepared,
        channel: &str,
        contact: &Contact,
        effects: &mut Effects,
        now: i64,
    ) -> anyhow::Result<Option<(i64, String)>> {
        let (set, workflow) = (&p.set, &p.set.workflows[p.workflow]);
        let mut caps = set.sending.caps_for(channel, workflow.category).peekable();
        if caps.peek().is_some() {
            // What the batch queued so far must be in the outbox to be counted.
            effects.flush(conn, now).await?;
        }
        let tz = jiff::tz::TimeZone::get(&contact.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        for cap in caps {
            let since = jiff::Timestamp::from_millisecond(now)?
                .to_zoned(tz.clone())
                .checked_sub(cap.per)?
                .timestamp()
                .as_millisecond();
            let categories: Vec<String> = cap.categories.iter().map(|c| c.as_str().to_string()).collect();
            let (count, oldest) = store::recent_sends(conn, contact.id, channel, &categories, since).await?;
            if count < cap.max {
                continue;
            }
            // A slot frees up when the oldest counted message leaves the period.
            let free = add_span(oldest.unwrap_or(now), cap.per, &contact.time_zone) + 1;
            let slot = set.sending.next_slot(
                workflow.send_window.as_deref(),
                workflow.category,
                jiff::Timestamp::from_millisecond(free)?,
                &tz,
            );
            let reason = format!(
                "frequency cap reached ({}: {count} already); next slot {}",
                cap.label,
                slot.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z")
            );
            return Ok(Some((slot.as_millisecond(), reason)));
        }
        Ok(None)
    }
}

/// A message's template cannot render (the plugin said which field and why).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CannotRender(String);

/// A step could not run: it is tried again later with backoff, up to a limit of
/// errors in a row. A message whose template cannot render is held instead,
/// however often: trying again cannot help, fixing the template does (the
/// retry takes the fixed one), and failing the run would lose the message.
async fn record_step_error(conn: &mut store::Conn, run_id: i64, error: &anyhow::Error, now: i64) -> anyhow::Result<()> {
    let errors = store::count_step_error(conn, run_id).await?;
    let template = error.downcast_ref::<CannotRender>().is_some();
    match store::load_run(conn, run_id).await? {
        Some(run) if run.status == "ready" && (template || errors < MAX_STEP_ERRORS) => {
            let delay = (30_000i64 << (errors - 1).clamp(0, 7)).min(3_600_000);
            let reason = if template {
                format!(
                    "held at step {}: {error:#}; fix the template and the run sends with the fixed one (tried again within the hour)",
                    run.next_step
                )
            } else {
                format!(
                    "error {errors} of {MAX_STEP_ERRORS} at step {}: {error:#}",
                    run.next_step
                )
            };
            let deferred = store::DeferredRun {
                run_id,
                step: run.next_step,
                until: now + delay,
                reason,
            };
            store::defer_runs(conn, &[deferred], now).await?;
            warn!(run_id, "step failed, retried in {} s: {error:#}", delay / 1000);
        }
        Some(run) if run.status == "ready" => {
            store::end_runs(conn, &[(run_id, "failed", format!("{error:#}"))], now).await?;
            warn!(run_id, "run failed after {errors} errors: {error:#}");
        }
        _ => {}
    }
    Ok(())
}

/// Makes sure a marketing email shows its unsubscribe link, whatever the template wrote.
fn with_unsubscribe_footer(text: Option<String>, html: Option<String>, url: &str) -> (Option<String>, Option<String>) {
    let text = text.map(|t| {
        if t.contains(url) {
            t
        } else {
            format!("{}\n\n--\nUnsubscribe: {url}\n", t.trim_end())
        }
    });
    let html = html.map(|h| {
        if h.contains(url) {
            return h;
        }
        let footer = format!(
            "<p style=\"font-size:12px;color:#777\">Don't want these emails? <a href=\"{url}\">Unsubscribe</a>.</p>"
        );
        match h.rfind("</body>") {
            Some(i) => format!("{}{footer}{}", &h[..i], &h[i..]),
            None => format!("{h}{footer}"),
        }
    });
    (text, html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{PluginHost, PluginSettings};

    /// A step that changes the stage writes an event that starts another
    /// workflow's run: the tick must say so, or the event would wait for the
    /// next wake-up from outside.
    #[tokio::test]
    async fn a_stage_set_by_a_step_starts_its_runs_without_a_wake_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let host = PluginHost::load(
            &PluginSettings {
                dir: dir.path().join("plugins"),
                cache: Some(dir.path().join("cache")),
                config: Default::default(),
                channels: Default::default(),
            },
            None,
        )
        .unwrap();
        let files = vec![
            (
                "workflows/to-inquiry.toml".to_string(),
                "[trigger]\non = \"inquiry_received\"\n\n[[steps]]\nset_stage = \"inquiry\"\n".to_string(),
            ),
            (
                "workflows/tag-inquiry.toml".to_string(),
                "[trigger]\non = \"stage_changed\"\nto = \"inquiry\"\n\n[[steps]]\ntag = \"asked\"\n".to_string(),
            ),
        ];
        let set = WorkflowSet::compile(files, &host.channels()).unwrap();
        let clock = Clock::virtual_at(jiff::Timestamp::from_millisecond(1_800_000_000_000).unwrap());
        let now = clock.now_ms();
        let engine = Engine::new(
            store.clone(),
            clock,
            Plugins::new(host),
            set,
            "test.example".into(),
            Unsubscribe::new(b"key".to_vec(), "http://test.example".into(), "u@test.example".into()),
            Arc::new(Admission::off()),
        )
        .await
        .map(Arc::new)
        .unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let new = store::NewContact {
            name: "Li".into(),
            company: String::new(),
            email: Some("li@test.example".into()),
            phone: None,
            owner: String::new(),
            stage: None,
            intent_grade: None,
            value_tier: None,
            tags: Vec::new(),
            source: String::new(),
            time_zone: None,
            locale: None,
            consent: None,
        };
        let contact = store::insert_contact(&mut conn, &new, now).await.unwrap();
        store::insert_event(&mut conn, "inquiry_received", contact, &json!({}), now)
            .await
            .unwrap();
        drop(conn);

        let mut ticks = 0;
        while engine.tick().await.unwrap() || engine.settle().await.unwrap() {
            ticks += 1;
            assert!(ticks < 10, "the engine keeps finding work");
        }
        let tags: String = sqlx::query_scalar("SELECT tags FROM contacts WHERE id = ?")
            .bind(contact)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(tags, r#"["asked"]"#, "the stage change's run ran in the same ticks");
        let unprocessed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE processed_at IS NULL")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(unprocessed, 0);
    }
}
