//! Hot reload: the workflows folder is watched; after edits settle, the whole
//! set is validated again. A valid set replaces the running one atomically; an
//! invalid one is reported with file:line:col and the last good set keeps running.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::Engine;
use crate::workflow::WorkflowSet;

/// Starts watching at once (so no edit made after this call is missed) and
/// returns the task that reloads on every change.
pub(crate) fn watch(
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
        // A reload that fails in any way, a panic included, is reported and the
        // watch goes on: the next edit (perhaps the fix) must still be picked up.
        let reload = AssertUnwindSafe(reload(&dir, &engine, &engine_wake)).catch_unwind();
        if let Err(panic) = reload.await {
            refused(&engine, format!("checking it failed: {}", panic_message(&*panic)));
        }
    }
}

async fn reload(dir: &Path, engine: &Engine, engine_wake: &Notify) {
    let channels = engine.plugins.get().channels();
    // Loading and rendering the problems both read the user's files: off the
    // async workers, and a panic there comes back as an error.
    let loaded = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || WorkflowSet::load(&dir, &channels).map_err(|d| d.render(false))).await
    };
    match loaded {
        Ok(Ok(set)) if set.hash == engine.current().hash => {
            *engine.reload_error.lock().unwrap() = None;
            crate::metrics::get().workflow_folder_runs()
        }
        Ok(Ok(set)) => {
            let (hash, count) = (set.hash.clone(), set.workflows.len());
            match engine.install(Arc::new(set)).await {
                Ok(()) => {
                    *engine.reload_error.lock().unwrap() = None;
                    crate::metrics::get().workflow_reload(true);
                    info!(set = %hash, workflows = count, "workflows reloaded");
                    engine_wake.notify_one();
                }
                Err(e) => {
                    crate::metrics::get().workflow_reload(false);
                    error!("workflows valid but not installed: {e:#}");
                    *engine.reload_error.lock().unwrap() = Some(format!("valid but not installed: {e:#}"));
                }
            }
        }
        Ok(Err(problems)) => refused(engine, problems),
        Err(e) => refused(
            engine,
            format!(
                "checking it failed: {}",
                e.try_into_panic()
                    .map_or_else(|e| e.to_string(), |p| panic_message(&*p))
            ),
        ),
    }
}

/// A change to the folder refused: counted, logged, and kept for the console.
fn refused(engine: &Engine, why: String) {
    crate::metrics::get().workflow_reload(false);
    let separator = if why.contains('\n') { ":\n" } else { ": " };
    error!(
        "workflow change rejected; still running set {}{separator}{why}",
        engine.current().hash
    );
    *engine.reload_error.lock().unwrap() = Some(why);
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}
