//! All state in one SQLite file through sqlx: migrations at open, WAL so the CLI
//! and the daemon can write side by side. Functions take a connection so that a
//! state change and the rows it causes (events, timers, outbox) commit together.

mod batch;
mod batch_else_each;
mod contacts;
mod engagement;
mod enrolments;
mod events;
mod follow_ups;
mod gauges;
mod history;
mod orders;
mod outbox;
pub(crate) mod postgres;
mod retention;
mod runs;
mod stored_text;
mod suppressions;
#[cfg(test)]
mod testing;
mod timers;
mod tx;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub(crate) use batch_else_each::{Alone, Unit, Written, batch_else_each};
pub use contacts::*;
pub(crate) use engagement::*;
pub(crate) use enrolments::*;
pub(crate) use events::*;
pub(crate) use follow_ups::*;
pub(crate) use gauges::{queue_counts, totals};
pub(crate) use history::*;
pub(crate) use orders::*;
pub use outbox::*;
pub(crate) use retention::*;
pub(crate) use runs::*;
pub(crate) use stored_text::{StoredText, parse_field};
pub(crate) use suppressions::*;
pub(crate) use timers::*;
pub use tx::Tx;

use batch::{inserted_ids, push_multi_row_insert};
use tx::{WriteAheadLog, WriteHealth, fit_to_hand_out};

pub(crate) type Conn = sqlx::SqliteConnection;

/// Turns off SQLite's memory statistics, once, before its first connection:
/// with them on, every allocation and free SQLite makes (a row's values freed
/// by a tokio thread, a statement's on a connection's thread) takes one mutex
/// shared by the whole process, and the daemon's threads queue on it.
fn configure_sqlite() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        // SAFETY: SQLite is not initialized yet: every connection is opened by
        // `Store::open`, after this. SQLITE_CONFIG_MEMSTATUS takes one int.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS, std::ffi::c_int::from(0u8))
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(rc, "SQLite's memory statistics stay on");
        }
    });
}

/// Fails with the file, the cause and what to do when the database cannot be
/// written: SQLite would open a read-only file read-only without a word and
/// fail later, at the first write, with "attempt to write a readonly database",
/// or with "unable to open database file" when its folder refuses the `-wal`
/// and `-shm` files beside it.
fn check_writable(path: &Path) -> anyhow::Result<()> {
    let help = "nudge writes the database and creates its -wal and -shm files beside it: \
                make the file and its folder writable by the user nudge runs as, \
                or point `database` in nudge.toml at a writable place";
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("the database file {} cannot be written: {e}\n{help}", path.display()),
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let probe = dir.join(format!(".nudge-write-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "the database folder {} does not let nudge create files in it: {e}\n{help}",
            dir.display()
        ),
    }
}

/// The database handle shared by the daemon's tasks and the CLI.
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads, and the CLI's and API's few writes outside a `Tx`.
    pub pool: SqlitePool,
    /// The one connection `Tx`s write through. Its commits do not fsync under
    /// the turn; `Tx::commit` flushes the log after giving the turn up.
    writer: SqlitePool,
    log: Arc<WriteAheadLog>,
    health: Arc<WriteHealth>,
    /// One write transaction at a time in this process (see `Tx`).
    write_turn: Arc<tokio::sync::Mutex<()>>,
    /// Writers waiting for the turn that others should not hold up (`write`).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// How often a writer that can wait (`write_after_others`) gives the turn it got
