//! The writes of a batch of steps, gathered while the steps are worked out and
//! written in a few statements for the whole batch: through sqlx every statement
//! is a round trip to SQLite's thread, which costs more than SQLite's own work
//! on a row.

use std::collections::BTreeMap;

use crate::admission::SteppedRuns;
use crate::metrics::Tally;
use crate::store::{self, DeferredRun, EndedRun, FinishedStep, NewOutboxRow, OutboxRow, RunStatus, RunTimer};

#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) finished: Vec<FinishedStep>,
    pub(crate) ended: Vec<EndedRun>,
    pub(crate) deferred: Vec<DeferredRun>,
    pub(crate) outbox: Vec<NewOutboxRow>,
    /// Timers that resume runs.
    pub(crate) timers: Vec<RunTimer>,
    /// Contacts' tags as the batch's steps left them.
    pub(crate) tags: BTreeMap<i64, Vec<String>>,
    /// For admission control, what the flushes so far did (the caller takes it
    /// once their transaction is committed).
    pub(crate) stepped: SteppedRuns,
    /// The messages the flushes so far queued, for delivery once committed.
    pub(crate) queued: Vec<OutboxRow>,
    /// The runs ended so far, counted once committed.
    pub(crate) tally: Tally,
}

impl Effects {
    /// Writes what was gathered; the runs that queued a message or go straight
    /// on are added to `stepped`. Fails if a run is no longer where its step
    /// found it (the caller rolls back).
    pub(crate) async fn flush(&mut self, conn: &mut store::Conn, now: i64) -> anyhow::Result<()> {
        let runs: Vec<i64> = self.outbox.iter().filter_map(|row| row.run_id).collect();
        let queued = store::queue_and_finish(conn, std::mem::take(&mut self.outbox), &self.finished, now).await?;
        if !queued.is_empty() {
            self.stepped.sending.extend(runs);
            self.queued.extend(queued);
        }
        let next_now = self.finished.iter().filter(|f| f.status == RunStatus::Ready);
        self.stepped.continuing.extend(next_now.map(|f| f.run_id));
        store::insert_run_timers(conn, &self.timers).await?;
        store::defer_runs(conn, &self.deferred, now).await?;
        store::end_runs(conn, &self.ended, now).await?;
        store::set_tags(conn, &self.tags, now).await?;
        self.clear_writes();
        Ok(())
    }

    /// Ends a run of `workflow` as recorded; counted once the batch commits.
    pub(crate) fn end_run(&mut self, workflow: &str, ended: EndedRun) {
        crate::metrics::get().run_finished(&mut self.tally, workflow, ended.status.as_str(), ended.reason);
        self.ended.push(ended);
    }

    fn clear_writes(&mut self) {
        self.finished.clear();
        self.ended.clear();
        self.deferred.clear();
        self.outbox.clear();
        self.timers.clear();
        self.tags.clear();
    }
}
