//! The calls the host makes into a channel plugin, each in a fresh sandbox
//! (blocking: call them from a blocking thread), with what comes back bounded:
//! the plugin's output cap, `MAX_REQUESTS`, and `MAX_PLUGIN_TEXT` for its texts.

use serde_json::Value;

use super::sandbox::nudge::channel::types as wit;
use super::{
    CallStats, MAX_PLUGIN_TEXT, MAX_REQUESTS, OutboundRequest, Plugin, PluginError, PluginHost, ProviderVerdict,
    RenderedMessage,
};

impl PluginHost {
    /// Renders one message in a fresh sandbox. Blocking: call from a blocking thread.
    pub fn render(
        &self,
        channel: &str,
        template: &[(String, String)],
        context: &Value,
    ) -> Result<(RenderedMessage, CallStats), PluginError> {
        let plugin = self.for_channel(channel)?;
        counted(plugin, || {
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
        })
    }

    /// Asks the channel's plugin for the HTTP requests that deliver `message`.
    pub(crate) fn build_request(
        &self,
        channel: &str,
        message: &RenderedMessage,
        recipient: &str,
    ) -> Result<Vec<OutboundRequest>, PluginError> {
        let plugin = self.for_channel(channel)?;
        counted(plugin, || {
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
        })
    }

    /// Asks the channel's plugin what a provider's answer means.
    pub(crate) fn interpret_response(
        &self,
        channel: &str,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<ProviderVerdict, PluginError> {
        let plugin = self.for_channel(channel)?;
        let response = wit::HttpResponse { status, headers, body };
        let (outcome, _) = counted(plugin, || {
            self.runtime
                .call(plugin, |store, p| p.call_interpret_response(store, &response))
        })?;
        Ok(match outcome {
            wit::DeliveryOutcome::Sent(s) => ProviderVerdict::Sent(bounded(s)),
            wit::DeliveryOutcome::RetryLater(s) => ProviderVerdict::RetryLater(bounded(s)),
            wit::DeliveryOutcome::Failed(s) => ProviderVerdict::Failed(bounded(s)),
        })
    }
}

/// Runs a call of `plugin`, counting its failure by plugin and reason
/// (`nudge_plugin_failures_total`).
fn counted<T>(plugin: &Plugin, call: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    let result = call();
    if let Err(e) = &result {
        crate::metrics::get().plugin_failure(&plugin.manifest.id, e.code());
    }
    result
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
