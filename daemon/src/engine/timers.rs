//! Due timers fired. A timer is a row, so nothing waits in memory that a
//! restart would lose: a `resume_run` timer makes its waiting run ready again,
//! a `follow_up_due` timer writes the `follow_up_overdue` event that
//! `ingest.rs` then matches like any other.

use tracing::warn;

use super::{BATCH, Engine};
use crate::store::{self, TimerKind};

impl Engine {
    /// Fires up to a batch of due timers in one transaction; returns how many were due.
    pub(super) async fn fire_timers(&self) -> anyhow::Result<usize> {
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
            match (timer.kind, timer.run_id, timer.contact_id) {
                (TimerKind::ResumeRun, Some(run_id), _) => wake.push(run_id),
                // The event is left out if a newer follow-up moved the date (a stale timer).
                (TimerKind::FollowUpDue, _, Some(contact_id)) => overdue.push(store::OverdueFollowUp {
                    contact_id,
                    due_at: timer.due_at,
                }),
                (kind, ..) => warn!(timer_id = timer.id, "timer of kind {kind} has nothing to act on"),
            }
        }
        store::wake_runs(&mut tx, &wake, now).await?;
        store::insert_overdue_events(&mut tx, &overdue, now).await?;
        tx.commit().await?;
        let metrics = crate::metrics::get();
        for timer in timers.iter().filter(|t| fired.contains(&t.id)) {
            metrics.timer_fired(now - timer.due_at);
        }
        Ok(timers.len())
    }
}
