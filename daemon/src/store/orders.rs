//! Orders, the facts about a customer that classification reads from them, the
//! computed classification written back, and the contact history of who changed what.

use serde::{Deserialize, Serialize};

use sqlx::{QueryBuilder, Sqlite};

use super::{Conn, inserted_ids, push_multi_row_insert};

/// An order, validated and converted, ready to store.
#[derive(Debug, Clone)]
pub(crate) struct OrderRow<'a> {
    pub(crate) external_id: &'a str,
    pub(crate) contact_id: i64,
    pub(crate) amount_minor: i64,
    pub(crate) currency: &'a str,
    pub(crate) base_amount_minor: i64,
    /// YYYY-MM-DD in the classification's time zone.
    pub(crate) ordered_on: &'a str,
    pub(crate) items: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) id: i64,
    pub(crate) external_id: String,
    pub(crate) contact_id: i64,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) base_amount_minor: i64,
    pub(crate) ordered_on: String,
    pub(crate) items: String,
}

impl Order {
    pub(crate) fn as_row(&self) -> OrderRow<'_> {
        OrderRow {
            external_id: &self.external_id,
            contact_id: self.contact_id,
            amount_minor: self.amount_minor,
            currency: &self.currency,
            base_amount_minor: self.base_amount_minor,
            ordered_on: &self.ordered_on,
            items: &self.items,
        }
    }
}

/// Stores orders (none of whose external ids is stored yet, as `orders_by_external_id`
/// tells) as multi-row VALUES; returns their ids, in the order given.
pub(crate) async fn insert_orders(conn: &mut Conn, rows: &[OrderRow<'_>], now: i64) -> anyhow::Result<Vec<i64>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut insert = QueryBuilder::new("");
    push_multi_row_insert(
        &mut insert,
        "INSERT INTO orders (external_id, contact_id, amount_minor, currency, base_amount_minor, ordered_on, items,
                             created_at) ",
        rows,
        8,
        "",
        |mut row, r| {
            row.push_bind(r.external_id)
                .push_bind(r.contact_id)
                .push_bind(r.amount_minor)
                .push_bind(r.currency)
                .push_bind(r.base_amount_minor)
                .push_bind(r.ordered_on)
                .push_bind(r.items)
                .push_bind(now);
        },
    );
    let done = insert.build().execute(&mut *conn).await?;
    Ok(inserted_ids(&done, rows.len() as u64).into_iter().flatten().collect())
}

/// The stored orders among `external_ids`, by external id.
pub(crate) async fn orders_by_external_id(
    conn: &mut Conn,
    external_ids: &[&str],
) -> anyhow::Result<std::collections::HashMap<String, Order>> {
    let json: Option<String> = sqlx::query_scalar(
        "SELECT json_group_array(json_array(id, external_id, contact_id, amount_minor, currency, base_amount_minor,
                                            ordered_on, items))
         FROM orders WHERE external_id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(external_ids)?)
    .fetch_one(&mut *conn)
    .await?;
    let orders: Vec<Order> = serde_json::from_str(json.as_deref().unwrap_or("[]"))?;
    Ok(orders.into_iter().map(|o| (o.external_id.clone(), o)).collect())
}

/// The latest orders of a contact, newest first.
pub(crate) async fn orders_of(conn: &mut Conn, contact_id: i64, limit: i64) -> anyhow::Result<Vec<Order>> {
    Ok(sqlx::query_as(
        "SELECT id, external_id, contact_id, amount_minor, currency, base_amount_minor, ordered_on, items
         FROM orders WHERE contact_id = ? ORDER BY ordered_on DESC, id DESC LIMIT ?",
    )
    .bind(contact_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// A customer as classification reads it: the classification stored now, and the
/// facts of their orders. Dates are YYYY-MM-DD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct CustomerRecord {
    pub(crate) contact_id: i64,
    pub(crate) value_tier: Option<String>,
    pub(crate) rfm_grade: Option<String>,
    pub(crate) rfm_scores: Option<String>,
    pub(crate) behaviour: Option<String>,
    pub(crate) customer_since: Option<String>,
    pub(crate) first_order: String,
    pub(crate) last_order: String,
    /// Base-currency purchases dated after `value_since`.
    pub(crate) value_window_amount: i64,
    /// Orders and purchases dated after `rfm_since`.
    pub(crate) rfm_window_count: i64,
    pub(crate) rfm_window_amount: i64,
    /// When the latest follow-up with the contact happened (unix ms).
    pub(crate) last_follow_up_at: Option<i64>,
}

/// Where a customer's order total stops growing. SQLite's SUM fails the whole
/// query past 64 bits, so totals are summed as TOTAL (floating point, exact
/// below 2^53 minor units: 90 trillion in the base currency) and held here,
/// far above any tier threshold.
const LARGEST_TOTAL_MINOR: f64 = 9.0e18;

/// The customers among `contact_ids` (contacts without orders are left out), in one
/// query; windows hold the orders dated strictly after their start date.
pub(crate) async fn customer_records(
    conn: &mut Conn,
    contact_ids: &[i64],
    value_since: &str,
    rfm_since: &str,
) -> anyhow::Result<Vec<CustomerRecord>> {
    let json: Option<String> = sqlx::query_scalar(
        "SELECT json_group_array(json_array(c.id, c.value_tier, c.rfm_grade, c.rfm_scores, c.behaviour, c.customer_since,
                                            t.first_order, t.last_order, t.value_amount, t.rfm_count, t.rfm_amount,
                                            (SELECT MAX(at) FROM follow_ups f WHERE f.contact_id = c.id)))
         FROM (SELECT contact_id, MIN(ordered_on) AS first_order, MAX(ordered_on) AS last_order,
                      CAST(MIN(TOTAL(CASE WHEN ordered_on > ?1 THEN base_amount_minor END), ?4) AS INTEGER) AS value_amount,
                      COUNT(CASE WHEN ordered_on > ?2 THEN 1 END) AS rfm_count,
                      CAST(MIN(TOTAL(CASE WHEN ordered_on > ?2 THEN base_amount_minor END), ?4) AS INTEGER) AS rfm_amount
               FROM orders WHERE contact_id IN (SELECT value FROM json_each(?3)) GROUP BY contact_id) AS t
         JOIN contacts c ON c.id = t.contact_id",
    )
    .bind(value_since)
    .bind(rfm_since)
    .bind(serde_json::to_string(contact_ids)?)
    .bind(LARGEST_TOTAL_MINOR)
    .fetch_one(&mut *conn)
    .await?;
    Ok(serde_json::from_str(json.as_deref().unwrap_or("[]"))?)
}

