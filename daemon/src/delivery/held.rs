//! Where delivery asks the recipient domain's pace (`pace.rs`) and the warm-up
//! plan (`warmup.rs`) whether an email may go now, and tells the pace how the
//! send ended. A row that may not go is recorded as held (`Outcome::Held`):
//! pending, untried, due again at the time it was given.

use tracing::warn;

use super::Delivery;
use super::pace::Admit;
use crate::model::{Category, Reason};
use crate::store::{self, OutboxRow, Outcome};

/// The recipient's domain, lower case ("" when the address has none).
fn domain_of(recipient: &str) -> String {
    recipient
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim().trim_end_matches('>').to_ascii_lowercase())
        .unwrap_or_default()
}

impl Delivery {
    /// Reads back the marketing email the warm-up plan counted today before a
    /// restart. Without it the plan starts the day at zero: never more than the
    /// cap again, but up to twice it on the day of a restart.
    pub(super) async fn count_warmup(&self) {
        let Some(warmup) = &self.warmup else {
            return;
        };
        let since = warmup.today_starts();
        let counted = match self.store.pool.acquire().await {
            Ok(mut conn) => store::marketing_email_sent_since(&mut conn, since).await,
            Err(e) => Err(e.into()),
        };
        match counted {
            Ok(sent) => warmup.counted(sent),
            Err(e) => warn!("warm-up: cannot read back today's count, it starts at zero: {e:#}"),
        }
    }

    /// Whether an email to `row`'s recipient must wait: its domain's pace, then
    /// (for marketing) the warm-up plan. None: it goes now.
    pub(super) fn hold(&self, row: &OutboxRow) -> Option<Outcome> {
        if self.relay_open() {
            // Held by the relay's breaker instead, which charges nothing.
            return None;
        }
        if let Admit::At { at, throttled } = self.pacing.admit(&domain_of(&row.recipient), row.id) {
            let reason = if throttled {
                Reason::DomainThrottled
            } else {
                Reason::DomainPaced
            };
            return Some(Outcome::Held { reason, until: at });
        }
        let warmup = self
            .warmup
            .as_ref()
            .filter(|_| row.category == Category::Marketing.as_str())?;
        let until = warmup.admit()?;
        Some(Outcome::Held {
            reason: Reason::WarmupCap,
            until,
        })
    }

    /// Tells the domain's pace how a send ended; a throttling reply becomes
    /// `Outcome::Throttled`, retried at the slot the slowed domain gives it.
    pub(super) fn paced(&self, row: &OutboxRow, outcome: Outcome) -> Outcome {
        let domain = domain_of(&row.recipient);
        match outcome {
            Outcome::Sent => {
                self.pacing.accepted(&domain);
                Outcome::Sent
            }
            Outcome::Transient(reply) | Outcome::SoftBounced(reply) if self.pacing.is_throttling(&reply) => {
                let retry_at = self.pacing.throttled(&domain, row.id, &reply);
                Outcome::Throttled { reply, retry_at }
            }
            outcome => outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::domain_of;

    #[test]
    fn the_domain_is_what_follows_the_last_at_in_lower_case() {
        assert_eq!(domain_of("Li@GMail.com"), "gmail.com");
        assert_eq!(domain_of("\"a@b\"@example.org"), "example.org");
        assert_eq!(domain_of("nobody"), "");
    }
}
