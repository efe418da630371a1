//! `nudge plugin list|test`: the loaded channel plugins, and one plugin run on a
//! fixture through the real host, for plugin authors.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::plugins::{PluginHost, ProviderVerdict};

/// `nudge plugin list`: every loaded plugin.
pub(crate) fn list(config: &Config) -> anyhow::Result<()> {
    let host = PluginHost::load(&config.plugin_settings(), None)?.strict()?;
    for p in host.plugins() {
        let m = &p.manifest;
        println!(
            "{:<10} {:<8} interface {:<6} channels [{}]  {}",
            m.id,
            m.version,
            m.interface,
            host.served_by(&m.id).join(", "),
            p.origin
        );
    }
    Ok(())
}

/// A `nudge plugin test` fixture (its keys are documented in plugin-sdk/README.md).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginFixture {
    /// Defaults to the plugin's first channel.
    channel: Option<String>,
    /// The template's fields; without them nothing is rendered and only `responses` are read.
    template: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    context: serde_json::Value,
    /// Replaces the plugin's `[plugin.<id>]` table from nudge.toml.
    config: Option<serde_json::Value>,
    /// With a recipient, also shows the HTTP requests the plugin would have sent.
    recipient: Option<String>,
    /// Provider answers, each read by the plugin's `interpret_response`.
    #[serde(default)]
    responses: Vec<FixtureResponse>,
}

/// A provider's answer in a fixture.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureResponse {
    status: u16,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// A string is the body as it is; any other JSON value is sent as JSON text.
    #[serde(default)]
    body: serde_json::Value,
}

impl FixtureResponse {
    fn body(&self) -> Vec<u8> {
        match &self.body {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::String(text) => text.clone().into_bytes(),
            json => json.to_string().into_bytes(),
        }
    }
}

/// `nudge plugin test <id|folder> <fixture.json>`: runs one plugin on a fixture
/// through the real host (render, build_request, interpret_response) and prints
/// the results and what the render cost. Only that plugin is loaded.
pub(crate) fn test(config: &Config, plugin: &str, fixture: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(fixture).with_context(|| format!("read {}", fixture.display()))?;
    let fixture: PluginFixture =
        serde_json::from_str(&text).with_context(|| format!("{} is not a plugin test fixture", fixture.display()))?;
    if fixture.template.is_none() && fixture.recipient.is_some() {
        bail!("the fixture has a `recipient` but no `template`: give the template to render for it");
    }
    if fixture.template.is_none() && fixture.responses.is_empty() {
        bail!("the fixture has nothing to try: give a `template` to render, `responses` to read, or both");
    }
    let mut settings = config.plugin_settings();
    settings.cache = plugin_test_cache(config);
    let host = PluginHost::load_only(&settings, plugin, fixture.config)?;
    let loaded = host.plugins().next().context("no plugin loaded")?;
    let id = loaded.manifest.id.clone();
    let channel = fixture
        .channel
        .or_else(|| loaded.channels.first().cloned())
        .context("the plugin serves no channel")?;
    if let Some(template) = fixture.template {
        let template: Vec<(String, String)> = template.into_iter().collect();
        let (message, stats) = host.render(&channel, &template, &fixture.context)?;
        println!("{}", serde_json::to_string_pretty(&message)?);
        if let Some(recipient) = fixture.recipient {
            for r in host.build_request(&channel, &message, &recipient)? {
                println!("{} {}", r.method, r.url);
                for (k, v) in &r.headers {
                    println!("{k}: {v}");
                }
                println!("\n{}\n", String::from_utf8_lossy(&r.body));
            }
        }
        eprintln!(
            "plugin {id} on channel {channel}: {:.2} ms, {} fuel, peak memory {} KiB",
            stats.elapsed.as_secs_f64() * 1000.0,
            stats.fuel,
            stats.peak_memory / 1024
        );
    }
    for response in &fixture.responses {
        let headers = response.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let verdict = host.interpret_response(&channel, response.status, headers, response.body())?;
        let verdict = match verdict {
            ProviderVerdict::Sent(note) => format!("sent: {note}"),
            ProviderVerdict::RetryLater(why) => format!("retry later: {why}"),
            ProviderVerdict::Failed(why) => format!("failed: {why}"),
        };
        println!(
            "HTTP {} {} -> {verdict}",
            response.status,
            String::from_utf8_lossy(&response.body())
        );
    }
    Ok(())
}

/// Where `nudge plugin test` keeps compiled plugins: the installation's cache
/// when a nudge.toml is in use, else the user's cache folder, never a `data/`
/// folder made wherever an author happens to run it. Compiling takes seconds;
/// the cache makes a second run of an unchanged plugin start at once.
fn plugin_test_cache(config: &Config) -> Option<PathBuf> {
    let dir = match &config.file {
        Some(_) => config.plugin_cache.clone(),
        None => user_cache_dir()?.join("nudge").join("plugin-cache"),
    };
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            eprintln!(
                "warning: cannot use {} as the plugin cache ({e}); compiling without one",
                dir.display()
            );
            None
        }
    }
}

/// `$XDG_CACHE_HOME`, else `~/.cache` (the XDG base directory rules).
fn user_cache_dir() -> Option<PathBuf> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".cache")))
}
