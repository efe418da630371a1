//! The HTTP API (axum): contacts, stage changes, follow-ups and inquiries come
//! in here and become events in the inbox. Bad input gets a 4xx with a message.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::Admission;
use crate::clock::{Clock, parse_time};
use crate::config::Config;
use crate::engine::Engine;
use crate::insight::{self, NewOrder, OrderOutcome};
use crate::store::{
    self, BounceKind, Contact, Engagement, GroupCommit, Invalid, NewContact, NewFollowUp, StageIntake, Store,
    SuppressionReason, SuppressionRules,
};
use crate::tracking;
use crate::unsubscribe::Unsubscribe;

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
}

/// An error answered to the client: a status and a message it can act on.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// A contact (or other thing) the request names does not exist.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

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
pub async fn serve(
    config: &Config,
    store: Store,
    clock: Clock,
    engine_wake: Arc<Notify>,
    engine: Arc<Engine>,
    unsubscribe: Unsubscribe,
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
            {
                let engine = engine.clone();
                Arc::new(move |conn, events| {
                    let engine = engine.clone();
                    Box::pin(async move { engine.take_events(conn, events).await })
                })
            },
            engine_wake.clone(),
        ),
        admission,
        store,
        clock,
        engine_wake,
        engine,
        token: token.map(Into::into),
        unsubscribe,
        suppression: config.suppression.rules(),
    };
    let listener = tokio::net::TcpListener::bind(config.api.bind)
        .await
        .with_context(|| format!("bind the API to {}", config.api.bind))?;
    let addr: SocketAddr = listener.local_addr()?;
    info!(%addr, auth = state.token.is_some(), "API listening");
    let app = router(state);
    Ok(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await });
        if let Err(e) = server.await {
            warn!("API server: {e}");
        }
    })
}

fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/contacts", post(add_contact))
        .route("/contacts/{contact}", get(show_contact))
        .route("/contacts/{contact}/stage", post(change_stage))
        .route("/contacts/{contact}/follow-ups", post(log_follow_up))
        .route("/contacts/{contact}/inquiries", post(add_inquiry))
        .route("/stage-changes", post(stage_change_by_email))
        .route("/bounces", post(report_bounce))
        .route("/suppressions", post(add_suppression))
        .route("/orders", post(add_order))
        .route("/replies", post(add_reply))
        .route("/reports", get(report))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        // Recipients follow these links from their mail: no token, and the signed path is the proof.
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe_page).post(unsubscribe_one_click),
        )
        .route("/t/o/{token}", get(track_open))
        .route("/t/c/{token}", get(track_click))
        .merge(authed)
        .with_state(state)
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
async fn health(State(s): State<AppState>) -> Response {
    match s.store.write_failure() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "degraded", "store": format!("cannot write: {error}") })),
        )
            .into_response(),
    }
}

