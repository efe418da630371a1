//! `GET /contacts/{contact}/explain?workflow=W&at=TIME`: what `nudge explain
//! --json` prints (`app::explain`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{ApiError, ApiResult, AppState};
use crate::app::explain::{self, Question};
use crate::clock::parse_time;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExplainQuery {
    workflow: Option<String>,
    /// RFC 3339, or a local date-time in UTC; default: now.
    at: Option<String>,
}

pub(super) async fn explain(
    State(s): State<AppState>,
    Path(reference): Path<String>,
    query: Result<Query<ExplainQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let now = s.clock.now_ms();
    let at = match q.at.as_deref() {
        Some(text) => {
            parse_time(text, now, "UTC").map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("at: {e}")))?
        }
        None => now,
    };
    let mut conn = s.store.pool.acquire().await.map_err(anyhow::Error::from)?;
    let question = Question {
        contact: &reference,
        workflow: q.workflow.as_deref(),
        at,
    };
    let explanation = explain::explain(&mut conn, &question).await?;
    Ok(Json(explanation).into_response())
}
