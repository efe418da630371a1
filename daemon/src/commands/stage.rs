//! `nudge stage set`: moves a contact to another lifecycle stage.

use crate::app;
use crate::config::Config;
use crate::daemon;

/// `nudge stage set`; workflows triggered by `stage_changed` react.
pub(crate) async fn set(config: &Config, reference: &str, stage: &str) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let changed = app::change_stage(&mut tx, reference, stage, "cli", clock.now_ms()).await?;
    tx.commit().await?;
    match changed.event_id {
        Some(_) => println!("contact {} stage {} -> {stage}", changed.contact_id, changed.from),
        None => println!("contact {} is already at stage {stage}", changed.contact_id),
    }
    Ok(())
}
