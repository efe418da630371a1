//! `/contacts`: add one, show one, and what happens to it (a stage change, a
//! follow-up, an inquiry). Each write is an `app` use case in a group commit.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::{ApiResult, AppState, JsonObject};
use crate::app::{self, FollowUpInput, FollowUpLogged, NewInquiry, Repeats};
use crate::store::{ContactEdit, NewContact};

/// Follow-ups and orders shown with a contact, newest first.
const LATEST_SHOWN: i64 = 20;

/// `POST /contacts`: 201 with the new id.
pub(super) async fn add_contact(State(s): State<AppState>, JsonObject(new): JsonObject<NewContact>) -> ApiResult {
    let now = s.clock.now_ms();
    let new = Arc::new(new);
    s.write(move |conn| {
        let new = new.clone();
        Box::pin(async move {
            let id = app::add_contact(conn, &new, now).await?;
            Ok((StatusCode::CREATED, json!({ "id": id })))
        })
    })
    .await
}

/// `PATCH /contacts/{contact}`: `{"salutation", "locale"}`, each optional; 200 with the id.
pub(super) async fn edit_contact(
    State(s): State<AppState>,
    Path(reference): Path<String>,
    JsonObject(edit): JsonObject<ContactEdit>,
) -> ApiResult {
    let now = s.clock.now_ms();
    let (reference, edit) = (Arc::new(reference), Arc::new(edit));
    s.write(move |conn| {
        let (reference, edit) = (reference.clone(), edit.clone());
        Box::pin(async move {
            let id = app::edit_contact(conn, &reference, &edit, "api", now).await?;
            Ok((StatusCode::OK, json!({ "id": id })))
        })
    })
    .await
}

/// `GET /contacts/{contact}`: the contact with its latest follow-ups, orders and history.
pub(super) async fn show_contact(State(s): State<AppState>, Path(reference): Path<String>) -> ApiResult {
    let mut conn = s.store.pool.acquire().await.map_err(anyhow::Error::from)?;
    let card = app::contact_card(&mut conn, &reference, LATEST_SHOWN).await?;
    Ok(Json(card).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StageChange {
    stage: String,
}

/// Answers 202 with the `stage_changed` event, or 200 when the stage was already that.
pub(super) async fn change_stage(
    State(s): State<AppState>,
    Path(reference): Path<String>,
    JsonObject(change): JsonObject<StageChange>,
) -> ApiResult {
    let now = s.clock.now_ms();
    let (reference, change) = (Arc::new(reference), Arc::new(change));
    s.write(move |conn| {
        let (reference, change) = (reference.clone(), change.clone());
        Box::pin(async move {
            let changed = app::change_stage(conn, &reference, &change.stage, "api", now).await?;
            let event = changed.event_id;
            let status = if event.is_some() {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok((status, json!({ "event_id": event, "changed": event.is_some() })))
        })
    })
    .await
}

/// Logs a follow-up; the customer is re-classified by the running set's rules.
pub(super) async fn log_follow_up(
    State(s): State<AppState>,
    Path(reference): Path<String>,
    JsonObject(input): JsonObject<FollowUpInput>,
) -> ApiResult {
    let now = s.clock.now_ms();
    let rules = s.engine.current().classification.clone();
    let (reference, input) = (Arc::new(reference), Arc::new(input));
    s.write(move |conn| {
        let (reference, input, rules) = (reference.clone(), input.clone(), rules.clone());
        Box::pin(async move {
            let input = FollowUpInput::clone(&input);
            let logged = app::log_follow_up(conn, rules.as_deref(), &reference, input, Repeats::Log, now).await?;
            Ok(match logged {
                FollowUpLogged::Added { id, .. } => (StatusCode::CREATED, json!({ "id": id })),
                FollowUpLogged::AlreadyPresent => (StatusCode::OK, json!({ "id": null })),
            })
        })
    })
    .await
}

/// `POST /contacts/{contact}/inquiries`: 202, the response SLA starts.
pub(super) async fn add_inquiry(
    State(s): State<AppState>,
    Path(reference): Path<String>,
    JsonObject(inquiry): JsonObject<NewInquiry>,
) -> ApiResult {
    let now = s.clock.now_ms();
    let (reference, inquiry) = (Arc::new(reference), Arc::new(inquiry));
    s.write(move |conn| {
        let (reference, inquiry) = (reference.clone(), inquiry.clone());
        Box::pin(async move {
            let (_, id) = app::add_inquiry(conn, &reference, &inquiry, now).await?;
            Ok((StatusCode::ACCEPTED, json!({ "inquiry_id": id })))
        })
    })
    .await
}
