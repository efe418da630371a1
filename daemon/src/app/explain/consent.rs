//! The contact's consent and the suppressions of their addresses: what
//! withholds their messages, where it came from and since when.

use serde::Serialize;

use super::Moment;
use crate::store::{self, Conn, Contact};

/// A change of the contact's consent: who made it (cli, api, a rep's email,
/// the unsubscribe page) and when.
#[derive(Debug, Serialize)]
pub(crate) struct ConsentChange {
    #[serde(flatten)]
    pub(crate) when: Moment,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) by: String,
}

/// A suppression of one of the contact's addresses: its source (reason and
/// detail, e.g. a bounce's server reply or `one-click`), scope and date.
#[derive(Debug, Serialize)]
pub(crate) struct Suppression {
    #[serde(flatten)]
    pub(crate) when: Moment,
    pub(crate) address: String,
    pub(crate) channel: String,
    pub(crate) source: String,
    pub(crate) scope: String,
    pub(crate) detail: String,
}

pub(super) async fn changes(conn: &mut Conn, contact_id: i64, at: i64) -> anyhow::Result<Vec<ConsentChange>> {
    let rows: Vec<(i64, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT at, from_value, to_value, changed_by FROM contact_history
         WHERE contact_id = ? AND field = 'consent' AND at <= ? ORDER BY at, id",
    )
    .bind(contact_id)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(changed_at, from, to, by)| ConsentChange {
            when: Moment::of(changed_at),
            from,
            to,
            by,
        })
        .collect())
}

pub(super) async fn suppressions(conn: &mut Conn, contact: &Contact, at: i64) -> anyhow::Result<Vec<Suppression>> {
    let addresses: Vec<String> = [&contact.email, &contact.phone]
        .into_iter()
        .flatten()
        .map(|a| store::normalise_address(a))
        .collect();
    let rows: Vec<(i64, String, String, String, String, String)> = sqlx::query_as(
        "SELECT created_at, address, channel, reason, scope, detail FROM suppressions
         WHERE address IN (SELECT value FROM json_each(?)) AND created_at <= ? ORDER BY created_at",
    )
    .bind(serde_json::to_string(&addresses)?)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(created_at, address, channel, source, scope, detail)| Suppression {
            when: Moment::of(created_at),
            address,
            channel,
            source,
            scope,
            detail,
        })
        .collect())
}
