//! One simulation: the daemon's engine on a copy of the database and a
//! virtual clock that the simulation moves itself, from one moment where
//! something falls due to the next. It is the daemon without its delivery
//! workers, API and watchers: the outbox rows the engine writes are read back
//! as what would be sent, and nothing else is there that could send them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::json;

use crate::admission::Admission;
use crate::clock::Clock;
use crate::config::{ClockKind, Config};
use crate::engine::Engine;
use crate::insight;
use crate::plugins::Plugins;
use crate::store::{self, Store};
use crate::workflow::{Condition, Step, WorkflowSet};

/// Contacts read at a time to match `--contacts`.
const FILTER_BATCH: i64 = 1000;
/// The most timers one step of the simulation fires at their own times (`reach`).
const REACH: i64 = 2000;

/// A simulation under way on its copy.
pub(crate) struct Simulation {
    engine: Arc<Engine>,
    /// The zone whose calendar days the report counts in.
    zone: TimeZone,
    /// Whether only the contacts of `sim_contacts` are reported.
    filtered: bool,
    /// How far what the engine wrote is recorded.
    recorded: store::SimulationCursor,
    /// The day the daily classification pass was last looked at for: it runs
    /// once a day, so the stops after the first of a day need not ask again.
    classified: Option<jiff::civil::Date>,
    /// Outbox rows waiting when the simulation began (queued before it).
    pub(crate) already_queued: i64,
    pub(crate) start: i64,
}

