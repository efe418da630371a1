//! Ready runs moved on by one step each, a batch at a time, in two stages: the
//! batch is read and each run's next move worked out and rendered first
//! (`steps::prepare`, `render.rs`), outside any transaction; then a task takes
//! the turn to write and applies the whole batch in one transaction
//! (`steps::apply`), its writes gathered in `Effects` and written set-based.
//! While that task writes, the next tick prepares the next batch. A batch that
//! fails as a whole is applied again one step at a time, each under its own
//! savepoint (`store::batch_else_each`), so that one run's error undoes only
//! that run's step.

use std::sync::Arc;

use anyhow::Context as _;
use futures::stream::{self, StreamExt};
use tracing::{Instrument as _, warn};

use super::effects::Effects;
use super::steps::NextMove;
use super::{Contacts, Engine, traces};
use crate::admission::SteppedRuns;
use crate::metrics::Tally;
use crate::model::Reason;
use crate::plugins::PluginError;
use crate::store::{self, Alone, OutboxRow, Run, RunStatus, Written};
use crate::workflow::Workflow;

/// Runs advanced by one step each per transaction.
const RUN_BATCH: i64 = 256;
/// Runs prepared (loaded and checked) at once before their transaction.
const PREPARE_AHEAD: usize = 8;
/// Errors in a row at one step before the run is given up as failed; until
/// then it is retried with backoff (a busy database, a plugin over its deadline).
const MAX_STEP_ERRORS: i64 = 8;

/// A ready run and its next move, worked out before its transaction.
pub(super) struct PreparedRun {
    pub(crate) run_id: i64,
    /// Since when the run is ready: its step happens then, within the pass's
    /// span (`Engine::at`), so now on the live daemon.
    pub(crate) ready_at: i64,
    /// Its log lines' span: its run, workflow and contact.
    pub(crate) span: tracing::Span,
    /// Its step's span in an exported trace (`traces.rs`), ended with the batch.
    pub(crate) trace: tracing::Span,
    /// `None`: the run is not ready after all. An error: its step failed before
    /// the transaction (a render, say), recorded against the run in it.
    pub(crate) next: anyhow::Result<Option<NextMove>>,
}

/// A batch of ready runs, prepared, in the order they are applied.
#[derive(Default)]
pub(super) struct Batch {
    pub(crate) runs: Vec<PreparedRun>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub(crate) fn run_ids(&self) -> Vec<i64> {
        self.runs.iter().map(|p| p.run_id).collect()
    }

    /// The moves worked out (leaving out runs not ready and those that failed).
    pub(crate) fn moves(&self) -> impl Iterator<Item = &NextMove> {
        moves(&self.runs)
    }

    /// Leaves out the runs whose move could not be worked out, for the engine
    /// to take them (and record why) as any other.
    pub(crate) fn retain_prepared(&mut self) {
        self.runs.retain(|p| p.next.is_ok());
    }
}

/// The moves worked out of `runs` (leaving out runs not ready and those that failed).
fn moves(runs: &[PreparedRun]) -> impl Iterator<Item = &NextMove> {
    runs.iter().filter_map(|p| p.next.as_ref().ok()?.as_ref())
}

/// What the steps of a batch did, told once it commits: the runs that queued a
/// message and those that go straight on, the messages queued, and the runs
/// ended, counted.
#[derive(Default)]
pub(super) struct Applied {
    pub(crate) stepped: SteppedRuns,
    pub(crate) queued: Vec<OutboxRow>,
    pub(crate) tally: Tally,
}

impl Applied {
    fn append(&mut self, mut other: Applied) {
        self.stepped.append(other.stepped);
        self.queued.append(&mut other.queued);
        self.tally.append(&mut other.tally);
    }
}

/// A batch's run steps, as `store::batch_else_each` writes them.
struct Steps<'a> {
    engine: &'a Engine,
    /// The pass's span (`Engine::span`): each step happens at its run's time in it.
    times: (i64, i64),
}

