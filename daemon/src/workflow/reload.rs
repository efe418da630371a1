//! Hot reload: the workflows folder is watched; after edits settle, the whole
//! set is validated again. A valid set replaces the running one atomically; an
//! invalid one is reported with file:line:col and the last good set keeps running.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::WorkflowSet;
use crate::runs::Engine;

/// Starts watching at once (so no edit made after this call is missed) and
/// returns the task that reloads on every change.
pub fn watch(
    dir: PathBuf,
    engine: Arc<Engine>,
    engine_wake: Arc<Notify>,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let changes = crate::watch::folder(&dir)
        .map_err(|e| error!("cannot watch {}: {e}; workflow changes need a restart", dir.display()))
        .ok();
    async move {
        let Some(changes) = changes else { return };
        reload_on_change(dir, changes, engine, engine_wake, cancel).await
    }
}

async fn reload_on_change(
    dir: PathBuf,
    mut changes: crate::watch::FolderChanges,
    engine: Arc<Engine>,
    engine_wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            change = changes.next() => if change.is_none() { return },
        }
        let channels = engine.plugins.get().channels();
        let loaded = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || WorkflowSet::load(&dir, &channels)).await
        };
        match loaded {
            Ok(Ok(set)) if set.hash == engine.current().hash => {}
            Ok(Ok(set)) => {
                let (hash, count) = (set.hash.clone(), set.workflows.len());
                match engine.install(Arc::new(set)).await {
                    Ok(()) => {
                        info!(set = %hash, workflows = count, "workflows reloaded");
                        engine_wake.notify_one();
                    }
                    Err(e) => error!("workflows valid but not installed: {e:#}"),
                }
            }
            Ok(Err(diagnostics)) => error!(
                "workflow change rejected; still running set {}:\n{}",
                engine.current().hash,
                diagnostics.render(false)
            ),
            Err(e) => error!("reload: {e}"),
        }
    }
}
