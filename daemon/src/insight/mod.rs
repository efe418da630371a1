//! Customer insight: orders come in (API, CLI, CSV import), and each customer's
//! value tier, RFM grade and behaviour are computed from them by the rules of
//! `classification.toml`. Every change writes its event into the inbox
//! (`first_order`, `tier_changed`, `rfm_changed`, `became_dormant`, `became_active`) in the
//! transaction that made it, so workflows react like to any other event.
//!
//! Re-classification happens on every order and follow-up, and once a day (in the
//! rules' time zone, on the daemon's clock) for what time alone changes.

pub mod classify;
pub mod money;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runs::Engine;
use crate::store::{self, Conn, Contact, Invalid, OrderInsert, OrderRow, Store};
use crate::workflow::{CLASSIFICATION_FILE, ClassificationRules, WorkflowSet};
use classify::{CustomerFacts, classify, window_starts};

/// Who the history names for changes that classification makes.
const CLASSIFIER: &str = "classification";
/// Customers re-classified per transaction in the daily pass.
const PASS_BATCH: i64 = 500;

/// An order as the API, the CLI and CSV files give it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// The order's id in the shop or ERP: sending it again changes nothing.
    pub id: String,
    /// The contact's id or email.
    pub contact: String,
    /// A decimal such as "1234.50"; an integer is accepted, a JSON float is not.
    pub amount: Amount,
    /// Defaults to the base currency.
    pub currency: Option<String>,
    /// YYYY-MM-DD (in the rules' time zone) or an RFC 3339 time; defaults to today.
    pub date: Option<String>,
    #[serde(default)]
    pub items: String,
}

/// An amount as given: text or an integer. A float would already have lost the
/// exact value it was written as, so it is refused with a message.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Amount {
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

/// What recording an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    Added { order_id: i64, contact_id: i64 },
    AlreadyPresent { order_id: i64 },
}

/// Whether a re-classification tells workflows about its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// Live data: write `first_order`, `tier_changed`, ... for workflows to react to.
    Write,
    /// Past data being loaded (`order import --history`): keep the classification and
    /// its history, but start no workflow (no after-sale mail for a first order of 2019).
    Skip,
}

/// Validates, converts and stores an order, and re-classifies its customer, all
/// in the caller's transaction. An unknown contact or currency, a bad amount or
/// date, or an existing order of the same id with other content is `Invalid`.
pub async fn record_order(
    conn: &mut Conn,
    rules: &ClassificationRules,
    new: &NewOrder,
    now: i64,
) -> anyhow::Result<OrderOutcome> {
    let outcome = store_order(conn, rules, new, now).await?;
    if let OrderOutcome::Added { order_id, contact_id } = outcome {
        order_placed(conn, order_id, contact_id, now).await?;
        reclassify_by_id(conn, Some(rules), contact_id, now, Events::Write).await?;
    }
    Ok(outcome)
}

/// The `order_placed` event: what the `ordered` exit condition of a run looks for.
pub async fn order_placed(conn: &mut Conn, order_id: i64, contact_id: i64, now: i64) -> anyhow::Result<()> {
    store::insert_event(conn, "order_placed", contact_id, &json!({ "order_id": order_id }), now).await?;
    Ok(())
}

/// Validates, converts and stores an order without re-classifying its customer:
/// for imports, which classify each customer once per batch.
pub async fn store_order(
    conn: &mut Conn,
    rules: &ClassificationRules,
    new: &NewOrder,
    now: i64,
) -> anyhow::Result<OrderOutcome> {
    let external_id = new.id.trim();
    if external_id.is_empty() {
        return Err(Invalid("an order needs an id (the order number of your shop or ERP)".into()).into());
    }
    let amount_minor = new.amount.minor_units()?;
    let currency = new
        .currency
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or(&rules.base_currency)
        .to_ascii_uppercase();
    let rate = rules.rate(&currency).map_err(Invalid)?;
    let today = rules.today(now);
    let date_given = new.date.as_deref().map(str::trim).filter(|d| !d.is_empty());
    let ordered_on = match date_given {
        None => today,
        Some(text) => parse_order_date(rules, text)?,
    };
    if ordered_on > today {
        return Err(Invalid(format!("order date {ordered_on} is in the future (today is {today})")).into());
    }
    let contact = store::find_contact(conn, &new.contact)
        .await?
        .ok_or_else(|| Invalid(format!("no contact `{}` (give an id or an email)", new.contact.trim())))?;
    let ordered_on = ordered_on.to_string();
    let row = OrderRow {
        external_id,
        contact_id: contact.id,
        amount_minor,
        currency: &currency,
        base_amount_minor: money::convert(amount_minor, rate),
        ordered_on: &ordered_on,
        items: new.items.trim(),
    };
    match store::insert_order(conn, &row, now).await? {
        OrderInsert::Added(order_id) => Ok(OrderOutcome::Added {
            order_id,
            contact_id: contact.id,
        }),
        OrderInsert::AlreadyPresent(order_id) => Ok(OrderOutcome::AlreadyPresent { order_id }),
        // A retry that left out the date (which defaults to today) is still the same order.
        OrderInsert::Conflict(existing)
            if date_given.is_none()
                && existing.contact_id == row.contact_id
                && existing.amount_minor == row.amount_minor
                && existing.currency == row.currency
                && existing.items == row.items =>
        {
            Ok(OrderOutcome::AlreadyPresent { order_id: existing.id })
        }
        OrderInsert::Conflict(existing) => Err(Invalid(format!(
            "order `{external_id}` exists already with other content ({} {} on {} for contact {}); \
             orders are never changed by sending them again",
            money::format_minor(existing.amount_minor),
            existing.currency,
            existing.ordered_on,
            existing.contact_id
        ))
        .into()),
    }
}