impl store::Unit for Steps<'_> {
    type Item = PreparedRun;
    type Written = Applied;

    /// Applies the steps of `runs` in `conn`, a transaction that holds the
    /// write lock; their contacts are read again there, where nothing but these
    /// steps changes them.
    async fn write(&self, conn: &mut store::Conn, runs: &[PreparedRun]) -> anyhow::Result<Applied> {
        let ids: Vec<i64> = moves(runs).map(|m| m.run.contact_id).collect();
        let mut current = store::contacts_with_context(conn, &ids).await?;
        self.engine.apply_in(conn, runs, &mut current, self.times).await
    }

    async fn commit(&self, tx: store::Tx, _: &[&Applied]) -> anyhow::Result<()> {
        Ok(tx.commit().await?)
    }
}

/// What one `advance_runs` did.
#[derive(Default)]
pub(super) struct Advanced {
    /// Whether work is due at once: a batch that went to be written, a run that goes
    /// straight on to its next step, or an event a step wrote (a stage change
    /// that starts runs).
    pub(crate) more: bool,
}

/// A batch of steps handed to its write: its runs, and the task writing it.
pub(super) struct Writing {
    runs: Vec<i64>,
    task: tokio::task::JoinHandle<anyhow::Result<Advanced>>,
}

impl Engine {
    /// Moves up to RUN_BATCH ready runs on by one step each, in one transaction:
    /// the batch is read and rendered first (several at once), then handed to a
    /// task that runs every step's checks inside the transaction and writes what
    /// they gathered for the whole batch at once. While that task waits for its
    /// turn to write and writes, the next tick reads and renders the next batch,
    /// so runs that become ready meanwhile wait for one stage, not for both. At
    /// most one batch is being written: a new one waits for the one before.
    pub(super) async fn advance_runs(self: &Arc<Self>) -> anyhow::Result<Advanced> {
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
            runs: batch.run_ids(),
            task: tokio::spawn(async move { engine.write_batch(&batch).await }),
        });
        // Look again: the next batch may be ready already.
        Ok(Advanced { more: true })
    }

    /// Waits until the batch of steps being written has committed and returns
    /// whether its steps made more work due at once; never returns while no
    /// batch is being written. Dropping the wait leaves the write going.
    pub(crate) async fn written(&self) -> anyhow::Result<bool> {
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
    async fn prepare_batch(&self, in_flight: &[i64]) -> anyhow::Result<Batch> {
        // The runs and their contacts are read for the whole batch at once.
        let (runs, contacts) = {
            let mut conn = self.store.pool.acquire().await?;
            let runs = store::ready_runs(&mut conn, RUN_BATCH, in_flight).await?;
            if runs.is_empty() {
                return Ok(Batch::default());
            }
            let ids: Vec<i64> = runs.iter().map(|r| r.contact_id).collect();
            let contacts = store::contacts_with_context(&mut conn, &ids).await?;
            (runs, contacts)
        };
        self.prepare_all(runs, &contacts, None).await
    }

    /// Works out and renders each run's next move (several at once), within
    /// `budget` if given (`render_messages`).
    pub(super) async fn prepare_all(
        &self,
        runs: Vec<Run>,
        contacts: &Contacts,
        budget: Option<std::time::Duration>,
    ) -> anyhow::Result<Batch> {
        let runs: Vec<PreparedRun> = stream::iter(runs)
            .map(|mut run| async move {
                let span = run.span();
                let trace = traces::step_span(&mut run);
                PreparedRun {
                    run_id: run.id,
                    ready_at: run.updated_at,
                    next: self.prepare(run, contacts).instrument(span.clone()).await,
                    span,
                    trace,
                }
            })
            .buffered(PREPARE_AHEAD)
            .collect()
            .await;
        let mut batch = Batch { runs };
        // In a pass of `nudge simulate` that reaches past the clock, the steps go in
        // the order of their times, so that those of one time are written together;
        // on the live daemon they all happen now, and keep their order.
        let (now, until) = self.span();
        if until > now {
            batch.runs.sort_by_key(|p| p.ready_at.clamp(now, until));
        }
        self.render_messages(&mut batch, budget).await?;
        Ok(batch)
    }

    /// Writes a prepared batch: in one transaction, or if that fails one step
    /// at a time, each under its own savepoint (`store::batch_else_each`), so
    /// that one run's error undoes only that run's step and is recorded against
    /// it. Then tells admission control and hands delivery what it queued.
    async fn write_batch(&self, batch: &Batch) -> anyhow::Result<Advanced> {
        let steps = Steps {
            engine: self,
            times: self.span(),
        };
        let written = store::batch_else_each(
            &self.store,
            self.store.write().await,
            &batch.runs,
            Alone::Savepoint,
            &steps,
        )
        .await?;
        let (applied, failed) = match written {
            Written::Together(applied) => (applied, Vec::new()),
            Written::Alone(e, each) => {
                let count = batch.runs.len();
                warn!("a batch of {count} steps failed as a whole ({e:#}); applying them one by one");
                let mut applied = Applied::default();
                let mut failed = Vec::new();
                for (prepared, result) in batch.runs.iter().zip(each) {
                    match result {
                        Ok(one) => applied.append(one),
                        Err(e) => failed.push((prepared, e)),
                    }
                }
                (applied, failed)
            }
        };
        let more = !applied.stepped.continuing.is_empty() || batch.moves().any(NextMove::writes_contact);
        self.steps_committed(&batch.run_ids(), applied);
        self.record_step_errors(&failed).await?;
        Ok(Advanced { more })
    }

    /// Once the steps of `runs` have committed: counts the runs ended, tells
    /// admission control which runs moved, and hands delivery the messages
    /// queued (the shortcut of its claim: `Handoff`).
    pub(super) fn steps_committed(&self, runs: &[i64], applied: Applied) {
        applied.tally.count();
        self.admission.runs_stepped(runs, &applied.stepped);
        self.delivery.hand(applied.queued);
    }

    /// Records the steps that failed alone against their runs, in a
    /// transaction of their own.
    async fn record_step_errors(&self, failed: &[(&PreparedRun, anyhow::Error)]) -> anyhow::Result<()> {
        if failed.is_empty() {
            return Ok(());
        }
        let mut tally = Tally::default();
        let mut tx = self.store.write().await?;
        for (prepared, e) in failed {
            prepared.trace.record("outcome", "error");
            record_step_error(&mut tx, prepared.run_id, e, self.at(prepared.ready_at), &mut tally)
                .instrument(prepared.span.clone())
                .await?;
        }
        tx.commit().await?;
        tally.count();
        Ok(())
    }

    /// Applies the steps of `runs` in `tx`, a transaction that holds the write
    /// lock and in which `current` holds their contacts as they are, and writes
    /// what they gathered set-based; a step that fails fails them all. A step
    /// that failed before the transaction (a render) is recorded against its run.
    /// Each step happens at its run's time within `times` (`Engine::span`: all
    /// now on the live daemon); what the steps of one time gathered is written
    /// before the next time's.
    pub(super) async fn apply_in(
        &self,
        tx: &mut store::Conn,
        runs: &[PreparedRun],
        current: &mut Contacts,
        times: (i64, i64),
    ) -> anyhow::Result<Applied> {
        let stepping: Vec<(&Workflow, &Run, &store::Contact)> = moves(runs)
            .filter(|m| m.is_step())
            .filter_map(|m| {
                let (contact, _) = current.get(&m.run.contact_id)?;
                Some((m.workflow(), &m.run, contact))
            })
            .collect();
        let facts = super::triggers::ExitFacts::load(tx, &stepping).await?;
        drop(stepping);
        let mut effects = Effects::default();
        let mut tally = Tally::default();
        let mut time = times.0;
        for (i, prepared) in runs.iter().enumerate() {
            let now = prepared.ready_at.clamp(times.0, times.1);
            if i > 0 && now != time {
                effects.flush(tx, time).await?;
            }
            time = now;
            let span = prepared.span.clone();
            match &prepared.next {
                Ok(None) => {}
                Ok(Some(next)) => self
                    .apply(tx, next, current, &facts, &mut effects, now)
                    .instrument(span)
                    .await?
                    .record(&prepared.trace),
                Err(e) => {
                    prepared.trace.record("outcome", "error");
                    record_step_error(tx, prepared.run_id, &step_error(e), now, &mut tally)
                        .instrument(span)
                        .await?
                }
            }
        }
        effects.flush(tx, time).await?;
        tally.append(&mut effects.tally);
        Ok(Applied {
            stepped: std::mem::take(&mut effects.stepped),
            queued: std::mem::take(&mut effects.queued),
            tally,
        })
    }
}

