//! `--against`: the messages the candidate folder gains or loses against the
//! current one, compared in SQLite across the two simulations' copies, so that
//! only the difference is ever held in memory.

use std::path::Path;

use anyhow::Context as _;

use crate::store::{self, MessageDifference, Store};

/// The messages of the simulation in `candidate` (a copy's file) that `current`'s lacks, and the reverse.
pub(crate) async fn differences(current: &Store, candidate: &Path) -> anyhow::Result<Vec<MessageDifference>> {
    let path = candidate.to_str().context("the temporary folder's path is not UTF-8")?;
    let mut conn = current.pool.acquire().await?;
    sqlx::query("ATTACH DATABASE ? AS candidate")
        .bind(path)
        .execute(&mut *conn)
        .await
        .context("open the candidate's simulation")?;
    let found = store::simulated_differences(&mut conn).await;
    // Detached whatever happened: the connection goes back to the pool.
    sqlx::query("DETACH DATABASE candidate").execute(&mut *conn).await?;
    found
}
