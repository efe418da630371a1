//! The retention pass (`[retention] keep_days`): once a day on the daemon's
//! clock, and on demand with `nudge prune`. What it deletes and what it never
//! does is in `store::prune`; here, when it runs and what it must keep for the
//! workflow set (`Config::check_retention`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::engine::Engine;
use crate::store::{self, Pruned, Store};
use crate::workflow::WorkflowSet;

const DAY_MS: i64 = 86_400_000;
/// After a pass fails (a store that cannot write, a cap longer than keep_days),
/// the next try waits this long on the daemon's clock: the wake-ups of every
/// write must not repeat the error.
const RETRY_MS: i64 = 3_600_000;

/// Prunes what is older than `keep_days` before `now`, or with `dry` counts it.
/// Refuses while the set reads more history than that (its frequency caps).
pub(crate) async fn pass(
    store: &Store,
    config: &Config,
    set: &WorkflowSet,
    now: i64,
    dry: bool,
) -> anyhow::Result<Pruned> {
    config.check_retention(set)?;
    let cutoff = now.saturating_sub(config.keep_days().saturating_mul(DAY_MS));
    if dry {
        let mut conn = store.pool.acquire().await?;
        return store::prune_dry(&mut conn, cutoff).await;
    }
    let pruned = store::prune(store, cutoff).await?;
    let mut conn = store.pool.acquire().await?;
    store::record_retention_pass(&mut conn, now).await?;
    Ok(pruned)
}

/// Runs the pass when a day has gone by since the last one: looked at after
/// each wake-up (another process's write, which includes `nudge clock`) and
/// at least hourly.
pub(crate) async fn run_daily(engine: Arc<Engine>, config: Config, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut not_before = i64::MIN;
    loop {
        let now = engine.clock.now_ms();
        if now >= not_before {
            not_before = match due_pass(&engine, &config, now).await {
                Ok(()) => i64::MIN,
                Err(e) => {
                    warn!("retention pass: {e:#}");
                    now.saturating_add(RETRY_MS)
                }
            };
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

async fn due_pass(engine: &Engine, config: &Config, now: i64) -> anyhow::Result<()> {
    let last = {
        let mut conn = engine.store.pool.acquire().await?;
        store::last_retention_pass(&mut conn).await?
    };
    if last.is_some_and(|last| now - last < DAY_MS) {
        return Ok(());
    }
    let p = pass(&engine.store, config, &engine.current(), now, false).await?;
    info!(
        keep_days = config.keep_days(),
        runs = p.runs,
        run_steps = p.run_steps,
        timers = p.timers,
        messages = p.messages,
        deliveries = p.deliveries,
        engagement = p.engagement,
        "retention pass"
    );
    Ok(())
}
