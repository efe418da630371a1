//! The overview's counts (`nudge status`'s, `app::status::Counts`), kept by a
//! background task instead of read per request: at a million runs and
//! messages they take tens of milliseconds (the table totals and the pending
//! timers are counts over hundreds of thousands of index entries), which the
//! page's budget cannot hold. The page shows them "as of" the daemon's time
//! they were read at; `nudge status` still reads them itself, exactly. The
//! task counts only while someone looks at the overview: an idle daemon with
//! nobody at its console spends nothing on the counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::app::status::Counts;
use crate::clock::Clock;
use crate::store::Store;

/// The counts and the daemon's time they were read at.
pub(crate) struct Counted {
    pub(crate) counts: Counts,
    pub(crate) as_of: i64,
    /// When it was read, and how long that took: it is too old to show once
    /// the task would have read twice since (nobody was looking, so it did not).
    read_at: Instant,
    took: Duration,
}

impl Counted {
    fn fresh(&self) -> bool {
        self.read_at.elapsed() <= 2 * pause_after(self.took)
    }
}

/// The shortest pause between two reads.
const EVERY: Duration = Duration::from_secs(5);
/// The most of its time the task spends counting: the pause is at least this
/// many times the last read, so a bigger database is counted less often, never more.
const PAUSE_PER_READ: u32 = 50;

/// The pause after a read that took `took`.
fn pause_after(took: Duration) -> Duration {
    EVERY.max(took * PAUSE_PER_READ)
}

/// The latest counts, shared by the task that reads them and the pages.
#[derive(Clone)]
pub(crate) struct Snapshot {
    latest: watch::Receiver<Option<Arc<Counted>>>,
    sender: Arc<watch::Sender<Option<Arc<Counted>>>>,
    /// Set by each view of the overview, taken by the task before it reads.
    viewed: Arc<AtomicBool>,
    /// Wakes the task when a view comes after a pause without any.
    view: Arc<Notify>,
}

impl Snapshot {
    pub(crate) fn new() -> Snapshot {
        let (sender, latest) = watch::channel(None);
        Snapshot {
            latest,
            sender: Arc::new(sender),
            viewed: Arc::new(AtomicBool::new(false)),
            view: Arc::new(Notify::new()),
        }
    }

    /// The counts last read; read now when there are none yet or they are too
    /// old (the first view after start, or after nobody looked for a while).
    pub(crate) async fn get(&self, store: &Store, clock: &Clock) -> anyhow::Result<Arc<Counted>> {
        self.viewed.store(true, Ordering::Release);
        self.view.notify_one();
        let latest = self.latest.borrow().clone();
        match latest {
            Some(counted) if counted.fresh() => Ok(counted),
            _ => self.read(store, clock).await,
        }
    }

    /// Returns once the overview was viewed since the last call.
    async fn until_viewed(&self) {
        while !self.viewed.swap(false, Ordering::AcqRel) {
            self.view.notified().await;
        }
    }

    async fn read(&self, store: &Store, clock: &Clock) -> anyhow::Result<Arc<Counted>> {
        let as_of = clock.now_ms();
        let read_at = Instant::now();
        let counts = Counts::read(store, as_of).await?;
        let counted = Arc::new(Counted {
            counts,
            as_of,
            read_at,
            took: read_at.elapsed(),
        });
        self.sender.send_replace(Some(counted.clone()));
        Ok(counted)
    }

    /// Reads the counts again and again until `cancel`, on a reader connection,
    /// while the overview is being viewed; waits for a view when it is not.
    pub(crate) async fn keep_reading(self, store: Store, clock: Clock, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.until_viewed() => {}
            }
            let started = Instant::now();
            if let Err(e) = self.read(&store, &clock).await {
                warn!("console: the overview's counts: {e:#}");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause_after(started.elapsed())) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nobody at the console: the task waits, and counts nothing, until a view.
    #[tokio::test]
    async fn the_task_counts_only_after_a_view() {
        use futures::FutureExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
        let clock = Clock::virtual_at(jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let snapshot = Snapshot::new();
        assert!(snapshot.until_viewed().now_or_never().is_none(), "no view yet");
        snapshot.get(&store, &clock).await.unwrap();
        assert!(snapshot.until_viewed().now_or_never().is_some(), "viewed");
        assert!(
            snapshot.until_viewed().now_or_never().is_none(),
            "the view is taken once"
        );
    }

    #[test]
    fn a_slow_read_is_repeated_less_often() {
        assert_eq!(pause_after(Duration::from_millis(2)), EVERY);
        assert_eq!(pause_after(Duration::from_millis(400)), Duration::from_secs(20));
    }

    /// The page shows what the task read, as of when it read it, until it reads again.
    #[tokio::test]
    async fn the_page_shows_the_last_read_and_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
        let clock = Clock::virtual_at(jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let snapshot = Snapshot::new();
        let first = snapshot.get(&store, &clock).await.unwrap();
        assert_eq!((first.as_of, first.counts.timers), (1_800_000_000_000, 0));
        let mut tx = store.write().await.unwrap();
        let new = crate::store::NewContact {
            name: "Liu Yang".into(),
            email: Some("liu@example.com".into()),
            ..Default::default()
        };
        let contact = crate::app::add_contact(&mut tx, &new, 1).await.unwrap();
        sqlx::query("INSERT INTO timers (due_at, kind, contact_id) VALUES (1_900_000_000_000, 'follow_up_due', ?)")
            .bind(contact)
            .execute(&mut **tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        clock.set_virtual_ms(1_800_000_060_000);
        let again = snapshot.get(&store, &clock).await.unwrap();
        assert_eq!(
            (again.as_of, again.counts.timers),
            (1_800_000_000_000, 0),
            "not read again"
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn(
            snapshot
                .clone()
                .keep_reading(store.clone(), clock.clone(), cancel.clone()),
        );
        let mut latest = snapshot.latest.clone();
        latest
            .wait_for(|c| c.as_ref().is_some_and(|c| c.as_of == 1_800_000_060_000))
            .await
            .unwrap();
        let read = snapshot.get(&store, &clock).await.unwrap();
        assert_eq!(read.counts.timers, 1);
        cancel.cancel();
        task.await.unwrap();
    }
}