fn parse_order_date(rules: &ClassificationRules, text: &str) -> Result<jiff::civil::Date, Invalid> {
    if let Ok(date) = text.parse::<jiff::civil::Date>()
        && !text.contains('T')
        && !text.contains(' ')
    {
        return Ok(date);
    }
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(rules.date_of(at.as_millisecond()));
    }
    Err(Invalid(format!(
        "`{text}` is not a date; write YYYY-MM-DD (e.g. 2026-11-23) or an RFC 3339 time"
    )))
}

/// Computes a contact's classification from its orders and writes what changed,
/// each change with its history entry and (unless `Events::Skip`) its event. A
/// contact without orders is left alone: its tier may have been set by hand.
/// Returns the number of changes.
pub async fn reclassify(
    conn: &mut Conn,
    rules: &ClassificationRules,
    contact: &Contact,
    now: i64,
    events: Events,
) -> anyhow::Result<usize> {
    let today = rules.today(now);
    let (value_since, rfm_since) = window_starts(rules, today);
    let totals = store::order_totals(conn, contact.id, &value_since.to_string(), &rfm_since.to_string()).await?;
    let (Some(first_order), Some(last_order)) = (&totals.first_order, &totals.last_order) else {
        return Ok(0);
    };
    let facts = CustomerFacts {
        first_order: first_order.parse().context("stored order date")?,
        last_order: last_order.parse().context("stored order date")?,
        value_window_amount: totals.value_window_amount,
        rfm_window_count: totals.rfm_window_count,
        rfm_window_amount: totals.rfm_window_amount,
        last_follow_up: totals.last_follow_up_at.map(|at| rules.date_of(at)),
    };
    let now_class = classify(rules, &facts, today);
    let scores = now_class.rfm_scores();
    let mut changes = 0;
    if contact.customer_since.is_none() {
        if events == Events::Write {
            store::insert_event(conn, "first_order", contact.id, &json!({ "date": first_order }), now).await?;
        }
        changes += 1;
    }
    let changed = |old: &Option<String>, new: &str| old.as_deref() != Some(new);
    if changed(&contact.value_tier, now_class.value_tier) {
        let event = (events == Events::Write).then_some("tier_changed");
        record_change(
            conn,
            contact.id,
            "value_tier",
            event,
            &contact.value_tier,
            now_class.value_tier,
            now,
        )
        .await?;
        changes += 1;
    }
    if changed(&contact.rfm_grade, now_class.rfm_grade) {
        let event = (events == Events::Write).then_some("rfm_changed");
        record_change(
            conn,
            contact.id,
            "rfm_grade",
            event,
            &contact.rfm_grade,
            now_class.rfm_grade,
            now,
        )
        .await?;
        changes += 1;
    }
    if changed(&contact.behaviour, now_class.behaviour) {
        let from = contact.behaviour.as_deref();
        store::insert_history(
            conn,
            contact.id,
            "behaviour",
            from,
            Some(now_class.behaviour),
            CLASSIFIER,
            now,
        )
        .await?;
        // Falling dormant starts reactivation; buying again (from dormant or churned) ends it.
        let event = match (from, now_class.behaviour) {
            (_, "dormant") => Some("became_dormant"),
            (Some("dormant" | "churned"), "active") => Some("became_active"),
            _ => None,
        };
        if let Some(event) = event.filter(|_| events == Events::Write) {
            let payload = json!({ "from": from.unwrap_or(""), "last_order": last_order });
            store::insert_event(conn, event, contact.id, &payload, now).await?;
        }
        changes += 1;
    }
    // An older order imported later moves `customer_since` without changing anything else.
    if changes > 0
        || contact.rfm_scores.as_deref() != Some(scores.as_str())
        || contact.customer_since.as_deref() != Some(first_order.as_str())
    {
        let computed = store::ComputedClassification {
            value_tier: now_class.value_tier,
            rfm_grade: now_class.rfm_grade,
            rfm_scores: &scores,
            behaviour: now_class.behaviour,
            customer_since: first_order,
        };
        store::set_computed_classification(conn, contact.id, &computed, now).await?;
    }
    Ok(changes)
}

