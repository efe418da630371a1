//! `/unsubscribe/{token}`: the links of RFC 2369 / RFC 8058 in every marketing
//! email. No bearer token: recipients follow them from their mail, and the
//! signed token in the path is the proof.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tracing::info;

use super::{ApiError, AppState};
use crate::store;

/// The landing page of an unsubscribe link. A GET changes nothing (mail scanners
/// prefetch links); the button POSTs like a mail client's one-click button.
pub(super) async fn unsubscribe_page(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    if s.unsubscribe.verify(&token).is_none() {
        return forged_link();
    }
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>\
         <form method=post action=\"/unsubscribe/{token}\">\
         <input type=hidden name=List-Unsubscribe value=One-Click>\
         <p>Stop all emails from us to this address?</p><button>Unsubscribe</button></form>"
    ))
    .into_response()
}

/// RFC 8058 one-click unsubscribe: suppresses the contact's addresses at once
/// and withdraws consent. Answers 200 without a redirect; idempotent.
pub(super) async fn unsubscribe_one_click(
    State(s): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let Some(contact_id) = s.unsubscribe.verify(&token) else {
        return Ok(forged_link());
    };
    let now = s.clock.now_ms();
    let mut tx = s.store.write().await?;
    let Some(contact) = store::contact_by_id(&mut tx, contact_id).await? else {
        return Ok(forged_link());
    };
    let addresses = [&contact.email, &contact.phone].into_iter().flatten();
    for address in addresses.filter(|a| !a.trim().is_empty()) {
        store::suppress(
            &mut tx,
            address,
            "*",
            store::SuppressionReason::Unsubscribed,
            "one-click unsubscribe",
            now,
        )
        .await?;
    }
    store::withdraw_consent(&mut tx, contact.id, now).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    info!(contact_id, "unsubscribed");
    s.engine_wake.notify_one();
    Ok(
        Html("<!doctype html><meta charset=utf-8><title>Unsubscribed</title><p>You are unsubscribed.</p>")
            .into_response(),
    )
}

fn forged_link() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><meta charset=utf-8><p>This unsubscribe link is not valid.</p>"),
    )
        .into_response()
}
