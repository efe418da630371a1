//! `POST /replies`: a contact answered, e.g. by a mail provider's inbound
//! webhook. A reply stops the runs that exit on `replied`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{ApiResult, AppState, JsonObject};
use crate::app::NotFound;
use crate::store::{self, Invalid};

/// A reply from a contact, e.g. from a mail provider's inbound webhook: by the
/// message it answers (its Message-ID, which names the contact), or by the
/// contact's email (it then counts for the latest message delivered to them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplyInput {
    message_id: Option<String>,
    email: Option<String>,
}

pub(super) async fn add_reply(State(s): State<AppState>, JsonObject(body): JsonObject<ReplyInput>) -> ApiResult {
    let input = body;
    let now = s.clock.now_ms();
    let input = Arc::new(input);
    s.write(move |conn| {
        let input = input.clone();
        Box::pin(async move {
            let (contact_id, message) = match (&input.message_id, &input.email) {
                (Some(message_id), _) => {
                    // `<key@domain>` as in the headers, or the bare key.
                    let key = message_id.trim().trim_start_matches('<').trim_end_matches('>');
                    let key = key.rsplit_once('@').map_or(key, |(k, _)| k);
                    let message = store::message_by_key(conn, key)
                        .await?
                        .ok_or_else(|| NotFound(format!("no message `{message_id}` was sent to a contact")))?;
                    (message.contact_id, Some(message))
                }
                (None, Some(email)) => {
                    let contact = store::contact_by_email(conn, email)
                        .await?
                        .ok_or_else(|| NotFound(format!("no contact with email `{email}`")))?;
                    (contact.id, store::last_message_to(conn, contact.id).await?)
                }
                (None, None) => {
                    return Err(Invalid(
                        "give `message_id` (the Message-ID replied to) or `email` (the contact's)".into(),
                    )
                    .into());
                }
            };
            let event_id = store::record_reply(conn, contact_id, message.as_ref(), now).await?;
            let body = json!({
                "contact_id": contact_id,
                "message_id": message.map(|m| m.message_id),
                "event_id": event_id,
            });
            Ok((StatusCode::CREATED, body))
        })
    })
    .await
}
