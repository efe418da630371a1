//! Compiled components on disk (`.cwasm`), keyed by the wasm's content hash and
//! the engine's compatibility hash, so a warm start does not recompile.
//!
//! Deserializing is `unsafe` in wasmtime because a crafted file could run
//! arbitrary code: only files nudge wrote into a cache folder of its own are
//! ever deserialized (the installation's `plugin_cache`, or, for `nudge plugin
//! test` without a nudge.toml, the user's `~/.cache/nudge/plugin-cache`, which
//! only someone who can already run code as that user can write), never a
//! file that came with a plugin.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The cache file for `wasm` under this engine's configuration.
fn entry(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let content = Sha256::digest(wasm);
    dir.join(format!("{:x}-{:016x}.cwasm", content, engine_hash.finish()))
}

/// Compiles `wasm`, or loads the compiled form this daemon cached earlier.
pub(crate) fn compile(engine: &Engine, wasm: &[u8], dir: Option<&Path>) -> anyhow::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, wasm).map_err(anyhow::Error::from);
    };
    let path = entry(dir, engine, wasm);
    if path.exists() {
        // SAFETY: the file is in the daemon's own cache folder, named by the hash of
        // the wasm it was compiled from and of this engine's settings, and was written
        // by `precompile_component` below (atomically, via rename).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => tracing::warn!("ignoring unusable cache entry {}: {e}", path.display()),
        }
    }
    let compiled = engine.precompile_component(wasm).map_err(anyhow::Error::from)?;
    std::fs::create_dir_all(dir).with_context(|| format!("create plugin cache {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &compiled).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
    // SAFETY: as above; these are the bytes wasmtime just produced for this engine.
    unsafe { Component::deserialize(engine, &compiled) }.map_err(anyhow::Error::from)
}