/// A customer's classification as computed from orders.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ComputedClassification<'a> {
    pub(crate) contact_id: i64,
    pub(crate) value_tier: &'a str,
    pub(crate) rfm_grade: &'a str,
    pub(crate) rfm_scores: String,
    pub(crate) behaviour: &'a str,
    pub(crate) customer_since: &'a str,
}

/// Writes the computed classification of customers, in one statement.
pub(crate) async fn set_computed_classifications(
    conn: &mut Conn,
    computed: &[ComputedClassification<'_>],
    now: i64,
) -> anyhow::Result<()> {
    if computed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE contacts SET value_tier = j.value ->> 'value_tier', rfm_grade = j.value ->> 'rfm_grade',
                             rfm_scores = j.value ->> 'rfm_scores', behaviour = j.value ->> 'behaviour',
                             customer_since = j.value ->> 'customer_since', updated_at = ?
         FROM json_each(?) AS j WHERE contacts.id = j.value ->> 'contact_id'",
    )
    .bind(now)
    .bind(serde_json::to_string(computed)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The customers (contacts with at least one order) after `after_id`, in id order.
pub(crate) async fn customer_ids(conn: &mut Conn, after_id: i64, limit: i64) -> anyhow::Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT contact_id FROM orders WHERE contact_id > ? ORDER BY contact_id LIMIT ?")
            .bind(after_id)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// The day the daily classification pass last ran.
pub(crate) async fn last_classification_pass(conn: &mut Conn) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT day FROM classification_pass WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?)
}

pub(crate) async fn record_classification_pass(conn: &mut Conn, day: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO classification_pass (id, day) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET day = excluded.day",
    )
    .bind(day)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One change to a contact, as the history shows it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub(crate) struct HistoryEntry {
    pub(crate) field: String,
    pub(crate) from_value: Option<String>,
    pub(crate) to_value: Option<String>,
    pub(crate) changed_by: String,
    pub(crate) at: i64,
}

/// Records that `field` of a contact went from `from` to `to`, changed by `by`.
pub(crate) async fn insert_history(
    conn: &mut Conn,
    contact_id: i64,
    field: &str,
    from: Option<&str>,
    to: Option<&str>,
    by: &str,
    at: i64,
) -> anyhow::Result<()> {
    let change = Change {
        contact_id,
        field,
        from,
        to,
    };
    insert_history_entries(conn, &[change], by, at).await
}

/// One change for `insert_history_entries`.
#[derive(Debug, Clone)]
pub(crate) struct Change<'a> {
    pub(crate) contact_id: i64,
    pub(crate) field: &'a str,
    pub(crate) from: Option<&'a str>,
    pub(crate) to: Option<&'a str>,
}

/// Records changes, all made by `by` at `at`, as multi-row VALUES.
pub(crate) async fn insert_history_entries(
    conn: &mut Conn,
    changes: &[Change<'_>],
    by: &str,
    at: i64,
) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::new("");
    push_history_entries(&mut insert, changes, by, at);
    insert.build().execute(&mut *conn).await?;
    Ok(())
}

/// Appends the INSERTs of `insert_history_entries` to a query.
pub(super) fn push_history_entries<'a>(
    query: &mut QueryBuilder<'a, Sqlite>,
    changes: &'a [Change<'a>],
    by: &'a str,
    at: i64,
) {
    push_multi_row_insert(
        query,
        "INSERT INTO contact_history (contact_id, field, from_value, to_value, changed_by, at) ",
        changes,
        6,
        "",
        |mut row, c| {
            row.push_bind(c.contact_id)
                .push_bind(c.field)
                .push_bind(c.from)
                .push_bind(c.to)
                .push_bind(by)
                .push_bind(at);
        },
    );
}

/// A contact's history, newest first.
pub(crate) async fn history_of(conn: &mut Conn, contact_id: i64, limit: i64) -> anyhow::Result<Vec<HistoryEntry>> {
    Ok(sqlx::query_as(
        "SELECT field, from_value, to_value, changed_by, at FROM contact_history WHERE contact_id = ?
         ORDER BY at DESC, id DESC LIMIT ?",
    )
    .bind(contact_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}
