//! Contacts: adding them one by one or from a file, showing one, moving one to
//! another lifecycle stage, and the inquiries they send.

use serde::{Deserialize, Serialize};

use super::find_contact;
use crate::store::{self, Conn, Contact, ContactEdit, FollowUp, HistoryEntry, Invalid, NewContact, Order};

/// Adds one contact; a contact with the same email is `Invalid`.
pub(crate) async fn add_contact(conn: &mut Conn, new: &NewContact, now: i64) -> anyhow::Result<i64> {
    store::insert_contact(conn, new, now).await
}

/// Adds contacts from a file, each with whether it is valid: a contact known
/// already (by email, or by phone, or by name and company) is left as it is,
/// so that a second import adds nobody twice. Per contact: added, or known, or
/// why not.
pub(crate) async fn add_contacts(
    conn: &mut Conn,
    new: &[(NewContact, Result<(), Invalid>)],
    now: i64,
) -> anyhow::Result<Vec<Result<bool, String>>> {
    store::insert_new_contacts(conn, new, now).await
}

/// A contact with its latest follow-ups and orders and the history of its fields.
#[derive(Serialize)]
pub(crate) struct ContactCard {
    pub(crate) contact: Contact,
    pub(crate) follow_ups: Vec<FollowUp>,
    pub(crate) orders: Vec<Order>,
    pub(crate) history: Vec<HistoryEntry>,
}

/// Changes of fields shown with a contact, newest first.
const HISTORY_SHOWN: i64 = 50;

/// The contact `reference` names, with its `latest` follow-ups and orders.
pub(crate) async fn contact_card(conn: &mut Conn, reference: &str, latest: i64) -> anyhow::Result<ContactCard> {
    let contact = find_contact(conn, reference).await?;
    Ok(ContactCard {
        follow_ups: store::follow_ups_of(conn, contact.id, latest).await?,
        orders: store::orders_of(conn, contact.id, latest).await?,
        history: store::history_of(conn, contact.id, HISTORY_SHOWN).await?,
        contact,
    })
}

/// Changes how the contact `reference` names is addressed, or its locale;
/// `by` is who the history names (`api`, `cli`). Returns its id.
pub(crate) async fn edit_contact(
    conn: &mut Conn,
    reference: &str,
    edit: &ContactEdit,
    by: &str,
    now: i64,
) -> anyhow::Result<i64> {
    let contact = find_contact(conn, reference).await?;
    store::edit_contact(conn, &contact, edit, by, now).await?;
    Ok(contact.id)
}

/// What a stage change did.
pub(crate) struct StageChange {
    pub(crate) contact_id: i64,
    /// The stage before.
    pub(crate) from: String,
    /// The `stage_changed` event, or `None` when the contact was at that stage already.
    pub(crate) event_id: Option<i64>,
}

/// Moves a contact to `stage`; workflows triggered by `stage_changed` react.
/// `by` is who the history names (`api`, `cli`).
pub(crate) async fn change_stage(
    conn: &mut Conn,
    reference: &str,
    stage: &str,
    by: &str,
    now: i64,
) -> anyhow::Result<StageChange> {
    let contact = find_contact(conn, reference).await?;
    let event_id = store::set_stage(conn, contact.id, &contact.stage, stage, by, now).await?;
    Ok(StageChange {
        contact_id: contact.id,
        from: contact.stage,
        event_id,
    })
}

/// An inquiry from a contact: it starts the response SLA.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewInquiry {
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) channel: String,
}

/// Records an inquiry of the contact `reference`: (the contact's id, the inquiry's).
pub(crate) async fn add_inquiry(
    conn: &mut Conn,
    reference: &str,
    inquiry: &NewInquiry,
    now: i64,
) -> anyhow::Result<(i64, i64)> {
    let contact = find_contact(conn, reference).await?;
    let id = store::add_inquiry(conn, contact.id, &inquiry.message, &inquiry.channel, now).await?;
    Ok((contact.id, id))
}
