//! `nudge explain CONTACT [--workflow W] [--at TIME] [--json]`: why the
//! contact is or is not in each workflow (`app::explain`).

use crate::app::explain::{self, Question};
use crate::clock::parse_time;
use crate::config::Config;
use crate::daemon;

/// `nudge explain`, as text or as JSON (the API's `GET /contacts/{id}/explain`).
pub(crate) async fn run(
    config: &Config,
    contact: &str,
    workflow: Option<&str>,
    at: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let now = clock.now_ms();
    let at = match at {
        Some(text) => parse_time(text, now, "UTC").map_err(|e| anyhow::anyhow!("--at: {e}"))?,
        None => now,
    };
    let mut conn = store.pool.acquire().await?;
    let question = Question { contact, workflow, at };
    let explanation = explain::explain(&mut conn, &question).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", explain::render_text(&explanation));
    }
    Ok(())
}
