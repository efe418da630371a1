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

mod email;
pub mod http;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::Admission;
use crate::clock::Clock;
use crate::config::{Config, DeliveryConfig, HttpConfig, OnUnknown};
use crate::plugins::{Plugins, ProviderVerdict, RenderedMessage};
use crate::store::{self, BounceKind, Next, OutboxRow, Outcome, Store, SuppressionRules};

pub use email::Mailer;

/// The delivery worker.
pub struct Delivery {
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
}

/// One finished attempt: the row, when the attempt started, how it ended.
type Attempt = (OutboxRow, i64, Outcome);

/// How long delivery waits before it tries again to record attempts it could
/// not record, doubling up to the most.
const RECORD_RETRY_MIN: Duration = Duration::from_millis(250);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Rows handed and not yet taken at most; more are left to the claims.
const MAX_HANDED: usize = 1024;

/// The rows a batch of steps queued, handed over as it commits, so that a new
/// message need not wait for a claim to read it back. The outbox stays the
/// record: a row delivery does not take at once, its claims find there.
#[derive(Default)]
pub struct Handoff {
    rows: Mutex<Vec<OutboxRow>>,
    handed: Notify,
    /// Wakes delivery to claim: due rows may be there that nobody handed
    /// (another process's, a retry's).
    pub wake: Arc<Notify>,
}

