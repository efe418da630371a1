//! `POST /orders`: an order from the shop or ERP, recorded by the running set's
//! classification rules; sending it again changes nothing.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::{ApiError, ApiResult, AppState, JsonObject};
use crate::app::{self, NewOrder};
use crate::insight::OrderOutcome;

/// Records an order (201), or finds it recorded already (200, nothing changed).
pub(super) async fn add_order(State(s): State<AppState>, JsonObject(order): JsonObject<NewOrder>) -> ApiResult {
    let Some(rules) = s.engine.current().classification.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "orders need classification rules: add classification.toml to the workflows folder".into(),
        ));
    };
    let mut tx = s.store.write().await?;
    let outcome = app::record_order(&mut tx, &rules, &order, s.clock.now_ms()).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(match outcome {
        OrderOutcome::Added { order_id, contact_id } => {
            s.engine_wake.notify_one();
            let body = json!({ "id": order_id, "contact_id": contact_id, "created": true });
            (StatusCode::CREATED, Json(body)).into_response()
        }
        OrderOutcome::AlreadyPresent { order_id } => {
            (StatusCode::OK, Json(json!({ "id": order_id, "created": false }))).into_response()
        }
    })
}
