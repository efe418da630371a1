//! What a nudge channel plugin author depends on.
//!
//! The WIT contract lives in `wit/channel.wit`; this crate generates its Rust
//! bindings once so that every plugin uses the same ones. A plugin implements
//! [`Guest`] and registers it with [`export!`]:
//!
//! ```ignore
//! struct MyChannel;
//! impl nudge_plugin_sdk::Guest for MyChannel { /* info, render */ }
//! nudge_plugin_sdk::export!(MyChannel);
//! ```
//!
//! The plugin's logic is plain Rust: call your `Guest` methods directly in
//! native unit tests; build with `--target wasm32-wasip2` for the daemon.

wit_bindgen::generate!({
    path: "wit",
    world: "channel",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "nudge_plugin_sdk",
});

pub use exports::nudge::channel::plugin::Guest;
pub use nudge::channel::types::{PluginInfo, RenderError, RenderRequest, Rendered};

/// The interface version this SDK builds plugins for (the WIT package version).
pub const INTERFACE_VERSION: &str = "0.1.0";

impl RenderRequest {
    /// The value of one template field, if the template has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.template
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl RenderError {
    /// An error about one template field.
    pub fn in_field(field: &str, message: impl Into<String>) -> Self {
        RenderError {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}
