//! Folder watching for hot reload (workflows, plugins): one signal per burst of
//! changes, once edits have been quiet for a moment, since editors and `cp`
//! write a file in several steps. Reads are not changes: loading a folder opens
//! its files, and counting that as a change would reload forever.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const QUIET: Duration = Duration::from_millis(300);

/// Changes under a folder; keep it alive as long as they should arrive.
pub(crate) struct FolderChanges {
    _watcher: RecommendedWatcher,
    events: UnboundedReceiver<()>,
}

/// Watches `dir` recursively.
pub(crate) fn folder(dir: &Path) -> notify::Result<FolderChanges> {
    let (tx, events) = unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
        Ok(_) => {
            let _ = tx.send(());
        }
        Err(e) => tracing::warn!("file watcher: {e}"),
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(FolderChanges {
        _watcher: watcher,
        events,
    })
}

impl FolderChanges {
    /// Waits for the next burst of changes to end; None when the watcher is gone.
    pub(crate) async fn next(&mut self) -> Option<()> {
        self.events.recv().await?;
        loop {
            match tokio::time::timeout(QUIET, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}
