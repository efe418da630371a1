//! Delivery: claims due outbox rows, sends each (email by SMTP or as `.eml`
//! files; other channels over HTTP as their plugin describes), and records
//! every attempt. Transient failures are retried with backoff.

mod email;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{Config, HttpConfig};
use crate::plugins::{Plugins, ProviderVerdict, RenderedMessage};
use crate::store::{self, OutboxRow, Outcome, Store};

pub use email::Mailer;

/// Attempts before a row is given up as failed.
const MAX_ATTEMPTS: i64 = 8;
const BATCH: i64 = 64;
/// Sends in flight at once; the SMTP pool keeps as many connections open (email::POOL_SIZE).
const CONCURRENT_SENDS: usize = email::POOL_SIZE as usize;

/// The delivery worker.
pub struct Delivery {
    store: Store,
    clock: Clock,
    mailer: Mailer,
    plugins: Plugins,
    http: HttpConfig,
    wake: Arc<Notify>,
}

impl Delivery {
    pub fn new(
        config: &Config,
        store: Store,
        clock: Clock,
        plugins: Plugins,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Delivery> {
        Ok(Delivery {
            mailer: Mailer::new(config)?,
            store,
            clock,
            plugins,
            http: config.http.clone(),
            wake,
        })
    }

    /// Runs until cancelled: delivers what is due, then sleeps until the next
    /// retry is due or new rows are committed.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let pause = match self.deliver_due().await {
                Ok(0) => self.until_next().await,
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    warn!("delivery: {e:#}");
                    Duration::from_secs(1)
                }
            };
            if pause.is_zero() {
                if cancel.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
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

    /// Sends every due row once; returns how many were attempted.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let rows = {
            let mut conn = self.store.pool.acquire().await?;
            store::due_outbox(&mut conn, self.clock.now_ms(), BATCH).await?
        };
        // Several sends at once: each waits mostly on the network (an SMTP exchange
        // is several round trips), so one at a time would leave the line idle.
        let count = rows.len();
        let attempts: Vec<(OutboxRow, i64, Outcome)> = stream::iter(rows)
            .map(|row| self.attempt(row))
            .buffer_unordered(CONCURRENT_SENDS)
            .collect()
            .await;
        self.record(&attempts).await?;
        Ok(count)
    }

    /// Sends one row by its channel's route.
    async fn attempt(&self, row: OutboxRow) -> (OutboxRow, i64, Outcome) {
        let started = self.clock.now_ms();
        let outcome = match row.channel.as_str() {
            "email" => self.mailer.send(&row, started).await,
            channel => self.send_http(channel, &row).await,
        };
        (row, started, outcome)
    }

    /// Delivers through the channel plugin's HTTP requests, sent in order; the
    /// plugin reads each answer (some providers report errors in a 200 body).
    async fn send_http(&self, channel: &str, row: &OutboxRow) -> Outcome {
        let host = self.plugins.get();
        let plugin = match host.for_channel(channel) {
            Ok(p) => p.clone(),
            Err(e) => return Outcome::Transient(format!("{e}; retried once the plugin is installed")),
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
            Ok(Err(e)) => return Outcome::Permanent(format!("plugin could not build the request: {e}")),
            Err(e) => return Outcome::Transient(format!("plugin call: {e}")),
        };
        let mut last = Outcome::Permanent("the plugin built no request".into());
        for request in requests {
            let response = match http::send(&plugin, &self.http, request).await {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            let (channel_owned, blocking_host) = (channel.to_string(), host.clone());
            let verdict = tokio::task::spawn_blocking(move || {
                blocking_host.interpret_response(&channel_owned, response.status, response.headers, response.body)
            })
            .await;
            last = match verdict {
                Ok(Ok(ProviderVerdict::Sent(_))) => Outcome::Sent,
                Ok(Ok(ProviderVerdict::RetryLater(why))) => return Outcome::Transient(why),
                Ok(Ok(ProviderVerdict::Failed(why))) => return Outcome::Permanent(why),
                Ok(Err(e)) => return Outcome::Transient(format!("plugin could not read the answer: {e}")),
                Err(e) => return Outcome::Transient(format!("plugin call: {e}")),
            };
        }
        last
    }

    /// Records a batch of attempts in one transaction. A crash before it commits
    /// means these rows are sent again after restart: the messages in flight,
    /// each with its stable Message-ID.
    async fn record(&self, attempts: &[(OutboxRow, i64, Outcome)]) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let mut tx = self.store.write().await?;
        for (row, started, outcome) in attempts {
            let retry_at = self.log_attempt(row, outcome, now);
            store::record_attempt(&mut tx, row, *started, outcome, retry_at, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Logs an attempt; returns when a transient failure is retried (None once retries are used up).
    fn log_attempt(&self, row: &OutboxRow, outcome: &Outcome, now: i64) -> Option<i64> {
        let retry_at = match outcome {
            Outcome::Transient(_) if row.attempts + 1 < MAX_ATTEMPTS => Some(now + backoff_ms(row.id, row.attempts)),
            _ => None,
        };
        match outcome {
            Outcome::Sent => {
                info!(outbox_id = row.id, message_id = %row.message_id, to = %row.recipient, "sent")
            }
            Outcome::Transient(d) => warn!(
                outbox_id = row.id,
                attempt = row.attempts + 1,
                retry = retry_at.is_some(),
                "transient failure: {d}"
            ),
            Outcome::Permanent(d) => warn!(outbox_id = row.id, "permanent failure: {d}"),
        }
        retry_at
    }
}

/// 30 s doubling per attempt, capped at an hour, with up to 20 % jitter derived
/// from the row id so that rows failing together do not retry together.
fn backoff_ms(row_id: i64, attempts: i64) -> i64 {
    let base = (30_000i64 << attempts.clamp(0, 7)).min(3_600_000);
    let jitter = (row_id.wrapping_mul(2_654_435_761) & 0xffff) * base / 5 / 0xffff;
    base + jitter
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!((30_000..=36_000).contains(&backoff_ms(1, 0)));
        assert!((60_000..=72_000).contains(&backoff_ms(1, 1)));
        assert!(backoff_ms(7, 20) <= 3_600_000 * 6 / 5);
        assert_ne!(backoff_ms(1, 3), backoff_ms(2, 3));
    }
}
