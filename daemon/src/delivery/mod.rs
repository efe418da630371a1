//! Delivery: takes the outbox rows the engine hands over as it queues them
//! and claims the other due rows, sends each (email by SMTP or as `.eml`
//! files; other channels over HTTP as their plugin describes), and records
//! every attempt.
//!
//! Up to `delivery.concurrency` sends are in flight at once; as they finish, the
//! finished ones are recorded together in one transaction and free slots are
//! refilled, so one slow or hung server holds only its own slot. A channel
//! delivered by a plugin over HTTP holds at most half of the slots, so a slow
//! provider or plugin never stops email (or another channel). A crash loses
//! nothing: rows are marked only after their attempt, so at most the sends in
//! flight are repeated after a restart, each with its stable Message-ID.
//!
//! `run` below is the loop; `in_hand.rs` keeps what it holds between claim and
//! record, `slots.rs` the plugin channels' share, `record.rs` where a row goes
//! after its attempt, `relay.rs` the breaker that holds email while the SMTP
//! relay refuses sessions, `pace.rs` each recipient domain's pace and
//! `warmup.rs` the warm-up plan (asked in `held.rs`); `email.rs`, `plugin.rs`
//! and `http.rs` send.

mod build;
mod email;
mod held;
pub(crate) mod http;
mod in_hand;
mod mime;
mod pace;
mod plugin;
mod record;
mod relay;
mod slots;
mod warmup;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, warn};

use crate::admission::Admission;
use crate::clock::Clock;
use crate::config::{Config, DeliveryConfig, HttpConfig};
use crate::plugins::Plugins;
use crate::store::{self, OutboxRow, Outcome, Store, SuppressionRules};
use in_hand::{Claim, InHand};

pub(crate) use email::Mailer;
pub(crate) use pace::Pacing;
pub(crate) use relay::Relay;
pub(crate) use warmup::Warmup;

/// The delivery worker.
pub(crate) struct Delivery {
    store: Store,
    clock: Clock,
    mailer: Mailer,
    plugins: Plugins,
    http: HttpConfig,
    /// The daemon's own API, which no plugin request may reach.
    api_bind: std::net::SocketAddr,
    policy: DeliveryConfig,
    suppression: SuppressionRules,
    handoff: Arc<Handoff>,
    /// Told when the API's messages have been attempted.
    admission: Arc<Admission>,
    /// The SMTP relay's breaker; None when email goes to `.eml` files.
    relay: Option<Arc<Relay>>,
    /// Each recipient domain's pace.
    pacing: Arc<Pacing>,
    /// The From domain's warm-up plan, if it has one.
    warmup: Option<Arc<Warmup>>,
}

/// What `/health`, `nudge status` and `/metrics` show of delivery's state.
#[derive(Clone)]
pub(crate) struct Shown {
    /// The SMTP relay's breaker; None without a relay.
    pub(crate) relay: Option<Arc<Relay>>,
    pub(crate) pacing: Arc<Pacing>,
    pub(crate) warmup: Option<Arc<Warmup>>,
}

impl Shown {
    /// `/health`'s `pacing`: the domains slowed by throttling and, with a
    /// warm-up plan, today's cap, sent and held.
    pub(crate) fn pacing_view(&self) -> serde_json::Value {
        let mut view = serde_json::json!({ "throttled": self.pacing.view() });
        if let Some(warmup) = &self.warmup {
            view["warmup"] = warmup.view();
        }
        view
    }
}

/// One finished attempt: the row, when the attempt started, how it ended.
type Attempt = (OutboxRow, i64, Outcome);

/// How a send ended: an attempt to record, or a row held untouched because
/// the relay refuses sessions (it stays due and is charged no attempt).
enum Finished {
    Attempt(Attempt),
    Held(OutboxRow),
}

/// Rows handed and not yet taken at most; more are left to the claims.
const MAX_HANDED: usize = 1024;

