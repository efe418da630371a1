//! `/t/o/{token}` and `/t/c/{token}`: opens and clicks of tracked marketing
//! email, recorded in `engagement`. An unverified token records nothing.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::{ApiResult, AppState};
use crate::store::{self, Engagement};
use crate::tracking;

/// The open pixel of a tracked message: records an open and answers a 1x1 GIF.
pub(super) async fn track_open(State(s): State<AppState>, Path(token): Path<String>) -> ApiResult {
    let Some(key) = tracking::verify_open(&s.unsubscribe, &token) else {
        return Ok(untracked());
    };
    record_engagement(&s, key, Engagement::Opened).await?;
    let headers = [
        (header::CONTENT_TYPE, "image/gif"),
        // Each open should reach the daemon, not a cache.
        (header::CACHE_CONTROL, "no-store, max-age=0"),
    ];
    Ok((headers, tracking::PIXEL_GIF).into_response())
}

/// A tracked link: records a click and redirects to the URL the message had,
/// which the token carries under its MAC: never anywhere else.
pub(super) async fn track_click(State(s): State<AppState>, Path(token): Path<String>) -> ApiResult {
    let Some((key, url)) = tracking::verify_click(&s.unsubscribe, &token) else {
        return Ok(untracked());
    };
    record_engagement(&s, key, Engagement::Clicked(url.clone())).await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, tracking::location(&url)),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
    )
        .into_response())
}

/// Records an open or a click of the message `key`, if it is still kept: the
/// retention pass prunes old delivered messages, and a link in one of them
/// must still lead where it did (the token's MAC proves we sealed that URL).
async fn record_engagement(s: &AppState, key: String, what: Engagement) -> anyhow::Result<()> {
    let now = s.clock.now_ms();
    let (key, what) = (Arc::new(key), Arc::new(what));
    s.writer
        .write(move |conn| {
            let (key, what) = (key.clone(), what.clone());
            Box::pin(async move {
                let Some(message) = store::message_by_key(conn, &key).await? else {
                    return Ok((StatusCode::NOT_FOUND, json!({})));
                };
                store::record_engagement(conn, &message, &what, now).await?;
                Ok((StatusCode::OK, json!({})))
            })
        })
        .await?;
    Ok(())
}

fn untracked() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><meta charset=utf-8><p>This link is not valid.</p>"),
    )
        .into_response()
}
