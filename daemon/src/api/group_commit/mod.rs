//! Group commit: writes from many concurrent requests share one transaction and
//! one fsync. Each request still gets its answer only after its write is durable
//! (the commit returned), and one request's error never undoes another's.
//!
//! `StageIntake` does the same for stage changes by email (`POST /stage-changes`,
//! the route events come in by), but writes a group's changes set-based: a
//! handful of statements for the group instead of six for each change.
//!
//! A group is written by `store::batch_else_each`: straight in one transaction
//! (a savepoint around each write would cost two more round trips to SQLite's
//! thread a request), else each write alone, so that a failure stays with its
//! own request. A write is therefore a function that may be called twice; only
//! the run that commits counts.

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
use crate::engine::{Engine, Taken};
use crate::store::{self, Alone, Conn, StageByEmail, Store, Tx, Written};

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

impl<T: Send + Sync + 'static> GroupCommit<T> {
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

async fn commit_loop<T: Send + Sync + 'static>(
    store: Store,
    admission: Arc<Admission>,
    mut queue: mpsc::Receiver<Job<T>>,
) {
    while let Some((tx, group)) = next_group(&store, &mut queue).await {
        if let Err(e) = commit_group(&store, &admission, tx, group).await {
            warn!("group commit: {e:#}");
        }
    }
}

/// The first id of the events a write is about to write, when admission
/// control counts them: nothing else writes while it holds the write lock.
async fn first_new_event(conn: &mut Conn, admission: &Admission) -> Option<i64> {
    if !admission.is_on() {
        return None;
    }
    store::last_event_id(conn).await.ok().map(|last| last + 1)
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

/// What the writes of a transaction returned, and the first id of the events
/// they wrote (when admission control counts them).
struct Wrote<T> {
    values: Vec<T>,
    first_event: Option<i64>,
}

/// A group of requests' writes, each a closure that may run twice.
struct Writes<'a, T> {
    admission: &'a Admission,
    _answers: std::marker::PhantomData<fn() -> T>,
}

impl<T: Send + Sync + 'static> store::Unit for Writes<'_, T> {
    type Item = Job<T>;
    type Written = Wrote<T>;

    async fn write(&self, conn: &mut Conn, jobs: &[Job<T>]) -> anyhow::Result<Wrote<T>> {
        let first_event = first_new_event(conn, self.admission).await;
        let mut values = Vec::with_capacity(jobs.len());
        for job in jobs {
            values.push((job.write)(conn).await?);
        }
        Ok(Wrote { values, first_event })
    }

    async fn commit(&self, mut tx: Tx, wrote: &[&Wrote<T>]) -> anyhow::Result<()> {
        let first = wrote.iter().filter_map(|w| w.first_event).min();
        let events = match first {
            Some(first) => store::last_event_id(&mut tx).await.ok().map(|last| first..=last),
            None => None,
        };
        commit_counted(tx, self.admission, events).await
    }
}

/// Commits a group's writes in one transaction, else each under its own
/// savepoint (`store::batch_else_each`); answers each after the commit.
async fn commit_group<T: Send + Sync + 'static>(
    store: &Store,
    admission: &Admission,
    tx: anyhow::Result<Tx>,
    group: Vec<Job<T>>,
) -> anyhow::Result<()> {
    let writes = Writes {
        admission,
        _answers: std::marker::PhantomData,
    };
    let results: Vec<anyhow::Result<T>> =
        match store::batch_else_each(store, tx, &group, Alone::Savepoint, &writes).await {
            Ok(Written::Together(wrote)) => wrote.values.into_iter().map(Ok).collect(),
            Ok(Written::Alone(_, each)) => (each.into_iter())
                .map(|wrote| Ok(wrote?.values.into_iter().next().expect("one value a write")))
                .collect(),
            Err(e) => {
                for job in group {
                    let _ = job.answer.send(Err(anyhow::anyhow!("{e:#}")));
                }
                return Err(e);
            }
        };
    for (job, result) in group.into_iter().zip(results) {
        let _ = job.answer.send(result);
    }
    Ok(())
}

/// What a stage change by email did: the contact, and its `stage_changed`
/// event (`None`: the contact was at that stage already).
pub(crate) type StageChanged = (i64, Option<i64>);

/// What takes a group's events in the group's own transaction and is told
/// once it has committed: the engine (`Engine::take_events`,
/// `Engine::taken_committed`).
pub(crate) trait TakeEvents: Send + Sync + 'static {
    /// Starts the runs of the events `ids` in `conn`, which wrote them, and
    /// takes their first steps there.
    fn take_events(
        &self,
        conn: &mut Conn,
        ids: RangeInclusive<i64>,
    ) -> impl Future<Output = anyhow::Result<Taken>> + Send;

    /// Tells admission control and delivery what the taken steps did, once
    /// their transaction has committed.
    fn committed(&self, taken: Taken);
}

