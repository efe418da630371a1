//! `nudge order add|import`, by the classification rules in the files: orders
//! are refused without them (their base currency and rates).

use std::path::Path;

use anyhow::Context as _;

use crate::app::{self, NewOrder};
use crate::config::Config;
use crate::daemon;
use crate::import;
use crate::insight::{self, OrderOutcome};
use crate::store;

/// `nudge order add`: records one order and re-classifies its customer.
pub(crate) async fn add(config: &Config, order: NewOrder) -> anyhow::Result<()> {
    let rules = insight::load_rules(&config.workflows)?;
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let outcome = app::record_order(&mut tx, &rules, &order, clock.now_ms()).await?;
    tx.commit().await?;
    match outcome {
        OrderOutcome::Added { order_id, contact_id } => {
            let mut conn = store.pool.acquire().await?;
            let contact = store::contact_by_id(&mut conn, contact_id)
                .await?
                .context("contact vanished")?;
            println!(
                "order {} recorded (#{order_id}); contact {contact_id}: tier {}, rfm {}, {}",
                order.id.trim(),
                contact.value_tier.as_deref().unwrap_or("-"),
                contact.rfm_grade.as_deref().unwrap_or("-"),
                contact.behaviour.as_deref().unwrap_or("-"),
            );
        }
        OrderOutcome::AlreadyPresent { order_id } => {
            println!(
                "order {} is recorded already (#{order_id}); nothing changed",
                order.id.trim()
            )
        }
    }
    Ok(())
}

/// `nudge order import`: a CSV of orders; with `history`, past orders that start no workflow.
pub(crate) async fn import(config: &Config, file: &Path, strict: bool, history: bool) -> anyhow::Result<()> {
    let rules = insight::load_rules(&config.workflows)?;
    let (store, clock) = daemon::open(config).await?;
    let events = if history {
        insight::Events::Skip
    } else {
        insight::Events::Write
    };
    let mut orders = import::orders::Orders::new(rules, clock.now_ms(), events);
    let summary = import::import_csv(&store, file, strict, &mut orders).await?;
    println!(
        "imported {} orders, {} already present, {} bad rows skipped",
        summary.added, summary.already_present, summary.bad
    );
    Ok(())
}
