//! Who is looking: a login form turns a token into a session cookie. The API
//! token makes an `admin` session, the read-only token a `read_only` one (it
//! sees every page and may do nothing). Sessions live in the daemon's memory:
//! a restart or a logout ends them for good, with no signing key to keep or
//! rotate, and one daemon serves its console, so nothing needs sharing. Each
//! session has its own CSRF token, which every form that acts carries; the
//! cookie is also `SameSite=Strict`, so a form posted from another site
//! arrives without it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{ConsoleState, Page, PageError};

const COOKIE: &str = "nudge_console";

/// How long a session lasts after its login: a working day, so a console left
/// open overnight asks for the token again.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The tokens that open the console; without an API token (a loopback-only
/// API), the form opens an admin session with any token, as the API needs none.
pub(crate) struct Tokens {
    pub(crate) admin: Option<String>,
    pub(crate) read_only: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    Admin,
    ReadOnly,
}

impl Tokens {
    fn role_of(&self, given: &str) -> Option<Role> {
        let Some(admin) = &self.admin else {
            return Some(Role::Admin);
        };
        if same(given, admin) {
            return Some(Role::Admin);
        }
        self.read_only
            .as_deref()
            .filter(|read_only| same(given, read_only))
            .map(|_| Role::ReadOnly)
    }
}

/// Compares in time that does not depend on where the texts differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in session, as pages and the log see it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Viewer {
    pub(crate) role: Role,
    /// The token every acting form carries.
    pub(crate) csrf: String,
    /// Names the session in the log (the cookie's secret is never logged).
    pub(crate) session: String,
    #[serde(skip)]
    created: Instant,
}

#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Viewer>>);

impl Sessions {
    fn open(&self, role: Role) -> anyhow::Result<(String, Viewer)> {
        let viewer = Viewer {
            role,
            csrf: random_hex(32)?,
            session: random_hex(4)?,
            created: Instant::now(),
        };
        let secret = random_hex(32)?;
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, v| v.created.elapsed() < SESSION_LIFETIME);
        sessions.insert(secret.clone(), viewer.clone());
        Ok((secret, viewer))
    }

    fn find(&self, secret: &str) -> Option<Viewer> {
        let sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(secret)
            .filter(|v| v.created.elapsed() < SESSION_LIFETIME)
            .cloned()
    }

    fn close(&self, secret: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(secret);
    }
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness for a session: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn session_secret(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_string))
}

impl FromRequestParts<ConsoleState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Response> {
        session_secret(parts)
            .and_then(|secret| state.sessions.find(&secret))
            .ok_or_else(|| Redirect::to("/console/login").into_response())
    }
}

impl Viewer {
    /// Lets the action `what` through if the form's CSRF token is this session's
    /// and the session may act; logs it with who did it.
    pub(crate) fn act(&self, csrf: &str, what: &str) -> Result<(), PageError> {
        if !same(csrf, &self.csrf) {
            info!(role = ?self.role, session = %self.session, action = what, "console: refused, wrong CSRF token");
            return Err(PageError(
                StatusCode::FORBIDDEN,
                "This form is stale or did not come from this console (its CSRF token does not match your \
                 session). Reload the page and try again."
                    .into(),
            ));
        }
        if self.role != Role::Admin {
            info!(role = ?self.role, session = %self.session, action = what, "console: refused, read-only");
            return Err(PageError(
                StatusCode::FORBIDDEN,
                "You are logged in with the read-only token: you can see every page but not act. Log in with \
                 the API token to do this."
                    .into(),
            ));
        }
        info!(role = ?self.role, session = %self.session, action = what, "console action");
        Ok(())
    }

    /// Who did it, as the records of an action name them.
    pub(crate) fn who(&self) -> String {
        format!("console (session {})", self.session)
    }
}

pub(super) async fn login_form(State(s): State<ConsoleState>) -> Page {
    s.render_anonymous("login.html", StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(super) struct Login {
    token: String,
}

pub(super) async fn log_in(State(s): State<ConsoleState>, Form(login): Form<Login>) -> Page {
    let Some(role) = s.tokens.role_of(login.token.trim()) else {
        info!("console: login refused, wrong token");
        return s.render_anonymous(
            "login.html",
            StatusCode::UNAUTHORIZED,
            Some("That token opens nothing here."),
        );
    };
    let (secret, viewer) = s.sessions.open(role)?;
    info!(role = ?viewer.role, session = %viewer.session, "console login");
    let cookie = format!("{COOKIE}={secret}; Path=/console; HttpOnly; SameSite=Strict");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response())
}

#[derive(Deserialize)]
pub(super) struct Csrf {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn log_out(
    State(s): State<ConsoleState>,
    viewer: Viewer,
    parts: Parts,
    Form(form): Form<Csrf>,
) -> Page {
    if !same(&form.csrf, &viewer.csrf) {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "stale form: reload and log out again".into(),
        ));
    }
    if let Some(secret) = session_secret(&parts) {
        s.sessions.close(&secret);
    }
    info!(role = ?viewer.role, session = %viewer.session, "console logout");
    let cookie = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/console/login")).into_response())
}

impl ConsoleState {
    fn render_anonymous(&self, name: &str, status: StatusCode, error: Option<&str>) -> Page {
        let page = self
            .templates
            .get_template(name)
            .and_then(|t| t.render(minijinja::context! { error => error }))
            .map_err(|e| anyhow::anyhow!("render {name}: {e:#}"))?;
        Ok((status, axum::response::Html(page)).into_response())
    }
}