impl Handoff {
    /// Hands over committed rows, in the order of their ids.
    pub fn hand(&self, rows: Vec<OutboxRow>) {
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
}

impl Delivery {
    pub fn new(
        config: &Config,
        store: Store,
        clock: Clock,
        plugins: Plugins,
        handoff: Arc<Handoff>,
        admission: Arc<Admission>,
    ) -> anyhow::Result<Delivery> {
        Ok(Delivery {
            mailer: Mailer::new(config)?,
            store,
            clock,
            plugins,
            http: config.http.clone(),
            api_bind: config.api.bind,
            policy: config.delivery.clone(),
            suppression: config.suppression.rules(),
            handoff,
            admission,
        })
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
    /// attempt is recorded, and at most twice `concurrency` rows are taken and
    /// not yet recorded: the most a crash can send twice.
    pub async fn run(self, cancel: CancellationToken) {
        type Pending<'a, T> = Option<Pin<Box<dyn Future<Output = T> + Send + 'a>>>;
        let mut sending = FuturesUnordered::new();
        // Plugin channels' sends in flight or parked, and the rows parked because
        // their channel held all its slots (taken, so no claim returns them).
        let mut slots = ChannelSlots::new(self.channel_slots());
        let mut unrecorded: HashSet<i64> = HashSet::new();
        let finished: Mutex<Vec<Attempt>> = Mutex::default();
        let mut recording: Pending<'_, Result<Vec<i64>, Vec<Attempt>>> = None;
        // Set while attempts cannot be recorded (a full disk): no new send starts,
        // and the next try to record waits this long. Sends whose record failed
        // stay out of the claims until they are recorded, so a store that cannot
        // write stops delivery instead of making it send the same rows again.
        let mut record_failing: Option<Duration> = None;
        // A claim runs beside the sends and the record rather than before them, so
        // an answer from the server or the turn to write is never left waiting on
        // a read. It leaves out every row unrecorded when it starts; rows are only
        // recorded (and so dropped from `unrecorded`) after that, so a claim never
        // returns a row that is being sent or was just recorded.
        let mut claiming: Pending<'_, anyhow::Result<Vec<OutboxRow>>> = None;
        // Whether a claim may find rows: after a wake-up, a pause, or a claim that
        // filled every free slot. An empty claim after each finished send was most
        // of the claims under load, each a query for nothing.
        let mut may_be_due = true;
        let mut claimed_for = 0;
        // The highest id taken, by a claim or from the handoff. A handed row
        // above it was never claimed, and handed rows are taken only while no
        // claim is under way (one could return them): no row is taken twice.
        let mut highest_taken = 0;
        loop {
            if recording.is_none() && !finished.lock().unwrap().is_empty() {
                let (this, finished, pause) = (&self, &finished, record_failing);
                recording = Some(Box::pin(async move {
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                    // The turn to write first, then the batch: what finishes while
                    // another writer holds the turn is recorded with it.
                    let tx = this.store.write_after_others().await;
                    let batch = std::mem::take(&mut *finished.lock().unwrap());
                    let recorded = match tx {
                        Ok(tx) => this.record(tx, &batch).await,
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
                }));
            }
            // New claims stop while too many finished sends wait for their record:
            // what a crash can repeat stays at most twice `concurrency`.
            while sending.len() < self.concurrency()
                && !cancel.is_cancelled()
                && let Some(row) = slots.unpark()
            {
                sending.push(self.attempt(row));
            }
            let mut free = self
                .concurrency()
                .saturating_sub(sending.len())
                .min((2 * self.concurrency()).saturating_sub(unrecorded.len()));
            if record_failing.is_some() {
                free = 0;
            }
            if claiming.is_none() {
                for row in self.handoff.take() {
                    // Not while due rows may wait in the outbox: the claim takes
                    // them all, the most urgent first.
                    if free > 0 && !may_be_due && row.id > highest_taken && !cancel.is_cancelled() {
                        highest_taken = row.id;
                        free -= 1;
                        unrecorded.insert(row.id);
                        if let Some(row) = slots.take(row) {
                            sending.push(self.attempt(row));
                        }
                    } else {
                        may_be_due = true;
                    }
                }
            }
            if claiming.is_none() && free > 0 && may_be_due && !cancel.is_cancelled() {
                let exclude: Vec<i64> = unrecorded.iter().copied().collect();
                let full = slots.full();
                let this = &self;
                claimed_for = free;
                may_be_due = false;
                claiming = Some(Box::pin(async move { this.claim(free as i64, &exclude, &full).await }));
            }
            if sending.is_empty() && recording.is_none() && claiming.is_none() {
                if cancel.is_cancelled() {
                    return;
                }
                let pause = self.until_next().await;
                may_be_due |= tokio::select! {
                    _ = cancel.cancelled() => true,
                    _ = self.handoff.wake.notified() => true,
                    _ = self.handoff.handed.notified() => false,
                    _ = tokio::time::sleep(pause) => true,
                };
                continue;
            }
            let room = sending.len() < self.concurrency()
                && unrecorded.len() < 2 * self.concurrency()
                && record_failing.is_none()
                && !cancel.is_cancelled();
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
                Some(first) = sending.next(), if !sending.is_empty() => {
                    let mut finished = finished.lock().unwrap();
                    slots.release(&first.0);
                    finished.push(first);
                    while let Some(Some(more)) = sending.next().now_or_never() {
                        slots.release(&more.0);
                        finished.push(more);
                    }
                }
                claim = claimed => {
                    claiming = None;
                    match claim {
                        // Claimed as the daemon stops: left pending for the next start.
                        Ok(_) if cancel.is_cancelled() => {}
                        Ok(rows) => {
                            // A full claim may have left rows behind; a wake-up meanwhile already said so.
                            may_be_due |= rows.len() == claimed_for;
                            highest_taken = rows.iter().map(|r| r.id).fold(highest_taken, i64::max);
                            for row in rows {
                                unrecorded.insert(row.id);
                                if let Some(row) = slots.take(row) {
                                    sending.push(self.attempt(row));
                                }
                            }
                        }
                        Err(e) => warn!("delivery: claim: {e:#}"),
                    }
                }
                result = recorded => {
                    recording = None;
                    match result {
                        Ok(ids) => {
                            if record_failing.take().is_some() {
                                info!("delivery: attempts are recorded again; sending resumes");
                                may_be_due = true;
                            }
                            for id in ids {
                                unrecorded.remove(&id);
                            }
                        }
                        Err(batch) if cancel.is_cancelled() && sending.is_empty() => {
                            // Stopping with attempts that cannot be recorded: their rows are
                            // still pending, and the next start sends them again (at most
                            // the bound on unrecorded sends, each with its Message-ID).
                            warn!("delivery: {} attempts left unrecorded at shutdown; they go again at the next start", batch.len());
                            return;
                        }
                        Err(mut batch) => {
                            let mut finished = finished.lock().unwrap();
                            batch.append(&mut finished);
                            *finished = batch;
                            let pause = record_failing.map_or(RECORD_RETRY_MIN, |p| (p * 2).min(RECORD_RETRY_MAX));
                            record_failing = Some(pause);
                        }
                    }
                }
                _ = self.handoff.wake.notified(), if room => may_be_due = true,
                _ = self.handoff.handed.notified(), if room => {}
                _ = tokio::time::sleep(Duration::from_millis(200)), if room => may_be_due = true,
            }
        }
    }

    async fn claim(&self, limit: i64, in_flight: &[i64], full_channels: &[String]) -> anyhow::Result<Vec<OutboxRow>> {
        let mut conn = self.store.pool.acquire().await?;
        let due = store::due_outbox(&mut conn, self.clock.now_ms(), limit, in_flight, full_channels).await?;
        // Sent only once the rows are on disk: power loss must not take back a sent message's row.
        if !due.is_empty() {
            self.store.durable().await;
        }
        Ok(due)
    }

    async fn until_next(&self) -> Duration {
        let next = match self.store.pool.acquire().await {
            Ok(mut conn) => store::next_outbox_due(&mut conn).await.ok().flatten(),
            Err(_) => None,
        };
        match next {
            // Virtual time moves only on command; the change watcher wakes us then.
            Some(_) if self.clock.is_virtual() => Duration::from_secs(60),
            Some(at) => Duration::from_millis((at - self.clock.now_ms()).clamp(1, 60_000) as u64),
            None => Duration::from_secs(60),
        }
    }

    /// Sends one row by its channel's route, unless its recipient is suppressed.
    async fn attempt(&self, mut row: OutboxRow) -> Attempt {
        let started = self.clock.now_ms();
        let outcome = match (&row.suppressed, row.channel.as_str()) {
            (Some(reason), _) => Outcome::Suppressed(format!("recipient suppressed: {reason}")),
            (None, "email") => self.mailer.send(&row, started).await,
            (None, channel) => {
                let (outcome, parts_done) = self.send_http(channel, &row).await;
                row.parts_done = parts_done;
                outcome
            }
        };
        // Done as far as the API's pace goes: the record need not be waited for.
        self.admission.messages_done(row.run_id);
        (row, started, outcome)
    }

    /// Delivers through the channel plugin's HTTP requests, sent in order; the
    /// plugin reads each answer (some providers report errors in a 200 body).
    /// Parts the provider accepted on an earlier attempt are not sent again;
    /// returns the outcome and the parts accepted by now.
    ///
    /// A part the provider answered with 2xx counts as accepted even when the
    /// plugin cannot read the answer (it traps or runs past its deadline): the
    /// message is then "unknown", never retried as if it had not gone out.
    async fn send_http(&self, channel: &str, row: &OutboxRow) -> (Outcome, i64) {
        let mut done = row.parts_done;
        let host = self.plugins.get();
        let plugin = match host.for_channel(channel) {
            Ok(p) => p.clone(),
            Err(e) => {
                return (
                    Outcome::Transient(format!("{e}; retried once the plugin is installed")),
                    done,
                );
            }
        };
        let m = &row.message.0;
        let message = RenderedMessage {
            subject: Some(m.subject.clone()).filter(|s| !s.is_empty()),
            text: m.text.clone(),
            html: m.html.clone(),
            extra: m.extra.clone(),
        };
        let (channel_owned, recipient, blocking_host) = (channel.to_string(), row.recipient.clone(), host.clone());
        let requests =
            tokio::task::spawn_blocking(move || blocking_host.build_request(&channel_owned, &message, &recipient))
                .await;
        let requests = match requests {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return (
                    Outcome::Permanent(format!("plugin could not build the request: {e}")),
                    done,
                );
            }
            Err(e) => return (Outcome::Transient(format!("plugin call: {e}")), done),
        };
        let parts = requests.len();
        if parts == 0 {
            return (Outcome::Permanent("the plugin built no request".into()), done);
        }
        let mut unread = None;
        for request in requests.into_iter().skip(done as usize) {
            let response = match http::send(&plugin, &self.http, self.api_bind, request).await {
                Ok(r) => r,
                Err(outcome) => return (outcome, done),
            };
            let status = response.status;
            let (channel_owned, blocking_host) = (channel.to_string(), host.clone());
            let verdict = tokio::task::spawn_blocking(move || {
                blocking_host.interpret_response(&channel_owned, response.status, response.headers, response.body)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|v| v.map_err(|e| e.to_string()));
            match verdict {
                Ok(ProviderVerdict::Sent(_)) => done += 1,
                Ok(ProviderVerdict::RetryLater(why)) => return (Outcome::Transient(why), done),
                Ok(ProviderVerdict::Failed(why)) => return (Outcome::Permanent(why), done),
                Err(e) if (200..300).contains(&status) => {
                    done += 1;
                    unread.get_or_insert(format!(
                        "the provider answered {status} to part {done} of {parts}, but the plugin could not read the answer: {e}"
                    ));
                }
                Err(e) => {
                    return (
                        Outcome::Transient(format!("plugin could not read the answer: {e}")),
                        done,
                    );
                }
            }
        }
        match unread {
            Some(why) => (Outcome::Unknown(why), done),
            None => (Outcome::Sent, done),
        }
    }

    /// Records attempts in one transaction, with the bounces they amount to.
    async fn record(&self, mut tx: store::Tx, attempts: &[Attempt]) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let records: Vec<store::AttemptRecord> = attempts
            .iter()
            .map(|(row, started_at, outcome)| store::AttemptRecord {
                row,
                started_at: *started_at,
                outcome,
                next: self.next(row, outcome, now),
            })
            .collect();
        store::record_attempts(&mut tx, &records, now).await?;
        for record in &records {
            let (row, outcome) = (record.row, record.outcome);
            let bounce = match (outcome, record.next) {
                (Outcome::Bounced(_), _) => Some(BounceKind::Hard),
                (Outcome::SoftBounced(_), Next::Dead) => Some(BounceKind::Soft),
                _ => None,
            };
            // A message without a recipient (a plugin's `recipient = "none"`) has no address to suppress.
            if let Some(kind) = bounce.filter(|_| !row.recipient.trim().is_empty()) {
                let bounce = store::Bounce {
                    address: &row.recipient,
                    channel: &row.channel,
                    kind,
                    detail: outcome.detail(),
                    outbox_id: Some(row.id),
                };
                if store::record_bounce(&mut tx, &bounce, self.suppression, now).await? {
                    warn!(to = %row.recipient, "suppressed after bounces");
                }
            }
        }
        tx.commit().await?;
        for record in &records {
            self.log(record.row, record.outcome, record.next);
        }
        Ok(())
    }

