//! Hot reload of the plugins folder.

use tracing::{info, warn};

use super::{PluginHost, PluginSettings, Plugins};

/// Watches the plugins folder: a new or changed plugin is validated, compiled and
/// swapped in; a broken one is reported and the previous version keeps serving.
/// Starts watching at once (so no plugin installed after this call is missed)
/// and returns the task that reloads on every change.
pub(crate) fn watch(
    settings: PluginSettings,
    plugins: Plugins,
    cancel: tokio_util::sync::CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let changes = std::fs::create_dir_all(&settings.dir)
        .map_err(notify::Error::io)
        .and_then(|()| crate::watch::folder(&settings.dir))
        .map_err(|e| {
            warn!(
                "cannot watch {}: {e}; plugin changes need a restart",
                settings.dir.display()
            )
        })
        .ok();
    async move {
        let Some(changes) = changes else { return };
        reload_on_change(settings, changes, plugins, cancel).await
    }
}

async fn reload_on_change(
    settings: PluginSettings,
    mut changes: crate::watch::FolderChanges,
    plugins: Plugins,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            change = changes.next() => if change.is_none() { return },
        }
        let (current, settings) = (plugins.get(), settings.clone());
        match tokio::task::spawn_blocking(move || PluginHost::load(&settings, Some(&current))).await {
            Ok(Ok(host)) if host.same_as(&plugins.get()) => {}
            Ok(Ok(host)) => {
                info!(channels = ?host.channels(), "plugins reloaded");
                plugins.replace(host);
            }
            Ok(Err(e)) => warn!("plugins folder changed but could not be loaded: {e:#}"),
            Err(e) => warn!("plugin reload: {e}"),
        }
    }
}
