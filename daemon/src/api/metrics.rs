//! `GET /metrics` (Prometheus' text exposition) and the counting of every API
//! request by the route it matched.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiResult, AppState};
use crate::metrics::{self, QueueGauges};
use crate::store;

/// The exposition: the process's counters, and the database's gauges read
/// from their indexes on a reader connection (never the writer's turn).
pub(super) async fn metrics(State(s): State<AppState>) -> ApiResult {
    let counts = {
        let mut conn = s.store.pool.acquire().await.map_err(anyhow::Error::from)?;
        store::queue_counts(&mut conn).await?
    };
    let now = s.clock.now_ms();
    let gauges = QueueGauges {
        runs: counts.runs.iter().map(|(state, n)| (state.as_str(), *n)).collect(),
        outbox: counts.outbox.iter().map(|(status, n)| (status.as_str(), *n)).collect(),
        oldest_queued_secs: counts
            .oldest_pending_at
            .map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0),
    };
    let m = metrics::get();
    let delivery = &s.delivery;
    m.set_relay_open(
        delivery
            .relay
            .as_ref()
            .is_some_and(|relay| relay.view()["state"] == "open"),
    );
    m.set_throttled_domains(delivery.pacing.view().as_array().map_or(0, Vec::len));
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], m.render(&gauges)).into_response())
}

/// Counts a request by its route's template (`/contacts/{contact}`, never the
/// path a client sent), method and status, with the time it took to answer.
pub(super) async fn count_request(request: Request, next: Next) -> Response {
    let began = tokio::time::Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = response.status().as_u16();
    metrics::get().api_request(route, method, status, began.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard ones, any other as `other` (a client
/// may send any token as a method, and a label must stay bounded).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
