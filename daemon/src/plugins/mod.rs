//! The plugin host: channel plugins are WebAssembly components (WIT package
//! `nudge:channel`, in plugin-sdk/wit) run by wasmtime. Every call gets a fresh
//! Store from a pooling allocator and a shared InstancePre, with no files,
//! sockets, environment or arguments, a wall-clock deadline, a fuel budget, a
//! memory cap and an output cap from the plugin's manifest. A broken or hostile
//! plugin can only fail the message it was asked about.

mod cache;
pub mod manifest;
mod sandbox;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use serde_json::Value;
use tracing::{info, warn};
use wasmtime::component::Component;

pub use manifest::{Manifest, Recipient};
pub use sandbox::{CallStats, PluginError};

use self::sandbox::nudge::channel::types as wit;
use sandbox::{ChannelPre, Runtime};

/// Requests one `build_request` may return: a long message split into parts
/// (SMS segments, WeCom chunks) needs a handful, never thousands.
pub const MAX_REQUESTS: usize = 16;
/// Bytes of text from a plugin (a verdict, an error) kept in logs and the
/// deliveries table; the rest is cut.
pub const MAX_PLUGIN_TEXT: usize = 1024;

/// First-party plugins built from plugins/ by build.rs and embedded in the binary.
const BUILT_IN: &[(&str, &[u8], &str)] = &[
    (
        "email",
        include_bytes!(env!("NUDGE_EMAIL_PLUGIN_WASM")),
        include_str!("../../../plugins/email/plugin.toml"),
    ),
    (
        "sms",
        include_bytes!(env!("NUDGE_SMS_PLUGIN_WASM")),
        include_str!("../../../plugins/sms/plugin.toml"),
    ),
];

/// A rendered message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RenderedMessage {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default)]
    pub extra: Vec<(String, String)>,
}

/// An HTTP request a plugin asked the host to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a provider's answer means, as the plugin reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderVerdict {
    Sent(String),
    RetryLater(String),
    Failed(String),
}

/// A plugin as found: its wasm and its manifest's text.
type Source = (Vec<u8>, String);

/// One loaded plugin.
pub struct Plugin {
    pub manifest: Manifest,
    pub channels: Vec<String>,
    /// Where it came from: "built-in" or its folder.
    pub origin: String,
    /// The admin's `[plugin.<id>]` table, as JSON.
    pub config: Value,
    /// Hash of the wasm, the manifest and the config: unchanged means nothing to reload.
    fingerprint: String,
    pre: ChannelPre<sandbox::Sandbox>,
}

/// Every loaded plugin, by id and by channel.
pub struct PluginHost {
    runtime: Arc<Runtime>,
    plugins: BTreeMap<String, Arc<Plugin>>,
    by_channel: BTreeMap<String, String>,
    /// Plugin folders that could not be loaded (and had no earlier version to keep), with why.
    rejected: Vec<(String, anyhow::Error)>,
}

/// The current plugin set, swapped whole when the plugins folder changes.
#[derive(Clone)]
pub struct Plugins(Arc<RwLock<Arc<PluginHost>>>);

impl Plugins {
    pub fn new(host: PluginHost) -> Plugins {
        Plugins(Arc::new(RwLock::new(Arc::new(host))))
    }

    pub fn get(&self) -> Arc<PluginHost> {
        self.0.read().unwrap().clone()
    }

    pub fn replace(&self, host: PluginHost) {
        *self.0.write().unwrap() = Arc::new(host);
    }
}

/// Where plugins come from and how they are configured.
#[derive(Clone, Debug)]
pub struct PluginSettings {
    /// Folder of installed plugins: `<dir>/<id>/plugin.toml` + `plugin.wasm`.
    pub dir: PathBuf,
    /// Folder for compiled components; None compiles every time.
    pub cache: Option<PathBuf>,
    /// `[plugin.<id>]` tables from nudge.toml.
    pub config: BTreeMap<String, Value>,
    /// `[channels]` from nudge.toml: which plugin serves a channel two plugins claim.
    pub channels: BTreeMap<String, String>,
}

