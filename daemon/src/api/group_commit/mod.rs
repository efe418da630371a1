//! Group commit: writes from many concurrent requests share one transaction and
//! one fsync. Each request still gets its answer only after its write is durable
//! (the commit returned), and one request's error never undoes another's.
//!
//! `StageIntake` does the same for stage changes by email (`POST /stage-changes`,
//! the route events come in by), but writes a group's changes set-based: a
//! handful of statements for the group instead of six for each change.
//!
//! A group first runs straight in its transaction: a savepoint around each write
//! would cost two more round trips to SQLite's thread a request. If a write fails,
//! the transaction (with that write's partial changes) is rolled back and the
//! group runs again, each write under its own savepoint. A write is therefore a
//! function that may be called twice; only the run that commits counts.

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use sqlx::Acquire as _;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::warn;

use crate::admission::Admission;
use crate::clock::Clock;
use crate::engine::Taken;
use crate::store::{self, Conn, StageByEmail, Store, Tx};

/// Requests gathered into one transaction at most.
const MAX_GROUP: usize = 256;

type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;
type Write<T> = Box<dyn for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, anyhow::Result<T>> + Send + Sync>;

struct Job<T> {
    write: Write<T>,
    answer: oneshot::Sender<anyhow::Result<T>>,
}

/// A queue of writes of one result type, committed in groups by one task.
pub(crate) struct GroupCommit<T> {
    jobs: mpsc::Sender<Job<T>>,
}

impl<T> Clone for GroupCommit<T> {
    fn clone(&self) -> Self {
        GroupCommit {
            jobs: self.jobs.clone(),
        }
    }
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the committing task; it ends when every handle is dropped. The
    /// events each group writes are counted by `admission`.
    pub(crate) fn start(store: Store, admission: Arc<Admission>) -> GroupCommit<T> {
        let (jobs, queue) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(commit_loop(store, admission, queue));
        GroupCommit { jobs }
    }

    /// Runs `write` in the next group's transaction (again, if another write of
    /// the group fails); returns its result once committed.
    pub(crate) async fn write<F>(&self, write: F) -> anyhow::Result<T>
    where
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, anyhow::Result<T>> + Send + Sync + 'static,
    {
        let (answer, result) = oneshot::channel();
        self.jobs
            .send(Job {
                write: Box::new(write),
                answer,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?
    }
}

/// The next group and the turn to write it. The turn comes first and the group
/// after: whatever queued up while the engine or delivery held the turn joins this
/// group instead of waiting for the next one.
async fn next_group<J>(store: &Store, queue: &mut mpsc::Receiver<J>) -> Option<(anyhow::Result<Tx>, Vec<J>)> {
    let first = queue.recv().await?;
    let tx = store.write().await;
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match queue.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    Some((tx, group))
}

async fn commit_loop<T: Send + 'static>(store: Store, admission: Arc<Admission>, mut queue: mpsc::Receiver<Job<T>>) {
    while let Some((tx, group)) = next_group(&store, &mut queue).await {
        if let Err(e) = commit_group(&store, &admission, tx, group).await {
            warn!("group commit: {e:#}");
        }
    }
}

/// The first id of the events a transaction is about to write, when admission
/// control counts them: nothing else writes while it holds the write lock.
async fn first_new_event(tx: &mut Tx, admission: &Admission) -> Option<i64> {
    if !admission.is_on() {
        return None;
    }
    store::last_event_id(tx).await.ok().map(|last| last + 1)
}

/// Commits a group's transaction, which wrote the events `events`. They are
/// counted before the commit, so that the engine cannot take them first, and
/// dropped again if it fails.
async fn commit_counted(tx: Tx, admission: &Admission, events: Option<RangeInclusive<i64>>) -> anyhow::Result<()> {
    if let Some(events) = &events {
        admission.events_written(*events.start(), *events.end());
    }
    if let Err(e) = tx.commit().await {
        if let Some(events) = &events {
            admission.events_dropped(*events.start(), *events.end());
        }
        return Err(e).context("commit failed");
    }
    Ok(())
}

/// Commits a group's writes in one transaction; answers each after the commit.
async fn commit_group<T: Send + 'static>(
    store: &Store,
    admission: &Admission,
    tx: anyhow::Result<Tx>,
    group: Vec<Job<T>>,
) -> anyhow::Result<()> {
    let first = match tx {
        Ok(tx) => run_group(tx, admission, &group, Isolation::None).await,
        Err(e) => Err(e),
    };
    let results = match first {
        Ok(Some(results)) => Ok(results),
        Ok(None) => match store.write().await {
            Ok(tx) => run_group(tx, admission, &group, Isolation::Savepoints)
                .await
                .map(|results| results.expect("with savepoints every write has its result")),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match results {
        Ok(results) => {
            for (job, result) in group.into_iter().zip(results) {
                let _ = job.answer.send(result);
            }
            Ok(())
        }
        Err(e) => {
            for job in group {
                let _ = job.answer.send(Err(anyhow::anyhow!("{e:#}")));
            }
            Err(e)
        }
    }
}

#[derive(Clone, Copy)]
enum Isolation {
    /// The writes run straight in the transaction; a failing one ends the attempt.
    None,
    /// Each write runs under its own savepoint; a failing one undoes only itself.
    Savepoints,
}

/// Runs every write of the group in one transaction and commits it, returning
/// each write's result; `None` when, without isolation, a write failed (the
/// transaction is rolled back and nothing is counted).
async fn run_group<T: Send + 'static>(
    mut tx: Tx,
    admission: &Admission,
    group: &[Job<T>],
    isolation: Isolation,
) -> anyhow::Result<Option<Vec<anyhow::Result<T>>>> {
    let first_event = first_new_event(&mut tx, admission).await;
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let result = match isolation {
            Isolation::None => match (job.write)(&mut tx).await {
                Ok(value) => Ok(value),
                Err(_) => {
                    tx.rollback().await?;
                    return Ok(None);
                }
            },
            Isolation::Savepoints => match tx.begin().await {
                Ok(mut savepoint) => match (job.write)(&mut savepoint).await {
                    Ok(value) => savepoint.commit().await.map(|_| value).map_err(Into::into),
                    Err(e) => {
                        let _ = savepoint.rollback().await;
                        Err(e)
                    }
                },
                Err(e) => Err(e.into()),
            },
        };
        results.push(result);
    }
    let events = match first_event {
        Some(first) => store::last_event_id(&mut tx).await.ok().map(|last| first..=last),
        None => None,
    };
    commit_counted(tx, admission, events).await?;
    Ok(Some(results))
}

