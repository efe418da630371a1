//! The engine: turns events into runs and runs into outbox rows. Read it in
//! the order an event travels:
//!
//! 1. `ingest.rs` takes unprocessed events, matches them against the current
//!    workflow set (`triggers.rs`) and starts runs; `timers.rs` fires due
//!    timers (a run's wait ends, a follow-up falls overdue and writes an
//!    event); `segments.rs` enrols the contacts of segment workflows.
//! 2. `batch.rs` takes the ready runs in batches: each run's next move is
//!    worked out and its message rendered before the transaction
//!    (`steps::prepare`, `render.rs`), then the whole batch is applied in one
//!    transaction (`steps::apply`, one file per step kind under `steps/`).
//! 3. A step's writes are gathered in `effects.rs` and written set-based; a
//!    message becomes an outbox row (`message.rs`: Message-ID, unsubscribe
//!    footer, tracking, frequency caps), handed to delivery once committed.
//!
//! Each step's effect commits in one transaction with the run moving past
//! that step, so a crash at any point neither loses a step nor repeats one.
//! `scheduler.rs` is the loop that ticks the engine; `reload.rs` swaps in a
//! changed workflow set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;

mod batch;
mod effects;
mod ingest;
mod message;
pub(crate) mod reload;
mod render;
pub(crate) mod scheduler;
mod segments;
mod steps;
mod timers;
mod traces;
mod triggers;
mod variants;

pub(crate) use ingest::Taken;

use crate::admission::Admission;
use crate::clock::Clock;
use crate::delivery::Handoff;
use crate::plugins::Plugins;
use crate::store::{self, Contact, Store};
use crate::unsubscribe::Unsubscribe;
use crate::workflow::WorkflowSet;
use batch::Writing;

/// Events and timers taken per transaction.
const BATCH: i64 = 512;
/// Time a tick gives to firing timers before it turns to the runs (the rest
/// follows on the next tick); keeps one kind of work from starving the others.
const WORK_SLICE: std::time::Duration = std::time::Duration::from_millis(300);

/// Contacts with their context (as conditions and templates see them), by id.
type Contacts = HashMap<i64, (Contact, serde_json::Value)>;

/// The engine: turns events into runs, fires timers, advances runs.
pub struct Engine {
    pub(crate) store: Store,
    pub(crate) clock: Clock,
    pub(crate) plugins: Plugins,
    pub(crate) message_id_domain: String,
    pub(crate) unsubscribe: Unsubscribe,
    /// Handed the outbox rows each batch of steps queued, once committed.
    pub(crate) delivery: Arc<Handoff>,
    /// Told where the API's events have got to.
    pub(crate) admission: Arc<Admission>,
    current: RwLock<Arc<WorkflowSet>>,
    /// Sets that runs are pinned to, by hash (the current one included).
    pinned: Mutex<HashMap<String, Arc<WorkflowSet>>>,
    /// The batch of steps being written, if any (`advance_runs`).
    writing: tokio::sync::Mutex<Option<Writing>>,
    /// Until when stage-change groups leave their first steps to the engine
    /// (`TURN_RENDER_PAUSE`); the machine's monotonic clock, as it is about its pace.
    turn_renders_paused: Mutex<Option<tokio::time::Instant>>,
    /// Why the last change to the workflows folder was refused (file:line:col),
    /// until a change is taken: the console shows it beside the set in force.
    reload_error: Mutex<Option<String>>,
    /// `nudge simulate` only: how far past the clock's reading the work of this
    /// pass may lie (`span`); `i64::MIN` on the live daemon, where everything
    /// happens at the clock's reading.
    ahead: AtomicI64,
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
            reload_error: Mutex::new(None),
            ahead: AtomicI64::new(i64::MIN),
        };
        engine.install(set).await?;
        Ok(engine)
    }

    /// Makes `set` the one new events are matched against. Runs already started
    /// keep the set they started with.
    pub(crate) async fn install(&self, set: Arc<WorkflowSet>) -> anyhow::Result<()> {
        self.store
            .save_workflow_set(&set.hash, &set.files, self.clock.now_ms())
            .await?;
        self.pinned.lock().unwrap().insert(set.hash.clone(), set.clone());
        *self.current.write().unwrap() = set;
        Ok(())
    }

    /// Why the last change to the workflows folder was refused, if it was.
    pub(crate) fn reload_error(&self) -> Option<String> {
        self.reload_error.lock().unwrap().clone()
    }

    pub(crate) fn current(&self) -> Arc<WorkflowSet> {
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

    /// The times the work of this pass happens at: from the clock's reading to
    /// as far as `nudge simulate` lets the pass reach (`set_ahead`). A fired
    /// timer's effects, an event's runs and a ready run's step each happen at
    /// their own time within it (`at`); on the live daemon both ends are the
    /// clock's reading, so everything happens now.
    pub(crate) fn span(&self) -> (i64, i64) {
        let now = self.clock.now_ms();
        (now, self.ahead.load(Ordering::Relaxed).max(now))
    }

    /// When a piece of work of time `t` (a timer's due time, an event's, a run
    /// ready since then) happens: `t` within this pass's span, now on the live daemon.
    pub(crate) fn at(&self, t: i64) -> i64 {
        let (now, until) = self.span();
        t.clamp(now, until)
    }

    /// `nudge simulate` only: lets the work of the passes until the next call reach
    /// `until` (`None`: the clock's reading), for timers fired by `fire_timers_until`.
    pub(crate) fn set_ahead(&self, until: Option<i64>) {
        self.ahead.store(until.unwrap_or(i64::MIN), Ordering::Relaxed);
    }

    /// When the next timer falls due, if any.
    pub(crate) async fn next_due(&self) -> anyhow::Result<Option<i64>> {
        let mut conn = self.store.pool.acquire().await?;
        store::next_timer_due(&mut conn).await
    }
}