impl PluginHost {
    /// Loads the built-in plugins and every plugin folder under `settings.dir`.
    /// A plugin that fails to load is reported: with `previous`, its last good
    /// version keeps serving; otherwise it is left out and listed in
    /// [`rejected`](Self::rejected), so that one bad folder never stops the
    /// rest. Callers that must refuse a bad folder use [`strict`](Self::strict).
    pub fn load(settings: &PluginSettings, previous: Option<&PluginHost>) -> anyhow::Result<PluginHost> {
        let runtime = match previous {
            Some(p) => p.runtime.clone(),
            None => Arc::new(Runtime::new()?),
        };
        let mut host = PluginHost {
            runtime,
            plugins: BTreeMap::new(),
            by_channel: BTreeMap::new(),
            rejected: Vec::new(),
        };
        let mut sources: Vec<(String, anyhow::Result<Source>)> = BUILT_IN
            .iter()
            .map(|(_, wasm, manifest)| ("built-in".to_string(), Ok((wasm.to_vec(), manifest.to_string()))))
            .collect();
        for folder in installed(&settings.dir) {
            let read = |name: &str| {
                std::fs::read(folder.join(name)).with_context(|| format!("read {}", folder.join(name).display()))
            };
            let source = read("plugin.wasm").and_then(|wasm| {
                let manifest = String::from_utf8_lossy(&read("plugin.toml")?).into_owned();
                Ok((wasm, manifest))
            });
            sources.push((folder.display().to_string(), source));
        }
        for (origin, source) in sources {
            let admitted = source
                .and_then(|(wasm, manifest)| host.load_source(&origin, &wasm, &manifest, settings, previous))
                .and_then(|plugin| host.insert(plugin, settings));
            let Err(e) = admitted else { continue };
            let kept = previous.and_then(|p| p.plugins.values().find(|old| old.origin == origin).cloned());
            match kept {
                Some(old) => {
                    warn!(
                        "plugin {origin} rejected, version {} keeps serving: {e:#}",
                        old.manifest.version
                    );
                    if let Err(e) = host.insert(old, settings) {
                        host.reject(origin, e, true);
                    }
                }
                None => host.reject(origin, e, previous.is_some()),
            }
        }
        for (channel, chosen) in &settings.channels {
            if host.by_channel.get(channel) != Some(chosen) {
                let error = anyhow::anyhow!(
                    "[channels] {channel} = \"{chosen}\" in nudge.toml, but no loaded plugin `{chosen}` serves channel `{channel}`"
                );
                host.reject("nudge.toml".into(), error, previous.is_some());
            }
        }
        Ok(host)
    }

    /// Loads one plugin and nothing else, for `nudge plugin test`: `wanted` is a
    /// folder holding plugin.toml and plugin.wasm, or the id of an installed or
    /// built-in plugin. `config` replaces its `[plugin.<id>]` table. Other plugin
    /// folders are not loaded, so a broken one beside it cannot stop the test.
    pub fn load_only(settings: &PluginSettings, wanted: &str, config: Option<Value>) -> anyhow::Result<PluginHost> {
        let (origin, wasm, manifest) = find_source(settings, wanted)?;
        let id = Manifest::parse(&manifest, &format!("{origin}/plugin.toml"))?.id;
        let mut settings = settings.clone();
        if let Some(config) = config {
            settings.config.insert(id, config);
        }
        let mut host = PluginHost {
            runtime: Arc::new(Runtime::new()?),
            plugins: BTreeMap::new(),
            by_channel: BTreeMap::new(),
            rejected: Vec::new(),
        };
        let fingerprint = fingerprint(&wasm, &manifest, &settings);
        let plugin = host.load_one(&origin, &wasm, &manifest, fingerprint, &settings)?;
        host.insert(Arc::new(plugin), &settings)?;
        Ok(host)
    }

    /// The plugin from one source: the previous host's if nothing changed, else freshly loaded.
    fn load_source(
        &self,
        origin: &str,
        wasm: &[u8],
        manifest: &str,
        settings: &PluginSettings,
        previous: Option<&PluginHost>,
    ) -> anyhow::Result<Arc<Plugin>> {
        let fingerprint = fingerprint(wasm, manifest, settings);
        let unchanged = previous.and_then(|p| {
            p.plugins
                .values()
                .find(|old| old.origin == origin && old.fingerprint == fingerprint)
                .cloned()
        });
        if let Some(plugin) = unchanged {
            return Ok(plugin);
        }
        let plugin = self.load_one(origin, wasm, manifest, fingerprint, settings)?;
        info!(plugin = %plugin.manifest.id, version = %plugin.manifest.version, origin = %origin, channels = ?plugin.channels, "plugin loaded");
        Ok(Arc::new(plugin))
    }

