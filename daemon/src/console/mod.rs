//! The web console: server-rendered pages over what the daemon already
//! computes (`app::status`, `app::explain`, `app::contact_card`, the outbox's
//! retry and drop, suppressions). Served by the API's server under `/console`;
//! the templates, the stylesheet and htmx are in the binary, so the pages make
//! no request elsewhere and work offline. Every page works without JavaScript;
//! htmx only spares full reloads (`hx-boost`).

mod auth;
mod outbox;
mod overview;
mod pages;
mod rendered;
mod reports;
mod snapshot;
mod workflows;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::app::NotFound;
use crate::clock::{Clock, display_ms};
use crate::engine::Engine;
use crate::store::{Invalid, Store};
pub(crate) use auth::Tokens;
use auth::{Sessions, Viewer};

/// What the console's handlers share.
#[derive(Clone)]
pub(crate) struct ConsoleState {
    store: Store,
    clock: Clock,
    engine: Arc<Engine>,
    /// Woken after an action queues messages again.
    engine_wake: Arc<Notify>,
    tokens: Arc<Tokens>,
    sessions: Arc<Sessions>,
    templates: Arc<Environment<'static>>,
    /// The overview's counts, read by `keep_counting`.
    counts: snapshot::Snapshot,
}

impl ConsoleState {
    pub(crate) fn new(
        store: Store,
        clock: Clock,
        engine: Arc<Engine>,
        engine_wake: Arc<Notify>,
        tokens: Tokens,
    ) -> Self {
        ConsoleState {
            store,
            clock,
            engine,
            engine_wake,
            tokens: Arc::new(tokens),
            sessions: Arc::new(Sessions::default()),
            templates: Arc::new(templates()),
            counts: snapshot::Snapshot::new(),
        }
    }

    /// Reads the overview's counts in the background until `cancel`.
    pub(crate) fn keep_counting(&self, cancel: CancellationToken) -> impl Future<Output = ()> + use<> {
        (self.counts.clone()).keep_reading(self.store.clone(), self.clock.clone(), cancel)
    }
}

/// The console's routes, under `/console`.
pub(crate) fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(overview::overview))
        .route("/console/login", get(auth::login_form).post(auth::log_in))
        .route("/console/logout", post(auth::log_out))
        .route("/console/outbox", get(outbox::list))
        .route("/console/outbox/{id}", get(outbox::message))
        .route("/console/outbox/{id}/html", get(rendered::message_html))
        .route("/console/dead", get(outbox::given_up))
        .route("/console/dead/retry", post(outbox::retry_group))
        .route("/console/dead/drop", post(outbox::drop_group))
        .route(
            "/console/suppressions",
            get(pages::suppressions).post(pages::add_suppression),
        )
        .route("/console/suppressions/remove", post(pages::remove_suppression))
        .route("/console/contacts", get(pages::find_contact))
        .route("/console/contacts/{id}", get(pages::contact))
        .route("/console/reports", get(reports::reports))
        .route("/console/workflows", get(workflows::workflows))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/static/htmx.min.js", get(htmx))
        .with_state(state)
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("outbox.html", include_str!("templates/outbox.html")),
    ("message.html", include_str!("templates/message.html")),
    ("dead.html", include_str!("templates/dead.html")),
    ("suppressions.html", include_str!("templates/suppressions.html")),
    ("contacts.html", include_str!("templates/contacts.html")),
    ("contact.html", include_str!("templates/contact.html")),
    ("reports.html", include_str!("templates/reports.html")),
    ("workflows.html", include_str!("templates/workflows.html")),
];

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        // The templates are part of the binary: one that does not parse fails
        // the `templates_parse` test, never a running daemon.
        if let Err(e) = env.add_template(name, source) {
            warn!("console template {name}: {e}");
        }
    }
    env.add_filter("when", |ms: i64| display_ms(ms));
    env.add_filter("clock_time", |ms: i64| {
        display_ms(ms).get(11..19).unwrap_or_default().to_string()
    });
    env
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("static/console.css"))
}

async fn htmx() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("static/htmx.min.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A page refused or failed: rendered as a page saying why.
pub(crate) struct PageError(StatusCode, String);

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        if let Some(invalid) = e.downcast_ref::<Invalid>() {
            return PageError(StatusCode::UNPROCESSABLE_ENTITY, invalid.0.clone());
        }
        if let Some(missing) = e.downcast_ref::<NotFound>() {
            return PageError(StatusCode::NOT_FOUND, missing.0.clone());
        }
        warn!("console: {e:#}");
        PageError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the daemon's log".into(),
        )
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let env = templates();
        let page = env
            .get_template("error.html")
            .and_then(|t| t.render(minijinja::context! { status => self.0.as_u16(), message => &self.1 }))
            .unwrap_or_else(|_| self.1.clone());
        (self.0, Html(page)).into_response()
    }
}

type Page = Result<Response, PageError>;

impl ConsoleState {
    /// Renders template `name` for `viewer` with the page's `values`.
    fn render(&self, name: &str, viewer: &Viewer, values: impl Serialize) -> Page {
        let page = self
            .templates
            .get_template(name)
            .and_then(|t| {
                t.render(minijinja::context! {
                    viewer => viewer,
                    now => self.clock.now_ms(),
                    ..minijinja::Value::from_serialize(&values)
                })
            })
            .map_err(|e| anyhow::anyhow!("render {name}: {e:#}"))?;
        Ok(Html(page).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
