//! A message on a plugin's channel: the plugin describes the HTTP requests
//! that deliver it, `http.rs` sends them in order, and the plugin reads each
//! answer (some providers report errors in a 200 body). The plugin calls run
//! on blocking threads: each is a wasm sandbox with a deadline of its own.

use std::sync::Arc;

use super::{Delivery, http};
use crate::plugins::{OutboundRequest, PluginHost, ProviderVerdict, RenderedMessage};
use crate::store::{OutboxRow, Outcome};

impl Delivery {
    /// Delivers through the channel plugin's HTTP requests. Parts the provider
    /// accepted on an earlier attempt are not sent again; returns the outcome
    /// and the parts accepted by now.
    ///
    /// A part the provider answered with 2xx counts as accepted even when the
    /// plugin cannot read the answer (it traps or runs past its deadline): the
    /// message is then "unknown", never retried as if it had not gone out.
    pub(super) async fn send_http(&self, channel: &str, row: &OutboxRow) -> (Outcome, i64) {
        let mut done = row.parts_done;
        let host = self.plugins.get();
        let plugin = match host.for_channel(channel) {
            Ok(p) => p.clone(),
            Err(e) => {
                return (
                    Outcome::Transient(format!("{e}; retried once the plugin is installed")),
                    done,
                );
            }
        };
        let requests = match build_requests(&host, channel, row).await {
            Ok(requests) => requests,
            Err(outcome) => return (outcome, done),
        };
        let parts = requests.len();
        let mut unread = None;
        for request in requests.into_iter().skip(done as usize) {
            let response = match http::send(&plugin, &self.http, self.api_bind, request).await {
                Ok(r) => r,
                Err(outcome) => return (outcome, done),
            };
            let status = response.status;
            match interpret(&host, channel, response).await {
                Ok(ProviderVerdict::Sent(_)) => done += 1,
                Ok(ProviderVerdict::RetryLater(why)) => return (Outcome::Transient(why), done),
                Ok(ProviderVerdict::Failed(why)) => return (Outcome::Permanent(why), done),
                Err(e) if (200..300).contains(&status) => {
                    done += 1;
                    unread.get_or_insert(format!(
                        "the provider answered {status} to part {done} of {parts}, but the plugin could not read the answer: {e}"
                    ));
                }
                Err(e) => {
                    return (
                        Outcome::Transient(format!("plugin could not read the answer: {e}")),
                        done,
                    );
                }
            }
        }
        match unread {
            Some(why) => (Outcome::Unknown(why), done),
            None => (Outcome::Sent, done),
        }
    }
}

/// The requests the plugin describes for the row's message: at least one, or
/// the outcome of the attempt.
async fn build_requests(
    host: &Arc<PluginHost>,
    channel: &str,
    row: &OutboxRow,
) -> Result<Vec<OutboundRequest>, Outcome> {
    let m = &row.message.0;
    let message = RenderedMessage {
        subject: Some(m.subject.clone()).filter(|s| !s.is_empty()),
        text: m.text.clone(),
        html: m.html.clone(),
        extra: m.extra.clone(),
    };
    let (channel, recipient, host) = (channel.to_string(), row.recipient.clone(), host.clone());
    let requests = tokio::task::spawn_blocking(move || host.build_request(&channel, &message, &recipient)).await;
    let requests = match requests {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(Outcome::Permanent(format!("plugin could not build the request: {e}"))),
        Err(e) => return Err(Outcome::Transient(format!("plugin call: {e}"))),
    };
    if requests.is_empty() {
        return Err(Outcome::Permanent("the plugin built no request".into()));
    }
    Ok(requests)
}

/// What the plugin reads in the provider's answer, or why it could not.
async fn interpret(host: &Arc<PluginHost>, channel: &str, response: http::Response) -> Result<ProviderVerdict, String> {
    let (channel, host) = (channel.to_string(), host.clone());
    tokio::task::spawn_blocking(move || {
        host.interpret_response(&channel, response.status, response.headers, response.body)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|v| v.map_err(|e| e.to_string()))
}