    /// Leaves a plugin out; a reload reports it at once, a first load leaves that to its caller.
    fn reject(&mut self, origin: String, error: anyhow::Error, reloading: bool) {
        if reloading {
            warn!("plugin {origin} rejected: {error:#}");
        }
        self.rejected.push((origin, error));
    }

    /// Plugin folders left out, with why.
    pub fn rejected(&self) -> &[(String, anyhow::Error)] {
        &self.rejected
    }

    /// This host, or the first rejected plugin's error: for commands that must
    /// not go on without a plugin (`nudge check`, `nudge run --strict`).
    pub fn strict(mut self) -> anyhow::Result<PluginHost> {
        if self.rejected.is_empty() {
            return Ok(self);
        }
        let (_, error) = self.rejected.swap_remove(0);
        Err(error)
    }

    /// Adds a plugin with the channels it may serve. A plugin from the folder
    /// replaces a built-in with the same id (it comes later); a channel another
    /// plugin already serves is an error naming both, unless `[channels]` in
    /// nudge.toml picks one of them.
    fn insert(&mut self, plugin: Arc<Plugin>, settings: &PluginSettings) -> anyhow::Result<()> {
        let id = &plugin.manifest.id;
        let mut serves = Vec::new();
        for channel in &plugin.channels {
            let Some(other) = self.by_channel.get(channel).filter(|other| *other != id) else {
                serves.push(channel.clone());
                continue;
            };
            match settings.channels.get(channel) {
                Some(chosen) if chosen == id => serves.push(channel.clone()),
                Some(chosen) if chosen == other => {}
                _ => {
                    let other_origin = self.plugins.get(other).map(|p| p.origin.as_str()).unwrap_or("?");
                    anyhow::bail!(
                        "plugin `{id}` ({}) claims channel `{channel}`, which plugin `{other}` ({other_origin}) already serves; \
                         pick one in nudge.toml: [channels] {channel} = \"{other}\" (or \"{id}\")",
                        plugin.origin
                    );
                }
            }
        }
        if let Some(old) = self.plugins.remove(id) {
            self.by_channel.retain(|_, served_by| *served_by != old.manifest.id);
        }
        for channel in serves {
            self.by_channel.insert(channel, id.clone());
        }
        self.plugins.insert(id.clone(), plugin);
        Ok(())
    }

    /// The channels `plugin` serves (those it claims, less any `[channels]` gave another).
    pub fn served_by(&self, plugin: &str) -> Vec<String> {
        self.by_channel
            .iter()
            .filter(|(_, id)| *id == plugin)
            .map(|(channel, _)| channel.clone())
            .collect()
    }

    fn load_one(
        &self,
        origin: &str,
        wasm: &[u8],
        manifest: &str,
        fingerprint: String,
        settings: &PluginSettings,
    ) -> anyhow::Result<Plugin> {
        let manifest = Manifest::parse(manifest, &format!("{origin}/plugin.toml"))?;
        let component = cache::compile(&self.runtime.engine, wasm, settings.cache.as_deref())
            .with_context(|| format!("plugin {}: not a valid WebAssembly component", manifest.id))?;
        check_exported_interface(&self.runtime.engine, &component, &manifest)?;
        let pre = self
            .runtime
            .prepare(&component)
            .with_context(|| format!("plugin {}", manifest.id))?;
        let config = settings
            .config
            .get(&manifest.id)
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let mut plugin = Plugin {
            manifest,
            channels: Vec::new(),
            origin: origin.to_string(),
            config,
            fingerprint,
            pre,
        };
        let (info, _) = self.runtime.call(&plugin, |store, p| p.call_info(store))?;
        if info.name != plugin.manifest.id {
            anyhow::bail!(
                "plugin.toml says id `{}` but the plugin calls itself `{}`",
                plugin.manifest.id,
                info.name
            );
        }
        plugin.channels = info.channels;
        plugin
            .manifest
            .check_config(&plugin.config)
            .map_err(anyhow::Error::msg)?;
        let config_json = plugin.config.to_string();
        let (checked, _) = self
            .runtime
            .call(&plugin, |store, p| p.call_validate_config(store, &config_json))?;
        checked.map_err(|e| anyhow::anyhow!("[plugin.{}] in nudge.toml: {e}", plugin.manifest.id))?;
        Ok(plugin)
    }