/// What a stage change by email did: the contact, and its `stage_changed`
/// event (`None`: the contact was at that stage already).
pub(crate) type StageChanged = (i64, Option<i64>);

/// Takes the events `ids` in the transaction that wrote them, starting their
/// runs and taking their first steps (`Engine::take_events`).
pub(crate) type TakeEvents =
    Arc<dyn for<'c> Fn(&'c mut Conn, RangeInclusive<i64>) -> BoxFuture<'c, anyhow::Result<Taken>> + Send + Sync>;

struct Intake {
    change: StageByEmail,
    answer: oneshot::Sender<anyhow::Result<StageChanged>>,
}

/// A queue of stage changes by email, committed in groups by one task and
/// written set-based (`store::stage_changes_by_email`). A group's events are
/// taken (their runs started) in its own transaction: one engine cycle less
/// between a request and its email.
#[derive(Clone)]
pub(crate) struct StageIntake {
    changes: mpsc::Sender<Intake>,
}

impl StageIntake {
    /// Starts the committing task; it ends when every handle is dropped.
    /// `engine` is woken as soon as a group's runs can be read, before its flush.
    pub(crate) fn start(
        store: Store,
        admission: Arc<Admission>,
        clock: Clock,
        take: TakeEvents,
        engine: Arc<Notify>,
    ) -> StageIntake {
        let (changes, queue) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(intake_loop(store, admission, clock, take, engine, queue));
        StageIntake { changes }
    }

    /// Applies `change` in the next group; returns what it did once committed.
    pub(crate) async fn submit(&self, change: StageByEmail) -> anyhow::Result<StageChanged> {
        let (answer, result) = oneshot::channel();
        self.changes
            .send(Intake { change, answer })
            .await
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?
    }
}

async fn intake_loop(
    store: Store,
    admission: Arc<Admission>,
    clock: Clock,
    take: TakeEvents,
    engine: Arc<Notify>,
    mut queue: mpsc::Receiver<Intake>,
) {
    while let Some((tx, group)) = next_group(&store, &mut queue).await {
        let (changes, answers): (Vec<StageByEmail>, Vec<_>) =
            group.into_iter().map(|job| (job.change, job.answer)).unzip();
        let written = match tx {
            Ok(tx) => intake_group(tx, &admission, &changes, clock.now_ms(), Some((&take, &engine))).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(done) => {
                for (answer, done) in answers.into_iter().zip(done) {
                    let _ = answer.send(Ok(done));
                }
            }
            Err(e) if changes.len() == 1 && e.downcast_ref::<TakeFailed>().is_none() => {
                let _ = answers.into_iter().next().map(|answer| answer.send(Err(e)));
            }
            // One at a time, so that a change the database refuses fails alone,
            // and their events left to the engine, so that a run that cannot
            // start does not fail the change.
            Err(e) => {
                warn!(
                    "a group of {} stage changes failed ({e:#}); applying them one by one",
                    changes.len()
                );
                for (change, answer) in changes.iter().zip(answers) {
                    let done = match store.write().await {
                        Ok(tx) => {
                            intake_group(tx, &admission, std::slice::from_ref(change), clock.now_ms(), None).await
                        }
                        Err(e) => Err(e),
                    };
                    let _ = answer.send(done.map(|mut done| done.remove(0)));
                }
            }
        }
    }
}

/// Starting a group's runs failed: the group goes again without.
#[derive(Debug)]
struct TakeFailed;

impl std::fmt::Display for TakeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("start the runs of the group's events")
    }
}

/// Writes a group of stage changes in `tx`, takes their events with `take`
/// (else they wait for the engine), and commits it.
async fn intake_group(
    mut tx: Tx,
    admission: &Admission,
    changes: &[StageByEmail],
    now: i64,
    take: Option<(&TakeEvents, &Notify)>,
) -> anyhow::Result<Vec<StageChanged>> {
    let written = store::stage_changes_by_email(&mut tx, changes, "api", now).await?;
    match (take, written.events) {
        (Some((take, engine)), Some(events)) => {
            let taken = take(&mut tx, events).await.context(TakeFailed)?;
            admission.runs_started(&taken.started);
            if let Err(e) = tx.commit_and_then(|| engine.notify_one()).await {
                admission.runs_dropped(&taken.started);
                return Err(e).context("commit failed");
            }
            (taken.committed)();
        }
        (_, events) => commit_counted(tx, admission, events).await?,
    }
    Ok(written.done)
}

#[cfg(test)]
mod tests;
