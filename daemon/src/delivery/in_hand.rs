//! What delivery holds between the outbox and the record: the rows it has
//! taken (from a claim or the handoff) and not yet recorded, which stay out of
//! the claims until they are; the plugin channels' slots; whether a claim may
//! find more; and whether recording fails, which stops new sends.
//!
//! At most twice `concurrency` rows are taken and not yet recorded: the most a
//! crash can send twice, each with its stable Message-ID.

use std::collections::HashSet;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt as _;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::slots::ChannelSlots;
use super::{Attempt, Finished};
use crate::store::OutboxRow;

/// How long delivery waits before it tries again to record attempts it could
/// not record, doubling up to the most.
const RECORD_RETRY_MIN: Duration = Duration::from_millis(250);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

pub(super) struct InHand {
    concurrency: usize,
    /// Plugin channels' sends in flight or parked, and the rows parked because
    /// their channel held all its slots (taken, so no claim returns them).
    slots: ChannelSlots,
    unrecorded: HashSet<i64>,
    /// Set while attempts cannot be recorded (a full disk): no new send starts,
    /// and the next try to record waits this long. Sends whose record failed
    /// stay out of the claims until they are recorded, so a store that cannot
    /// write stops delivery instead of making it send the same rows again.
    pub(super) record_failing: Option<Duration>,
    /// Whether a claim may find rows: after a wake-up, a pause, or a claim that
    /// filled every free slot. An empty claim after each finished send was most
    /// of the claims under load, each a query for nothing.
    pub(super) may_be_due: bool,
    /// The rows the claim under way asked for.
    claimed_for: usize,
    /// The highest id taken, by a claim or from the handoff. A handed row
    /// above it was never claimed, and handed rows are taken only while no
    /// claim is under way (one could return them): no row is taken twice.
    highest_taken: i64,
}

/// What a claim asks for: up to `limit` due rows, none of `exclude` (taken and
/// not yet recorded), none on the `full` channels.
pub(super) struct Claim {
    pub(super) limit: usize,
    pub(super) exclude: Vec<i64>,
    pub(super) full: Vec<String>,
}

impl InHand {
    pub(super) fn new(concurrency: usize, per_channel: usize) -> InHand {
        InHand {
            concurrency,
            slots: ChannelSlots::new(per_channel),
            unrecorded: HashSet::new(),
            record_failing: None,
            may_be_due: true,
            claimed_for: 0,
            highest_taken: 0,
        }
    }

    /// Parked rows whose channel has a free slot again, while delivery has slots.
    pub(super) fn unpark(&mut self, in_flight: usize, cancel: &CancellationToken) -> Vec<OutboxRow> {
        let mut rows = Vec::new();
        while in_flight + rows.len() < self.concurrency
            && !cancel.is_cancelled()
            && let Some(row) = self.slots.unpark()
        {
            rows.push(row);
        }
        rows
    }

    /// How many rows may be taken now. None while too many finished sends wait
    /// for their record, so that what a crash can repeat stays bounded, and
    /// none while recording fails.
    pub(super) fn free(&self, in_flight: usize) -> usize {
        if self.record_failing.is_some() {
            return 0;
        }
        self.concurrency
            .saturating_sub(in_flight)
            .min((2 * self.concurrency).saturating_sub(self.unrecorded.len()))
    }

    /// Takes handed rows while `free` lasts, as `claimed` takes a claim's
    /// (`take`); returns those to send now. The claim's shortcut: called only
    /// while no claim is under way, and only while no due row may wait in the
    /// outbox, so that a claim would have returned these same rows.
    pub(super) fn handed(
        &mut self,
        rows: Vec<OutboxRow>,
        free: &mut usize,
        cancel: &CancellationToken,
    ) -> Vec<OutboxRow> {
        let mut send = Vec::new();
        for row in rows {
            // Not while due rows may wait in the outbox: the claim takes
            // them all, the most urgent first.
            if *free > 0 && !self.may_be_due && row.id > self.highest_taken && !cancel.is_cancelled() {
                self.highest_taken = row.id;
                *free -= 1;
                send.extend(self.take(row));
            } else {
                self.may_be_due = true;
            }
        }
        send
    }

