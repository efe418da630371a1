//! Per-domain pacing: how fast email goes to each recipient domain, so that a
//! backlog for one provider never delays the others (README "Pacing and
//! warm-up").
//!
//! A domain with a limit (`[delivery.domains."<domain>"] per_minute`, or
//! `[delivery.pacing] per_minute` for the rest) gets one message every
//! 60/N seconds. A message that comes before its domain's next slot is not
//! tried: it is given the next free slot and goes back to the outbox, due
//! then, without an attempt (`Outcome::Held`), so a backlog is spread over the
//! domain's interval instead of waking at once. A throttling reply (421 4.7.x,
//! 450 4.2.1, ...) halves the domain's rate from what it was sending, pauses
//! it (the pause doubling while it keeps throttling) and forgets the slots
//! given out, so they are handed out again after the pause; every
//! `recover_after` messages in a row it accepts double the rate, until it is
//! back where it throttled and the domain is at its configured pace again.
//!
//! `Paces` is the state machine, without I/O, on the daemon's clock; `Pacing`
//! shares it between delivery and `/health`. It lives in memory only: after a
//! restart every domain starts at its configured pace, and the held rows keep
//! the times they were given (their `next_attempt_at`), so they still come one
//! slot apart. A domain that was throttled is throttled again by its first
//! reply if it still throttles.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use tracing::{info, warn};

use crate::clock::{Clock, display_ms};
use crate::config::DeliveryConfig;

const MINUTE_MS: i64 = 60_000;

/// What to do with a message to a domain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    Now,
    /// Not before this time (its slot, kept for it), because the domain is
    /// paced (`throttled`: slowed by a throttling reply).
    At {
        at: i64,
        throttled: bool,
    },
}

/// A domain slowed by a throttling reply.
#[derive(Debug, Clone)]
struct Slowed {
    /// The rate it was sending at when it throttled: recovering stops there.
    ceiling: i64,
    /// Its rate now, messages a minute.
    per_minute: i64,
    /// Messages accepted since the last throttling reply or doubling.
    accepted: i64,
    /// The pause after the next throttling reply.
    backoff_ms: i64,
    /// No message before this (the pause after the last throttling reply).
    paused_until: i64,
    since: i64,
    /// The last throttling reply's codes (`421 4.7.28`): its words may name a
    /// recipient, and `/health` answers without a token; the log has them.
    reply: String,
}

#[derive(Debug, Default)]
struct Pace {
    /// The next free slot.
    next_free: i64,
    /// Slots given to rows sent back to the outbox, by row id: each is tried at its own.
    kept: HashMap<i64, i64>,
    slowed: Option<Slowed>,
    /// Messages started in this minute and the one before: what a throttled
    /// domain was sending.
    minute: i64,
    this_minute: i64,
    last_minute: i64,
    /// When `kept` was last cleared of slots long past.
    pruned: i64,
}

impl Pace {
    fn started(&mut self, now: i64) {
        let minute = now.div_euclid(MINUTE_MS);
        if minute != self.minute {
            self.last_minute = if minute == self.minute + 1 { self.this_minute } else { 0 };
            self.this_minute = 0;
            self.minute = minute;
        }
        self.this_minute += 1;
    }

    /// Messages a minute it was sending, over the last sixty seconds.
    fn rate(&self, now: i64) -> i64 {
        let minute = now.div_euclid(MINUTE_MS);
        let into = now.rem_euclid(MINUTE_MS);
        let (this, last) = match minute - self.minute {
            0 => (self.this_minute, self.last_minute),
            1 => (0, self.this_minute),
            _ => (0, 0),
        };
        this + last * (MINUTE_MS - into) / MINUTE_MS
    }

    /// Milliseconds between two messages, if it is paced now.
    fn interval(&self, limit: Option<i64>) -> Option<i64> {
        let per_minute = match (&self.slowed, limit) {
            (Some(slowed), Some(limit)) => slowed.per_minute.min(limit),
            (Some(slowed), None) => slowed.per_minute,
            (None, limit) => limit?,
        };
        Some(MINUTE_MS / per_minute.max(1))
    }
}

/// The pace of every recipient domain (see the module doc).
pub(super) struct Paces {
    /// Messages a minute by domain (lower case), and for the rest.
    limits: HashMap<String, i64>,
    default: Option<i64>,
    backoff_first_ms: i64,
    backoff_max_ms: i64,
    recover_after: i64,
    domains: HashMap<String, Pace>,
    /// When idle domains were last forgotten.
    swept: i64,
}

