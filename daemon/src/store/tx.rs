//! Write transactions: one writer at a time in the process, each taking its
//! turn in order, and a commit that gives the turn up before its fsync.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Sqlite, Transaction};

/// A write transaction. It holds the process's turn to write until it is
/// committed, rolled back or dropped: the daemon's writers (API, engine, delivery)
/// queue for the turn in order instead of meeting SQLite's lock, whose busy
/// handler sleeps 1, 2, 5, 10 ms and more before it tries again.
pub struct Tx {
    pub(super) tx: Transaction<'static, Sqlite>,
    pub(super) turn: tokio::sync::OwnedMutexGuard<()>,
    pub(super) log: Arc<WriteAheadLog>,
    pub(super) health: Arc<WriteHealth>,
}

impl Tx {
    /// Commits, gives up the turn, then makes the commit durable: it returns
    /// only once the write-ahead log is on disk, as SQLite's FULL would, but the
    /// next writer need not wait for this fsync (a millisecond and more under
    /// load) to begin. The log is written in order, so a later writer's flush
    /// covers this commit too, and power lost before it loses only commits
    /// whose callers had not yet returned.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.commit_and_then(|| {}).await
    }

    /// Like `commit`; calls `visible` as soon as the commit can be read, before
    /// its flush: to wake a reader whose own effects wait for a flush of their
    /// own (the engine hands nothing on before its writes are flushed, and each
    /// flush covers every commit before it).
    pub(crate) async fn commit_and_then(self, visible: impl FnOnce()) -> Result<(), sqlx::Error> {
        let Tx { tx, turn, log, health } = self;
        // Counted before the commit is visible, so that no read can see it uncounted.
        let seq = log.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let flush = PendingFlush(Some((log, seq)));
        let committed = tx.commit().await;
        drop(turn);
        health.observe(&committed);
        if committed.is_ok() {
            visible();
        }
        flush.wait().await;
        committed
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// The database's write-ahead log, and how far the `Tx` commits in it are on
/// disk. A read can see a commit before it is flushed; `Store::durable` waits
/// until what it could have seen is.
#[derive(Debug)]
pub(super) struct WriteAheadLog {
    pub(super) path: PathBuf,
    /// Whether commits are synced to disk at all (not in a scratch copy).
    pub(super) durable: bool,
    /// `Tx` commits made, counted in their order (under the turn).
    pub(super) committed: AtomicU64,
    /// The last of them known to be on disk.
    pub(super) flushed: tokio::sync::watch::Sender<u64>,
}

impl WriteAheadLog {
    /// Flushes the log to disk, covering commit `seq` and every one before it,
    /// on a blocking thread that runs to the end even if nobody waits for it.
    /// A log file that is gone was checkpointed into the database and removed,
    /// which SQLite syncs itself. A log that cannot be flushed leaves commits of
    /// unknown durability: stop, as PostgreSQL does on a failed fsync, rather
    /// than acknowledge what may be lost.
    fn flush(self: Arc<Self>, seq: u64) -> tokio::task::JoinHandle<()> {
        tokio::task::spawn_blocking(move || {
            let synced = match std::fs::File::open(&self.path) {
                Ok(_) if !self.durable => Ok(()),
                Ok(file) => file.sync_data(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = synced {
                tracing::error!(error = %e, path = %self.path.display(), "cannot flush the database's write-ahead log to disk; stopping");
                std::process::abort();
            }
            self.flushed.send_modify(|flushed| *flushed = (*flushed).max(seq));
        })
    }
}

/// A commit's flush, started when it is waited for or, if the commit's caller
/// stops waiting first, when this is dropped: `Store::durable` waits for every
/// counted commit.
struct PendingFlush(Option<(Arc<WriteAheadLog>, u64)>);

impl PendingFlush {
    async fn wait(mut self) {
        let (log, seq) = self.0.take().expect("a flush is waited for once");
        if !log.durable {
            // A scratch copy is never synced: nothing to wait for, no thread to wake.
            log.flushed.send_modify(|flushed| *flushed = (*flushed).max(seq));
            return;
        }
        if log.flush(seq).await.is_err() {
            tracing::error!("the write-ahead log flush did not finish; stopping");
            std::process::abort();
        }
    }
}

impl Drop for PendingFlush {
    fn drop(&mut self) {
        if let Some((log, seq)) = self.0.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            drop(log.flush(seq));
        }
    }
}

/// Whether the last write transaction could begin and commit: what `/health`
/// and `nudge status` report, so that a full disk shows as such instead of as
/// a stream of failed requests behind an "ok".
#[derive(Debug, Default)]
pub(super) struct WriteHealth {
    pub(super) failure: std::sync::Mutex<Option<String>>,
}

impl WriteHealth {
    pub(super) fn observe<T>(&self, result: &Result<T, sqlx::Error>) {
        *self.failure.lock().unwrap() = result.as_ref().err().map(|e| e.to_string());
    }
}

/// Whether a pooled connection may be handed out: not one still inside a
/// transaction. A COMMIT that fails with SQLITE_FULL or SQLITE_IOERR may roll
/// the transaction back by itself; sqlx's ROLLBACK then fails too, and the
/// connection stays marked as inside a transaction for ever, so every later
/// BEGIN on it fails. Such a connection is closed and a fresh one opened.
pub(super) fn fit_to_hand_out(
    conn: &mut sqlx::SqliteConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    use sqlx::Connection as _;
    let in_transaction = conn.is_in_transaction();
    if in_transaction {
        tracing::warn!("store: a connection left inside a failed transaction is replaced");
    }
    Box::pin(std::future::ready(Ok(!in_transaction)))
}

impl Deref for Tx {
    type Target = Transaction<'static, Sqlite>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Store;

    /// Delivery's records wait for the engine and the API when both want the
    /// turn: the writer that can wait gives its turn to the one queued behind it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_writer_that_can_wait_lets_the_one_behind_it_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let holder = store.write().await.unwrap();
        let writer = |name: &'static str, can_wait: bool| {
            let (store, order) = (store.clone(), order.clone());
            tokio::spawn(async move {
                let tx = if can_wait {
                    store.write_after_others().await
                } else {
                    store.write().await
                };
                order.lock().unwrap().push(name);
                tx.unwrap().commit().await.unwrap();
            })
        };
        // On one thread each spawned writer runs up to its wait for the turn
        // before the next line here: the records queue first.
        let records = writer("records", true);
        tokio::task::yield_now().await;
        let engine = writer("engine", false);
        tokio::task::yield_now().await;
        holder.commit().await.unwrap();
        records.await.unwrap();
        engine.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["engine", "records"]);
    }

    /// Delivery waits on `durable` before it sends what it read: a commit
    /// whose caller stopped waiting halfway must still be flushed and counted
    /// as such, or `durable` would wait for it until the next commit.
    #[tokio::test]
    async fn a_commit_abandoned_halfway_is_still_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let mut tx = store.write().await.unwrap();
        sqlx::query("INSERT INTO secrets (name, value) VALUES ('a', x'00')")
            .execute(&mut **tx)
            .await
            .unwrap();
        let mut commit = Box::pin(tx.commit());
        // Polled once, then dropped.
        tokio::select! {
            biased;
            _ = &mut commit => {}
            _ = std::future::ready(()) => {}
        }
        drop(commit);
        let durable = tokio::time::timeout(Duration::from_secs(60), store.durable()).await;
        assert!(durable.is_ok(), "durable() still waits for a commit nobody flushed");
        assert_eq!(*store.log.flushed.borrow(), store.log.committed.load(Ordering::SeqCst));
        assert_eq!(store.log.committed.load(Ordering::SeqCst), 1);

        // A commit seen through.
        let mut tx = store.write().await.unwrap();
        sqlx::query("INSERT INTO secrets (name, value) VALUES ('b', x'00')")
            .execute(&mut **tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(*store.log.flushed.borrow(), 2);
    }
}
