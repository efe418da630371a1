//! Customer insight: orders come in (`app::record_order`, CSV import), and each customer's
//! value tier, RFM grade and behaviour are computed from them by the rules of
//! `classification.toml`. Every change writes its event into the inbox
//! (`first_order`, `tier_changed`, `rfm_changed`, `became_dormant`, `became_active`) in the
//! transaction that made it, so workflows react like to any other event.
//!
//! Re-classification happens on every order and follow-up, and once a day (in the
//! rules' time zone, on the daemon's clock) for what time alone changes.

pub(crate) mod classify;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::model::money;
use crate::store::{
    self, Change, ComputedClassification, Conn, CustomerRecord, EventKind, Invalid, NewEvent, OrderRow, Store,
};
use crate::workflow::{CLASSIFICATION_FILE, ClassificationRules, WorkflowSet};
use classify::{Classified, CustomerFacts, classify, window_starts};

/// Who the history names for changes that classification makes.
const CLASSIFIER: &str = "classification";
/// Customers re-classified per transaction in the daily pass.
const PASS_BATCH: i64 = 500;

/// What recording an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OrderOutcome {
    Added { order_id: i64, contact_id: i64 },
    AlreadyPresent { order_id: i64 },
}

/// Whether a re-classification tells workflows about its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Events {
    /// Live data: write `first_order`, `tier_changed`, ... for workflows to react to.
    Write,
    /// Past data being loaded (`order import --history`): keep the classification and
    /// its history, but start no workflow (no after-sale mail for a first order of 2019).
    Skip,
}

/// An order checked against the rules (id, amount, currency, date), before it
/// meets the database.
#[derive(Debug, Clone)]
pub(crate) struct CheckedOrder {
    pub(crate) external_id: String,
    /// The contact's id or email, as given.
    pub(crate) contact: String,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) base_amount_minor: i64,
    /// YYYY-MM-DD in the rules' time zone.
    pub(crate) ordered_on: String,
    /// A retry that leaves out the date (which defaults to today) is still the same order.
    pub(crate) date_given: bool,
    pub(crate) items: String,
}

/// Stores checked orders without re-classifying their customers (imports classify
/// each customer once per batch), in a few statements whatever their number: an
/// outcome for each, in order. An order whose contact is unknown, or whose id is
/// stored (or comes earlier in `orders`) with other content, is `Invalid`.
pub(crate) async fn store_orders(
    conn: &mut Conn,
    orders: &[CheckedOrder],
    now: i64,
) -> anyhow::Result<Vec<Result<OrderOutcome, Invalid>>> {
    let contacts = store::contact_ids_by_reference(conn, orders.iter().map(|o| o.contact.as_str())).await?;
    let external_ids: Vec<&str> = orders.iter().map(|o| o.external_id.as_str()).collect();
    let stored = store::orders_by_external_id(conn, &external_ids).await?;
    /// What an order comes to, before the new ones have their ids.
    enum Slot {
        Done(Result<OrderOutcome, Invalid>),
        /// The new order at this index of `rows`.
        Added(usize),
        /// The same as that new order, once more.
        Again(usize),
    }
    let mut rows: Vec<OrderRow> = Vec::new();
    // The orders of this batch to be inserted, by external id: their index in `rows`.
    let mut new: HashMap<&str, usize> = HashMap::new();
    let mut slots = Vec::with_capacity(orders.len());
    for order in orders {
        let Some(contact_id) = contacts.get(&order.contact) else {
            slots.push(Slot::Done(Err(Invalid(format!(
                "no contact `{}` (give an id or an email)",
                order.contact
            )))));
            continue;
        };
        let row = OrderRow {
            external_id: &order.external_id,
            contact_id,
            amount_minor: order.amount_minor,
            currency: &order.currency,
            base_amount_minor: order.base_amount_minor,
            ordered_on: &order.ordered_on,
            items: &order.items,
        };
        slots.push(
            match (stored.get(&order.external_id), new.get(order.external_id.as_str())) {
                (Some(existing), _) => Slot::Done(
                    same_order(&existing.as_row(), &row, order.date_given)
                        .map(|()| OrderOutcome::AlreadyPresent { order_id: existing.id }),
                ),
                (None, Some(&i)) => match same_order(&rows[i], &row, order.date_given) {
                    Ok(()) => Slot::Again(i),
                    Err(conflict) => Slot::Done(Err(conflict)),
                },
                (None, None) => {
                    new.insert(&order.external_id, rows.len());
                    rows.push(row);
                    Slot::Added(rows.len() - 1)
                }
            },
        );
    }
    let ids = store::insert_orders(conn, &rows, now).await?;
    Ok(slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Done(outcome) => outcome,
            Slot::Added(i) => Ok(OrderOutcome::Added {
                order_id: ids[i],
                contact_id: rows[i].contact_id,
            }),
            Slot::Again(i) => Ok(OrderOutcome::AlreadyPresent { order_id: ids[i] }),
        })
        .collect())
}

/// Whether `new` is the order stored as `existing`: the same, or a conflict.
fn same_order(existing: &OrderRow, new: &OrderRow, date_given: bool) -> Result<(), Invalid> {
    // The base amount is left out: a rate changed since does not make it another order.
    let same_but_date = existing.contact_id == new.contact_id
        && existing.amount_minor == new.amount_minor
        && existing.currency == new.currency
        && existing.items == new.items;
    if same_but_date && (existing.ordered_on == new.ordered_on || !date_given) {
        return Ok(());
    }
    Err(Invalid(format!(
        "order `{}` exists already with other content ({} {} on {} for contact {}); \
         orders are never changed by sending them again",
        existing.external_id,
        money::format_minor(existing.amount_minor),
        existing.currency,
        existing.ordered_on,
        existing.contact_id
    )))
}

