//! Recording attempts: each finished send moves its outbox row on (sent,
//! retried after a backoff, failed, dead, suppressed or unknown) in one
//! transaction with the bounces it amounts to; the log says what happened
//! once that transaction has committed.

use tracing::{debug, info, warn};

use super::{Attempt, Delivery};
use crate::config::{DeliveryConfig, OnUnknown};
use crate::store::{self, BounceKind, Next, OutboxRow, Outcome};

impl Delivery {
    /// Records attempts in one transaction, with the bounces they amount to.
    pub(super) async fn record(&self, mut tx: store::Tx, attempts: &[Attempt]) -> anyhow::Result<()> {
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
                    report_id: None,
                };
                if store::record_bounce(&mut tx, &bounce, self.suppression, now).await? {
                    warn!(to = %row.recipient, "suppressed after bounces");
                }
            }
        }
        tx.commit().await?;
        let metrics = crate::metrics::get();
        for record in &records {
            let (row, outcome) = (record.row, record.outcome);
            if let Outcome::Held { reason, .. } = outcome {
                metrics.delivery_held(reason.as_str());
                self.log(row, outcome, record.next);
                continue;
            }
            metrics.delivery_attempt(&row.channel, outcome.recorded_as().as_str());
            if matches!(outcome, Outcome::Sent) {
                metrics.message_accepted(&row.channel, now - row.created_at);
            }
            self.log(row, outcome, record.next);
        }
        Ok(())
    }

    /// Where a row goes after an attempt, by the configured policy.
    fn next(&self, row: &OutboxRow, outcome: &Outcome, now: i64) -> Next {
        let retry = || {
            // Throttled attempts are the provider's doing: not charged to the message.
            if row.attempts - row.throttled + 1 < self.policy.max_attempts {
                Next::RetryAt(now + backoff_ms(&self.policy, row.id, row.attempts - row.throttled))
            } else {
                Next::Dead
            }
        };
        match outcome {
            Outcome::Sent => Next::Sent,
            Outcome::Transient(_) | Outcome::SoftBounced(_) => retry(),
            Outcome::Permanent(_) | Outcome::Bounced(_) => Next::Failed,
            Outcome::Suppressed(_) => Next::Suppressed,
            Outcome::Throttled { retry_at, .. } => Next::RetryAt(*retry_at),
            Outcome::Held { reason, until } => Next::Held(*until, *reason),
            // Resend at most once: a second unknown in a row is held.
            Outcome::Unknown(_) if self.policy.on_unknown == OnUnknown::Resend && !row.had_unknown => retry(),
            Outcome::Unknown(_) => Next::Unknown,
        }
    }

    fn log(&self, row: &OutboxRow, outcome: &Outcome, next: Next) {
        let _in_run = row.span().entered();
        let attempt = row.attempts + 1;
        match (outcome, next) {
            // Many at a time under a backlog, and the plan working: `nudge status` counts them.
            (Outcome::Held { reason, until }, _) => debug!(
                outbox_id = row.id,
                %reason,
                due_at = %crate::clock::display_ms(*until),
                "held untried"
            ),
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