/// A history entry and (with `event`) a `{from, to}` event for one changed field.
async fn record_change(
    conn: &mut Conn,
    contact_id: i64,
    field: &str,
    event: Option<&str>,
    from: &Option<String>,
    to: &str,
    now: i64,
) -> anyhow::Result<()> {
    store::insert_history(conn, contact_id, field, from.as_deref(), Some(to), CLASSIFIER, now).await?;
    if let Some(event) = event {
        let payload = json!({ "from": from.as_deref().unwrap_or(""), "to": to });
        store::insert_event(conn, event, contact_id, &payload, now).await?;
    }
    Ok(())
}

/// Re-classifies a contact if rules are loaded (after a follow-up, which counts as
/// activity for churn, there may be none).
pub async fn reclassify_by_id(
    conn: &mut Conn,
    rules: Option<&ClassificationRules>,
    contact_id: i64,
    now: i64,
    events: Events,
) -> anyhow::Result<usize> {
    let (Some(rules), Some(contact)) = (rules, store::contact_by_id(conn, contact_id).await?) else {
        return Ok(0);
    };
    reclassify(conn, rules, &contact, now, events).await
}

/// What a classification pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassSummary {
    pub customers: usize,
    pub changes: usize,
}

/// Re-classifies every customer as of `now`, in batches of one transaction each,
/// and records the day. Unless `force`, does nothing if today's pass ran already.
/// A pass cut short by a crash is simply run again: a customer whose
/// classification did not change writes nothing.
pub async fn classification_pass(
    store: &Store,
    rules: &ClassificationRules,
    now: i64,
    force: bool,
) -> anyhow::Result<Option<PassSummary>> {
    let today = rules.today(now).to_string();
    {
        let mut conn = store.pool.acquire().await?;
        if !force
            && store::last_classification_pass(&mut conn)
                .await?
                .is_some_and(|d| d >= today)
        {
            return Ok(None);
        }
    }
    let mut summary = PassSummary::default();
    let mut after = 0;
    loop {
        let mut tx = store.write().await?;
        let ids = store::customer_ids(&mut tx, after, PASS_BATCH).await?;
        for &id in &ids {
            summary.changes += reclassify_by_id(&mut tx, Some(rules), id, now, Events::Write).await?;
        }
        summary.customers += ids.len();
        let done = (ids.len() as i64) < PASS_BATCH;
        if done {
            store::record_classification_pass(&mut tx, &today).await?;
        }
        tx.commit().await?;
        match ids.last() {
            Some(&last) if !done => after = last,
            _ => return Ok(Some(summary)),
        }
    }
}

/// The daemon's daily pass: checks whenever woken (a write, the virtual clock
/// moving) and at least every minute whether a new day began in the rules' zone.
/// Edited rules re-classify everyone at once rather than the next day.
pub async fn run_daily_pass(
    engine: Arc<Engine>,
    wake: Arc<Notify>,
    engine_wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut rules_source = None;
    loop {
        let set = engine.current();
        if let Some(rules) = set.classification.clone() {
            // Compared by text: every reload of the folder compiles new rules, edited or not.
            let source = set
                .files
                .iter()
                .find(|(path, _)| Path::new(path).file_name().is_some_and(|n| n == CLASSIFICATION_FILE))
                .map(|(_, source)| source.clone());
            let edited = rules_source.is_some() && rules_source != source;
            rules_source = source;
            match classification_pass(&engine.store, &rules, engine.clock.now_ms(), edited).await {
                Ok(Some(s)) => {
                    info!(
                        customers = s.customers,
                        changes = s.changes,
                        "daily classification pass"
                    );
                    if s.changes > 0 {
                        engine_wake.notify_one();
                    }
                }
                Ok(None) => {}
                Err(e) => warn!("daily classification pass: {e:#}"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// The rules in a workflow folder, for CLI commands that record orders outside the daemon.
pub fn load_rules(dir: &Path) -> anyhow::Result<Arc<ClassificationRules>> {
    let path = dir.join(CLASSIFICATION_FILE);
    let source = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "read {}: orders need the classification rules (base currency and rates)",
            path.display()
        )
    })?;
    let set = WorkflowSet::compile(vec![(path.display().to_string(), source)], &[])
        .map_err(|d| anyhow::anyhow!("{}\nfix {} first", d.render(false), path.display()))?;
    set.classification.context("the classification rules did not load")
}