/// Computes the classification of customers from their orders and writes what
/// changed, each change with its history entry and (unless `Events::Skip`) its
/// event, in a few statements for the whole batch. Contacts without orders are
/// left alone: their tier may have been set by hand. Returns the number of changes.
pub(crate) async fn reclassify_customers(
    conn: &mut Conn,
    rules: &ClassificationRules,
    contact_ids: &[i64],
    now: i64,
    events: Events,
) -> anyhow::Result<usize> {
    let today = rules.today(now);
    let (value_since, rfm_since) = window_starts(rules, today);
    let mut customers =
        store::customer_records(conn, contact_ids, &value_since.to_string(), &rfm_since.to_string()).await?;
    // Changes are written customer by customer, in id order.
    customers.sort_unstable_by_key(|c| c.contact_id);
    let mut writes = Writes {
        events,
        history: Vec::new(),
        new_events: Vec::new(),
        computed: Vec::new(),
        changes: 0,
    };
    for c in &customers {
        let facts = CustomerFacts {
            first_order: c.first_order.parse().context("stored order date")?,
            last_order: c.last_order.parse().context("stored order date")?,
            value_window_amount: c.value_window_amount,
            rfm_window_count: c.rfm_window_count,
            rfm_window_amount: c.rfm_window_amount,
            last_follow_up: c.last_follow_up_at.map(|at| rules.date_of(at)),
        };
        writes.compare(c, classify(rules, &facts, today));
    }
    store::insert_history_entries(conn, &writes.history, CLASSIFIER, now).await?;
    store::insert_events(conn, &writes.new_events, now).await?;
    store::set_computed_classifications(conn, &writes.computed, now).await?;
    Ok(writes.changes)
}

/// What re-classifying a batch of customers writes, gathered customer by customer.
struct Writes<'a> {
    events: Events,
    history: Vec<Change<'a>>,
    new_events: Vec<NewEvent>,
    computed: Vec<ComputedClassification<'a>>,
    changes: usize,
}

impl<'a> Writes<'a> {
    /// Compares a customer's stored classification with the one computed now.
    fn compare(&mut self, c: &'a CustomerRecord, now_class: Classified) {
        let scores = now_class.rfm_scores();
        let before = self.changes;
        if c.customer_since.is_none() {
            self.event(c, EventKind::FirstOrder, json!({ "date": c.first_order }));
            self.changes += 1;
        }
        let fields = [
            (
                "value_tier",
                &c.value_tier,
                now_class.value_tier,
                EventKind::TierChanged,
            ),
            ("rfm_grade", &c.rfm_grade, now_class.rfm_grade, EventKind::RfmChanged),
        ];
        for (field, from, to, kind) in fields {
            if from.as_deref() != Some(to) {
                self.history.push(Change {
                    contact_id: c.contact_id,
                    field,
                    from: from.as_deref(),
                    to: Some(to),
                });
                self.event(c, kind, json!({ "from": from.as_deref().unwrap_or(""), "to": to }));
                self.changes += 1;
            }
        }
        let from = c.behaviour.as_deref();
        if from != Some(now_class.behaviour) {
            self.history.push(Change {
                contact_id: c.contact_id,
                field: "behaviour",
                from,
                to: Some(now_class.behaviour),
            });
            // Falling dormant starts reactivation; buying again (from dormant or churned) ends it.
            let kind = match (from, now_class.behaviour) {
                (_, "dormant") => Some(EventKind::BecameDormant),
                (Some("dormant" | "churned"), "active") => Some(EventKind::BecameActive),
                _ => None,
            };
            if let Some(kind) = kind {
                self.event(
                    c,
                    kind,
                    json!({ "from": from.unwrap_or(""), "last_order": c.last_order }),
                );
            }
            self.changes += 1;
        }
        // An older order imported later moves `customer_since` without changing anything else.
        if self.changes > before
            || c.rfm_scores.as_deref() != Some(scores.as_str())
            || c.customer_since.as_deref() != Some(c.first_order.as_str())
        {
            self.computed.push(ComputedClassification {
                contact_id: c.contact_id,
                value_tier: now_class.value_tier,
                rfm_grade: now_class.rfm_grade,
                rfm_scores: scores,
                behaviour: now_class.behaviour,
                customer_since: &c.first_order,
            });
        }
    }

    fn event(&mut self, c: &CustomerRecord, kind: EventKind, payload: serde_json::Value) {
        if self.events == Events::Write {
            self.new_events.push(NewEvent {
                kind,
                contact_id: c.contact_id,
                payload,
            });
        }
    }
}

/// What a classification pass did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassSummary {
    pub(crate) customers: usize,
    pub(crate) changes: usize,
}

/// Re-classifies every customer as of `now`, in batches of one transaction each,
/// and records the day. Unless `force`, does nothing if today's pass ran already.
/// A pass cut short by a crash is simply run again: a customer whose
/// classification did not change writes nothing.
pub(crate) async fn classification_pass(
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
        summary.changes += reclassify_customers(&mut tx, rules, &ids, now, Events::Write).await?;
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
pub(crate) async fn run_daily_pass(
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
pub(crate) fn load_rules(dir: &Path) -> anyhow::Result<Arc<ClassificationRules>> {
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