/// to the writers queued behind it, at most: it must not starve.
const MAX_TURNS_GIVEN: usize = 4;

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        Store::open_as(path, true).await
    }

    /// Opens a scratch copy (`nudge simulate`'s): nothing in it has to survive a
    /// crash, so no commit waits for the disk.
    pub(crate) async fn open_scratch(path: &Path) -> anyhow::Result<Store> {
        Store::open_as(path, false).await
    }

    async fn open_as(path: &Path, durable: bool) -> anyhow::Result<Store> {
        configure_sqlite();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create database folder {}", dir.display()))?;
        }
        check_writable(path)?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an event is acknowledged only once it survives power loss, not just a crash.
            .synchronous(if durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Off
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // sqlx hands rows from SQLite's thread over a bounded channel: with room
            // for a whole batch, the thread is not woken once per row as it drains.
            .row_buffer_size(4096);
        let pool = SqlitePoolOptions::new()
            .max_connections(3)
            // No ping before each hand-out: it is a round trip to the connection's
            // thread for every read, and an in-process SQLite connection cannot have
            // hung up; `fit_to_hand_out` still checks what can go wrong.
            .test_before_acquire(false)
            .before_acquire(fit_to_hand_out)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("open database at {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .with_context(|| format!("migrate database at {}", path.display()))?;
        // One connection is enough: the turn lets one transaction write at a time.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .before_acquire(fit_to_hand_out)
            .connect_with(options.synchronous(if durable {
                SqliteSynchronous::Normal
            } else {
                SqliteSynchronous::Off
            }))
            .await
            .with_context(|| format!("open database at {}", path.display()))?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Store {
            pool,
            writer,
            log: Arc::new(WriteAheadLog {
                path: wal.into(),
                durable,
                committed: AtomicU64::new(0),
                flushed: tokio::sync::watch::Sender::new(0),
            }),
            health: Arc::default(),
            write_turn: Arc::default(),
            waiting: Arc::default(),
        })
    }

    /// Starts a write transaction. IMMEDIATE takes the write lock up front, so a
    /// transaction that reads and then writes never fails halfway because the CLI
    /// or another task wrote in between; it waits (busy_timeout) instead.
    pub async fn write(&self) -> anyhow::Result<Tx> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let turn = self.write_turn.clone().lock_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.begin(turn).await
    }

    /// Like `write`, for a writer nobody waits on (delivery's records): when it
    /// gets the turn while others wait for it, it queues again behind them, up
    /// to MAX_TURNS_GIVEN times.
    pub(crate) async fn write_after_others(&self) -> anyhow::Result<Tx> {
        let mut turn = self.write_turn.clone().lock_owned().await;
        for _ in 0..MAX_TURNS_GIVEN {
            if self.waiting.load(Ordering::SeqCst) == 0 {
                break;
            }
            drop(turn);
            turn = self.write_turn.clone().lock_owned().await;
        }
        self.begin(turn).await
    }

    async fn begin(&self, turn: tokio::sync::OwnedMutexGuard<()>) -> anyhow::Result<Tx> {
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await;
        if tx.is_err() {
            self.health.observe(&tx);
        }
        Ok(Tx {
            tx: tx?,
            turn,
            log: self.log.clone(),
            health: self.health.clone(),
        })
    }

    /// Commits a one-row write, to tell whether the store takes writes now;
    /// the error says why not.
    pub(crate) async fn prove_writable(&self, now: i64) -> anyhow::Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO store_checks (id, checked_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at")
            .bind(now)
            .execute(&mut **tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Why the last write transaction failed to begin or commit, while no later
    /// one has committed: the store cannot write (a full disk, a read-only file).
    pub(crate) fn write_failure(&self) -> Option<String> {
        self.health.failure.lock().unwrap().clone()
    }

    /// Waits until every `Tx` commit that a read made before this call could
    /// have seen is on disk: what acts outside the database on what it read
    /// (delivery sending what it found queued) must not act on a commit that
    /// power loss could take back.
    pub(crate) async fn durable(&self) {
        let seq = self.log.committed.load(Ordering::SeqCst);
        let mut flushed = self.log.flushed.subscribe();
        // The sender lives as long as the store: an error cannot happen here.
        let _ = flushed.wait_for(|&flushed| flushed >= seq).await;
    }

    /// Closes both pools: the last connection out checkpoints the log into the
    /// database file and removes it.
    pub(crate) async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// The virtual clock's stored reading, if it was ever set.
    pub(crate) async fn virtual_now(&self) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT now_ms FROM virtual_clock WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(crate) async fn set_virtual_now(&self, now_ms: i64) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO virtual_clock (id, now_ms) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET now_ms = excluded.now_ms")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A secret the daemon keeps for itself, generated (32 random bytes) on first use.
    pub(crate) async fn secret(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| anyhow::anyhow!("no randomness for a new secret: {e}"))?;
        sqlx::query("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(&fresh[..])
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Records a workflow set so that runs pinned to it can be resumed after it is replaced.
    pub(crate) async fn save_workflow_set(
        &self,
        hash: &str,
        files: &[(String, String)],
        now: i64,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO workflow_sets (hash, files, loaded_at) VALUES (?, ?, ?)
             ON CONFLICT (hash) DO UPDATE SET loaded_at = excluded.loaded_at",
        )
        .bind(hash)
        .bind(serde_json::to_string(files)?)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The set the daemon loaded last (its current one).
    pub(crate) async fn latest_workflow_set(&self) -> anyhow::Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT hash FROM workflow_sets ORDER BY loaded_at DESC, rowid DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub(crate) async fn workflow_set_files(&self, hash: &str) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let files: Option<String> = sqlx::query_scalar("SELECT files FROM workflow_sets WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match files {
            Some(f) => Some(serde_json::from_str(&f)?),
            None => None,
        })
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    /// The statistics are off once a store is open: SQLite then counts nothing,
    /// so no allocation of its takes the process-wide lock.
    #[tokio::test]
    async fn sqlite_keeps_no_memory_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let contacts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(contacts, 0);
        // SAFETY: a plain read of SQLite's counter, safe from any thread.
        let counted = unsafe { libsqlite3_sys::sqlite3_memory_used() };
        assert_eq!(counted, 0, "SQLite still counts its memory");
    }

    /// A database made by the first release, with data in it, opens under the
    /// current migrations with every row kept and every reference intact.
    #[tokio::test]
    async fn upgrading_a_database_with_data_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first-release");
        std::fs::create_dir_all(&first).unwrap();
        std::fs::copy("migrations/0001_core.sql", first.join("0001_core.sql")).unwrap();
        let path = dir.path().join("nudge.db");
        let options = SqliteConnectOptions::from_str("sqlite:")
            .unwrap()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let old = SqlitePoolOptions::new().connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(first.as_path())
            .await
            .unwrap()
            .run(&old)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO contacts (name, email, created_at, updated_at) VALUES ('A', 'a@x.test', 1, 1)",
            "INSERT INTO events (kind, contact_id, occurred_at, processed_at) VALUES ('contact_created', 1, 1, 1)",
            "INSERT INTO workflow_sets (hash, files, loaded_at) VALUES ('h', '[]', 1)",
            "INSERT INTO runs (workflow, set_hash, contact_id, event_id, status, started_at, updated_at)
             VALUES ('w', 'h', 1, 1, 'done', 1, 1)",
            "INSERT INTO outbox (idempotency_key, message_id, run_id, contact_id, channel, recipient, message,
                                 status, attempts, next_attempt_at, created_at)
             VALUES ('k1', '<k1@x>', 1, 1, 'email', 'a@x.test', '{}', 'sent', 1, 1, 1),
                    ('k2', '<k2@x>', 1, 1, 'email', 'a@x.test', '{}', 'failed', 8, 1, 1)",
            "INSERT INTO deliveries (outbox_id, attempt, started_at, finished_at, outcome, detail)
             VALUES (1, 1, 1, 1, 'sent', ''), (2, 8, 1, 1, 'transient', '451 try later')",
        ] {
            sqlx::query(sql).execute(&old).await.unwrap();
        }
        old.close().await;

        let store = Store::open(&path).await.unwrap();
        let outbox: Vec<(i64, String, String)> = sqlx::query_as("SELECT id, status, category FROM outbox ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            outbox,
            vec![
                (1, "sent".into(), "transactional".into()),
                (2, "failed".into(), "transactional".into())
            ]
        );
        let deliveries: Vec<(i64, String)> = sqlx::query_as("SELECT outbox_id, detail FROM deliveries ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(deliveries, vec![(1, String::new()), (2, "451 try later".into())]);
        let dangling: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert!(dangling.is_empty(), "{dangling:?}");
    }
}
