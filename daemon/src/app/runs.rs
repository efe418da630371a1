//! Run history: the runs an operator asks for, a page at a time, and one run
//! whole; the CLI (`nudge runs`) and the API (`GET /runs`) answer the same.

use serde::Serialize;

use super::{NotFound, find_contact};
use crate::store::{self, Conn, Invalid, RunDetail, RunFilter, RunStatus, RunSummary};

/// Runs shown per page unless asked otherwise, and the most a page holds.
const RUNS_PER_PAGE: i64 = 50;
const MAX_PER_PAGE: i64 = 1000;

/// Which runs to list, as a person writes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunQuery {
    /// An id or an email.
    pub(crate) contact: Option<String>,
    pub(crate) workflow: Option<String>,
    pub(crate) status: Option<RunStatus>,
    /// Runs started since: a duration back from now (`7d`), an RFC 3339 time
    /// or a UTC date-time.
    pub(crate) since: Option<String>,
    /// The page after this run (the `next` of the page before).
    pub(crate) before: Option<i64>,
    pub(crate) limit: Option<i64>,
}

/// A page of runs, newest first, and where the next page begins.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunPage {
    pub(crate) runs: Vec<RunSummary>,
    /// Pass as `before` for the next page; null on the last page.
    pub(crate) next: Option<i64>,
}

pub(crate) async fn list_runs(conn: &mut Conn, query: RunQuery, now: i64) -> anyhow::Result<RunPage> {
    let contact_id = match &query.contact {
        Some(reference) => Some(find_contact(conn, reference).await?.id),
        None => None,
    };
    let since = match &query.since {
        Some(text) => Some(since(text, now)?),
        None => None,
    };
    let limit = query.limit.unwrap_or(RUNS_PER_PAGE);
    if !(1..=MAX_PER_PAGE).contains(&limit) {
        return Err(Invalid(format!("limit {limit} is not between 1 and {MAX_PER_PAGE}")).into());
    }
    let filter = RunFilter {
        contact_id,
        workflow: query.workflow,
        status: query.status,
        since,
        before: query.before,
        limit,
    };
    let (runs, next) = store::list_runs(conn, &filter).await?;
    Ok(RunPage { runs, next })
}

/// `since` as a time: a duration counts back from now.
fn since(text: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(span) = crate::model::parse_duration(text) {
        return Ok(crate::model::add_span(now, span.negate(), "UTC"));
    }
    crate::clock::parse_time(text, now, "UTC").map_err(|e| Invalid(format!("since: {e}")).into())
}

/// One run whole; `NotFound` if there is none (never was, or pruned).
pub(crate) async fn run_detail(conn: &mut Conn, id: i64) -> anyhow::Result<RunDetail> {
    store::run_detail(conn, id)
        .await?
        .ok_or_else(|| NotFound(format!("no run {id} (it never was, or the retention pass pruned it)")).into())
}
