//! A row of an orders CSV: `id, contact, amount[, currency, date, items]`. Each
//! customer is re-classified once per commit (`RowKind::ROWS_PER_COMMIT` rows), after
//! its rows: a file of a customer's past orders moves their tier once, not once per order.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Parser, RowKind, RowOutcome};
use crate::app::{self, Amount, NewOrder};
use crate::insight::{CheckedOrder, Events, OrderOutcome, reclassify_customers};
use crate::store::Conn;
use crate::workflow::ClassificationRules;

pub(crate) struct Orders {
    pub(crate) rules: Arc<ClassificationRules>,
    pub(crate) now: i64,
    /// Whether classification changes start workflows (not for `--history`).
    pub(crate) events: Events,
    /// Customers with orders added since the last commit.
    customers: BTreeSet<i64>,
}

impl Orders {
    pub(crate) fn new(rules: Arc<ClassificationRules>, now: i64, events: Events) -> Self {
        Orders {
            rules,
            now,
            events,
            customers: BTreeSet::new(),
        }
    }
}

impl RowKind for Orders {
    type Item = CheckedOrder;

    const COLUMNS: &'static [&'static str] = &["id", "contact", "amount", "currency", "date", "items"];
    const REQUIRED: &'static [&'static str] = &["id", "contact", "amount"];
    const NO_QUOTES: &'static [&'static str] = &["id", "contact", "amount", "currency", "date"];

    fn parser(&self) -> Parser<CheckedOrder> {
        let (rules, now) = (self.rules.clone(), self.now);
        Box::new(move |row| {
            let order = NewOrder {
                id: row.text("id"),
                contact: row.text("contact"),
                amount: Amount::Text(row.text("amount")),
                currency: row.owned("currency"),
                date: row.owned("date"),
                items: row.text("items"),
            };
            order.check(&rules, now).map_err(|e| e.0)
        })
    }

    async fn store(
        &mut self,
        conn: &mut Conn,
        items: Vec<CheckedOrder>,
    ) -> anyhow::Result<Vec<Result<RowOutcome, String>>> {
        let outcomes = app::record_orders(conn, &items, self.events, self.now).await?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(OrderOutcome::Added { contact_id, .. }) => {
                    self.customers.insert(contact_id);
                    Ok(RowOutcome::Added)
                }
                Ok(OrderOutcome::AlreadyPresent { .. }) => Ok(RowOutcome::AlreadyPresent),
                Err(invalid) => Err(invalid.0),
            })
            .collect())
    }

    /// A customer is re-classified once per commit, after all their rows in it.
    async fn finish(&mut self, conn: &mut Conn) -> anyhow::Result<()> {
        let customers: Vec<i64> = std::mem::take(&mut self.customers).into_iter().collect();
        reclassify_customers(conn, &self.rules, &customers, self.now, self.events).await?;
        Ok(())
    }
}
