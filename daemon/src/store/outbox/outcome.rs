//! How an attempt ended and where its row goes next.

use super::{AttemptOutcome, OutboxStatus};
use crate::model::Reason;

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Worth trying again later (4xx, connection trouble before the body was sent).
    Transient(String),
    /// The server refused this recipient for now (4xx to RCPT): retried; a soft bounce once retries run out.
    SoftBounced(String),
    /// Will never succeed as it is (5xx, a message that cannot be built).
    Permanent(String),
    /// The server refused this recipient for good (5xx to RCPT): a hard bounce.
    Bounced(String),
    /// The server may or may not have the message (no reply after the body).
    Unknown(String),
    /// Not attempted: the recipient is suppressed.
    Suppressed(String),
    /// The recipient's provider throttles us (421 4.7.28, 450 4.2.1, ...): an
    /// attempt, retried at `retry_at` (the domain's pace) without being charged
    /// to the retry budget, since the message is not at fault.
    Throttled {
        reply: String,
        retry_at: i64,
    },
    /// Not attempted: held until `until` by the recipient domain's pace or the
    /// warm-up plan; no attempt is recorded.
    Held {
        reason: Reason,
        until: i64,
    },
}

impl Outcome {
    /// The outcome as the record of deliveries keeps it.
    pub(crate) fn recorded_as(&self) -> AttemptOutcome {
        match self {
            Outcome::Sent => AttemptOutcome::Sent,
            Outcome::Transient(_) | Outcome::SoftBounced(_) | Outcome::Throttled { .. } => AttemptOutcome::Transient,
            Outcome::Permanent(_) | Outcome::Bounced(_) => AttemptOutcome::Permanent,
            Outcome::Unknown(_) => AttemptOutcome::Unknown,
            Outcome::Suppressed(_) => AttemptOutcome::Suppressed,
            // Never written: a held row has no attempt to record.
            Outcome::Held { .. } => AttemptOutcome::Transient,
        }
    }

    pub(crate) fn detail(&self) -> &str {
        match self {
            Outcome::Sent => "",
            Outcome::Transient(d)
            | Outcome::SoftBounced(d)
            | Outcome::Permanent(d)
            | Outcome::Bounced(d)
            | Outcome::Unknown(d)
            | Outcome::Suppressed(d)
            | Outcome::Throttled { reply: d, .. } => d,
            Outcome::Held { reason, .. } => reason.meaning(),
        }
    }
}

/// Where a row goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Sent,
    RetryAt(i64),
    Failed,
    Dead,
    Unknown,
    Suppressed,
    /// Pending, untried, until then, for this reason (`Outcome::Held`).
    Held(i64, Reason),
}

impl Next {
    pub(super) fn status(self) -> OutboxStatus {
        match self {
            Next::Sent => OutboxStatus::Sent,
            Next::RetryAt(_) | Next::Held(..) => OutboxStatus::Pending,
            Next::Failed => OutboxStatus::Failed,
            Next::Dead => OutboxStatus::Dead,
            Next::Unknown => OutboxStatus::Unknown,
            Next::Suppressed => OutboxStatus::Suppressed,
        }
    }
}
