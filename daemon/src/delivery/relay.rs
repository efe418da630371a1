//! The SMTP relay's circuit breaker. A relay that refuses the session itself
//! (a 554 or 421 greeting, a failed TLS handshake, a refused login, no
//! connection at all) refuses every message alike: that is the relay's fault,
//! not each message's. Its first such refusal opens the breaker: email is held
//! (no message is taken, none is charged an attempt, all stay due), and one
//! session without a message probes the relay on a backoff; the first probe it
//! accepts closes the breaker and delivery resumes. Refusals of one message
//! (at MAIL, RCPT or DATA) stay that message's, as before.
//!
//! Times are the daemon's clock's, so a virtual clock drives the probes too.

use std::sync::Mutex;

use serde_json::{Value, json};
use tracing::{info, warn};

use crate::clock::{Clock, display_ms};
use crate::config::SmtpConfig;

/// The breaker as a state machine over times in milliseconds, without I/O.
#[derive(Debug)]
pub(super) struct Breaker {
    first_ms: i64,
    max_ms: i64,
    open: Option<Open>,
}

#[derive(Debug, Clone)]
struct Open {
    since: i64,
    reply: String,
    /// The wait before the next probe after this one is refused.
    backoff: i64,
    next_probe: i64,
    probing: bool,
}

impl Breaker {
    pub(super) fn new(first_secs: u64, max_secs: u64) -> Breaker {
        let first_ms = (first_secs.max(1) * 1000) as i64;
        Breaker {
            first_ms,
            max_ms: ((max_secs * 1000) as i64).max(first_ms),
            open: None,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The relay refused a session; whether this opened the breaker.
    pub(super) fn refused(&mut self, now: i64, reply: String) -> bool {
        if let Some(open) = &mut self.open {
            open.reply = reply;
            return false;
        }
        self.open = Some(Open {
            since: now,
            reply,
            backoff: self.first_ms,
            next_probe: now + self.first_ms,
            probing: false,
        });
        true
    }

    /// Whether to probe now; if so, no other probe starts until this one ends.
    pub(super) fn probe_due(&mut self, now: i64) -> bool {
        match &mut self.open {
            Some(open) if !open.probing && now >= open.next_probe => {
                open.probing = true;
                true
            }
            _ => false,
        }
    }

    /// The probe was refused too: the next waits twice as long, up to the most.
    pub(super) fn probe_refused(&mut self, now: i64, reply: String) {
        if let Some(open) = &mut self.open {
            open.backoff = (open.backoff * 2).min(self.max_ms);
            open.next_probe = now + open.backoff;
            open.reply = reply;
            open.probing = false;
        }
    }

    /// The probe got a session: closes; when it had opened and the last refusal.
    pub(super) fn probe_passed(&mut self) -> Option<(i64, String)> {
        self.open.take().map(|open| (open.since, open.reply))
    }

    /// When the next probe is due, while open.
    pub(super) fn next_probe(&self) -> Option<i64> {
        self.open.as_ref().map(|open| open.next_probe)
    }

    fn view(&self, relay: &str) -> Value {
        match &self.open {
            None => json!({ "relay": relay, "state": "closed" }),
            Some(open) => json!({
                "relay": relay,
                "state": "open",
                "open_since": open.since,
                "last_reply": open.reply,
                "next_probe_at": open.next_probe,
            }),
        }
    }
}

/// The breaker of the configured relay, shared by delivery (which trips and
/// probes it) and the API (whose `/health` shows it).
pub(crate) struct Relay {
    name: String,
    clock: Clock,
    breaker: Mutex<Breaker>,
}

impl Relay {
    pub(super) fn new(smtp: &SmtpConfig, clock: Clock) -> Relay {
        Relay {
            name: format!("{}:{}", smtp.host, smtp.port),
            clock,
            breaker: Mutex::new(Breaker::new(smtp.probe_first_secs, smtp.probe_max_secs)),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker's state is whole after every method: a poisoned lock still holds it.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_open(&self) -> bool {
        self.breaker().is_open()
    }

    /// A send could not get a session from the relay.
    pub(super) fn refused(&self, reply: String) {
        let now = self.clock.now_ms();
        if self.breaker().refused(now, reply.clone()) {
            warn!(
                relay = %self.name,
                "SMTP relay refuses sessions, email is held (messages stay due, no attempt is counted) \
                 and the relay is probed until it accepts one: {reply}"
            );
        }
    }

    pub(super) fn probe_due(&self) -> bool {
        self.breaker().probe_due(self.clock.now_ms())
    }

    /// Records what a probe found; true when the breaker closed.
    pub(super) fn probed(&self, result: Result<(), String>) -> bool {
        let mut breaker = self.breaker();
        match result {
            Ok(()) => {
                let Some((since, reply)) = breaker.probe_passed() else {
                    return false;
                };
                drop(breaker);
                warn!(
                    relay = %self.name,
                    "SMTP relay accepts sessions again, email resumes (held since {}; its last refusal: {reply})",
                    display_ms(since)
                );
                true
            }
            Err(reply) => {
                breaker.probe_refused(self.clock.now_ms(), reply.clone());
                let next = breaker.next_probe().map(display_ms).unwrap_or_default();
                drop(breaker);
                info!(relay = %self.name, next_probe = %next, "SMTP relay still refuses sessions: {reply}");
                false
            }
        }
    }

    /// Milliseconds until the next probe, while open.
    pub(super) fn until_probe(&self) -> Option<i64> {
        let next = self.breaker().next_probe()?;
        Some(next - self.clock.now_ms())
    }

    /// What `/health` and `nudge status` show: the relay, `closed` or `open`
    /// with since when, its last refusal and the next probe (clock milliseconds).
    pub(crate) fn view(&self) -> Value {
        self.breaker().view(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::Breaker;

    #[test]
    fn opens_on_a_refusal_probes_on_a_doubling_backoff_and_closes_on_a_pass() {
        let mut b = Breaker::new(5, 20);
        assert!(!b.is_open());
        assert!(!b.probe_due(0), "a closed breaker never probes");
        assert!(b.refused(1_000, "554 go away".into()), "the first refusal opens");
        assert!(!b.refused(1_100, "554 still".into()), "later refusals keep it open");
        assert!(b.is_open());
        assert_eq!(b.next_probe(), Some(6_000));
        assert!(!b.probe_due(5_999));
        assert!(b.probe_due(6_000));
        assert!(!b.probe_due(6_001), "one probe at a time");
        // Refused: 10 s, then 20 s, then capped at 20 s.
        b.probe_refused(6_500, "535 no".into());
        assert_eq!(b.next_probe(), Some(16_500));
        assert!(b.probe_due(16_500));
        b.probe_refused(16_500, "535 no".into());
        assert_eq!(b.next_probe(), Some(36_500));
        assert!(b.probe_due(40_000));
        b.probe_refused(40_000, "535 no".into());
        assert_eq!(b.next_probe(), Some(60_000));
        assert!(b.view("r")["last_reply"] == "535 no");
        assert!(b.probe_due(60_000));
        assert_eq!(b.probe_passed(), Some((1_000, "535 no".into())));
        assert!(!b.is_open());
        assert_eq!(b.view("r")["state"], "closed");
        // Opens afresh, with the first backoff again.
        assert!(b.refused(70_000, "421 busy".into()));
        assert_eq!(b.next_probe(), Some(75_000));
    }
}