impl Paces {
    pub(super) fn new(policy: &DeliveryConfig) -> Paces {
        let pacing = &policy.pacing;
        Paces {
            limits: policy
                .domains
                .iter()
                .map(|(domain, pace)| (domain.to_ascii_lowercase(), *pace.per_minute.get_ref()))
                .collect(),
            default: Some(*pacing.per_minute.get_ref()).filter(|&n| n > 0),
            backoff_first_ms: pacing.backoff_first_secs.get_ref().saturating_mul(1000),
            backoff_max_ms: pacing.backoff_max_secs.get_ref().saturating_mul(1000),
            recover_after: *pacing.recover_after.get_ref(),
            domains: HashMap::new(),
            swept: 0,
        }
    }

    fn limit(&self, domain: &str) -> Option<i64> {
        self.limits.get(domain).copied().or(self.default)
    }

    /// Forgets, once a minute, the domains with nothing to remember: not
    /// slowed, no slot given out or still ahead, nothing sent in two minutes.
    /// Mail goes to many domains; the map holds only those of late.
    fn sweep(&mut self, now: i64) {
        if now - self.swept < MINUTE_MS {
            return;
        }
        self.swept = now;
        let minute = now.div_euclid(MINUTE_MS);
        self.domains
            .retain(|_, p| p.slowed.is_some() || !p.kept.is_empty() || p.next_free > now || p.minute + 1 >= minute);
    }

    /// May message `row` to `domain` go now? Else the slot it is given.
    pub(super) fn admit(&mut self, domain: &str, row: i64, now: i64) -> Admit {
        self.sweep(now);
        let limit = self.limit(domain);
        if !self.domains.contains_key(domain) {
            self.domains.insert(domain.to_string(), Pace::default());
        }
        let Some(pace) = self.domains.get_mut(domain) else {
            return Admit::Now;
        };
        let Some(interval) = pace.interval(limit) else {
            pace.started(now);
            return Admit::Now;
        };
        let throttled = pace.slowed.is_some();
        if let Some(&slot) = pace.kept.get(&row) {
            if slot > now {
                return Admit::At { at: slot, throttled };
            }
            pace.kept.remove(&row);
            pace.started(now);
            return Admit::Now;
        }
        if now - pace.pruned >= MINUTE_MS {
            // A row given a slot may never come back for it (dropped, sent by hand).
            pace.kept.retain(|_, slot| *slot + MINUTE_MS > now);
            pace.pruned = now;
        }
        let paused = pace.slowed.as_ref().map_or(now, |s| s.paused_until);
        let slot = pace.next_free.max(paused);
        if slot <= now {
            pace.next_free = now + interval;
            pace.started(now);
            return Admit::Now;
        }
        pace.next_free = slot + interval;
        pace.kept.insert(row, slot);
        Admit::At { at: slot, throttled }
    }

    /// A message to `domain` was accepted.
    pub(super) fn accepted(&mut self, domain: &str) -> Option<i64> {
        let recover_after = self.recover_after;
        let (backoff_first, pace) = (self.backoff_first_ms, self.domains.get_mut(domain)?);
        let slowed = pace.slowed.as_mut()?;
        slowed.accepted += 1;
        slowed.backoff_ms = backoff_first;
        if slowed.accepted < recover_after {
            return None;
        }
        slowed.accepted = 0;
        slowed.per_minute = slowed.per_minute.saturating_mul(2);
        if slowed.per_minute < slowed.ceiling {
            return Some(slowed.per_minute);
        }
        pace.slowed = None;
        Some(0)
    }

    /// `domain` answered a message of `row` with a throttling reply: slows it
    /// (once per pause: the replies to messages already under way do not slow
    /// it again) and gives the row a slot after the pause. Whether it was
    /// slowed anew, and the slot.
    pub(super) fn throttled(&mut self, domain: &str, row: i64, now: i64, reply: &str) -> (bool, i64) {
        let limit = self.limit(domain);
        let (first, max) = (self.backoff_first_ms, self.backoff_max_ms);
        let pace = self.domains.entry(domain.to_string()).or_default();
        let sending = pace.rate(now).max(1);
        let slowed_anew = match &mut pace.slowed {
            Some(slowed) if now < slowed.paused_until => false,
            Some(slowed) => {
                slowed.per_minute = (slowed.per_minute / 2).max(1);
                slowed.paused_until = now.saturating_add(slowed.backoff_ms);
                slowed.backoff_ms = slowed.backoff_ms.saturating_mul(2).min(max);
                slowed.accepted = 0;
                slowed.reply = reply.to_string();
                true
            }
            None => {
                // Rows waiting for slots: it was sending at its limit, whatever the last minute saw.
                let ceiling = match limit {
                    Some(limit) if !pace.kept.is_empty() => limit,
                    Some(limit) => limit.min(sending),
                    None => sending,
                };
                pace.slowed = Some(Slowed {
                    ceiling,
                    per_minute: (ceiling / 2).max(1),
                    accepted: 0,
                    backoff_ms: first.saturating_mul(2).min(max),
                    paused_until: now.saturating_add(first),
                    since: now,
                    reply: reply.to_string(),
                });
                true
            }
        };
        if slowed_anew {
            // The slots given out assumed the old pace: handed out again after the pause.
            pace.kept.clear();
        }
        match self.admit(domain, row, now) {
            Admit::At { at, .. } => (slowed_anew, at),
            // Not reached: a throttled domain is paused past `now`.
            Admit::Now => (slowed_anew, now),
        }
    }

