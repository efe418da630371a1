//! The plugin host: channel plugins are WebAssembly components (WIT world
//! `nudge:channel/channel` in plugin-sdk) run by wasmtime. Each message gets a
//! fresh Store with no filesystem, network, environment or arguments, a fuel
//! budget and a memory cap, so a broken or hostile plugin can only fail the
//! message it was asked to render.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ path: "../plugin-sdk/wit", world: "channel" });

use self::nudge::channel::types::RenderRequest;

/// The email plugin built from plugins/email, embedded so the daemon runs out of the box.
const EMAIL_PLUGIN: &[u8] = include_bytes!(env!("NUDGE_EMAIL_PLUGIN_WASM"));

/// Instructions one render may execute before it is stopped.
const FUEL_PER_RENDER: u64 = 2_000_000_000;
/// Linear memory one plugin instance may grow to.
const MEMORY_LIMIT: usize = 64 << 20;

/// What a loaded plugin says about itself.
#[derive(Debug, Clone)]
pub struct PluginMeta {
    pub name: String,
    pub version: String,
    pub channels: Vec<String>,
    /// Where it came from: "built-in" or its file.
    pub origin: String,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedMessage {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Why a plugin could not render a message.
#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    #[error("no plugin serves channel `{0}`")]
    UnknownChannel(String),
    #[error("template field `{field}`: {message}")]
    Template { field: String, message: String },
    #[error("plugin refused: {0}")]
    Refused(String),
    #[error("plugin crashed: {0:#}")]
    Trap(anyhow::Error),
}

struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct Plugin {
    meta: PluginMeta,
    pre: ChannelPre<Sandbox>,
}

/// Every loaded plugin, by channel.
pub struct PluginHost {
    engine: Engine,
    plugins: Vec<Plugin>,
    by_channel: BTreeMap<String, usize>,
}

impl PluginHost {
    /// Loads the built-in email plugin and every `*.wasm` in `dir` (if it exists);
    /// a plugin in `dir` that serves a channel replaces the built-in one for it.
    pub fn load(dir: &Path) -> anyhow::Result<PluginHost> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<Sandbox>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        let mut host = PluginHost {
            engine,
            plugins: Vec::new(),
            by_channel: BTreeMap::new(),
        };

        let mut sources = vec![("built-in".to_string(), EMAIL_PLUGIN.to_vec())];
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut files: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
                .collect();
            files.sort();
            for file in files {
                let bytes = std::fs::read(&file).with_context(|| format!("read plugin {}", file.display()))?;
                sources.push((file.display().to_string(), bytes));
            }
        }
        for (origin, bytes) in sources {
            let component = anyhow_result(Component::new(&host.engine, &bytes))
                .with_context(|| format!("compile plugin {origin}"))?;
            let pre = anyhow_result(linker.instantiate_pre(&component))
                .with_context(|| format!("plugin {origin} needs imports that nudge does not give plugins"))?;
            let pre = anyhow_result(ChannelPre::new(pre))
                .with_context(|| format!("plugin {origin} does not export the nudge:channel world"))?;
            let mut store = host.store();
            let info = anyhow_result(
                pre.instantiate(&mut store)
                    .and_then(|instance| instance.nudge_channel_plugin().call_info(&mut store)),
            )
            .with_context(|| format!("plugin {origin}: info() failed"))?;
            let index = host.plugins.len();
            for channel in &info.channels {
                host.by_channel.insert(channel.clone(), index);
            }
            host.plugins.push(Plugin {
                meta: PluginMeta {
                    name: info.name,
                    version: info.version,
                    channels: info.channels,
                    origin,
                },
                pre,
            });
        }
        Ok(host)
    }

    /// A fresh sandbox: no preopened dirs, no sockets, no env, no args.
    fn store(&self) -> Store<Sandbox> {
        let sandbox = Sandbox {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| &mut s.limits);
        store.set_fuel(FUEL_PER_RENDER).expect("fuel is enabled");
        store
    }

    /// Channels served, sorted.
    pub fn channels(&self) -> Vec<String> {
        self.by_channel.keys().cloned().collect()
    }

    pub fn plugins(&self) -> impl Iterator<Item = &PluginMeta> {
        self.plugins.iter().map(|p| &p.meta)
    }

    /// Renders one message in a fresh instance. Blocking: call from a blocking thread.
    pub fn render(
        &self,
        channel: &str,
        template: &[(String, String)],
        context: &serde_json::Value,
    ) -> Result<RenderedMessage, RenderFailure> {
        let index = *self
            .by_channel
            .get(channel)
            .ok_or_else(|| RenderFailure::UnknownChannel(channel.into()))?;
        let mut store = self.store();
        let instance = self.plugins[index]
            .pre
            .instantiate(&mut store)
            .map_err(|e| RenderFailure::Trap(e.into()))?;
        let request = RenderRequest {
            channel: channel.to_string(),
            template: template.to_vec(),
            context_json: context.to_string(),
        };
        match instance
            .nudge_channel_plugin()
            .call_render(&mut store, &request)
            .map_err(|e| RenderFailure::Trap(e.into()))?
        {
            Ok(r) => Ok(RenderedMessage {
                subject: r.subject,
                text: r.text,
                html: r.html,
            }),
            Err(e) => Err(match e.field {
                Some(field) => RenderFailure::Template {
                    field,
                    message: e.message,
                },
                None => RenderFailure::Refused(e.message),
            }),
        }
    }
}

/// wasmtime has its own error type; this gives it anyhow's `context`.
fn anyhow_result<T>(result: wasmtime::Result<T>) -> anyhow::Result<T> {
    result.map_err(anyhow::Error::from)
}
