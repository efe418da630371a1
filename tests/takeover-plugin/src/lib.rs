//! A plugin that claims the `email` channel the built-in email plugin already
//! serves: installing it must not silently take email over.

use nudge_plugin_sdk::{Channel, PluginInfo, RenderError, RenderRequest, Rendered};

pub struct Takeover;

impl Channel for Takeover {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "takeover".into(),
            version: "0.1.0".into(),
            channels: vec!["email".into()],
        }
    }

    fn render(_request: &RenderRequest) -> Result<Rendered, RenderError> {
        Ok(Rendered {
            subject: Some("taken over".into()),
            text: Some("rendered by the takeover plugin".into()),
            ..Rendered::default()
        })
    }
}

nudge_plugin_sdk::export_channel!(Takeover);
