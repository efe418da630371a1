//! `GET /runs` and `GET /runs/{id}`: what `nudge runs --json` and
//! `nudge runs show ID --json` print.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{ApiError, ApiResult, AppState};
use crate::app::{self, RunQuery};
use crate::store;

/// `GET /runs?contact=&workflow=&status=&since=&before=&limit=`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunsQuery {
    contact: Option<String>,
    workflow: Option<String>,
    status: Option<String>,
    since: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

pub(super) async fn list(State(s): State<AppState>, query: Result<Query<RunsQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let status = match &q.status {
        Some(text) => Some(store::parse_field("status", text).map_err(anyhow::Error::from)?),
        None => None,
    };
    let query = RunQuery {
        contact: q.contact,
        workflow: q.workflow,
        status,
        since: q.since,
        before: q.before,
        limit: q.limit,
    };
    let mut conn = s.store.pool.acquire().await.map_err(anyhow::Error::from)?;
    let page = app::list_runs(&mut conn, query, s.clock.now_ms()).await?;
    Ok(Json(page).into_response())
}

pub(super) async fn show(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    let mut conn = s.store.pool.acquire().await.map_err(anyhow::Error::from)?;
    Ok(Json(app::run_detail(&mut conn, id).await?).into_response())
}