async fn contact(conn: &mut store::Conn, reference: &str) -> anyhow::Result<Contact> {
    store::find_contact(conn, reference)
        .await?
        .ok_or_else(|| NotFound(format!("no contact `{reference}` (give an id or an email)")).into())
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

async fn add_contact(State(s): State<AppState>, JsonObject(body): JsonObject<NewContact>) -> ApiResult {
    let new = body;
    let now = s.clock.now_ms();
    let new = Arc::new(new);
    s.write(move |conn| {
        let new = new.clone();
        Box::pin(async move {
            let id = store::insert_contact(conn, &new, now).await?;
            Ok((StatusCode::CREATED, json!({ "id": id })))
        })
    })
    .await
}

async fn show_contact(State(s): State<AppState>, Path(reference): Path<String>) -> ApiResult {
    let mut conn = s.store.pool.acquire().await.map_err(anyhow::Error::from)?;
    let contact = contact(&mut conn, &reference).await?;
    let follow_ups = store::follow_ups_of(&mut conn, contact.id, 20).await?;
    let orders = store::orders_of(&mut conn, contact.id, 20).await?;
    let history = store::history_of(&mut conn, contact.id, 50).await?;
    Ok(
        Json(json!({ "contact": contact, "follow_ups": follow_ups, "orders": orders, "history": history }))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageChange {
    stage: String,
}

async fn change_stage(
    State(s): State<AppState>,
    Path(reference): Path<String>,
    JsonObject(body): JsonObject<StageChange>,
) -> ApiResult {
    let change = body;
    let now = s.clock.now_ms();
    let (reference, change) = (Arc::new(reference), Arc::new(change));
    s.write(move |conn| {
        let (reference, change) = (reference.clone(), change.clone());
        Box::pin(async move {
            let contact = contact(conn, &reference).await?;
            set_stage(conn, contact.id, &contact.stage, &change.stage, now, json!({})).await
        })
    })
    .await
}

/// Sets the stage; answers 202 with the event (200 when the stage was already
/// that), plus `extra` fields.
async fn set_stage(
    conn: &mut store::Conn,
    contact_id: i64,
    from: &str,
    stage: &str,
    now: i64,
    mut extra: serde_json::Value,
) -> anyhow::Result<Answer> {
    let event = store::set_stage(conn, contact_id, from, stage, "api", now).await?;
    let status = if event.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    extra["event_id"] = json!(event);
    extra["changed"] = json!(event.is_some());
    Ok((status, extra))
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

/// A follow-up as the API takes it: times as text (`3d`, RFC 3339, local date-time).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpInput {
    pub at: Option<String>,
    pub channel: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub feedback: String,
    pub intent_grade: Option<String>,
    pub attitude: Option<String>,
    pub understanding: Option<String>,
    pub stage: Option<String>,
    pub next_follow_up: Option<String>,
    pub next_goal: Option<String>,
    pub result: Option<String>,
    pub owner: Option<String>,
}

impl FollowUpInput {
    /// Resolves the times in the contact's own time zone.
    pub fn resolve(self, contact: &Contact, now: i64) -> Result<NewFollowUp, Invalid> {
        let time = |t: Option<String>| {
            t.map(|t| parse_time(&t, now, &contact.time_zone).map_err(Invalid))
                .transpose()
        };
        Ok(NewFollowUp {
            at: time(self.at)?,
            channel: self.channel,
            summary: self.summary,
            feedback: self.feedback,
            intent_grade: self.intent_grade,
            attitude: self.attitude,
            understanding: self.understanding,
            stage: self.stage,
            next_follow_up_at: time(self.next_follow_up)?,
            next_goal: self.next_goal,
            result: self.result,
            owner: self.owner,
        })
    }
}

async fn log_follow_up(
    State(s): State<AppState>,
    Path(reference): Path<String>,
    JsonObject(body): JsonObject<FollowUpInput>,
) -> ApiResult {
    let input = body;
    let now = s.clock.now_ms();
    let rules = s.engine.current().classification.clone();
    let (reference, input) = (Arc::new(reference), Arc::new(input));
    s.write(move |conn| {
        let (reference, input, rules) = (reference.clone(), input.clone(), rules.clone());
        Box::pin(async move {
            let contact = contact(conn, &reference).await?;
            let follow_up = FollowUpInput::clone(&input).resolve(&contact, now)?;
            let id = store::log_follow_up(conn, &contact, &follow_up, now).await?;
            insight::reclassify_by_id(conn, rules.as_deref(), contact.id, now, insight::Events::Write).await?;
            Ok((StatusCode::CREATED, json!({ "id": id })))
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InquiryInput {
    #[serde(default)]
    message: String,
    #[serde(default)]
    channel: String,
}

async fn add_inquiry(
    State(s): State<AppState>,
    Path(reference): Path<String>,
    JsonObject(body): JsonObject<InquiryInput>,
) -> ApiResult {
    let input = body;
    let now = s.clock.now_ms();
    let (reference, input) = (Arc::new(reference), Arc::new(input));
    s.write(move |conn| {
        let (reference, input) = (reference.clone(), input.clone());
        Box::pin(async move {
            let contact = contact(conn, &reference).await?;
            let id = store::add_inquiry(conn, contact.id, &input.message, &input.channel, now).await?;
            Ok((StatusCode::ACCEPTED, json!({ "inquiry_id": id })))
        })
    })
    .await
}

/// The landing page of an unsubscribe link. A GET changes nothing (mail scanners
/// prefetch links); the button POSTs like a mail client's one-click button.
async fn unsubscribe_page(State(s): State<AppState>, Path(token): Path<String>) -> Response {
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
async fn unsubscribe_one_click(State(s): State<AppState>, Path(token): Path<String>) -> Result<Response, ApiError> {
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
            SuppressionReason::Unsubscribed,
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

/// The open pixel of a tracked message: records an open and answers a 1x1 GIF.
async fn track_open(State(s): State<AppState>, Path(token): Path<String>) -> ApiResult {
    let Some(key) = tracking::verify_open(&s.unsubscribe, &token) else {
        return Ok(untracked());
    };
    if !record_engagement(&s, key, Engagement::Opened).await? {
        return Ok(untracked());
    }
    let headers = [
        (header::CONTENT_TYPE, "image/gif"),
        // Each open should reach the daemon, not a cache.
        (header::CACHE_CONTROL, "no-store, max-age=0"),
    ];
    Ok((headers, tracking::PIXEL_GIF).into_response())
}

/// A tracked link: records a click and redirects to the URL the message had,
/// which the token carries under its MAC: never anywhere else.
async fn track_click(State(s): State<AppState>, Path(token): Path<String>) -> ApiResult {
    let Some((key, url)) = tracking::verify_click(&s.unsubscribe, &token) else {
        return Ok(untracked());
    };
    if !record_engagement(&s, key, Engagement::Clicked(url.clone())).await? {
        return Ok(untracked());
    }
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, tracking::location(&url)),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
    )
        .into_response())
}

/// Records an open or a click of the message `key`; false if no such message exists.
async fn record_engagement(s: &AppState, key: String, what: Engagement) -> anyhow::Result<bool> {
    let now = s.clock.now_ms();
    let (key, what) = (Arc::new(key), Arc::new(what));
    let (status, _) = s
        .writer
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
    Ok(status == StatusCode::OK)
}

fn untracked() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><meta charset=utf-8><p>This link is not valid.</p>"),
    )
        .into_response()
}

/// A reply from a contact, e.g. from a mail provider's inbound webhook: by the
/// message it answers (its Message-ID, which names the contact), or by the
/// contact's email (it then counts for the latest message delivered to them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyInput {
    message_id: Option<String>,
    email: Option<String>,
}

async fn add_reply(State(s): State<AppState>, JsonObject(body): JsonObject<ReplyInput>) -> ApiResult {
    let input = body;
    let now = s.clock.now_ms();
    let input = Arc::new(input);
    s.write(move |conn| {
        let input = input.clone();
        Box::pin(async move {
            let (contact_id, message) = match (&input.message_id, &input.email) {
                (Some(message_id), _) => {
                    // `<key@domain>` as in the headers, or the bare key.
                    let key = message_id.trim().trim_start_matches('<').trim_end_matches('>');
                    let key = key.rsplit_once('@').map_or(key, |(k, _)| k);
                    let message = store::message_by_key(conn, key)
                        .await?
                        .ok_or_else(|| NotFound(format!("no message `{message_id}` was sent to a contact")))?;
                    (message.contact_id, Some(message))
                }
                (None, Some(email)) => {
                    let contact = store::contact_by_email(conn, email)
                        .await?
                        .ok_or_else(|| NotFound(format!("no contact with email `{email}`")))?;
                    (contact.id, store::last_message_to(conn, contact.id).await?)
                }
                (None, None) => {
                    return Err(Invalid(
                        "give `message_id` (the Message-ID replied to) or `email` (the contact's)".into(),
                    )
                    .into());
                }
            };
            let event_id = store::record_reply(conn, contact_id, message.as_ref(), now).await?;
            let body = json!({
                "contact_id": contact_id,
                "message_id": message.map(|m| m.message_id),
                "event_id": event_id,
            });
            Ok((StatusCode::CREATED, body))
        })
    })
    .await
}

/// A bounce or complaint reported by a mail provider's webhook or a feedback loop.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BounceInput {
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

async fn report_bounce(State(s): State<AppState>, JsonObject(body): JsonObject<BounceInput>) -> ApiResult {
    let input = body;
    let kind = BounceKind::parse(&input.kind).ok_or_else(|| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("kind `{}` is not one of hard, soft, complaint", input.kind),
        )
    })?;
    let mut tx = s.store.write().await?;
    let bounce = store::Bounce {
        address: &input.address,
        channel: &input.channel,
        kind,
        detail: &input.detail,
        outbox_id: None,
    };
    let suppressed = store::record_bounce(&mut tx, &bounce, s.suppression, s.clock.now_ms()).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok((StatusCode::CREATED, Json(json!({ "suppressed": suppressed }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressionInput {
    address: String,
    #[serde(default = "all_channels")]
    channel: String,
    #[serde(default)]
    detail: String,
}

fn all_channels() -> String {
    "*".into()
}

async fn add_suppression(State(s): State<AppState>, JsonObject(body): JsonObject<SuppressionInput>) -> ApiResult {
    let input = body;
    let mut tx = s.store.write().await?;
    let added = store::suppress(
        &mut tx,
        &input.address,
        &input.channel,
        SuppressionReason::Manual,
        &input.detail,
        s.clock.now_ms(),
    )
    .await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok((StatusCode::CREATED, Json(json!({ "added": added }))).into_response())
}

/// Records an order (201), or finds it recorded already (200, nothing changed).
async fn add_order(State(s): State<AppState>, JsonObject(body): JsonObject<NewOrder>) -> ApiResult {
    let order = body;
    let Some(rules) = s.engine.current().classification.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "orders need classification rules: add classification.toml to the workflows folder".into(),
        ));
    };
    let mut tx = s.store.write().await?;
    let outcome = insight::record_order(&mut tx, &rules, &order, s.clock.now_ms()).await?;
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

/// `GET /reports?from=2026-11-01&to=2026-11-30&owner=&tier=&source=&format=`: what `nudge report` prints,
/// as JSON by default, or `format=table|csv|html` (the page of `--html`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    owner: Option<String>,
    tier: Option<String>,
    source: Option<String>,
    format: Option<String>,
}

async fn report(State(s): State<AppState>, query: Result<Query<ReportQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let set = s.engine.current();
    let Some(rules) = set.classification.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "reports need classification rules: add classification.toml to the workflows folder".into(),
        ));
    };
    let now = s.clock.now_ms();
    let scope = crate::report::ReportScope::new(
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
    let report = crate::report::build(&mut conn, &rules, &set, scope.clone(), now).await?;
    Ok(match format {
        "table" => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], report.to_table()).into_response(),
        "csv" => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], report.to_csv()?).into_response(),
        "html" => {
            let weeks = crate::report::weekly_trend(&mut conn, &rules, &set, &scope, now).await?;
            Html(report.to_html(&weeks)).into_response()
        }
        _ => Json(report).into_response(),
    })
}
