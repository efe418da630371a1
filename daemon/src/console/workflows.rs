//! The workflows page, read-only (the files are the source of truth): each
//! workflow of the set in force with its trigger (as `explain` names it), its
//! category, and its runs not done by state (the runs done are counted for all
//! workflows: per workflow that is a walk of millions); its messages per A/B
//! variant are the report's (the reports page).

use axum::extract::State;
use serde::Serialize;

use super::auth::Viewer;
use super::{ConsoleState, Page};
use crate::app::explain;
use crate::store;

#[derive(Serialize)]
struct WorkflowRow {
    name: String,
    trigger: String,
    category: String,
    enabled: bool,
    runs: Vec<(String, i64)>,
}

pub(super) async fn workflows(State(s): State<ConsoleState>, viewer: Viewer) -> Page {
    let set = s.engine.current();
    let mut conn = s.store.pool.acquire().await?;
    let known = explain::known_workflows(&mut conn).await?;
    let (runs, done) = store::runs_by_workflow(&mut conn).await?;
    let rows: Vec<WorkflowRow> = (set.workflows.iter())
        .map(|w| WorkflowRow {
            name: w.name.clone(),
            trigger: (known.iter().find(|k| k.name == w.name))
                .map(|k| k.trigger.clone())
                .unwrap_or_default(),
            category: w.category.as_str().to_string(),
            enabled: w.enabled,
            runs: (runs.iter())
                .filter(|(name, ..)| *name == w.name)
                .map(|(_, status, n)| (status.clone(), *n))
                .collect(),
        })
        .collect();
    s.render(
        "workflows.html",
        &viewer,
        serde_json::json!({ "page": "workflows", "rows": rows, "done": done }),
    )
}
