//! The reports page: the page of `nudge report --html` (`report::build` and
//! its weekly trend, as `GET /reports?format=html` serves it), with its period
//! and filters as form fields.

use axum::extract::{Query, State};
use serde::Deserialize;

use super::auth::Viewer;
use super::{ConsoleState, Page};
use crate::report::{self, ReportScope};

#[derive(Deserialize, Default)]
pub(super) struct ReportQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tier: String,
    #[serde(default)]
    source: String,
}

fn given(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

pub(super) async fn reports(State(s): State<ConsoleState>, viewer: Viewer, Query(q): Query<ReportQuery>) -> Page {
    let set = s.engine.current();
    let now = s.clock.now_ms();
    let mut values = serde_json::json!({
        "page": "reports",
        "q": { "from": q.from, "to": q.to, "owner": q.owner, "tier": q.tier, "source": q.source },
    });
    let Some(rules) = set.classification.clone() else {
        values["missing"] = "reports need classification rules: add classification.toml to the workflows folder".into();
        return s.render("reports.html", &viewer, values);
    };
    let filters = [given(&q.owner), given(&q.tier), given(&q.source)];
    let scope = ReportScope::new(&rules, now, Some(&q.from), Some(&q.to), filters).map_err(anyhow::Error::from)?;
    let mut conn = s.store.pool.acquire().await?;
    let built = report::build(&mut conn, &rules, &set, scope.clone(), now).await?;
    let weeks = report::weekly_trend(&mut conn, &rules, &set, &scope, now).await?;
    values["report"] = built.to_html(&weeks).into();
    s.render("reports.html", &viewer, values)
}
