//! The HTTP API (axum): contacts, stage changes, follow-ups, inquiries and
//! orders come in here and become events in the inbox. Bad input gets a 4xx with
//! a message. This file holds what every route shares (state, auth, errors, the
//! group commit of writes) and the `/stage-changes` intake, which commits its
//! own way; the other routes live in one file per resource and call `app`.

mod contacts;
mod engagement;
mod explain;
mod group_commit;
mod metrics;
mod orders;
mod replies;
mod reports;
mod runs;
mod suppressions;
mod unsubscribe;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::Admission;
use crate::app::NotFound;
use crate::clock::Clock;
use crate::config::Config;
use crate::console;
use crate::delivery::Shown;
use crate::engine::Engine;
use crate::store::{self, Invalid, Store, SuppressionRules};
use crate::unsubscribe::Unsubscribe;
use group_commit::{GroupCommit, StageIntake};

/// What a write route answers: a status and a JSON body.
type Answer = (StatusCode, serde_json::Value);

#[derive(Clone)]
struct AppState {
    store: Store,
    /// Writes of concurrent requests share transactions (and fsyncs); each is
    /// answered once durable.
    writer: GroupCommit<Answer>,
    /// Stage changes by email, committed in groups like `writer`'s but set-based.
    stage_intake: StageIntake,
    /// Holds a write while earlier writes' messages are unsent.
    admission: Arc<Admission>,
    clock: Clock,
    engine_wake: Arc<Notify>,
    /// The running workflow set's classification rules are read from here.
    engine: Arc<Engine>,
    token: Option<Arc<str>>,
    unsubscribe: Unsubscribe,
    suppression: SuppressionRules,
    /// The SMTP relay's breaker, the domains' paces and the warm-up plan, shown by `/health`.
    delivery: Shown,
}

/// An error answered to the client: a status and a message it can act on.
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if let Some(invalid) = e.downcast_ref::<Invalid>() {
            return ApiError(StatusCode::UNPROCESSABLE_ENTITY, invalid.0.clone());
        }
        if let Some(missing) = e.downcast_ref::<NotFound>() {
            return ApiError(StatusCode::NOT_FOUND, missing.0.clone());
        }
        warn!("api: {e:#}");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the daemon's log".into(),
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError(e.status(), e.body_text())
    }
}

type ApiResult = Result<Response, ApiError>;

/// A request body that is a JSON object. serde reads a struct from a JSON array
/// as well (`[]` would be an inquiry with every field left out), so any other
/// JSON value is refused before the body is read as the route's struct.
struct JsonObject<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts.clone(), body);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError(e.status(), e.body_text()))?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|&b| b != b'{') {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object, e.g. {\"field\": \"value\"}".into(),
            ));
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(JsonObject(value))
    }
}

/// Binds the API and returns the task that serves it until `cancel`.
pub(crate) async fn serve(
    config: &Config,
    store: Store,
    clock: Clock,
    engine_wake: Arc<Notify>,
    engine: Arc<Engine>,
    delivery: Shown,
    cancel: CancellationToken,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let admission = engine.admission.clone();
    let token = config.api_token();
    if token.is_none() && !config.api.bind.ip().is_loopback() {
        anyhow::bail!(
            "the API binds {} without a token: set ${} or bind to 127.0.0.1",
            config.api.bind,
            config.api.token_env
        );
    }
    let state = AppState {
        writer: GroupCommit::start(store.clone(), admission.clone()),
        stage_intake: StageIntake::start(
            store.clone(),
            admission.clone(),
            clock.clone(),
            engine.clone(),
            engine_wake.clone(),
        ),
        admission,
        store,
        clock,
        engine_wake,
        // The engine's: one key signs the links it writes and checks those that come back.
        unsubscribe: engine.unsubscribe.clone(),
        engine,
        token: token.map(Into::into),
        suppression: config.suppression.rules(),
        delivery,
    };
    let console = console::ConsoleState::new(
        state.store.clone(),
        state.clock.clone(),
        state.engine.clone(),
        state.engine_wake.clone(),
        console::Tokens {
            admin: config.api_token(),
            read_only: config.read_only_token(),
        },
    );
    let listener = tokio::net::TcpListener::bind(config.api.bind)
        .await
        .with_context(|| format!("bind the API to {}", config.api.bind))?;
    let addr: SocketAddr = listener.local_addr()?;
    info!(%addr, auth = state.token.is_some(), "API listening");
    let counting = console.keep_counting(cancel.clone());
    let app = router(state, config.metrics.public, console);
    Ok(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await });
        let (served, ()) = tokio::join!(server.into_future(), counting);
        if let Err(e) = served {
            warn!("API server: {e}");
        }
    })
}

