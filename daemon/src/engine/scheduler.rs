//! The engine's loop: does what is due, then sleeps until the next timer, a
//! wake-up from an in-process write, or a change made by another process (the
//! CLI) that the change watcher notices.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Engine;
use crate::clock::Clock;
use crate::store::Store;

/// How often another process's writes are looked for. CLI changes are picked up within this.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// The longest sleep; a safety net, not a mechanism.
const MAX_SLEEP: Duration = Duration::from_secs(60);

pub(crate) async fn run(engine: Arc<Engine>, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut due = true;
    loop {
        while due {
            due = match engine.tick().await {
                Ok(more) => more && !cancel.is_cancelled(),
                // Tried again a second later: what failed (a full disk, say)
                // is still due, and no wake-up may come to say so.
                Err(e) => {
                    error!("engine: {e:#}");
                    tokio::select! {
                        _ = cancel.cancelled() => false,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => true,
                    }
                }
            };
        }
        if cancel.is_cancelled() {
            // The batch being written commits before the daemon stops.
            if let Err(e) = engine.settle().await {
                error!("engine: {e:#}");
            }
            return;
        }
        let pause = match engine.next_due().await {
            Ok(Some(_)) if engine.clock.is_virtual() => MAX_SLEEP,
            Ok(Some(due)) => {
                Duration::from_millis((due - engine.clock.now_ms()).clamp(0, MAX_SLEEP.as_millis() as i64) as u64)
            }
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                warn!("next timer: {e:#}");
                Duration::from_secs(1)
            }
        };
        // A batch of steps may still be being written: a wake-up meanwhile is
        // taken at once (the next batch is prepared while it writes), and its
        // end is waited for, since its steps may have made work due.
        due = tokio::select! {
            _ = cancel.cancelled() => false,
            _ = wake.notified() => true,
            _ = tokio::time::sleep(pause) => true,
            written = engine.written() => written.unwrap_or_else(|e| {
                error!("engine: {e:#}");
                true
            }),
        };
    }
}

/// Watches the database for commits by other processes (`PRAGMA data_version`
/// changes only then) and wakes the engine and delivery; on virtual time it
/// also brings the clock to the stored reading.
pub(crate) async fn watch_changes(store: Store, clock: Clock, wakes: Vec<Arc<Notify>>, cancel: CancellationToken) {
    let mut conn = match store.pool.acquire().await {
        Ok(c) => c.detach(),
        Err(e) => return error!("change watcher: {e:#}"),
    };
    let mut last: Option<i64> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        let version: i64 = match sqlx::query_scalar("PRAGMA data_version").fetch_one(&mut conn).await {
            Ok(v) => v,
            Err(e) => {
                warn!("change watcher: {e:#}");
                continue;
            }
        };
        if last == Some(version) {
            continue;
        }
        last = Some(version);
        if clock.is_virtual()
            && let Ok(Some(now)) = store.virtual_now().await
        {
            clock.set_virtual_ms(now);
        }
        for wake in &wakes {
            wake.notify_one();
        }
    }
}
