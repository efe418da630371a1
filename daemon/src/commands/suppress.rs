//! `nudge suppress add|remove|list`: addresses that get nothing, whatever
//! workflow would send to them.

use crate::app::{self, NewSuppression};
use crate::clock::display_ms;
use crate::config::Config;
use crate::daemon;
use crate::store;

/// `nudge suppress add|remove|list`.
pub(crate) async fn run(config: &Config, action: SuppressAction<'_>) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    match action {
        SuppressAction::Add(new) => {
            let added = app::suppress(&mut tx, &new, "cli", clock.now_ms()).await?;
            tx.commit().await?;
            println!(
                "{} {}",
                new.address,
                if added { "suppressed" } else { "was suppressed already" }
            );
        }
        SuppressAction::Remove { address, channel } => {
            let removed = store::unsuppress(&mut tx, address, channel).await?;
            tx.commit().await?;
            println!(
                "{address} {}",
                if removed {
                    "no longer suppressed"
                } else {
                    "was not suppressed"
                }
            );
        }
        SuppressAction::List { as_json } => {
            let rows = store::list_suppressions(&mut tx).await?;
            tx.commit().await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no suppressed addresses");
            }
            for r in rows.iter().filter(|_| !as_json) {
                println!(
                    "{:<40} {:<6} {:<13} {:<9} {}  {}",
                    r.address,
                    r.channel,
                    r.reason,
                    r.scope,
                    display_ms(r.created_at),
                    r.detail
                );
            }
        }
    }
    Ok(())
}

/// What `nudge suppress` is asked to do.
pub(crate) enum SuppressAction<'a> {
    Add(NewSuppression),
    Remove { address: &'a str, channel: &'a str },
    List { as_json: bool },
}
