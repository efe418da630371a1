//! `nudge followup log|import`. The CLI has no running rule set: it re-classifies
//! customers by the rules in the workflow files, when there are any.

use std::path::Path;
use std::sync::Arc;

use crate::app::{self, FollowUpInput, FollowUpLogged, Repeats};
use crate::clock::display_ms;
use crate::config::Config;
use crate::daemon;
use crate::import;
use crate::insight;
use crate::workflow::{CLASSIFICATION_FILE, ClassificationRules};

/// `nudge followup log`: one follow-up, and when the next one is due.
pub(crate) async fn log(config: &Config, reference: &str, input: FollowUpInput) -> anyhow::Result<()> {
    let rules = rules_if_any(config);
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let logged = app::log_follow_up(
        &mut tx,
        rules.as_deref(),
        reference,
        input,
        Repeats::Log,
        clock.now_ms(),
    )
    .await?;
    tx.commit().await?;
    match logged {
        FollowUpLogged::Added {
            id,
            next_follow_up_at: Some(at),
            ..
        } => println!("follow-up {id} logged; next follow-up {}", display_ms(at)),
        FollowUpLogged::Added { id, .. } => println!("follow-up {id} logged; no next follow-up set"),
        FollowUpLogged::AlreadyPresent => println!("the follow-up is logged already"),
    }
    Ok(())
}

/// `nudge followup import`: a CSV of follow-ups, each logged as `followup log` would.
pub(crate) async fn import(config: &Config, file: &Path, strict: bool) -> anyhow::Result<()> {
    let rules = rules_if_any(config);
    let (store, clock) = daemon::open(config).await?;
    let mut follow_ups = import::follow_ups::FollowUps {
        rules: rules.as_deref(),
        now: clock.now_ms(),
    };
    let summary = import::import_csv(&store, file, strict, &mut follow_ups).await?;
    println!(
        "imported {} follow-ups, {} already present, {} bad rows skipped",
        summary.added, summary.already_present, summary.bad
    );
    Ok(())
}

/// The rules in the files, if any. Broken rules are a warning, not an error: the
/// follow-ups are still logged, and once the file is fixed the daemon, seeing it
/// edited, re-classifies every customer.
fn rules_if_any(config: &Config) -> Option<Arc<ClassificationRules>> {
    if !config.workflows.join(CLASSIFICATION_FILE).exists() {
        return None;
    }
    insight::load_rules(&config.workflows)
        .inspect_err(|e| eprintln!("warning: not re-classified: {e:#}"))
        .ok()
}