    /// The domains slowed now, for `/health` and the metrics.
    fn view(&self) -> Value {
        let mut slowed: Vec<Value> = self
            .domains
            .iter()
            .filter_map(|(domain, pace)| {
                let s = pace.slowed.as_ref()?;
                Some(json!({
                    "domain": domain,
                    "per_minute": s.per_minute,
                    "recovers_to": s.ceiling,
                    "since": s.since,
                    "paused_until": s.paused_until,
                    "reply_code": s.reply,
                }))
            })
            .collect();
        slowed.sort_by(|a, b| a["domain"].as_str().cmp(&b["domain"].as_str()));
        Value::Array(slowed)
    }
}

/// `reply` as lettre words it (`transient error (421): 4.7.28 slow down`) as
/// the server said it (`421 4.7.28 slow down`).
fn said(reply: &str) -> Option<String> {
    let (_, rest) = reply.split_once('(')?;
    let (code, text) = rest.split_once("):")?;
    Some(format!("{code} {}", text.trim_start()))
}

/// The paces, shared by delivery and the API (`/health`, `nudge status`, `/metrics`).
pub(crate) struct Pacing {
    clock: Clock,
    paces: Mutex<Paces>,
    /// Replies that mean "too fast": `<code>` or `<code> <enhanced code start>`.
    throttle_replies: Vec<String>,
}

impl Pacing {
    pub(super) fn new(policy: &DeliveryConfig, clock: Clock) -> Pacing {
        Pacing {
            clock,
            paces: Mutex::new(Paces::new(policy)),
            throttle_replies: policy
                .pacing
                .throttle_replies
                .iter()
                .map(|r| r.get_ref().clone())
                .collect(),
        }
    }

    fn paces(&self) -> std::sync::MutexGuard<'_, Paces> {
        // Whole after every method: a poisoned lock still holds a usable state.
        self.paces.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn admit(&self, domain: &str, row: i64) -> Admit {
        self.paces().admit(domain, row, self.clock.now_ms())
    }

    pub(super) fn accepted(&self, domain: &str) {
        if let Some(per_minute) = self.paces().accepted(domain) {
            match per_minute {
                0 => info!(
                    domain,
                    "recipient domain recovered from throttling: back to its own pace"
                ),
                n => info!(domain, per_minute = n, "recipient domain recovering from throttling"),
            }
        }
    }

    /// Whether `reply` (an SMTP server's, as lettre words it: `transient error
    /// (421): 4.7.28 ...`) is a throttling reply.
    pub(super) fn is_throttling(&self, reply: &str) -> bool {
        let Some(said) = said(reply) else {
            return false;
        };
        self.throttle_replies
            .iter()
            .any(|pattern| said.starts_with(pattern.as_str()))
    }

    /// `domain` throttled a message of `row`: when the row is tried again.
    pub(super) fn throttled(&self, domain: &str, row: i64, reply: &str) -> i64 {
        let codes = said(reply).map_or_else(String::new, |said| {
            said.split(' ').take(2).collect::<Vec<_>>().join(" ")
        });
        let (slowed, at) = self.paces().throttled(domain, row, self.clock.now_ms(), &codes);
        if slowed {
            warn!(
                domain,
                resumes_at = %display_ms(at),
                "recipient domain throttles: its mail slows down (halved), the other domains' does not: {reply}"
            );
        }
        at
    }

    /// The domains slowed by throttling now: `[{domain, per_minute, recovers_to,
    /// since, paused_until, reply_code}]`.
    pub(crate) fn view(&self) -> Value {
        self.paces().view()
    }
}

#[cfg(test)]
mod tests {
    use super::{Admit, Paces};
    use crate::config::{Config, DeliveryConfig};

    fn policy(toml: &str) -> DeliveryConfig {
        let config: Config = toml::from_str(toml).unwrap();
        config.delivery
    }

    fn at(t: i64) -> Admit {
        Admit::At {
            at: t,
            throttled: false,
        }
    }