/// The rows a batch of steps queued, handed over as it commits: a shortcut of
/// the claim, so that a new message need not wait for a claim to read it back.
/// A handed row is what a claim would read (`store::queue_and_finish` returns
/// it with the claim's suppression check), taken as a claimed one is
/// (`InHand::handed`, `InHand::claimed`). The outbox stays the record: a row
/// delivery does not take at once, its claims find there.
#[derive(Default)]
pub(crate) struct Handoff {
    rows: Mutex<Vec<OutboxRow>>,
    handed: Notify,
    /// Wakes delivery to claim: due rows may be there that nobody handed
    /// (another process's, a retry's).
    pub(crate) wake: Arc<Notify>,
}

impl Handoff {
    /// Hands over committed rows, in the order of their ids.
    pub(crate) fn hand(&self, rows: Vec<OutboxRow>) {
        if rows.is_empty() {
            return;
        }
        let mut handed = self.rows.lock().unwrap();
        if handed.len() + rows.len() > MAX_HANDED {
            drop(handed);
            return self.wake.notify_one();
        }
        handed.extend(rows);
        drop(handed);
        self.handed.notify_one();
    }

    fn take(&self) -> Vec<OutboxRow> {
        std::mem::take(&mut *self.rows.lock().unwrap())
    }

    /// Lets go of the rows handed over, for a process that has no delivery to
    /// take them (`nudge simulate`): they stay in the outbox, the record.
    pub(crate) fn discard(&self) {
        drop(self.take());
    }
}

impl Delivery {
    pub(crate) fn new(
        config: &Config,
        store: Store,
        clock: Clock,
        plugins: Plugins,
        handoff: Arc<Handoff>,
        admission: Arc<Admission>,
        return_path: Option<crate::bounces::ReturnPath>,
    ) -> anyhow::Result<Delivery> {
        let relay = config
            .smtp
            .as_ref()
            .map(|smtp| Arc::new(Relay::new(smtp, clock.clone())));
        let pacing = Arc::new(Pacing::new(&config.delivery, clock.clone()));
        let warmup = config
            .delivery
            .warmup
            .as_ref()
            .and_then(|plan| Warmup::new(plan, clock.clone()))
            .map(Arc::new);
        Ok(Delivery {
            mailer: Mailer::new(config, return_path)?,
            store,
            clock,
            plugins,
            http: config.http.clone(),
            api_bind: config.api.bind,
            policy: config.delivery.clone(),
            suppression: config.suppression.rules(),
            handoff,
            admission,
            relay,
            pacing,
            warmup,
        })
    }

    /// The relay's breaker, the domains' paces and the warm-up plan, for `/health`.
    pub(crate) fn shown(&self) -> Shown {
        Shown {
            relay: self.relay.clone(),
            pacing: self.pacing.clone(),
            warmup: self.warmup.clone(),
        }
    }

    fn relay_open(&self) -> bool {
        self.relay.as_ref().is_some_and(|relay| relay.is_open())
    }

    /// Probes the relay when its breaker is open and a probe is due, beside the
    /// loop (a probe may take the whole send deadline); a probe that closes the
    /// breaker wakes delivery to claim the held email.
    fn probe_relay(&self) {
        let Some(relay) = self.relay.as_ref().filter(|relay| relay.probe_due()) else {
            return;
        };
        let Some(probe) = self.mailer.probe() else {
            return;
        };
        let (relay, wake) = (relay.clone(), self.handoff.wake.clone());
        tokio::spawn(async move {
            if relay.probed(probe.await) {
                wake.notify_one();
            }
        });
    }

    fn concurrency(&self) -> usize {
        self.policy.concurrency.clamp(1, email::POOL_SIZE)
    }

    /// Slots one plugin channel may hold at once: half, so that the rest stay
    /// for email and the other channels however slow its plugin or provider is.
    fn channel_slots(&self) -> usize {
        (self.concurrency() / 2).max(1)
    }