impl TakeEvents for Arc<Engine> {
    fn take_events(
        &self,
        conn: &mut Conn,
        ids: RangeInclusive<i64>,
    ) -> impl Future<Output = anyhow::Result<Taken>> + Send {
        Engine::take_events(self, conn, ids)
    }

    fn committed(&self, taken: Taken) {
        self.taken_committed(taken);
    }
}

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
        take: impl TakeEvents,
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
    take: impl TakeEvents,
    engine: Arc<Notify>,
    mut queue: mpsc::Receiver<Intake>,
) {
    while let Some((tx, group)) = next_group(&store, &mut queue).await {
        let (changes, answers): (Vec<StageByEmail>, Vec<_>) =
            group.into_iter().map(|job| (job.change, job.answer)).unzip();
        let changes_unit = Changes {
            now: clock.now_ms(),
            take: &take,
            admission: &admission,
            engine: &engine,
        };
        // A set-based write cannot be split by savepoints: a change the
        // database refuses goes again in a transaction of its own.
        let written = store::batch_else_each(&store, tx, &changes, Alone::Transaction, &changes_unit).await;
        let done: Vec<anyhow::Result<StageChanged>> = match written {
            Ok(Written::Together(written)) => written.committed(&take).into_iter().map(Ok).collect(),
            Ok(Written::Alone(e, each)) => {
                if changes.len() > 1 {
                    warn!(
                        "a group of {} stage changes failed ({e:#}); applying them one by one",
                        changes.len()
                    );
                }
                (each.into_iter())
                    .map(|written| Ok(written?.committed(&take).remove(0)))
                    .collect()
            }
            Err(e) => changes.iter().map(|_| Err(anyhow::anyhow!("{e:#}"))).collect(),
        };
        for (answer, done) in answers.into_iter().zip(done) {
            let _ = answer.send(done);
        }
    }
}

/// What a group of stage changes wrote in its transaction: each change's
/// answer, the events written, and their runs if they were taken.
struct ChangesWritten {
    done: Vec<StageChanged>,
    events: Option<RangeInclusive<i64>>,
    taken: Option<Taken>,
}

impl ChangesWritten {
    /// Once committed: tells admission control and delivery what the runs'
    /// first steps did; returns each change's answer.
    fn committed(self, take: &impl TakeEvents) -> Vec<StageChanged> {
        if let Some(taken) = self.taken {
            take.committed(taken);
        }
        self.done
    }
}

/// A group of stage changes, written set-based, their events taken by `take`.
struct Changes<'a, E> {
    now: i64,
    take: &'a E,
    admission: &'a Admission,
    /// Woken as soon as the runs the changes started can be read.
    engine: &'a Notify,
}

impl<E: TakeEvents> store::Unit for Changes<'_, E> {
    type Item = StageByEmail;
    type Written = ChangesWritten;

    /// Writes stage changes set-based in `conn` and takes their events under a
    /// savepoint: if taking them fails, the changes commit without, and the
    /// engine takes their events as it takes everyone else's.
    async fn write(&self, conn: &mut Conn, changes: &[StageByEmail]) -> anyhow::Result<ChangesWritten> {
        let written = store::stage_changes_by_email(conn, changes, "api", self.now).await?;
        let mut taken = None;
        if let Some(events) = written.events.clone() {
            let mut savepoint = conn.begin().await?;
            match self.take.take_events(&mut savepoint, events).await {
                Ok(runs) => {
                    savepoint.commit().await?;
                    taken = Some(runs);
                }
                Err(e) => {
                    savepoint.rollback().await?;
                    warn!(
                        "the runs of {} stage changes are left to the engine: {e:#}",
                        changes.len()
                    );
                }
            }
        }
        Ok(ChangesWritten {
            done: written.done,
            events: written.events,
            taken,
        })
    }

    /// Commits stage changes, waking the engine as soon as the runs they
    /// started can be read. Their runs (or, not taken, their events) are
    /// counted by admission control before the commit, and dropped again if
    /// it fails.
    async fn commit(&self, tx: Tx, written: &[&ChangesWritten]) -> anyhow::Result<()> {
        let admission = self.admission;
        let count = |on: bool| {
            for w in written {
                match (&w.taken, &w.events) {
                    (Some(taken), _) if on => admission.runs_started(&taken.started),
                    (Some(taken), _) => admission.runs_dropped(&taken.started),
                    (None, Some(events)) if on => admission.events_written(*events.start(), *events.end()),
                    (None, Some(events)) => admission.events_dropped(*events.start(), *events.end()),
                    (None, None) => {}
                }
            }
        };
        count(true);
        let committed = match written.iter().any(|w| w.taken.is_some()) {
            true => tx.commit_and_then(|| self.engine.notify_one()).await,
            false => tx.commit().await,
        };
        if let Err(e) = committed {
            count(false);
            return Err(e).context("commit failed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