impl Simulation {
    /// The engine on the copy at `copy`, running `workflows` from the copy's
    /// "now" (its virtual clock's reading, or the system's time).
    pub(crate) async fn start(
        config: &Config,
        copy: &Path,
        plugins: Plugins,
        workflows: WorkflowSet,
        zone: TimeZone,
        filter: Option<&Condition>,
    ) -> anyhow::Result<Simulation> {
        let store = Store::open_scratch(copy).await?;
        let start = match config.clock {
            ClockKind::Virtual => store.virtual_now().await?,
            ClockKind::System => None,
        }
        .unwrap_or_else(|| Clock::System.now_ms());
        let clock = Clock::virtual_at(Timestamp::from_millisecond(start)?);
        let unsubscribe = crate::unsubscribe::Unsubscribe::from_config(config, &store).await?;
        let admission = Admission::new(config.api.max_unsent, Duration::from_millis(config.api.max_hold_ms));
        let engine = Engine::new(
            store.clone(),
            clock,
            plugins,
            workflows,
            config.message_id_domain(),
            unsubscribe,
            Arc::new(admission),
        )
        .await?;
        let mut conn = store.pool.acquire().await?;
        store::create_simulation_tables(&mut conn, &templates(&engine.current())).await?;
        if let Some(filter) = filter {
            match_contacts(&mut conn, filter).await?;
        }
        let recorded = store::simulation_cursor(&mut conn).await?;
        let already_queued = store::pending_outbox_count(&mut conn).await?;
        Ok(Simulation {
            engine: Arc::new(engine),
            zone,
            filtered: filter.is_some(),
            recorded,
            classified: None,
            already_queued,
            start,
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.engine.store
    }

    /// Runs the engine until `end`: at every moment something falls due (a
    /// timer) or a day begins (the daily classification pass), what is due
    /// is done as the daemon does it, and recorded. Timers of different
    /// contacts that fall due one after the other are fired in one step, each
    /// at its own time (`reach`), as the daemon would have at that time.
    pub(crate) async fn run_until(&mut self, end: i64) -> anyhow::Result<()> {
        let mut until = None;
        loop {
            let due = self.step(until).await?.unwrap_or(i64::MAX);
            let now = self.engine.clock.now_ms();
            if now >= end {
                return Ok(());
            }
            let boundary = next_day(now, &self.zone)?.min(end);
            let next = due.min(boundary).max(now + 1);
            self.engine.clock.set_virtual_ms(next);
            until = if next < boundary {
                self.reach(boundary).await?
            } else {
                None
            };
        }
    }

    /// How far past the clock's reading (a timer's due time) this step may fire
    /// timers, each at its own time, with the daemon's result: while each of them
    /// is the only one of its contact, what one does cannot change what another
    /// does, since a contact's runs, caps and messages are its own; and what each
    /// one's work makes due later is done in a later step at that time (the
    /// simulation's clock may go back for it: another contact's work is no
    /// earlier or later for it). Never past `boundary` (a day's start, the end) or
    /// a segment pass's time, which concern every contact. `None`: the clock's reading.
    async fn reach(&self, boundary: i64) -> anyhow::Result<Option<i64>> {
        let engine = &self.engine;
        let first = engine.clock.now_ms();
        let boundary = match engine.segments_quiet_until().await? {
            Some(quiet) => boundary.min(quiet),
            None => boundary,
        };
        if boundary <= first + 1 {
            return Ok(None);
        }
        let timers = {
            let mut conn = engine.store.pool.acquire().await?;
            store::timers_ahead(&mut conn, boundary, REACH).await?
        };
        let mut contacts = std::collections::HashSet::new();
        let mut until = first;
        for (due, contact) in &timers {
            if !contact.is_some_and(|c| contacts.insert(c)) {
                // The timers of this time wait for a step of their own.
                until = due - 1;
                break;
            }
            until = *due;
        }
        if timers.len() as i64 == REACH && until == timers.last().map_or(first, |t| t.0) {
            // More timers of this time may follow: they too wait.
            until -= 1;
        }
        Ok((until > first).then_some(until))
    }

    /// Everything due at the clock's reading: the daily pass if a day began,
    /// the timers due up to `until` (each at its own time), then the engine's
    /// ticks until nothing more is due; then what they did is recorded. Returns
    /// when the next timer falls due.
    async fn step(&mut self, until: Option<i64>) -> anyhow::Result<Option<i64>> {
        let engine = &self.engine;
        let now = engine.clock.now_ms();
        if let Some(rules) = engine.current().classification.clone() {
            let today = rules.today(now);
            if self.classified != Some(today) {
                insight::classification_pass(&engine.store, &rules, now, false).await?;
                self.classified = Some(today);
            }
        }
        engine.set_ahead(until);
        if let Some(until) = until {
            while engine.fire_timers_until(until).await? > 0 {}
        }
        loop {
            while engine.tick().await? {}
            if !engine.settle().await? {
                break;
            }
        }
        let span = engine.span();
        engine.set_ahead(None);
        // Handed to a delivery that is not there: read back from the outbox instead.
        engine.delivery.discard();
        let day = Timestamp::from_millisecond(now)?
            .to_zoned(self.zone.clone())
            .date()
            .to_string();
        let mut tx = engine.store.write().await?;
        let recorded = store::record_simulation_step(&mut tx, self.recorded, span, &day, self.filtered).await?;
        tx.commit().await?;
        self.recorded = recorded.cursor;
        Ok(recorded.next_due)
    }
}

/// When the day after `now`'s begins in `zone`.
fn next_day(now: i64, zone: &TimeZone) -> anyhow::Result<i64> {
    let today = Timestamp::from_millisecond(now)?.to_zoned(zone.clone()).date();
    Ok(today.tomorrow()?.to_zoned(zone.clone())?.timestamp().as_millisecond())
}

/// Which template each message step of the set sends, by workflow and step.
fn templates(set: &WorkflowSet) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for workflow in &set.workflows {
        for (i, step) in workflow.steps.iter().enumerate() {
            if let Step::Send { template, .. } | Step::Notify { template, .. } = step {
                out.push((workflow.name.clone(), i as i64 + 1, template.clone()));
            }
        }
    }
    out
}

/// Records the contacts `filter` holds for as they are when the simulation starts.
async fn match_contacts(conn: &mut store::Conn, filter: &Condition) -> anyhow::Result<()> {
    let event = json!({ "kind": "", "from": "", "to": "", "inquiry_id": 0 });
    let mut cursor = 0;
    loop {
        let rows = store::contacts_after(conn, cursor, FILTER_BATCH).await?;
        let mut matching = Vec::new();
        for row in &rows {
            let context = row.contact.context(row.follow_up_count, row.order_count);
            match filter.evaluate(&context, &event) {
                Ok(true) => matching.push(row.contact.id),
                Ok(false) => {}
                Err(e) => anyhow::bail!("--contacts: for contact {}: {e}", row.contact.id),
            }
        }
        store::add_simulation_contacts(conn, &matching).await?;
        match rows.last() {
            Some(last) if rows.len() as i64 == FILTER_BATCH => cursor = last.contact.id,
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn the_next_day_begins_at_local_midnight_even_across_a_clock_change() {
        let shanghai = TimeZone::get("Asia/Shanghai").unwrap();
        assert_eq!(
            next_day(ms("2026-11-23T09:00:00Z"), &shanghai).unwrap(),
            ms("2026-11-23T16:00:00Z")
        );
        // Berlin leaves summer time on 2026-10-25: that day has 25 hours.
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(
            next_day(ms("2026-10-24T22:30:00Z"), &berlin).unwrap(),
            ms("2026-10-25T23:00:00Z")
        );
    }
}