    /// Whether `other` holds exactly the same plugins.
    pub fn same_as(&self, other: &PluginHost) -> bool {
        let prints = |h: &PluginHost| h.plugins.values().map(|p| p.fingerprint.clone()).collect::<Vec<_>>();
        prints(self) == prints(other)
    }

    /// Channels served, sorted.
    pub fn channels(&self) -> Vec<String> {
        self.by_channel.keys().cloned().collect()
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// The plugin serving `channel`.
    pub fn for_channel(&self, channel: &str) -> Result<&Arc<Plugin>, PluginError> {
        self.by_channel
            .get(channel)
            .and_then(|id| self.plugins.get(id))
            .ok_or_else(|| PluginError::Refused(format!("no plugin serves channel `{channel}`")))
    }

    /// The plugin with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(id)
    }

    /// Renders one message in a fresh sandbox. Blocking: call from a blocking thread.
    pub fn render(
        &self,
        channel: &str,
        template: &[(String, String)],
        context: &Value,
    ) -> Result<(RenderedMessage, CallStats), PluginError> {
        let plugin = self.for_channel(channel)?;
        let request = wit::RenderRequest {
            channel: channel.to_string(),
            template: template.to_vec(),
            context_json: context.to_string(),
            config_json: plugin.config.to_string(),
        };
        let cap = plugin.manifest.limits.output_kb as usize * 1024;
        let (result, stats) = self
            .runtime
            .call_capped(plugin, Some(cap), |store, p| p.call_render(store, &request))?;
        let r = result.map_err(|e| match e.field {
            Some(field) => PluginError::Template {
                field: bounded(field),
                message: bounded(e.message),
            },
            None => PluginError::Refused(bounded(e.message)),
        })?;
        let message = RenderedMessage {
            subject: r.subject,
            text: r.text,
            html: r.html,
            extra: r.extra,
        };
        let size = [&message.subject, &message.text, &message.html]
            .iter()
            .filter_map(|s| s.as_ref())
            .map(String::len)
            .sum::<usize>()
            + message.extra.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size > cap {
            return Err(PluginError::Limit(format!(
                "returned {} KiB, over its output limit of {} KiB",
                size / 1024,
                plugin.manifest.limits.output_kb
            )));
        }
        Ok((message, stats))
    }

    /// Asks the channel's plugin for the HTTP requests that deliver `message`.
    pub fn build_request(
        &self,
        channel: &str,
        message: &RenderedMessage,
        recipient: &str,
    ) -> Result<Vec<OutboundRequest>, PluginError> {
        let plugin = self.for_channel(channel)?;
        let rendered = wit::Rendered {
            subject: message.subject.clone(),
            text: message.text.clone(),
            html: message.html.clone(),
            extra: message.extra.clone(),
        };
        let config_json = plugin.config.to_string();
        let cap = plugin.manifest.limits.output_kb as usize * 1024;
        let (result, _) = self.runtime.call_capped(plugin, Some(cap), |store, p| {
            p.call_build_request(store, &rendered, recipient, &config_json)
        })?;
        let requests = result.map_err(|e| PluginError::Refused(bounded(e.message)))?;
        if requests.len() > MAX_REQUESTS {
            return Err(PluginError::Limit(format!(
                "built {} requests for one message, over the limit of {MAX_REQUESTS}",
                requests.len()
            )));
        }
        let size: usize = requests
            .iter()
            .map(|r| {
                r.method.len()
                    + r.url.len()
                    + r.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                    + r.body.len()
            })
            .sum();
        if size > cap {
            return Err(PluginError::Limit(format!(
                "built {} KiB of requests, over its output limit of {} KiB",
                size / 1024,
                plugin.manifest.limits.output_kb
            )));
        }
        Ok(requests
            .into_iter()
            .map(|r| OutboundRequest {
                method: r.method,
                url: r.url,
                headers: r.headers,
                body: r.body,
            })
            .collect())
    }

