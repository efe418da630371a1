//! The use cases: what people and other systems ask of nudge (add a contact,
//! change a stage, log a follow-up, record an order, ...), one function each,
//! with typed input, working in the caller's transaction. The HTTP API, the CLI
//! and the CSV importers all call these, so a use case behaves the same however
//! it comes in. The callers differ only in what they bring: the daemon passes its
//! running rule set, the CLI the rules in the files; and in how they answer.

mod contacts;
pub(crate) mod explain;
mod follow_ups;
mod orders;
mod runs;
pub(crate) mod status;
mod suppressions;

pub(crate) use contacts::{
    ContactCard, NewInquiry, add_contact, add_contacts, add_inquiry, change_stage, contact_card, edit_contact,
};
pub(crate) use follow_ups::{FollowUpInput, FollowUpLogged, Repeats, log_follow_up};
pub(crate) use orders::{Amount, NewOrder, record_order, record_orders};
pub(crate) use runs::{RunPage, RunQuery, list_runs, run_detail};
pub(crate) use suppressions::{NewSuppression, suppress};

use crate::store::{self, Conn, Contact};

/// A contact (or another thing) that the input names does not exist.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotFound(pub(crate) String);

/// The contact `reference` names: an id, or an email.
pub(crate) async fn find_contact(conn: &mut Conn, reference: &str) -> anyhow::Result<Contact> {
    store::find_contact(conn, reference)
        .await?
        .ok_or_else(|| NotFound(format!("no contact `{reference}` (give an id or an email)")).into())
}
