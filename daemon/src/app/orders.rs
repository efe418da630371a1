//! Recording orders: checked against the classification rules (id, amount,
//! currency, date), stored once whatever how often they are sent, announced by
//! `order_placed`, and their customer re-classified.

use serde::Deserialize;
use serde_json::json;

use crate::clock::check_day;
use crate::insight::{CheckedOrder, Events, OrderOutcome, reclassify_customers, store_orders};
use crate::model::money;
use crate::store::{self, Conn, Invalid, NewEvent};
use crate::workflow::ClassificationRules;

/// An order as the API, the CLI and CSV files give it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOrder {
    /// The order's id in the shop or ERP: sending it again changes nothing.
    pub(crate) id: String,
    /// The contact's id or email.
    pub(crate) contact: String,
    /// A decimal such as "1234.50"; an integer is accepted, a JSON float is not.
    pub(crate) amount: Amount,
    /// Defaults to the base currency.
    pub(crate) currency: Option<String>,
    /// YYYY-MM-DD (in the rules' time zone) or an RFC 3339 time; defaults to today.
    pub(crate) date: Option<String>,
    #[serde(default)]
    pub(crate) items: String,
}

/// An amount as given: text or an integer. A float would already have lost the
/// exact value it was written as, so it is refused with a message.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Amount {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl Default for Amount {
    fn default() -> Self {
        Amount::Text(String::new())
    }
}

impl Amount {
    fn minor_units(&self) -> Result<i64, Invalid> {
        match self {
            Amount::Text(text) => money::parse_amount(text).map_err(Invalid),
            Amount::Integer(n) => money::parse_amount(&n.to_string()).map_err(Invalid),
            Amount::Float(f) => Err(Invalid(format!(
                "amount {f} is a floating-point number; send it as a string, e.g. \"{f}\", so no precision is lost"
            ))),
        }
    }
}

impl NewOrder {
    /// Validates and converts what needs no database: a missing id, a bad amount or
    /// date, a currency without a rate or a date in the future are `Invalid`.
    pub(crate) fn check(&self, rules: &ClassificationRules, now: i64) -> Result<CheckedOrder, Invalid> {
        let external_id = self.id.trim();
        if external_id.is_empty() {
            return Err(Invalid(
                "an order needs an id (the order number of your shop or ERP)".into(),
            ));
        }
        let amount_minor = self.amount.minor_units()?;
        let currency = self
            .currency
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or(&rules.base_currency)
            .to_ascii_uppercase();
        let rate = rules.rate(&currency).map_err(Invalid)?;
        let today = rules.today(now);
        let date_given = self.date.as_deref().map(str::trim).filter(|d| !d.is_empty());
        let ordered_on = match date_given {
            None => today,
            Some(text) => parse_order_date(rules, text)?,
        };
        if ordered_on > today {
            return Err(Invalid(format!(
                "order date {ordered_on} is in the future (today is {today})"
            )));
        }
        Ok(CheckedOrder {
            external_id: external_id.to_string(),
            contact: self.contact.trim().to_string(),
            amount_minor,
            base_amount_minor: money::convert(amount_minor, rate),
            currency,
            ordered_on: ordered_on.to_string(),
            date_given: date_given.is_some(),
            items: self.items.trim().to_string(),
        })
    }
}

/// Validates, converts and stores an order, and re-classifies its customer, all
/// in the caller's transaction. An unknown contact or currency, a bad amount or
/// date, or an existing order of the same id with other content is `Invalid`.
pub(crate) async fn record_order(
    conn: &mut Conn,
    rules: &ClassificationRules,
    new: &NewOrder,
    now: i64,
) -> anyhow::Result<OrderOutcome> {
    let checked = new.check(rules, now)?;
    let outcome = record_orders(conn, std::slice::from_ref(&checked), Events::Write, now)
        .await?
        .remove(0)?;
    if let OrderOutcome::Added { contact_id, .. } = outcome {
        reclassify_customers(conn, rules, &[contact_id], now, Events::Write).await?;
    }
    Ok(outcome)
}

/// Stores checked orders and (unless `Events::Skip`) writes `order_placed` for
/// each new one, what the `ordered` exit condition of a run looks for. Their
/// customers are left for the caller to re-classify: an import does each once
/// per commit, after all of their rows in it. An outcome for each, in order.
pub(crate) async fn record_orders(
    conn: &mut Conn,
    orders: &[CheckedOrder],
    events: Events,
    now: i64,
) -> anyhow::Result<Vec<Result<OrderOutcome, Invalid>>> {
    let outcomes = store_orders(conn, orders, now).await?;
    if events == Events::Write {
        let placed: Vec<NewEvent> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Ok(OrderOutcome::Added { order_id, contact_id }) => Some(NewEvent {
                    kind: store::EventKind::OrderPlaced,
                    contact_id: *contact_id,
                    payload: json!({ "order_id": order_id }),
                }),
                _ => None,
            })
            .collect();
        store::insert_events(conn, &placed, now).await?;
    }
    Ok(outcomes)
}

fn parse_order_date(rules: &ClassificationRules, text: &str) -> Result<jiff::civil::Date, Invalid> {
    let date = if let Ok(date) = text.parse::<jiff::civil::Date>()
        && !text.contains('T')
        && !text.contains(' ')
    {
        date
    } else if let Ok(at) = text.parse::<jiff::Timestamp>() {
        rules.date_of(at.as_millisecond())
    } else {
        return Err(Invalid(format!(
            "`{text}` is not a date; write YYYY-MM-DD (e.g. 2026-11-23) or an RFC 3339 time"
        )));
    };
    check_day(date).map_err(|e| Invalid(format!("order date {e}")))
}