    /// Asks the channel's plugin what a provider's answer means.
    pub fn interpret_response(
        &self,
        channel: &str,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<ProviderVerdict, PluginError> {
        let plugin = self.for_channel(channel)?;
        let response = wit::HttpResponse { status, headers, body };
        let (outcome, _) = self
            .runtime
            .call(plugin, |store, p| p.call_interpret_response(store, &response))?;
        Ok(match outcome {
            wit::DeliveryOutcome::Sent(s) => ProviderVerdict::Sent(bounded(s)),
            wit::DeliveryOutcome::RetryLater(s) => ProviderVerdict::RetryLater(bounded(s)),
            wit::DeliveryOutcome::Failed(s) => ProviderVerdict::Failed(bounded(s)),
        })
    }
}

/// A plugin's text cut to MAX_PLUGIN_TEXT bytes (at a character boundary), saying so.
fn bounded(mut text: String) -> String {
    if text.len() <= MAX_PLUGIN_TEXT {
        return text;
    }
    let total = text.len();
    let cut = text.floor_char_boundary(MAX_PLUGIN_TEXT);
    text.truncate(cut);
    text.push_str(&format!("… ({total} bytes from the plugin, cut to {cut})"));
    text
}

fn fingerprint(wasm: &[u8], manifest: &str, settings: &PluginSettings) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(wasm);
    hash.update(manifest.as_bytes());
    hash.update(serde_json::to_string(&settings.config).unwrap_or_default().as_bytes());
    format!("{:x}", hash.finalize())
}

/// Where `wanted` (a folder, or an id) comes from, with its wasm and manifest text.
/// An installed plugin wins over a built-in of the same id, as in `load`.
fn find_source(settings: &PluginSettings, wanted: &str) -> anyhow::Result<(String, Vec<u8>, String)> {
    let read = |folder: &Path| -> anyhow::Result<(String, Vec<u8>, String)> {
        let file = |name: &str| {
            std::fs::read(folder.join(name)).with_context(|| format!("read {}", folder.join(name).display()))
        };
        let manifest = String::from_utf8_lossy(&file("plugin.toml")?).into_owned();
        Ok((folder.display().to_string(), file("plugin.wasm")?, manifest))
    };
    let folder = Path::new(wanted);
    if folder.join("plugin.toml").is_file() {
        return read(folder);
    }
    let by_name = settings.dir.join(wanted);
    if by_name.join("plugin.toml").is_file() {
        return read(&by_name);
    }
    // A folder not named after its plugin: match the id in its manifest, and pass
    // over folders that cannot say (they are not the one asked for).
    for folder in installed(&settings.dir) {
        let id = std::fs::read_to_string(folder.join("plugin.toml"))
            .ok()
            .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
            .and_then(|table| table.get("id").and_then(|id| id.as_str()).map(str::to_string));
        if id.as_deref() == Some(wanted) {
            return read(&folder);
        }
    }
    if let Some((_, wasm, manifest)) = BUILT_IN.iter().find(|(id, _, _)| *id == wanted) {
        return Ok(("built-in".to_string(), wasm.to_vec(), manifest.to_string()));
    }
    anyhow::bail!(
        "no plugin `{wanted}`: not a folder with a plugin.toml, not installed in {}, and not built in ({})",
        settings.dir.display(),
        BUILT_IN.iter().map(|(id, _, _)| *id).collect::<Vec<_>>().join(", ")
    )
}

/// Plugin folders under `dir` (each with a plugin.toml), sorted; none if `dir` does not exist.
fn installed(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut folders: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("plugin.toml").is_file())
        .collect();
    folders.sort();
    folders
}

/// Reads the interface version from the component's own exports, so a plugin
/// whose manifest claims one version but was built for another is caught too.
fn check_exported_interface(
    engine: &wasmtime::Engine,
    component: &Component,
    manifest: &Manifest,
) -> anyhow::Result<()> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let version = exports
        .iter()
        .find_map(|name| name.strip_prefix("nudge:channel/plugin@"));
    match version {
        Some(version) => manifest.check_interface(version),
        None => anyhow::bail!(
            "plugin {} does not export nudge:channel/plugin (it exports: {}); host supports interface {}",
            manifest.id,
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            },
            manifest::SUPPORTED_INTERFACES
        ),
    }
}

/// Watches the plugins folder: a new or changed plugin is validated, compiled and
/// swapped in; a broken one is reported and the previous version keeps serving.
/// Starts watching at once (so no plugin installed after this call is missed)
/// and returns the task that reloads on every change.
pub fn watch(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_text_is_cut_at_a_character_boundary_and_says_so() {
        assert_eq!(bounded("short".into()), "short");
        let long = "阿".repeat(1000);
        let cut = bounded(long);
        assert!(cut.starts_with(&"阿".repeat(341)), "{cut}");
        assert!(cut.ends_with("… (3000 bytes from the plugin, cut to 1023)"), "{cut}");
    }
}
