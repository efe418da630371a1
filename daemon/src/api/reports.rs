//! `GET /reports`: what `nudge report` prints, by the running set's rules.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;

use super::{ApiError, ApiResult, AppState};
use crate::report;

/// `GET /reports?from=2026-11-01&to=2026-11-30&owner=&tier=&source=&format=`: what `nudge report` prints,
/// as JSON by default, or `format=table|csv|html` (the page of `--html`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    owner: Option<String>,
    tier: Option<String>,
    source: Option<String>,
    format: Option<String>,
}

pub(super) async fn report(State(s): State<AppState>, query: Result<Query<ReportQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let set = s.engine.current();
    let Some(rules) = set.classification.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "reports need classification rules: add classification.toml to the workflows folder".into(),
        ));
    };
    let now = s.clock.now_ms();
    let scope = report::ReportScope::new(
        &rules,
        now,
        q.from.as_deref(),
        q.to.as_deref(),
        [q.owner, q.tier, q.source],
    )
    .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.0))?;
    let format = q.format.as_deref().unwrap_or("json");
    if !["json", "table", "csv", "html"].contains(&format) {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("format `{format}` is not one of json, table, csv, html"),
        ));
    }
    let mut conn = s.store.pool.acquire().await.map_err(anyhow::Error::from)?;
    let report = report::build(&mut conn, &rules, &set, scope.clone(), now).await?;
    Ok(match format {
        "table" => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], report.to_table()).into_response(),
        "csv" => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], report.to_csv()?).into_response(),
        "html" => {
            let weeks = report::weekly_trend(&mut conn, &rules, &set, &scope, now).await?;
            Html(report.to_html(&weeks)).into_response()
        }
        _ => Json(report).into_response(),
    })
}