    /// Where a row goes after an attempt, by the configured policy.
    fn next(&self, row: &OutboxRow, outcome: &Outcome, now: i64) -> Next {
        let retry = || {
            if row.attempts + 1 < self.policy.max_attempts {
                Next::RetryAt(now + backoff_ms(&self.policy, row.id, row.attempts))
            } else {
                Next::Dead
            }
        };
        match outcome {
            Outcome::Sent => Next::Sent,
            Outcome::Transient(_) | Outcome::SoftBounced(_) => retry(),
            Outcome::Permanent(_) | Outcome::Bounced(_) => Next::Failed,
            Outcome::Suppressed(_) => Next::Suppressed,
            // Resend at most once: a second unknown in a row is held.
            Outcome::Unknown(_) if self.policy.on_unknown == OnUnknown::Resend && !row.had_unknown => retry(),
            Outcome::Unknown(_) => Next::Unknown,
        }
    }

    fn log(&self, row: &OutboxRow, outcome: &Outcome, next: Next) {
        let attempt = row.attempts + 1;
        match (outcome, next) {
            (Outcome::Sent, _) => {
                info!(outbox_id = row.id, message_id = %row.message_id, to = %row.recipient, "sent")
            }
            (_, Next::RetryAt(at)) => warn!(
                outbox_id = row.id,
                attempt,
                retry_at = %crate::clock::display_ms(at),
                "{}: {}",
                outcome.recorded_as(),
                outcome.detail()
            ),
            (_, Next::Dead) => warn!(
                outbox_id = row.id,
                attempt,
                "dead letter after {attempt} attempts (`nudge outbox list --status dead`): {}",
                outcome.detail()
            ),
            (Outcome::Unknown(d), _) => warn!(
                outbox_id = row.id,
                message_id = %row.message_id,
                "outcome unknown, held for an operator (`nudge outbox retry|drop`): {d}"
            ),
            (_, _) => warn!(outbox_id = row.id, to = %row.recipient, "{}: {}", outcome.recorded_as(), outcome.detail()),
        }
    }
}

/// The slots plugin channels hold. Email is sent by the daemon itself, within
/// its SMTP timeouts, and is never held back here.
struct ChannelSlots {
    per_channel: usize,
    /// Sends in flight plus rows parked, per plugin channel.
    held: HashMap<String, usize>,
    parked: VecDeque<OutboxRow>,
}

impl ChannelSlots {
    fn new(per_channel: usize) -> ChannelSlots {
        ChannelSlots {
            per_channel,
            held: HashMap::new(),
            parked: VecDeque::new(),
        }
    }

