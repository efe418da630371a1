//! Due timers fired. A timer is a row, so nothing waits in memory that a
//! restart would lose: a `resume_run` timer makes its waiting run ready again,
//! a `follow_up_due` timer writes the `follow_up_overdue` event that
//! `ingest.rs` then matches like any other.

use tracing::warn;

use super::{BATCH, Engine};
use crate::store::{self, Timer, TimerKind};

impl Engine {
    /// Fires up to a batch of due timers in one transaction; returns how many were due.
    pub(super) async fn fire_timers(&self) -> anyhow::Result<usize> {
        self.fire_timers_until(self.clock.now_ms()).await
    }

    /// Fires up to a batch of the timers due by `until` (the clock's reading on
    /// the live daemon; later in a pass of `nudge simulate`, `span`) in one
    /// transaction, each at its own due time but not before the clock's
    /// reading: its run is ready since then, its event happened then. Returns
    /// how many were due.
    pub(crate) async fn fire_timers_until(&self, until: i64) -> anyhow::Result<usize> {
        let now = self.clock.now_ms();
        let timers = {
            let mut conn = self.store.pool.acquire().await?;
            store::due_timers(&mut conn, until.max(now), BATCH).await?
        };
        if timers.is_empty() {
            return Ok(0);
        }
        // One transaction and three statements for the timers of one time, as for
        // events; on the live daemon they all fire now, so there is one time.
        let mut tx = self.store.write().await?;
        let mut fired = Vec::new();
        for group in timers.chunk_by(|a, b| a.due_at.max(now) == b.due_at.max(now)) {
            fired.extend(fire(&mut tx, group, group[0].due_at.max(now)).await?);
        }
        tx.commit().await?;
        let metrics = crate::metrics::get();
        for timer in &fired {
            metrics.timer_fired(timer.due_at.max(now) - timer.due_at);
        }
        Ok(timers.len())
    }
}

/// Fires `timers` at `at` in `tx`: returns those that had not fired yet.
async fn fire<'a>(tx: &mut store::Conn, timers: &'a [Timer], at: i64) -> anyhow::Result<Vec<&'a Timer>> {
    let ids: Vec<i64> = timers.iter().map(|t| t.id).collect();
    let fired: std::collections::HashSet<i64> = store::mark_timers_fired(tx, &ids, at).await?.into_iter().collect();
    let fired: Vec<&Timer> = timers.iter().filter(|t| fired.contains(&t.id)).collect();
    let mut wake = Vec::new();
    let mut overdue = Vec::new();
    for timer in &fired {
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
    store::wake_runs(tx, &wake, at).await?;
    store::insert_overdue_events(tx, &overdue, at).await?;
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{DAY, Fixture, START, workflow};
    use crate::store::EventKind;

    const HOUR: i64 = 3_600_000;

    /// `nudge simulate` fires the timers of several contacts in one pass: each
    /// one's run steps at the timer's own due time, as if the clock had stopped
    /// there, and what it makes due later is left for later.
    #[tokio::test]
    async fn timers_fired_ahead_happen_each_at_its_own_time() {
        let steps = [
            "wait = \"1d\"",
            "send = { channel = \"email\", template = \"hello\" }",
            "wait = \"1h\"",
            "tag = \"later\"",
        ];
        let f = Fixture::new(vec![workflow("pause", "category = \"transactional\"", &steps)]).await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        let wu = f.contact(json!({ "email": "wu@test.example" })).await;
        f.event(EventKind::InquiryReceived, li).await;
        f.settle().await;
        f.later(2 * HOUR).await;
        f.event(EventKind::InquiryReceived, wu).await;
        f.settle().await;

        let engine = &f.engine;
        engine.clock.set_virtual_ms(START + DAY);
        engine.set_ahead(Some(START + DAY + 2 * HOUR));
        while engine.fire_timers_until(START + DAY + 2 * HOUR).await.unwrap() > 0 {}
        f.settle().await;
        assert_eq!(engine.span(), (START + DAY, START + DAY + 2 * HOUR));
        engine.set_ahead(None);
        assert_eq!(engine.span(), (START + DAY, START + DAY), "the live daemon's span");

        for (contact, at) in [(li, START + DAY), (wu, START + DAY + 2 * HOUR)] {
            let (created,): (i64,) = f
                .row("SELECT created_at FROM outbox WHERE contact_id = ?", contact)
                .await;
            assert_eq!(created, at, "the message of contact {contact}");
            let (due,): (i64,) = f
                .row(
                    "SELECT t.due_at FROM timers t JOIN runs r ON r.id = t.run_id
                     WHERE r.contact_id = ? AND t.fired_at IS NULL",
                    contact,
                )
                .await;
            assert_eq!(due, at + HOUR, "the next wait counts from the timer's own time");
        }
        // Li's next timer falls due before Wu's message: it fires when the clock gets there.
        f.later(HOUR).await;
        assert_eq!(f.run_of(li).await.0, "done");
        assert_eq!(f.run_of(wu).await.0, "waiting");
    }
}
