//! Hot reload: the workflows folder is watched; after edits settle, the whole
//! set is validated again. A valid set replaces the running one atomically; an
//! invalid one is reported with file:line:col and the last good set keeps running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::WorkflowSet;
use crate::runs::Engine;

/// Editors write a file in several steps; wait this long for quiet before reloading.
const DEBOUNCE: Duration = Duration::from_millis(300);

pub async fn watch(dir: PathBuf, engine: Arc<Engine>, engine_wake: Arc<Notify>, cancel: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let debouncer = notify_debouncer_mini::new_debouncer(DEBOUNCE, move |result| {
        let _ = tx.send(result);
    });
    let mut debouncer = match debouncer {
        Ok(d) => d,
        Err(e) => {
            return error!("cannot watch {}: {e}; workflow changes need a restart", dir.display());
        }
    };
    if let Err(e) = debouncer.watcher().watch(&dir, RecursiveMode::Recursive) {
        return error!("cannot watch {}: {e}; workflow changes need a restart", dir.display());
    }
    loop {
        let events = tokio::select! {
            _ = cancel.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        if let Err(e) = events {
            warn!("watching {}: {e}", dir.display());
            continue;
        }
        let channels = engine.plugins.channels();
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
