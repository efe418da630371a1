//! `plugin.toml`: what a plugin is, which interface it was built for, what it
//! may do (outbound hosts) and within which limits, and its config schema.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The interface versions this host serves: 0.2.x.
pub(crate) const INTERFACE_MAJOR_MINOR: (u64, u64) = (0, 2);
pub(crate) const SUPPORTED_INTERFACES: &str = "0.2.0..0.2.x";

/// What the host allows at most, whatever a manifest asks for.
pub(crate) const MAX_DEADLINE_MS: u64 = 5_000;
pub(crate) const MAX_FUEL: u64 = 20_000_000_000;
pub(crate) const MAX_MEMORY_MB: u64 = 256;
pub(crate) const MAX_OUTPUT_KB: u64 = 4_096;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub(crate) id: String,
    pub(crate) version: String,
    /// The WIT package version the plugin was built against.
    pub(crate) interface: String,
    /// For the people who read plugin.toml; the host accepts it and does not use it.
    #[serde(default, rename = "description")]
    _description: String,
    #[serde(default)]
    pub(crate) capabilities: Capabilities,
    #[serde(default)]
    pub(crate) limits: Limits,
    /// The plugin's `[plugin.<id>]` keys in nudge.toml.
    #[serde(default)]
    pub(crate) config: BTreeMap<String, ConfigField>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Capabilities {
    /// Hosts (`name` or `name:port`) the plugin's HTTP requests may go to.
    #[serde(default)]
    pub(crate) http_hosts: Vec<String>,
    /// Which contact field a `send` step delivers to.
    #[serde(default)]
    pub(crate) recipient: Recipient,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Recipient {
    #[default]
    Email,
    Phone,
    /// Channels that post to a fixed place (a group robot): no contact address needed.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Limits {
    /// Wall time for one call into the plugin.
    pub(crate) deadline_ms: u64,
    /// Instructions for one call.
    pub(crate) fuel: u64,
    /// Linear memory of one instance.
    pub(crate) memory_mb: u64,
    /// Size of what one call may return.
    pub(crate) output_kb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: 100,
            fuel: 1_000_000_000,
            memory_mb: 32,
            output_kb: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigField {
    #[serde(rename = "type")]
    pub(crate) kind: ConfigType,
    #[serde(default)]
    pub(crate) required: bool,
    /// Should be given as `${secret:NAME}`, never in clear.
    #[serde(default)]
    pub(crate) secret: bool,
    #[serde(default)]
    pub(crate) description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ConfigType {
    String,
    Integer,
    Boolean,
    List,
    Table,
}

impl Manifest {
    pub(crate) fn parse(text: &str, origin: &str) -> anyhow::Result<Manifest> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {}", e.message()))?;
        manifest.check_interface(&manifest.interface)?;
        let l = &manifest.limits;
        for (name, value, max) in [
            ("deadline_ms", l.deadline_ms, MAX_DEADLINE_MS),
            ("fuel", l.fuel, MAX_FUEL),
            ("memory_mb", l.memory_mb, MAX_MEMORY_MB),
            ("output_kb", l.output_kb, MAX_OUTPUT_KB),
        ] {
            if value == 0 || value > max {
                anyhow::bail!("{origin}: limits.{name} = {value} is outside what the host allows (1..={max})");
            }
        }
        Ok(manifest)
    }

    /// Refuses an interface version this host cannot serve.
    pub(crate) fn check_interface(&self, version: &str) -> anyhow::Result<()> {
        let mut parts = version.split('.').map(|p| p.parse::<u64>());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor)), Some(Ok(_))) if (major, minor) == INTERFACE_MAJOR_MINOR => Ok(()),
            _ => anyhow::bail!(
                "plugin {} targets interface {version}, host supports {SUPPORTED_INTERFACES}; rebuild it with a matching nudge-plugin-sdk",
                self.id
            ),
        }
    }

    /// Checks an admin's `[plugin.<id>]` table against the schema.
    pub(crate) fn check_config(&self, config: &Value) -> Result<(), String> {
        let empty = serde_json::Map::new();
        let table = config.as_object().unwrap_or(&empty);
        for key in table.keys() {
            if !self.config.contains_key(key) {
                let known: Vec<&str> = self.config.keys().map(String::as_str).collect();
                return Err(format!(
                    "[plugin.{}] has unknown key `{key}`; known keys: {}",
                    self.id,
                    known.join(", ")
                ));
            }
        }
        for (key, field) in &self.config {
            match table.get(key) {
                None if field.required => {
                    return Err(format!("[plugin.{}] needs `{key}`: {}", self.id, field.description));
                }
                None => {}
                Some(value) => {
                    let ok = match field.kind {
                        ConfigType::String => value.is_string(),
                        ConfigType::Integer => value.is_i64() || value.is_u64(),
                        ConfigType::Boolean => value.is_boolean(),
                        ConfigType::List => value.is_array(),
                        ConfigType::Table => value.is_object(),
                    };
                    if !ok {
                        return Err(format!("[plugin.{}] `{key}` must be a {:?}", self.id, field.kind).to_lowercase());
                    }
                    if field.secret && value.as_str().is_some_and(|s| !s.contains("${secret:")) {
                        return Err(format!(
                            "[plugin.{}] `{key}` is a secret: write it as \"${{secret:ENV_VAR_NAME}}\" and put the value in that environment variable",
                            self.id
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BASE: &str = "id = \"x\"\nversion = \"0.1.0\"\ninterface = \"0.2.0\"\n";

    #[test]
    fn interface_outside_the_supported_range_is_refused() {
        let text = BASE.replace("0.2.0", "0.3.1");
        let err = Manifest::parse(&text, "x/plugin.toml").unwrap_err().to_string();
        assert!(
            err.contains("targets interface 0.3.1, host supports 0.2.0..0.2.x"),
            "{err}"
        );
        assert!(Manifest::parse(&BASE.replace("0.2.0", "0.2.7"), "m").is_ok());
    }

    #[test]
    fn limits_beyond_the_host_maximum_are_refused() {
        let err = Manifest::parse(&format!("{BASE}[limits]\nmemory_mb = 4096\n"), "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.memory_mb = 4096"), "{err}");
    }

    #[test]
    fn config_is_checked_against_the_schema() {
        let m = Manifest::parse(
            &format!("{BASE}[config]\nkey = {{ type = \"string\", required = true, secret = true }}\nn = {{ type = \"integer\" }}\n"),
            "m",
        )
        .unwrap();
        assert!(m.check_config(&json!({"key": "${secret:K}", "n": 3})).is_ok());
        assert!(m.check_config(&json!({})).unwrap_err().contains("needs `key`"));
        assert!(
            m.check_config(&json!({"key": "hunter2"}))
                .unwrap_err()
                .contains("secret")
        );
        assert!(
            m.check_config(&json!({"key": "${secret:K}", "n": "3"}))
                .unwrap_err()
                .contains("integer")
        );
        assert!(
            m.check_config(&json!({"key": "${secret:K}", "nn": 1}))
                .unwrap_err()
                .contains("unknown key `nn`")
        );
    }
}
