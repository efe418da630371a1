//! Loading plugins: the built-in ones and each folder under the plugins
//! directory, compiled (through the .cwasm cache), checked against the
//! interface the host supports and the admin's config, and given the channels
//! they serve. A plugin that fails to load never stops the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;
use tracing::{info, warn};
use wasmtime::component::Component;

use super::sandbox::Runtime;
use super::{BUILT_IN, Manifest, Plugin, PluginHost, PluginSettings, Source, cache, manifest};

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
    pub(crate) fn load_only(
        settings: &PluginSettings,
        wanted: &str,
        config: Option<Value>,
    ) -> anyhow::Result<PluginHost> {
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
