//! `nudge inquiry add`: an inquiry from a contact, which starts the response SLA.

use crate::app::{self, NewInquiry};
use crate::config::Config;
use crate::daemon;

/// `nudge inquiry add`.
pub(crate) async fn add(config: &Config, reference: &str, inquiry: &NewInquiry) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let (contact_id, id) = app::add_inquiry(&mut tx, reference, inquiry, clock.now_ms()).await?;
    tx.commit().await?;
    println!("inquiry {id} recorded for contact {contact_id}");
    Ok(())
}