/// The routes; `/metrics` among those that need the token unless `metrics_public`.
/// The console's pages ask for a session of their own, not the bearer token.
fn router(state: AppState, metrics_public: bool, console: console::ConsoleState) -> Router {
    let scrape = Router::new().route("/metrics", get(metrics::metrics));
    let (public, authed) = if metrics_public {
        (scrape, Router::new())
    } else {
        (Router::new(), scrape)
    };
    let authed = authed
        .route("/contacts", post(contacts::add_contact))
        .route(
            "/contacts/{contact}",
            get(contacts::show_contact).patch(contacts::edit_contact),
        )
        .route("/contacts/{contact}/explain", get(explain::explain))
        .route("/contacts/{contact}/stage", post(contacts::change_stage))
        .route("/contacts/{contact}/follow-ups", post(contacts::log_follow_up))
        .route("/contacts/{contact}/inquiries", post(contacts::add_inquiry))
        .route("/stage-changes", post(stage_change_by_email))
        .route("/bounces", post(suppressions::report_bounce))
        .route("/suppressions", post(suppressions::add_suppression))
        .route("/orders", post(orders::add_order))
        .route("/replies", post(replies::add_reply))
        .route("/reports", get(reports::report))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::show))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        // Recipients follow these links from their mail: no token, and the signed path is the proof.
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe::unsubscribe_page).post(unsubscribe::unsubscribe_one_click),
        )
        .route("/unsubscribe/{token}/all", post(unsubscribe::unsubscribe_all))
        .route("/t/o/{token}", get(engagement::track_open))
        .route("/t/c/{token}", get(engagement::track_click))
        .merge(public)
        .merge(authed)
        .with_state(state)
        .merge(console::router(console))
        // Outside the token's check, so that refused requests are counted too.
        .layer(middleware::from_fn(metrics::count_request))
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if given != Some(token) {
            return ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token".into()).into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's name is
/// case-insensitive (RFC 9110 §11.1), so `bearer` and `BEARER` are accepted too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}

/// 200 while the daemon can do its work; 503 while its store cannot write
/// (writes are refused and delivery holds what it sent until it can record it).
/// 503 while the store cannot write (nothing works); a relay that refuses
/// sessions is `degraded` with 200: the API still takes work, email is held.
async fn health(State(s): State<AppState>) -> Response {
    let relay = s.delivery.relay.as_ref().map(|relay| relay.view());
    let relay_open = relay.as_ref().is_some_and(|r| r["state"] == "open");
    let mut body = json!({ "status": if relay_open { "degraded" } else { "ok" } });
    if let Some(relay) = relay {
        body["relay"] = relay;
    }
    // Throttled domains and warm-up holds are the plan working, not a fault: still `ok`.
    body["pacing"] = s.delivery.pacing_view();
    match s.store.write_failure() {
        None => Json(body).into_response(),
        Some(error) => {
            body["status"] = json!("degraded");
            body["store"] = json!(format!("cannot write: {error}"));
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

impl AppState {
    /// Runs `write` in the next group commit once admitted, wakes the engine,
    /// and answers. `write` may be called twice (see `GroupCommit`): it takes
    /// what it needs by reference or clones it.
    async fn write<F>(&self, write: F) -> ApiResult
    where
        F: for<'c> Fn(
                &'c mut store::Conn,
            ) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Answer>> + Send + 'c>>
            + Send
            + Sync
            + 'static,
    {
        let (status, body) = self.admitted(self.writer.write(write)).await?;
        Ok((status, Json(body)).into_response())
    }

    /// Runs `write` once admission control lets it in, then wakes the engine.
    async fn admitted<R>(&self, write: impl Future<Output = anyhow::Result<R>>) -> anyhow::Result<R> {
        let admitted = self.admission.admit().await;
        let result = write.await;
        drop(admitted);
        self.engine_wake.notify_one();
        result
    }
}

/// A stage change for a contact known by email, created on first sight.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageChangeByEmail {
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    company: String,
    stage: String,
}

/// The route events come in by: its changes are committed in groups and written
/// set-based (`store::StageIntake`), not as one closure each.
async fn stage_change_by_email(
    State(s): State<AppState>,
    JsonObject(body): JsonObject<StageChangeByEmail>,
) -> ApiResult {
    let change = body;
    // By email only: this route must never take "42" for contact 42.
    if change.email.parse::<lettre::Address>().is_err() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`{}` is not an email address", change.email),
        ));
    }
    // Checked here, so that a bad request never fails the group it would join.
    store::check_stage(&change.stage).map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.0))?;
    let unprocessable = |e: Invalid| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.0);
    let change = store::StageByEmail {
        email: change.email,
        name: store::one_line("name", &change.name).map_err(unprocessable)?,
        company: store::one_line("company", &change.company).map_err(unprocessable)?,
        stage: change.stage,
    };
    let (contact_id, event) = s.admitted(s.stage_intake.submit(change)).await?;
    let status = if event.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let body = json!({ "contact_id": contact_id, "event_id": event, "changed": event.is_some() });
    Ok((status, Json(body)).into_response())
}