    /// The claim to start, if rows may be due and there is room for them.
    pub(super) fn claim(&mut self, free: usize, cancel: &CancellationToken) -> Option<Claim> {
        if free == 0 || !self.may_be_due || cancel.is_cancelled() {
            return None;
        }
        self.claimed_for = free;
        self.may_be_due = false;
        Some(Claim {
            limit: free,
            exclude: self.unrecorded.iter().copied().collect(),
            full: self.slots.full(),
        })
    }

    /// Takes what a claim returned; returns the rows to send now.
    pub(super) fn claimed(
        &mut self,
        claim: anyhow::Result<Vec<OutboxRow>>,
        cancel: &CancellationToken,
    ) -> Vec<OutboxRow> {
        match claim {
            // Claimed as the daemon stops: left pending for the next start.
            Ok(_) if cancel.is_cancelled() => Vec::new(),
            Ok(rows) => {
                // A full claim may have left rows behind; a wake-up meanwhile already said so.
                self.may_be_due |= rows.len() == self.claimed_for;
                self.highest_taken = rows.iter().map(|r| r.id).fold(self.highest_taken, i64::max);
                rows.into_iter().filter_map(|row| self.take(row)).collect()
            }
            Err(e) => {
                warn!("delivery: claim: {e:#}");
                Vec::new()
            }
        }
    }

    /// A row taken: out of the claims until recorded; None while its channel
    /// holds all its slots (it is parked).
    fn take(&mut self, row: OutboxRow) -> Option<OutboxRow> {
        self.unrecorded.insert(row.id);
        self.slots.take(row)
    }

    /// Whether a wake-up could start a send now.
    pub(super) fn has_room(&self, in_flight: usize, cancel: &CancellationToken) -> bool {
        in_flight < self.concurrency
            && self.unrecorded.len() < 2 * self.concurrency
            && self.record_failing.is_none()
            && !cancel.is_cancelled()
    }

    /// Moves `first` and every other send already finished to `finished`,
    /// freeing their slots, so that they are recorded together.
    /// A held row goes back untouched: out of hand, due in the outbox.
    pub(super) fn finish<F: Future<Output = Finished>>(
        &mut self,
        first: Finished,
        sending: &mut FuturesUnordered<F>,
        finished: &Mutex<Vec<Attempt>>,
    ) {
        let mut finished = finished.lock().unwrap();
        let more = std::iter::from_fn(|| sending.next().now_or_never().flatten());
        for done in std::iter::once(first).chain(more) {
            match done {
                Finished::Attempt(attempt) => {
                    self.slots.release(&attempt.0);
                    finished.push(attempt);
                }
                Finished::Held(row) => {
                    self.slots.release(&row);
                    self.unrecorded.remove(&row.id);
                }
            }
        }
    }

    /// After a try to record: recorded rows may be claimed again; attempts that
    /// could not be recorded go back to `finished` and the next try backs off.
    /// Breaks when `stopping` with attempts that cannot be recorded.
    pub(super) fn recorded(
        &mut self,
        result: Result<Vec<i64>, Vec<Attempt>>,
        finished: &Mutex<Vec<Attempt>>,
        stopping: bool,
    ) -> ControlFlow<()> {
        match result {
            Ok(ids) => {
                if self.record_failing.take().is_some() {
                    info!("delivery: attempts are recorded again; sending resumes");
                    self.may_be_due = true;
                }
                for id in ids {
                    self.unrecorded.remove(&id);
                }
            }
            Err(batch) if stopping => {
                // Stopping with attempts that cannot be recorded: their rows are
                // still pending, and the next start sends them again (at most
                // the bound on unrecorded sends, each with its Message-ID).
                warn!(
                    "delivery: {} attempts left unrecorded at shutdown; they go again at the next start",
                    batch.len()
                );
                return ControlFlow::Break(());
            }
            Err(mut batch) => {
                let mut finished = finished.lock().unwrap();
                batch.append(&mut finished);
                *finished = batch;
                let pause = self
                    .record_failing
                    .map_or(RECORD_RETRY_MIN, |p| (p * 2).min(RECORD_RETRY_MAX));
                self.record_failing = Some(pause);
            }
        }
        ControlFlow::Continue(())
    }
}