    /// Runs until cancelled. On cancel, the sends in flight finish (each within
    /// its deadline) and are recorded before returning.
    ///
    /// Sending, claiming and recording overlap: finished attempts are recorded
    /// in one transaction while the next sends go out and the next rows are
    /// claimed, so waiting for the database never idles the SMTP sessions. A
    /// row stays out of the claims from the moment it is taken until its
    /// attempt is recorded (see `InHand`).
    pub(crate) async fn run(self, cancel: CancellationToken) {
        type Pending<'a, T> = Option<Pin<Box<dyn Future<Output = T> + Send + 'a>>>;
        let mut sending = FuturesUnordered::new();
        let mut in_hand = InHand::new(self.concurrency(), self.channel_slots());
        let finished: Mutex<Vec<Attempt>> = Mutex::default();
        let mut recording: Pending<'_, Result<Vec<i64>, Vec<Attempt>>> = None;
        // A claim runs beside the sends and the record rather than before them, so
        // an answer from the server or the turn to write is never left waiting on
        // a read. It leaves out every row taken and unrecorded when it starts; rows
        // are only recorded (and so claimable again) after that, so a claim never
        // returns a row that is being sent or was just recorded.
        let mut claiming: Pending<'_, anyhow::Result<Vec<OutboxRow>>> = None;
        self.count_warmup().await;
        loop {
            self.probe_relay();
            if recording.is_none() && !finished.lock().unwrap().is_empty() {
                recording = Some(Box::pin(self.record_finished(&finished, in_hand.record_failing)));
            }
            sending.extend(
                in_hand
                    .unpark(sending.len(), &cancel)
                    .into_iter()
                    .map(|row| self.attempt(row)),
            );
            let mut free = in_hand.free(sending.len());
            if claiming.is_none() {
                // The claim's shortcut first: rows just queued, as a claim would read them.
                let handed = in_hand.handed(self.handoff.take(), &mut free, &cancel);
                sending.extend(handed.into_iter().map(|row| self.attempt(row)));
                if let Some(claim) = in_hand.claim(free, &cancel) {
                    claiming = Some(Box::pin(self.claim(claim)));
                }
            }
            if sending.is_empty() && recording.is_none() && claiming.is_none() {
                if cancel.is_cancelled() {
                    return;
                }
                in_hand.may_be_due |= self.idle(&cancel).await;
                continue;
            }
            let room = in_hand.has_room(sending.len(), &cancel);
            let recorded = async {
                match recording.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            };
            let claimed = async {
                match claiming.as_mut() {
                    Some(c) => c.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(first) = sending.next(), if !sending.is_empty() => in_hand.finish(first, &mut sending, &finished),
                claim = claimed => {
                    claiming = None;
                    let rows = in_hand.claimed(claim, &cancel);
                    sending.extend(rows.into_iter().map(|row| self.attempt(row)));
                }
                result = recorded => {
                    recording = None;
                    let stopping = cancel.is_cancelled() && sending.is_empty();
                    if in_hand.recorded(result, &finished, stopping).is_break() {
                        return;
                    }
                }
                _ = self.handoff.wake.notified(), if room => in_hand.may_be_due = true,
                _ = self.handoff.handed.notified(), if room => {}
                _ = tokio::time::sleep(Duration::from_millis(200)), if room => in_hand.may_be_due = true,
            }
        }
    }

    /// Records the attempts finished by the time it gets the turn to write,
    /// after `pause` if the last try failed; the ids recorded, or the attempts
    /// back when they cannot be.
    async fn record_finished(
        &self,
        finished: &Mutex<Vec<Attempt>>,
        pause: Option<Duration>,
    ) -> Result<Vec<i64>, Vec<Attempt>> {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        // The turn to write first, then the batch: what finishes while
        // another writer holds the turn is recorded with it.
        let tx = self.store.write_after_others().await;
        let batch = std::mem::take(&mut *finished.lock().unwrap());
        let recorded = match tx {
            Ok(tx) => self.record(tx, &batch).await,
            Err(e) => Err(e),
        };
        match recorded {
            Ok(()) => Ok(batch.iter().map(|(row, _, _)| row.id).collect()),
            Err(e) => {
                warn!(
                    "delivery: cannot record {} attempts, sending stops until they are: {e:#}",
                    batch.len()
                );
                Err(batch)
            }
        }
    }

    async fn claim(&self, claim: Claim) -> anyhow::Result<Vec<OutboxRow>> {
        let mut full = claim.full;
        if self.relay_open() {
            full.push("email".into());
        }
        let mut conn = self.store.pool.acquire().await?;
        let now = self.clock.now_ms();
        let due = store::due_outbox(&mut conn, now, claim.limit as i64, &claim.exclude, &full).await?;
        // Sent only once the rows are on disk: power loss must not take back a sent message's row.
        if !due.is_empty() {
            self.store.durable().await;
        }
        Ok(due)
    }

    /// Waits with nothing in flight until a row may be due, rows are handed
    /// over, or the daemon stops; whether a claim may find rows then.
    async fn idle(&self, cancel: &CancellationToken) -> bool {
        let pause = self.until_next().await;
        tokio::select! {
            _ = cancel.cancelled() => true,
            _ = self.handoff.wake.notified() => true,
            _ = self.handoff.handed.notified() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    async fn until_next(&self) -> Duration {
        let next = match self.store.pool.acquire().await {
            Ok(mut conn) => store::next_outbox_due(&mut conn).await.ok().flatten(),
            Err(_) => None,
        };
        let pause = match next {
            // Virtual time moves only on command; the change watcher wakes us then.
            Some(_) if self.clock.is_virtual() => Duration::from_secs(60),
            Some(at) => Duration::from_millis((at - self.clock.now_ms()).clamp(1, 60_000) as u64),
            None => Duration::from_secs(60),
        };
        match self.relay.as_ref().and_then(|relay| relay.until_probe()) {
            // Held email is due and not claimed: without the floor, delivery would spin.
            Some(probe) => pause
                .max(Duration::from_secs(1))
                .min(Duration::from_millis(probe.clamp(1, 60_000) as u64)),
            None => pause,
        }
    }

    /// Sends one row by its channel's route, unless its recipient is suppressed;
    /// holds email while the relay refuses sessions. In its run's span.
    async fn attempt(&self, row: OutboxRow) -> Finished {
        let span = row.span();
        let trace = delivery_span(&row);
        let finished = self.attempt_row(row).instrument(span).await;
        trace.record(
            "outcome",
            match &finished {
                Finished::Attempt((_, _, Outcome::Held { reason, .. })) => reason.as_str(),
                Finished::Attempt((_, _, outcome)) => outcome.recorded_as().as_str(),
                Finished::Held(_) => "relay_held",
            },
        );
        finished
    }

    async fn attempt_row(&self, mut row: OutboxRow) -> Finished {
        let started = self.clock.now_ms();
        let outcome = match (&row.suppressed, row.channel.as_str()) {
            (Some(reason), _) => Outcome::Suppressed(format!("recipient suppressed: {reason}")),
            (None, "email") => match self.hold(&row) {
                Some(held) => held,
                None => match self.send_email(&row, started).await {
                    Some(outcome) => self.paced(&row, outcome),
                    None => {
                        // Held, not lost: the API need not wait for a relay to come back.
                        self.admission.messages_done(row.run_id);
                        return Finished::Held(row);
                    }
                },
            },
            (None, channel) => {
                let (outcome, parts_done) = self.send_http(channel, &row).await;
                row.parts_done = parts_done;
                outcome
            }
        };
        // Done as far as the API's pace goes: the record need not be waited for.
        self.admission.messages_done(row.run_id);
        Finished::Attempt((row, started, outcome))
    }

    /// None: held, the relay's breaker is (or just went) open.
    async fn send_email(&self, row: &OutboxRow, started: i64) -> Option<Outcome> {
        if self.relay_open() {
            return None;
        }
        match self.mailer.send(row, started).await {
            Ok(outcome) => Some(outcome),
            Err(refusal) => {
                if let Some(relay) = &self.relay {
                    relay.refused(refusal);
                }
                None
            }
        }
    }
}

/// The span of one attempt at a row in an exported trace: a child of the span
/// of the step that queued it (`engine/traces.rs`), carried by the row. Ids,
/// the channel and the outcome; never the message or its address.
fn delivery_span(row: &OutboxRow) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::trace::TARGET,
        parent: None,
        "delivery",
        outbox_id = row.id,
        run_id = row.run_id,
        workflow = row.workflow.as_deref(),
        contact_id = row.contact_id,
        channel = row.channel.as_str(),
        attempt = row.attempts + 1,
        outcome = tracing::field::Empty,
    );
    crate::trace::continue_from(&span, row.traceparent.as_deref());
    span
}
