//! The overview: `nudge status`'s counts (`app::status`, as of their last
//! read by the console's `snapshot`), the messages queued
//! today and this week by status, the oldest message waiting, the workflow set
//! in force with the last refused reload, the plugins loaded, and how late the
//! timers fired (the `/metrics` histogram's count and sum).

use axum::extract::State;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::Serialize;

use super::auth::Viewer;
use super::{ConsoleState, Page};
use crate::store;

#[derive(Serialize)]
struct WorkflowLine {
    name: String,
    enabled: bool,
    category: String,
}

#[derive(Serialize)]
struct PluginLine {
    id: String,
    version: String,
    channels: Vec<String>,
    origin: String,
}

/// The starts of the UTC day and of its (Monday-first) week holding `now`.
fn day_and_week(now: i64) -> anyhow::Result<(i64, i64)> {
    let date = Timestamp::from_millisecond(now)?.to_zoned(TimeZone::UTC).date();
    let monday = date.checked_sub((date.weekday().to_monday_zero_offset() as i64).days())?;
    let start =
        |d: jiff::civil::Date| -> anyhow::Result<i64> { Ok(d.to_zoned(TimeZone::UTC)?.timestamp().as_millisecond()) };
    Ok((start(date)?, start(monday)?))
}

pub(super) async fn overview(State(s): State<ConsoleState>, viewer: Viewer) -> Page {
    let now = s.clock.now_ms();
    let counted = s.counts.get(&s.store, &s.clock).await?;
    let counts = &counted.counts;
    let (today, week) = day_and_week(now)?;
    let mut conn = s.store.pool.acquire().await?;
    let queued_today = store::outbox_counts_since(&mut conn, today).await?;
    let queued_week = store::outbox_counts_since(&mut conn, week).await?;
    let oldest_pending = store::oldest_pending(&mut conn).await?;
    drop(conn);
    let given_up: i64 = (counts.outbox.iter())
        .filter(|(status, _)| matches!(status.as_str(), "dead" | "unknown" | "failed"))
        .map(|(_, n)| n)
        .sum();
    let lateness = crate::metrics::get().timer_lateness();
    let set = s.engine.current();
    let workflows: Vec<WorkflowLine> = (set.workflows.iter())
        .map(|w| WorkflowLine {
            name: w.name.clone(),
            enabled: w.enabled,
            category: w.category.as_str().to_string(),
        })
        .collect();
    let host = s.engine.plugins.get();
    let plugins: Vec<PluginLine> = (host.plugins())
        .map(|p| PluginLine {
            id: p.manifest.id.clone(),
            version: p.manifest.version.clone(),
            channels: p.channels.clone(),
            origin: p.origin.clone(),
        })
        .collect();
    let values = serde_json::json!({
        "page": "overview",
        "counts": counts,
        "counts_as_of": counted.as_of,
        "queued_today": queued_today,
        "queued_week": queued_week,
        "given_up": given_up,
        "oldest_pending": oldest_pending,
        "set_hash": set.hash,
        "files": set.files.len(),
        "workflows": workflows,
        "reload_error": s.engine.reload_error(),
        "timers_fired": lateness.fired,
        "mean_lateness": (lateness.fired > 0).then(|| format!("{:.1}", lateness.late_seconds / lateness.fired as f64)),
        "plugins": plugins,
    });
    s.render("overview.html", &viewer, values)
}
