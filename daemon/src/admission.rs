//! Admission control for the API: a new write waits while the messages that
//! earlier API writes caused are still unsent, so that answered requests never
//! pile up a queue behind them. A client then feels the daemon's real pace (its
//! answer waits rather than its email), and the time from request to sent
//! message stays near the pipeline's own latency instead of growing with a queue.
//!
//! The gauge follows the API's work through the pipeline: an admitted request
//! (until its write is done), the events its group commit wrote (until the
//! engine takes them; a stage-change group takes its own), the runs those
//! events started ready (until a step of theirs waits or ends) and the messages
//! those steps queued (until they have been attempted).
//!
//! Only writes through the group commit count (contacts, stage changes,
//! follow-ups, inquiries, replies). Events written by the CLI, segment passes,
//! timers, retries and sends deferred to a window are not counted, though while
//! the engine is busy with them the API's own runs wait longer. The gauge is a
//! heuristic, not a ledger: what it still counts after `FORGET_AFTER` is
//! forgotten, and no request waits longer than `max_hold`, so a hung SMTP server
//! slows the API down but never stops it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What the gauge still counts after this long is dropped from it (longer than
/// a send's deadline, so that a slow send still counts until it is recorded).
const FORGET_AFTER: Duration = Duration::from_secs(60);

pub struct Admission {
    /// Requests wait while the gauge is at this (0: admission control is off).
    limit: usize,
    max_hold: Duration,
    gauge: Mutex<Gauge>,
    /// Notified whenever the gauge goes down.
    room: Notify,
}

#[derive(Default)]
struct Gauge {
    /// Admitted requests whose write has not finished.
    entering: usize,
    /// Events written by the API and not yet taken by the engine: first id ->
    /// (last id, when written).
    events: BTreeMap<i64, (i64, Instant)>,
    /// How many ids `events` spans.
    event_count: usize,
    /// Runs of those events that go on at once or whose message is unsent, by id
    /// (ids grow with time, so the oldest come first).
    runs: BTreeMap<i64, TrackedRun>,
}

struct TrackedRun {
    started: Instant,
    /// A message of the run's is queued and not attempted yet.
    sending: bool,
}

/// What a batch of steps did, as far as admission control goes.
#[derive(Default)]
pub(crate) struct SteppedRuns {
    /// Runs whose step queued a message.
    pub(crate) sending: Vec<i64>,
    /// Runs that go straight on to their next step.
    pub(crate) continuing: Vec<i64>,
}

impl SteppedRuns {
    pub(crate) fn append(&mut self, mut other: SteppedRuns) {
        self.sending.append(&mut other.sending);
        self.continuing.append(&mut other.continuing);
    }
}

impl Gauge {
    fn count(&self) -> usize {
        self.entering + self.event_count + self.runs.len()
    }

    /// Counts `run`, started ready at `now`, until a step of its waits or ends.
    fn track(&mut self, run: i64, now: Instant) {
        let tracked = TrackedRun {
            started: now,
            sending: false,
        };
        self.runs.insert(run, tracked);
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((_, run)) = self.runs.first_key_value() {
            if now.duration_since(run.started) < FORGET_AFTER {
                break;
            }
            self.runs.pop_first();
        }
        let old: Vec<i64> = self
            .events
            .iter()
            .filter(|(_, (_, written))| now.duration_since(*written) >= FORGET_AFTER)
            .map(|(first, _)| *first)
            .collect();
        for first in old {
            self.remove_events(first);
        }
    }

    /// Drops the ranges that start within `first..=last` (what is left of
    /// one range after the engine took part of it starts there too).
    fn remove_events_within(&mut self, first: i64, last: i64) {
        let starts: Vec<i64> = self.events.range(first..=last).map(|(start, _)| *start).collect();
        for start in starts {
            self.remove_events(start);
        }
    }

    fn remove_events(&mut self, first: i64) {
        if let Some((last, _)) = self.events.remove(&first) {
            self.event_count -= (last - first + 1) as usize;
        }
    }
}

/// An admitted request; dropping it when its write is done takes it off the gauge.
pub(crate) struct Ticket<'a> {
    admission: &'a Admission,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.admission.is_on() {
            self.admission.gauge.lock().unwrap().entering -= 1;
            self.admission.room.notify_waiters();
        }
    }
}

impl Admission {
    /// Requests wait while `limit` messages (and the work before them) of
    /// earlier requests are unsent, each at most `max_hold`; `limit` 0: never.
    pub(crate) fn new(limit: usize, max_hold: Duration) -> Admission {
        Admission {
            limit,
            max_hold,
            gauge: Mutex::new(Gauge::default()),
            room: Notify::new(),
        }
    }

    /// Admission control off: nothing waits and nothing is counted.
    pub fn off() -> Admission {
        Admission::new(0, Duration::ZERO)
    }

