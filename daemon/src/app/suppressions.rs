//! Suppressing an address by hand: it gets nothing more on the channel (or on
//! every channel, `*`), whatever workflow would send to it.

use serde::Deserialize;

use crate::store::{self, Conn};

/// An address to suppress by hand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSuppression {
    pub(crate) address: String,
    #[serde(default = "all_channels")]
    pub(crate) channel: String,
    #[serde(default)]
    pub(crate) detail: String,
}

fn all_channels() -> String {
    "*".into()
}

/// Suppresses an address; false when it was suppressed already.
pub(crate) async fn suppress(conn: &mut Conn, new: &NewSuppression, now: i64) -> anyhow::Result<bool> {
    store::suppress(
        conn,
        &new.address,
        &new.channel,
        store::SuppressionReason::Manual,
        &new.detail,
        now,
    )
    .await
}
