//! A row of an orders CSV: `id, contact, amount[, currency, date, items]`. Each
//! customer is re-classified once per batch, after its rows: a file of a
//! customer's past orders moves their tier once, not once per order.

use std::collections::BTreeSet;

use super::{Row, RowKind, RowOutcome};
use crate::insight::{Amount, Events, NewOrder, OrderOutcome, order_placed, reclassify_by_id, store_order};
use crate::store::Tx;
use crate::workflow::ClassificationRules;

pub struct Orders<'a> {
    pub rules: &'a ClassificationRules,
    pub now: i64,
    /// Whether classification changes start workflows (not for `--history`).
    pub events: Events,
    /// Customers with new orders in this batch.
    customers: BTreeSet<i64>,
}

impl<'a> Orders<'a> {
    pub fn new(rules: &'a ClassificationRules, now: i64, events: Events) -> Self {
        Orders {
            rules,
            now,
            events,
            customers: BTreeSet::new(),
        }
    }
}

impl RowKind for Orders<'_> {
    const COLUMNS: &'static [&'static str] = &["id", "contact", "amount", "currency", "date", "items"];
    const REQUIRED: &'static [&'static str] = &["id", "contact", "amount"];
    const NO_QUOTES: &'static [&'static str] = &["id", "contact", "amount", "currency", "date"];

    async fn import(&mut self, tx: &mut Tx, row: &Row<'_>) -> anyhow::Result<RowOutcome> {
        let order = NewOrder {
            id: row.text("id"),
            contact: row.text("contact"),
            amount: Amount::Text(row.text("amount")),
            currency: row.owned("currency"),
            date: row.owned("date"),
            items: row.text("items"),
        };
        Ok(match store_order(tx, self.rules, &order, self.now).await? {
            OrderOutcome::Added { order_id, contact_id } => {
                if self.events == Events::Write {
                    order_placed(tx, order_id, contact_id, self.now).await?;
                }
                self.customers.insert(contact_id);
                RowOutcome::Added
            }
            OrderOutcome::AlreadyPresent { .. } => RowOutcome::AlreadyPresent,
        })
    }

    async fn finish_batch(&mut self, tx: &mut Tx) -> anyhow::Result<()> {
        for id in std::mem::take(&mut self.customers) {
            reclassify_by_id(tx, Some(self.rules), id, self.now, self.events).await?;
        }
        Ok(())
    }
}