    pub(crate) fn is_on(&self) -> bool {
        self.limit > 0
    }

    /// What the gauge counts now.
    #[cfg(test)]
    pub(crate) fn unsent(&self) -> usize {
        self.gauge.lock().unwrap().count()
    }

    /// Waits until the gauge is below the limit, or `max_hold` has passed.
    pub(crate) async fn admit(&self) -> Ticket<'_> {
        if self.is_on() {
            let deadline = Instant::now() + self.max_hold;
            loop {
                let room = self.room.notified();
                tokio::pin!(room);
                // Registered before the check, so a decrease right after it still wakes us.
                room.as_mut().enable();
                {
                    let now = Instant::now();
                    let mut gauge = self.gauge.lock().unwrap();
                    gauge.forget_old(now);
                    if gauge.count() < self.limit || now >= deadline {
                        gauge.entering += 1;
                        break;
                    }
                }
                let _ = tokio::time::timeout_at(deadline, room).await;
            }
        }
        Ticket { admission: self }
    }

    /// An API group commit wrote events `first..=last` (called before its commit,
    /// so that the engine cannot take them before they are counted).
    pub(crate) fn events_written(&self, first: i64, last: i64) {
        if self.is_on() && first <= last {
            let mut gauge = self.gauge.lock().unwrap();
            // Ids of a failed commit can come again; never count them twice.
            gauge.remove_events_within(first, last);
            gauge.events.insert(first, (last, Instant::now()));
            gauge.event_count += (last - first + 1) as usize;
        }
    }

    /// That group commit failed: its events `first..=last` do not exist.
    pub(crate) fn events_dropped(&self, first: i64, last: i64) {
        if self.is_on() {
            self.gauge.lock().unwrap().remove_events_within(first, last);
            self.room.notify_waiters();
        }
    }

    /// The engine took every event up to `last` (committed), and started these
    /// runs ready: (run id, event id).
    pub(crate) fn events_taken(&self, last: i64, started: impl IntoIterator<Item = (i64, i64)>) {
        if !self.is_on() {
            return;
        }
        let now = Instant::now();
        let mut gauge = self.gauge.lock().unwrap();
        for (run, event) in started {
            let by_api = matches!(gauge.events.range(..=event).next_back(), Some((_, (end, _))) if event <= *end);
            if by_api {
                gauge.track(run, now);
            }
        }
        let taken: Vec<(i64, i64, Instant)> = gauge
            .events
            .range(..=last)
            .map(|(first, (end, at))| (*first, *end, *at))
            .collect();
        for (first, end, written) in taken {
            gauge.remove_events(first);
            if end > last {
                gauge.events.insert(last + 1, (end, written));
                gauge.event_count += (end - last) as usize;
            }
        }
        drop(gauge);
        self.room.notify_waiters();
    }

    /// An API group commit started these runs ready from its own events, in its
    /// transaction: (run id, event id). Called before the commit, as
    /// `events_written` is, so that the engine cannot step them before they count.
    pub(crate) fn runs_started(&self, started: &[(i64, i64)]) {
        if !self.is_on() {
            return;
        }
        let now = Instant::now();
        let mut gauge = self.gauge.lock().unwrap();
        for (run, _) in started {
            gauge.track(*run, now);
        }
    }

    /// That group commit failed: its runs do not exist.
    pub(crate) fn runs_dropped(&self, started: &[(i64, i64)]) {
        if self.is_on() {
            let mut gauge = self.gauge.lock().unwrap();
            for (run, _) in started {
                gauge.runs.remove(run);
            }
            drop(gauge);
            self.room.notify_waiters();
        }
    }

    /// The engine moved these runs on by a step. A run stays counted while it
    /// goes straight on or a message of its is unsent; it goes when it waits or
    /// ends with nothing unsent.
    pub(crate) fn runs_stepped(&self, runs: &[i64], stepped: &SteppedRuns) {
        if !self.is_on() || runs.is_empty() {
            return;
        }
        let mut gauge = self.gauge.lock().unwrap();
        for run in &stepped.sending {
            if let Some(tracked) = gauge.runs.get_mut(run) {
                tracked.sending = true;
            }
        }
        for run in runs {
            let done = matches!(gauge.runs.get(run), Some(t) if !t.sending) && !stepped.continuing.contains(run);
            if done {
                gauge.runs.remove(run);
            }
        }
        drop(gauge);
        self.room.notify_waiters();
    }

    /// These runs' messages have been attempted (sent or not).
    pub(crate) fn messages_done(&self, runs: impl IntoIterator<Item = i64>) {
        if !self.is_on() {
            return;
        }
        let mut gauge = self.gauge.lock().unwrap();
        for run in runs {
            gauge.runs.remove(&run);
        }
        drop(gauge);
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sending(runs: &[i64]) -> SteppedRuns {
        SteppedRuns {
            sending: runs.to_vec(),
            continuing: Vec::new(),
        }
    }

    /// Whether `admit` is still waiting after the (paused) clock moved `by`.
    async fn waits(admission: &Admission, by: Duration) -> bool {
        let admitted = admission.admit();
        tokio::pin!(admitted);
        tokio::select! {
            _ = &mut admitted => false,
            _ = tokio::time::sleep(by) => true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_the_messages_of_earlier_ones_and_at_most_max_hold() {
        let admission = Admission::new(2, Duration::from_millis(500));
        // Two requests in: each wrote one event, the engine started a run for each.
        for event in [10, 11] {
            let _ticket = admission.admit().await;
            admission.events_written(event, event);
        }
        assert_eq!(admission.unsent(), 2);
        assert!(
            waits(&admission, Duration::from_millis(100)).await,
            "two unsent: the third waits"
        );
        admission.events_taken(11, [(1, 10), (2, 11)]);
        assert_eq!(admission.unsent(), 2, "events became runs");
        admission.runs_stepped(&[1, 2], &sending(&[1, 2]));
        assert_eq!(admission.unsent(), 2, "runs became messages");
        admission.runs_stepped(&[1, 2], &SteppedRuns::default());
        assert_eq!(admission.unsent(), 2, "a run's next step leaves its message counted");
        admission.messages_done([1]);
        assert_eq!(admission.unsent(), 1);
        assert!(!waits(&admission, Duration::from_millis(100)).await, "room for one");

        // Full again; a stuck message holds a request only for max_hold.
        admission.events_written(12, 12);
        let started = Instant::now();
        let _ticket = admission.admit().await;
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_apis_events_count_and_what_sends_nothing_goes() {
        let admission = Admission::new(10, Duration::from_millis(500));
        admission.events_written(5, 7);
        assert_eq!(admission.unsent(), 3);
        // The engine took events 1..=6 (4 is the CLI's, 5 and 6 the API's); 7 is left.
        admission.events_taken(6, [(100, 4), (101, 5), (102, 6)]);
        assert_eq!(admission.unsent(), 3, "runs 101 and 102, event 7");
        // Run 101 goes on at once, 102 queued a message.
        let stepped = SteppedRuns {
            sending: vec![102],
            continuing: vec![101],
        };
        admission.runs_stepped(&[101, 102], &stepped);
        assert_eq!(admission.unsent(), 3);
        // Then 101 waits, sending nothing.
        admission.runs_stepped(&[101], &SteppedRuns::default());
        assert_eq!(admission.unsent(), 2);
        admission.events_dropped(5, 7);
        assert_eq!(admission.unsent(), 1, "a failed commit's events are gone");
        // A message never recorded is forgotten after a while.
        tokio::time::sleep(FORGET_AFTER).await;
        let _ticket = admission.admit().await;
        assert_eq!(admission.unsent(), 1, "only the ticket");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_goes_in_as_soon_as_a_message_is_attempted() {
        let admission = std::sync::Arc::new(Admission::new(1, Duration::from_secs(60)));
        admission.events_written(1, 1);
        admission.events_taken(1, [(1, 1)]);
        admission.runs_stepped(&[1], &sending(&[1]));
        let started = Instant::now();
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move {
                let _ticket = admission.admit().await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!waiting.is_finished());
        admission.messages_done([1]);
        assert_eq!(waiting.await.unwrap(), Duration::from_millis(250));
        assert_eq!(admission.unsent(), 0, "the ticket is gone with its request");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_a_group_started_itself_count_until_sent_and_go_if_its_commit_fails() {
        let admission = Admission::new(3, Duration::from_millis(500));
        // A stage-change group started runs 1 and 2 from its own events 10 and 11.
        admission.runs_started(&[(1, 10), (2, 11)]);
        assert_eq!(admission.unsent(), 2);
        admission.runs_stepped(&[1, 2], &sending(&[1, 2]));
        assert_eq!(admission.unsent(), 2, "runs became messages");
        admission.messages_done([1]);
        assert_eq!(admission.unsent(), 1);
        // The next group's commit fails: its runs never existed.
        admission.runs_started(&[(3, 12), (4, 13)]);
        assert_eq!(admission.unsent(), 3);
        assert!(
            waits(&admission, Duration::from_millis(100)).await,
            "full: a request waits"
        );
        admission.runs_dropped(&[(3, 12), (4, 13)]);
        assert_eq!(admission.unsent(), 1);
        assert!(!waits(&admission, Duration::from_millis(100)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn off_counts_nothing() {
        let admission = Admission::off();
        admission.events_written(1, 100);
        admission.events_taken(100, [(1, 1)]);
        admission.runs_started(&[(2, 101)]);
        let _ticket = admission.admit().await;
        assert_eq!(admission.unsent(), 0);
    }
}
