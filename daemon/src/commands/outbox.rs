//! `nudge outbox list|retry|drop`: the messages the daemon sends, and what an
//! operator may do about those that failed or whose outcome is unknown.

use anyhow::bail;

use crate::clock::display_ms;
use crate::config::Config;
use crate::daemon;
use crate::store;

/// `nudge outbox list`: messages by status, newest first.
pub(crate) async fn list(
    config: &Config,
    statuses: &[store::OutboxStatus],
    limit: i64,
    as_json: bool,
) -> anyhow::Result<()> {
    let (store, _) = daemon::open(config).await?;
    let mut conn = store.pool.acquire().await?;
    let rows = store::list_outbox(&mut conn, statuses, limit).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no messages{}",
            if statuses.is_empty() {
                String::new()
            } else {
                let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
                format!(" with status {}", statuses.join(" or "))
            }
        );
    }
    for r in &rows {
        println!(
            "{:>8}  {:<10} {:<6} {:<13} {:<32} attempts {:>2}  {}",
            r.id, r.status, r.channel, r.category, r.recipient, r.attempts, r.message_id
        );
        if let Some(error) = &r.last_error {
            let when = if r.status == store::OutboxStatus::Pending {
                format!(" (next try {})", display_ms(r.next_attempt_at))
            } else {
                String::new()
            };
            println!("          last error: {error}{when}");
        }
    }
    Ok(())
}

/// `nudge outbox retry|drop`: acts on the given rows, or on every row with `all_status`.
pub(crate) async fn act(
    config: &Config,
    retry: bool,
    ids: &[i64],
    all_status: Option<store::OutboxStatus>,
) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let ids = match all_status {
        Some(status) => store::outbox_ids_with_status(&mut tx, status).await?,
        None => ids.to_vec(),
    };
    if ids.is_empty() {
        bail!("name the messages (ids from `nudge outbox list`) or use --all <status>");
    }
    let now = clock.now_ms();
    let changed = if retry {
        store::retry_outbox(&mut tx, &ids, now).await?
    } else {
        store::drop_outbox(&mut tx, &ids, now).await?
    };
    tx.commit().await?;
    let verb = if retry { "queued again" } else { "dropped" };
    println!("{changed} of {} message(s) {verb}", ids.len());
    if (changed as usize) < ids.len() {
        eprintln!("note: sent messages (and, for retry, pending ones) are left as they are");
    }
    Ok(())
}
