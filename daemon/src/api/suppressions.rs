//! `POST /bounces` and `POST /suppressions`: addresses that get nothing more,
//! reported by a mail provider (bounces, complaints) or added by hand.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, AppState, JsonObject};
use crate::app::{self, NewSuppression};
use crate::store::{self, BounceKind};

/// A bounce or complaint reported by a mail provider's webhook or a feedback loop.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BounceInput {
    address: String,
    kind: String,
    #[serde(default = "any_channel")]
    channel: String,
    #[serde(default)]
    detail: String,
}

fn any_channel() -> String {
    "email".into()
}

pub(super) async fn report_bounce(State(s): State<AppState>, JsonObject(body): JsonObject<BounceInput>) -> ApiResult {
    let input = body;
    let kind = store::parse_field::<BounceKind>("kind", &input.kind)
        .map_err(|invalid| ApiError(StatusCode::UNPROCESSABLE_ENTITY, invalid.0))?;
    let mut tx = s.store.write().await?;
    let bounce = store::Bounce {
        address: &input.address,
        channel: &input.channel,
        kind,
        detail: &input.detail,
        outbox_id: None,
        report_id: None,
    };
    let suppressed = store::record_bounce(&mut tx, &bounce, s.suppression, s.clock.now_ms()).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok((StatusCode::CREATED, Json(json!({ "suppressed": suppressed }))).into_response())
}

pub(super) async fn add_suppression(
    State(s): State<AppState>,
    JsonObject(new): JsonObject<NewSuppression>,
) -> ApiResult {
    let mut tx = s.store.write().await?;
    let added = app::suppress(&mut tx, &new, "api", s.clock.now_ms()).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok((StatusCode::CREATED, Json(json!({ "added": added }))).into_response())
}