/// A message's template cannot render (the plugin said which field and why).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CannotRender(String);

/// A channel plugin failed otherwise (it refused, ran out of its limits, crashed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PluginFailed(String);

/// The error a step failed with before its transaction, as it is recorded:
/// a template that cannot render and a plugin's failure are told apart
/// (`record_step_error`).
fn step_error(e: &anyhow::Error) -> anyhow::Error {
    match e.chain().find_map(|e| e.downcast_ref::<PluginError>()) {
        Some(PluginError::Template { .. }) => anyhow::Error::new(CannotRender(format!("{e:#}"))),
        Some(_) => anyhow::Error::new(PluginFailed(format!("{e:#}"))),
        None => anyhow::anyhow!("{e:#}"),
    }
}

/// The code of a step's error: a channel plugin's failure is told apart.
fn error_code(error: &anyhow::Error) -> Reason {
    match error.downcast_ref::<PluginFailed>() {
        Some(_) => Reason::PluginFailed,
        None => Reason::StepError,
    }
}

/// A step could not run: it is tried again later with backoff, up to a limit of
/// errors in a row. A message whose template cannot render is held instead,
/// however often: trying again cannot help, fixing the template does (the
/// retry takes the fixed one), and failing the run would lose the message.
async fn record_step_error(
    conn: &mut store::Conn,
    run_id: i64,
    error: &anyhow::Error,
    now: i64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let errors = store::count_step_error(conn, run_id).await?;
    let template = error.downcast_ref::<CannotRender>().is_some();
    match store::load_run(conn, run_id).await? {
        Some(run) if run.status == RunStatus::Ready && (template || errors < MAX_STEP_ERRORS) => {
            let delay = (30_000i64 << (errors - 1).clamp(0, 7)).min(3_600_000);
            let (code, reason) = if template {
                let reason = format!(
                    "held at step {}: {error:#}; fix the template and the run sends with the fixed one (tried again within the hour)",
                    run.next_step
                );
                (Reason::RenderFailed, reason)
            } else {
                let reason = format!(
                    "error {errors} of {MAX_STEP_ERRORS} at step {}: {error:#}",
                    run.next_step
                );
                (error_code(error), reason)
            };
            let deferred = store::DeferredRun {
                run_id,
                step: run.next_step,
                until: now + delay,
                reason,
                code,
                counted: Vec::new(),
            };
            store::defer_runs(conn, &[deferred], now).await?;
            warn!(reason = %code, "step failed, retried in {} s: {error:#}", delay / 1000);
        }
        Some(run) if run.status == RunStatus::Ready => {
            let ended = store::EndedRun {
                id: run_id,
                status: RunStatus::Failed,
                reason: Reason::StepFailed,
                outcome: format!("{error:#}"),
            };
            crate::metrics::get().run_finished(tally, &run.workflow, ended.status.as_str(), ended.reason);
            store::end_runs(conn, &[ended], now).await?;
            warn!(reason = %Reason::StepFailed, "run failed after {errors} errors: {error:#}");
        }
        _ => {}
    }
    Ok(())
}
