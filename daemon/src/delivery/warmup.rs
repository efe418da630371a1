//! The warm-up plan (`[delivery.warmup]`): a new From domain sends a growing
//! daily volume of marketing email, so that receivers learn to trust it
//! (README "Pacing and warm-up"). The day's cap is never exceeded and nothing
//! is dropped: a marketing email beyond it goes back to the outbox, pending
//! and untried, due on a later day (`warmup_cap`), the held ones spread over
//! that day so they do not all wake at midnight. SLA, transactional and
//! internal email is neither counted nor held (docs/domain.md §3: an answer
//! owed under the SLA never waits for a plan meant for promotion).
//!
//! `Plan` is the state machine, without I/O, on the daemon's clock. The count
//! of the day lives in memory; at start it is read back from the outbox
//! (marketing email sent since the day began), so a restart neither forgets
//! nor doubles it.

use std::sync::Mutex;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::config::WarmupConfig;

const DAY_MS: i64 = 86_400_000;

/// The plan and what it counted today.
pub(super) struct Plan {
    start: Date,
    daily: Vec<i64>,
    zone: TimeZone,
    /// The day counted, in `zone`, and the marketing email started that day.
    day: Option<Date>,
    sent: i64,
    /// Rows held today: where the next one goes among the later days' slots.
    held: i64,
}

impl Plan {
    pub(super) fn new(config: &WarmupConfig) -> Option<Plan> {
        Some(Plan {
            start: config.start_date()?,
            daily: config.daily.get_ref().clone(),
            zone: config.time_zone()?,
            day: None,
            sent: 0,
            held: 0,
        })
    }

    fn day_of(&self, ms: i64) -> Date {
        jiff::Timestamp::from_millisecond(ms)
            .unwrap_or_default()
            .to_zoned(self.zone.clone())
            .date()
    }

    /// The cap of `day`; None once the plan is over. Before it starts, its first day's.
    fn cap(&self, day: Date) -> Option<i64> {
        let index = (day - self.start).get_days().max(0);
        self.daily.get(usize::try_from(index).ok()?).copied()
    }

    fn midnight(&self, day: Date) -> i64 {
        day.to_zoned(self.zone.clone())
            .map_or(i64::MAX, |z| z.timestamp().as_millisecond())
    }

    /// Starts counting `day`, with `sent` marketing email already sent on it.
    pub(super) fn counted(&mut self, now: i64, sent: i64) {
        self.day = Some(self.day_of(now));
        self.sent = sent;
        self.held = 0;
    }

    /// The start of today in the plan's zone, for reading the count back.
    pub(super) fn today_starts(&self, now: i64) -> i64 {
        self.midnight(self.day_of(now))
    }

    /// May a marketing email go now? Else when it is due again.
    pub(super) fn admit(&mut self, now: i64) -> Option<i64> {
        let today = self.day_of(now);
        if self.day != Some(today) {
            self.counted(now, 0);
        }
        let cap = self.cap(today)?;
        if self.sent < cap {
            self.sent += 1;
            return None;
        }
        let at = self.later_slot(today, self.held);
        self.held += 1;
        Some(at)
    }

    /// The `n`-th slot after today: the later days' caps in turn, each day's
    /// slots spread evenly over it (after the plan, its first minute).
    fn later_slot(&self, today: Date, mut n: i64) -> i64 {
        let mut day = today;
        loop {
            let Ok(next) = day.tomorrow() else {
                return i64::MAX;
            };
            day = next;
            let Some(cap) = self.cap(day) else {
                return self.midnight(day);
            };
            if n < cap {
                return self.midnight(day) + n * (DAY_MS / cap);
            }
            n -= cap;
        }
    }

    fn view(&self, now: i64) -> Value {
        let today = self.day_of(now);
        let counted = self.day == Some(today);
        json!({
            "day": today.to_string(),
            "cap": self.cap(today),
            "sent": if counted { self.sent } else { 0 },
            "held": if counted { self.held } else { 0 },
        })
    }
}

/// The plan, shared by delivery and the API.
pub(crate) struct Warmup {
    clock: Clock,
    plan: Mutex<Plan>,
}

impl Warmup {
    pub(super) fn new(config: &WarmupConfig, clock: Clock) -> Option<Warmup> {
        Some(Warmup {
            clock,
            plan: Mutex::new(Plan::new(config)?),
        })
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn today_starts(&self) -> i64 {
        self.plan().today_starts(self.clock.now_ms())
    }

    pub(super) fn counted(&self, sent: i64) {
        self.plan().counted(self.clock.now_ms(), sent);
    }

    /// None: a marketing email may go now; else when it is due again.
    pub(super) fn admit(&self) -> Option<i64> {
        self.plan().admit(self.clock.now_ms())
    }

    /// Today's day, cap (null once the plan is over), marketing email sent and held.
    pub(crate) fn view(&self) -> Value {
        self.plan().view(self.clock.now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::{DAY_MS, Plan};
    use crate::config::Config;

    fn plan(toml: &str) -> Plan {
        let config: Config = toml::from_str(toml).unwrap();
        Plan::new(config.delivery.warmup.as_ref().unwrap()).unwrap()
    }

    fn ms(time: &str) -> i64 {
        time.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn each_day_sends_its_cap_and_holds_the_rest_spread_over_the_next_days() {
        let mut p = plan("[delivery.warmup]\nstart = \"2026-12-01\"\ndaily = [2, 4]\nzone = \"Asia/Shanghai\"\n");
        // 2026-12-01 09:00 in Shanghai.
        let now = ms("2026-12-01T01:00:00Z");
        assert_eq!(p.admit(now), None);
        assert_eq!(p.admit(now), None);
        let midnight = ms("2026-12-01T16:00:00Z");
        assert_eq!(p.admit(now), Some(midnight), "the third: the next day's first slot");
        assert_eq!(p.admit(now), Some(midnight + DAY_MS / 4));
        assert_eq!(p.admit(now + 1), Some(midnight + 2 * DAY_MS / 4));
        assert_eq!(p.admit(now + 1), Some(midnight + 3 * DAY_MS / 4));
        assert_eq!(
            p.admit(now + 2),
            Some(midnight + DAY_MS),
            "after the plan: the day it ends"
        );
        assert_eq!(p.view(now)["sent"], 2);
        assert_eq!(p.view(now)["held"], 5);
        // The next day (in Shanghai): 4, then held.
        for _ in 0..4 {
            assert_eq!(p.admit(midnight + 10), None);
        }
        assert!(p.admit(midnight + 10).is_some());
        // The plan is over: no cap.
        for _ in 0..100 {
            assert_eq!(p.admit(midnight + DAY_MS), None);
        }
        assert_eq!(p.view(midnight + DAY_MS)["cap"], serde_json::Value::Null);
    }

    #[test]
    fn a_restart_reads_back_what_the_day_sent() {
        let mut p = plan("[delivery.warmup]\nstart = \"2026-12-01\"\ndaily = [3]\n");
        let now = ms("2026-12-01T12:00:00Z");
        assert_eq!(p.today_starts(now), ms("2026-12-01T00:00:00Z"));
        p.counted(now, 3);
        assert!(p.admit(now).is_some(), "3 of 3 sent before the restart");
    }
}
