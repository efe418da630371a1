//! `nudge classify`: re-classifies every customer now, by the rules in the files.

use anyhow::Context as _;

use crate::config::Config;
use crate::daemon;
use crate::insight;

/// `nudge classify`: re-classifies every customer now (after changing the rules,
/// or to see today's result without waiting for the daemon's daily pass).
pub(crate) async fn run(config: &Config) -> anyhow::Result<()> {
    let rules = insight::load_rules(&config.workflows)?;
    let (store, clock) = daemon::open(config).await?;
    let summary = insight::classification_pass(&store, &rules, clock.now_ms(), true)
        .await?
        .context("a forced pass always runs")?;
    println!(
        "classified {} customers as of {}: {} changes",
        summary.customers,
        rules.today(clock.now_ms()),
        summary.changes
    );
    Ok(())
}