    #[test]
    fn a_limited_domain_gets_one_message_a_slot_and_keeps_each_row_its_slot() {
        let mut p = Paces::new(&policy("[delivery.domains.\"gmail.com\"]\nper_minute = 10\n"));
        assert_eq!(p.admit("gmail.com", 1, 0), Admit::Now);
        assert_eq!(p.admit("gmail.com", 2, 100), at(6_000));
        assert_eq!(p.admit("gmail.com", 3, 200), at(12_000));
        assert_eq!(p.admit("yahoo.com", 4, 200), Admit::Now, "other domains are not paced");
        assert_eq!(p.admit("yahoo.com", 5, 200), Admit::Now);
        assert_eq!(p.admit("gmail.com", 2, 5_000), at(6_000), "early: its slot still");
        assert_eq!(p.admit("gmail.com", 3, 12_000), Admit::Now, "row 3 at its slot");
        assert_eq!(
            p.admit("gmail.com", 2, 12_000),
            Admit::Now,
            "row 2 late, still its slot"
        );
        assert_eq!(
            p.admit("gmail.com", 6, 12_000),
            at(18_000),
            "a newcomer after the kept slots"
        );
        assert_eq!(p.admit("gmail.com", 7, 60_000), Admit::Now, "idle: at once again");
        assert_eq!(p.domains.len(), 2);
        p.admit("gmail.com", 8, 200_000);
        assert_eq!(p.domains.len(), 1, "yahoo.com, idle, is forgotten");
    }

    #[test]
    fn a_throttling_reply_halves_pauses_and_slows_only_that_domain_and_recovery_doubles_back() {
        let mut p = Paces::new(&policy(
            "[delivery.pacing]\nbackoff_first_secs = 60\nbackoff_max_secs = 240\nrecover_after = 2\n",
        ));
        // 20 messages in the first minute, unpaced.
        for row in 0..20 {
            assert_eq!(p.admit("slow.test", row, 1_000 + row), Admit::Now);
        }
        let (slowed, slot) = p.throttled("slow.test", 0, 30_000, "421 4.7.28");
        assert!(slowed);
        assert_eq!(slot, 90_000, "after the 60 s pause");
        // The replies to messages under way do not halve again.
        let (again, slot) = p.throttled("slow.test", 1, 30_500, "421 4.7.28");
        assert!(!again);
        assert_eq!(slot, 96_000, "20 a minute halved: one every 6 s");
        assert_eq!(
            p.admit("other.test", 99, 30_500),
            Admit::Now,
            "another domain goes at once"
        );
        assert_eq!(
            p.admit("slow.test", 50, 31_000),
            Admit::At {
                at: 102_000,
                throttled: true
            }
        );
        assert_eq!(p.view()[0]["per_minute"], 10);
        // Still throttling after the pause: halved again, paused twice as long.
        let (slowed, slot) = p.throttled("slow.test", 0, 90_000, "421 4.7.28");
        assert!(slowed);
        assert_eq!(slot, 210_000);
        assert_eq!(p.view()[0]["per_minute"], 5);
        // Accepted twice in a row: doubles; at the ceiling (20) the domain is free again.
        assert_eq!(p.accepted("slow.test"), None);
        assert_eq!(p.accepted("slow.test"), Some(10));
        p.accepted("slow.test");
        assert_eq!(p.accepted("slow.test"), Some(0));
        assert_eq!(p.view(), serde_json::json!([]));
        assert_eq!(p.admit("slow.test", 51, 300_000), Admit::Now);
        assert_eq!(p.admit("slow.test", 52, 300_000), Admit::Now);
    }

    #[test]
    fn the_shipped_throttle_replies_are_told_from_other_refusals() {
        let patterns = crate::config::PacingConfig::default().throttle_replies;
        let throttling = |reply: &str| {
            let said = super::said(reply).unwrap_or_default();
            patterns.iter().any(|p| said.starts_with(p.get_ref().as_str()))
        };
        assert!(throttling(
            "transient error (421): 4.7.28 Our system has detected an unusual rate"
        ));
        assert!(throttling(
            "transient error (450): 4.2.1 The user is receiving mail too quickly"
        ));
        assert!(throttling("transient error (454): 4.7.0 try later"));
        assert!(!throttling("transient error (451): 4.3.0 local error"));
        assert!(!throttling("transient error (421): 4.3.2 service shutting down"));
        assert!(!throttling("permanent error (550): 5.7.1 no"));
        assert!(!throttling("connect: refused"));
    }

    #[test]
    fn a_throttled_limited_domain_halves_its_limit_and_forgets_the_slots_it_gave() {
        let mut p = Paces::new(&policy("[delivery.domains.\"gmail.com\"]\nper_minute = 60\n"));
        for row in 0..60 {
            p.admit("gmail.com", row, 0);
        }
        assert_eq!(p.admit("gmail.com", 59, 0), at(59_000));
        let (_, slot) = p.throttled("gmail.com", 0, 1_000, "450 4.2.1");
        assert_eq!(slot, 61_000);
        // Row 59's old slot (59 s) is gone: it comes after the pause, 2 s apart (30 a minute).
        assert_eq!(
            p.admit("gmail.com", 59, 59_000),
            Admit::At {
                at: 63_000,
                throttled: true
            }
        );
    }
}
