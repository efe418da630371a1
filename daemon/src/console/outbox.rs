//! The outbox pages: messages filtered by status, workflow, channel and
//! recipient domain, a page at a time by id; one message with its attempts and
//! the server's replies; and the messages given up, grouped by error, with the
//! retry and drop of `nudge outbox retry|drop` for a whole group.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;
use tracing::info;

use super::auth::Viewer;
use super::{ConsoleState, Page};
use crate::app::NotFound;
use crate::store::{self, OutboxFilter, OutboxStatus};

/// Rows per page: a page stays small whatever the outbox holds.
const PAGE_ROWS: i64 = 50;

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    domain: String,
    before: Option<i64>,
}

fn given(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

impl ListQuery {
    fn filter(&self) -> anyhow::Result<OutboxFilter> {
        let status = match given(&self.status) {
            Some(status) => Some(store::parse_field::<OutboxStatus>("status", &status)?),
            None => None,
        };
        Ok(OutboxFilter {
            status,
            workflow: given(&self.workflow),
            channel: given(&self.channel),
            domain: given(&self.domain),
            before: self.before,
        })
    }

    /// The query string of the next page: these filters, below `last`.
    fn next(&self, last: i64) -> String {
        let pairs = [
            ("status", &self.status),
            ("workflow", &self.workflow),
            ("channel", &self.channel),
            ("domain", &self.domain),
        ];
        let mut query: String = (pairs.iter())
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{k}={}&", urlencode(v.trim())))
            .collect();
        query.push_str(&format!("before={last}"));
        query
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn list(State(s): State<ConsoleState>, viewer: Viewer, Query(q): Query<ListQuery>) -> Page {
    let filter = q.filter()?;
    let mut conn = s.store.pool.acquire().await?;
    // One row more than shown says whether there is a next page.
    let mut rows = store::browse_outbox(&mut conn, &filter, PAGE_ROWS + 1).await?;
    let more = rows.len() as i64 > PAGE_ROWS;
    rows.truncate(PAGE_ROWS as usize);
    let next = more.then(|| rows.last().map(|r| q.next(r.id))).flatten();
    let values = serde_json::json!({
        "page": "outbox",
        "rows": rows,
        "next": next,
        "q": { "status": q.status, "workflow": q.workflow, "channel": q.channel, "domain": q.domain },
        "statuses": ["pending", "sent", "failed", "dead", "unknown", "suppressed", "dropped"],
    });
    s.render("outbox.html", &viewer, values)
}

pub(super) async fn message(State(s): State<ConsoleState>, viewer: Viewer, Path(id): Path<i64>) -> Page {
    let mut conn = s.store.pool.acquire().await?;
    let message = store::outbox_message(&mut conn, id)
        .await?
        .ok_or_else(|| anyhow::Error::from(NotFound(format!("no message {id} in the outbox"))))?;
    let attempts = store::attempts_of(&mut conn, id).await?;
    let values = serde_json::json!({ "page": "outbox", "m": message, "attempts": attempts });
    s.render("message.html", &viewer, values)
}

#[derive(Deserialize)]
pub(super) struct DoneQuery {
    done: Option<String>,
}

pub(super) async fn given_up(State(s): State<ConsoleState>, viewer: Viewer, Query(q): Query<DoneQuery>) -> Page {
    let mut conn = s.store.pool.acquire().await?;
    let groups = store::given_up_groups(&mut conn).await?;
    let values = serde_json::json!({ "page": "dead", "groups": groups, "done": q.done });
    s.render("dead.html", &viewer, values)
}

#[derive(Deserialize)]
pub(super) struct GroupForm {
    #[serde(default)]
    csrf: String,
    status: String,
    #[serde(default)]
    error: String,
}

pub(super) async fn retry_group(State(s): State<ConsoleState>, viewer: Viewer, Form(form): Form<GroupForm>) -> Page {
    act_on_group(s, viewer, form, true).await
}

pub(super) async fn drop_group(State(s): State<ConsoleState>, viewer: Viewer, Form(form): Form<GroupForm>) -> Page {
    act_on_group(s, viewer, form, false).await
}

/// What `nudge outbox retry|drop` does, for the rows of one group.
async fn act_on_group(s: ConsoleState, viewer: Viewer, form: GroupForm, retry: bool) -> Page {
    let verb = if retry { "retry" } else { "drop" };
    viewer.act(&form.csrf, &format!("{verb} {} messages", form.status))?;
    let status = store::parse_field::<OutboxStatus>("status", &form.status).map_err(anyhow::Error::from)?;
    let now = s.clock.now_ms();
    let mut tx = s.store.write().await?;
    let ids = store::given_up_ids(&mut tx, status, &form.error).await?;
    let changed = if retry {
        store::retry_outbox(&mut tx, &ids, now).await?
    } else {
        store::drop_outbox(&mut tx, &ids, now).await?
    };
    tx.commit().await.map_err(anyhow::Error::from)?;
    s.engine_wake.notify_one();
    info!(role = ?viewer.role, session = %viewer.session, status = status.as_str(), error = %form.error, changed, "console: {verb}");
    let done = if retry { "queued again" } else { "dropped" };
    Ok(Redirect::to(&format!(
        "/console/dead?done={}",
        urlencode(&format!("{changed} message(s) {done}"))
    ))
    .into_response())
}
