//! Suppressing an address by hand: it gets nothing more on the channel (or on
//! every channel, `*`), whatever workflow would send to it; with scope
//! `marketing`, only marketing stops (docs/domain.md §5).

use serde::Deserialize;

use crate::store::{self, Conn, ConsentScope};

/// An address to suppress by hand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSuppression {
    pub(crate) address: String,
    #[serde(default = "all_channels")]
    pub(crate) channel: String,
    /// `all` customer-facing mail (the default: an address suppressed by hand gets
    /// nothing from us), or `marketing` only.
    #[serde(default = "all_mail")]
    pub(crate) scope: ConsentScope,
    #[serde(default)]
    pub(crate) detail: String,
}

fn all_channels() -> String {
    "*".into()
}

fn all_mail() -> ConsentScope {
    ConsentScope::All
}

/// Suppresses an address, `by` someone (`cli`, `api`); false when it was
/// suppressed already (as widely). The contact with that email address, if
/// any, has it in their history.
pub(crate) async fn suppress(conn: &mut Conn, new: &NewSuppression, by: &str, now: i64) -> anyhow::Result<bool> {
    let what = store::Suppress {
        address: &new.address,
        channel: &new.channel,
        reason: store::SuppressionReason::Manual,
        scope: new.scope,
        detail: &new.detail,
    };
    let added = store::suppress(conn, &what, now).await?;
    if added && let Some(contact) = store::contact_by_email(conn, new.address.trim()).await? {
        let by = match new.detail.trim() {
            "" => format!("{by}: suppressed by hand"),
            detail => format!("{by}: suppressed by hand ({detail})"),
        };
        let scope = Some(new.scope.as_str());
        store::insert_history(conn, contact.id, "unsubscribed", None, scope, &by, now).await?;
    }
    Ok(added)
}
