//! The plugin host: channel plugins are WebAssembly components (WIT package
//! `nudge:channel`, in plugin-sdk/wit) run by wasmtime. Every call gets a fresh
//! Store from a pooling allocator and a shared InstancePre, with no files,
//! sockets, environment or arguments, a wall-clock deadline, a fuel budget, a
//! memory cap and an output cap from the plugin's manifest. A broken or hostile
//! plugin can only fail the message it was asked about.
//!
//! `load.rs` loads and checks plugins, `calls.rs` makes the calls into them,
//! `reload.rs` swaps the set when the folder changes; `manifest.rs`,
//! `sandbox.rs` and `cache.rs` are what loading and calls stand on.

mod cache;
mod calls;
mod load;
pub(crate) mod manifest;
pub(crate) mod reload;
mod sandbox;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde_json::Value;

pub(crate) use manifest::{Manifest, Recipient};
pub(crate) use sandbox::{CallStats, PluginError};

use sandbox::{ChannelPre, Runtime};

/// Requests one `build_request` may return: a long message split into parts
/// (SMS segments, WeCom chunks) needs a handful, never thousands.
pub(crate) const MAX_REQUESTS: usize = 16;
/// Bytes of text from a plugin (a verdict, an error) kept in logs and the
/// deliveries table; the rest is cut.
pub(crate) const MAX_PLUGIN_TEXT: usize = 1024;

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
    pub(crate) subject: Option<String>,
    pub text: Option<String>,
    pub(crate) html: Option<String>,
    #[serde(default)]
    pub(crate) extra: Vec<(String, String)>,
}

/// An HTTP request a plugin asked the host to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutboundRequest {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// What a provider's answer means, as the plugin reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ProviderVerdict {
    Sent(String),
    RetryLater(String),
    Failed(String),
}

/// A plugin as found: its wasm and its manifest's text.
type Source = (Vec<u8>, String);

/// One loaded plugin.
pub(crate) struct Plugin {
    pub(crate) manifest: Manifest,
    pub(crate) channels: Vec<String>,
    /// Where it came from: "built-in" or its folder.
    pub(crate) origin: String,
    /// The admin's `[plugin.<id>]` table, as JSON.
    pub(crate) config: Value,
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
        count_failures_of(&host);
        Plugins(Arc::new(RwLock::new(Arc::new(host))))
    }

    pub(crate) fn get(&self) -> Arc<PluginHost> {
        self.0.read().unwrap().clone()
    }

    pub(crate) fn replace(&self, host: PluginHost) {
        count_failures_of(&host);
        *self.0.write().unwrap() = Arc::new(host);
    }
}

/// Starts each plugin's failure counters at zero: an alert's rate over them is
/// then defined before the first failure.
fn count_failures_of(host: &PluginHost) {
    let metrics = crate::metrics::get();
    for plugin in host.plugins() {
        metrics.plugin_loaded(&plugin.manifest.id, PluginError::CODES);
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
    /// Plugin folders left out, with why.
    pub(crate) fn rejected(&self) -> &[(String, anyhow::Error)] {
        &self.rejected
    }

    /// This host, or the first rejected plugin's error: for commands that must
    /// not go on without a plugin (`nudge check`, `nudge run --strict`).
    pub(crate) fn strict(mut self) -> anyhow::Result<PluginHost> {
        if self.rejected.is_empty() {
            return Ok(self);
        }
        let (_, error) = self.rejected.swap_remove(0);
        Err(error)
    }

    /// The channels `plugin` serves (those it claims, less any `[channels]` gave another).
    pub(crate) fn served_by(&self, plugin: &str) -> Vec<String> {
        self.by_channel
            .iter()
            .filter(|(_, id)| *id == plugin)
            .map(|(channel, _)| channel.clone())
            .collect()
    }

    /// Whether `other` holds exactly the same plugins.
    pub(crate) fn same_as(&self, other: &PluginHost) -> bool {
        let prints = |h: &PluginHost| h.plugins.values().map(|p| p.fingerprint.clone()).collect::<Vec<_>>();
        prints(self) == prints(other)
    }

    /// Channels served, sorted.
    pub fn channels(&self) -> Vec<String> {
        self.by_channel.keys().cloned().collect()
    }

    pub(crate) fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// The plugin serving `channel`.
    pub(crate) fn for_channel(&self, channel: &str) -> Result<&Arc<Plugin>, PluginError> {
        self.by_channel
            .get(channel)
            .and_then(|id| self.plugins.get(id))
            .ok_or_else(|| PluginError::Refused(format!("no plugin serves channel `{channel}`")))
    }
}
