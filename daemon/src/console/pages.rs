//! The suppressions page (list, add, remove: `app::suppress` and
//! `store::unsuppress`, as `nudge suppress` does) and the contact page (the
//! contact card of `nudge contact show` and the answers of `nudge explain`).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::auth::Viewer;
use super::{ConsoleState, Page, PageError};
use crate::app::explain::{self, Question};
use crate::app::{self, NewSuppression};
use crate::store::{self, ConsentScope};

/// Follow-ups and orders shown on a contact's page, newest first.
const CONTACT_LATEST: i64 = 20;

/// Suppressions per page: a page stays small however many addresses bounced.
const SUPPRESSION_ROWS: i64 = 100;

/// The keyset cursor: the last address and channel of the page before.
#[derive(Deserialize, Default)]
pub(super) struct AfterQuery {
    #[serde(default)]
    after: String,
    #[serde(default)]
    after_channel: String,
}

pub(super) async fn suppressions(State(s): State<ConsoleState>, viewer: Viewer, Query(q): Query<AfterQuery>) -> Page {
    let mut conn = s.store.pool.acquire().await?;
    // One row more than shown says whether there is a next page.
    let after = (q.after.as_str(), q.after_channel.as_str());
    let mut rows = store::suppressions_page(&mut conn, after, SUPPRESSION_ROWS + 1).await?;
    let more = rows.len() as i64 > SUPPRESSION_ROWS;
    rows.truncate(SUPPRESSION_ROWS as usize);
    let next = more
        .then(|| rows.last().map(|r| (r.address.clone(), r.channel.clone())))
        .flatten();
    s.render(
        "suppressions.html",
        &viewer,
        serde_json::json!({ "page": "suppressions", "rows": rows, "next": next }),
    )
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    #[serde(default)]
    csrf: String,
    address: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    detail: String,
}

pub(super) async fn add_suppression(State(s): State<ConsoleState>, viewer: Viewer, Form(form): Form<AddForm>) -> Page {
    viewer.act(&form.csrf, &format!("suppress {}", form.address.trim()))?;
    let scope = match form.scope.trim() {
        "" => ConsentScope::All,
        scope => store::parse_field::<ConsentScope>("scope", scope).map_err(anyhow::Error::from)?,
    };
    let channel = match form.channel.trim() {
        "" => "*".to_string(),
        channel => channel.to_string(),
    };
    let new = NewSuppression {
        address: form.address.trim().to_string(),
        channel,
        scope,
        detail: form.detail.trim().to_string(),
    };
    let mut tx = s.store.write().await?;
    app::suppress(&mut tx, &new, &viewer.who(), s.clock.now_ms()).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(Redirect::to("/console/suppressions").into_response())
}

#[derive(Deserialize)]
pub(super) struct RemoveForm {
    #[serde(default)]
    csrf: String,
    address: String,
    channel: String,
}

pub(super) async fn remove_suppression(
    State(s): State<ConsoleState>,
    viewer: Viewer,
    Form(form): Form<RemoveForm>,
) -> Page {
    viewer.act(&form.csrf, &format!("unsuppress {} on {}", form.address, form.channel))?;
    let mut tx = s.store.write().await?;
    store::unsuppress(&mut tx, &form.address, &form.channel).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(Redirect::to("/console/suppressions").into_response())
}

#[derive(Deserialize)]
pub(super) struct FindQuery {
    #[serde(default)]
    q: String,
}

/// A search form; a contact found by id or email opens its page.
pub(super) async fn find_contact(State(s): State<ConsoleState>, viewer: Viewer, Query(q): Query<FindQuery>) -> Page {
    let reference = q.q.trim();
    let mut missing = None;
    if !reference.is_empty() {
        let mut conn = s.store.pool.acquire().await?;
        match store::find_contact(&mut conn, reference).await? {
            Some(contact) => return Ok(Redirect::to(&format!("/console/contacts/{}", contact.id)).into_response()),
            None => missing = Some(format!("no contact `{reference}` (give an id or an email)")),
        }
    }
    let values = serde_json::json!({ "page": "contacts", "q": reference, "missing": missing });
    s.render("contacts.html", &viewer, values)
}

pub(super) async fn contact(State(s): State<ConsoleState>, viewer: Viewer, Path(id): Path<i64>) -> Page {
    let reference = id.to_string();
    let mut conn = s.store.pool.acquire().await?;
    let card = app::contact_card(&mut conn, &reference, CONTACT_LATEST).await?;
    let question = Question {
        contact: &reference,
        workflow: None,
        at: s.clock.now_ms(),
    };
    let explanation = explain::explain(&mut conn, &question).await?;
    let fields = serde_json::to_value(&card.contact).map_err(|e| PageError::from(anyhow::Error::from(e)))?;
    let values = serde_json::json!({
        "page": "contacts",
        "fields": fields,
        "follow_ups": card.follow_ups,
        "orders": card.orders,
        "history": card.history,
        "explain": explain::render_text(&explanation),
    });
    s.render("contact.html", &viewer, values)
}