    fn in_flight(&self, channel: &str) -> usize {
        let parked = self.parked.iter().filter(|r| r.channel == channel).count();
        self.held.get(channel).copied().unwrap_or(0) - parked
    }

    /// A taken row: back to be sent now, or None when its channel holds all its
    /// slots (it is parked until one frees).
    fn take(&mut self, row: OutboxRow) -> Option<OutboxRow> {
        if row.channel == "email" {
            return Some(row);
        }
        let in_flight = self.in_flight(&row.channel);
        *self.held.entry(row.channel.clone()).or_default() += 1;
        if in_flight < self.per_channel {
            return Some(row);
        }
        self.parked.push_back(row);
        None
    }

    /// A send of `row` finished.
    fn release(&mut self, row: &OutboxRow) {
        if let Some(held) = self.held.get_mut(&row.channel) {
            *held -= 1;
            if *held == 0 {
                self.held.remove(&row.channel);
            }
        }
    }

    /// The first parked row whose channel has a free slot again.
    fn unpark(&mut self) -> Option<OutboxRow> {
        let at = self
            .parked
            .iter()
            .position(|r| self.in_flight(&r.channel) < self.per_channel)?;
        self.parked.remove(at)
    }

    /// Channels that hold all their slots: claims leave their rows for later.
    fn full(&self) -> Vec<String> {
        self.held
            .iter()
            .filter(|(_, held)| **held >= self.per_channel)
            .map(|(channel, _)| channel.clone())
            .collect()
    }
}

/// Exponential backoff from the configured base, capped, with up to 20 % jitter
/// derived from the row id so that rows failing together do not retry together.
fn backoff_ms(policy: &DeliveryConfig, row_id: i64, attempts: i64) -> i64 {
    let cap = policy.backoff_cap_secs.max(1) * 1000;
    let base = (policy.backoff_base_secs.max(1) * 1000)
        .saturating_mul(1i64 << attempts.clamp(0, 20))
        .min(cap);
    let jitter = (row_id.wrapping_mul(2_654_435_761) & 0xffff) * base / 5 / 0xffff;
    base + jitter
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;
    use crate::config::DeliveryConfig;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = DeliveryConfig::default();
        assert!((30_000..=36_000).contains(&backoff_ms(&policy, 1, 0)));
        assert!((60_000..=72_000).contains(&backoff_ms(&policy, 1, 1)));
        assert!(backoff_ms(&policy, 7, 20) <= 3_600_000 * 6 / 5);
        assert!(backoff_ms(&policy, 7, 60) <= 3_600_000 * 6 / 5);
        assert_ne!(backoff_ms(&policy, 1, 3), backoff_ms(&policy, 2, 3));
    }
}
