//! Orders, the facts about a customer that classification reads from them, the
//! computed classification written back, and the contact history of who changed what.

use serde::Serialize;

use super::Conn;

/// An order, validated and converted, ready to store.
#[derive(Debug, Clone)]
pub struct OrderRow<'a> {
    pub external_id: &'a str,
    pub contact_id: i64,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub base_amount_minor: i64,
    /// YYYY-MM-DD in the classification's time zone.
    pub ordered_on: &'a str,
    pub items: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct Order {
    pub id: i64,
    pub external_id: String,
    pub contact_id: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub base_amount_minor: i64,
    pub ordered_on: String,
    pub items: String,
}

/// What storing an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderInsert {
    Added(i64),
    /// The same order (same id and content) was stored already: nothing changed.
    AlreadyPresent(i64),
    /// An order with this id exists with other content; it is left as it is.
    Conflict(Order),
}

/// Stores an order unless one with its external id exists.
pub async fn insert_order(conn: &mut Conn, row: &OrderRow<'_>, now: i64) -> anyhow::Result<OrderInsert> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO orders (external_id, contact_id, amount_minor, currency, base_amount_minor, ordered_on, items, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (external_id) DO NOTHING RETURNING id",
    )
    .bind(row.external_id)
    .bind(row.contact_id)
    .bind(row.amount_minor)
    .bind(row.currency)
    .bind(row.base_amount_minor)
    .bind(row.ordered_on)
    .bind(row.items)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        return Ok(OrderInsert::Added(id));
    }
    let existing: Order = sqlx::query_as(
        "SELECT id, external_id, contact_id, amount_minor, currency, base_amount_minor, ordered_on, items
         FROM orders WHERE external_id = ?",
    )
    .bind(row.external_id)
    .fetch_one(&mut *conn)
    .await?;
    // The base amount is left out: a rate changed since does not make it another order.
    let same = existing.contact_id == row.contact_id
        && existing.amount_minor == row.amount_minor
        && existing.currency == row.currency
        && existing.ordered_on == row.ordered_on
        && existing.items == row.items;
    Ok(if same {
        OrderInsert::AlreadyPresent(existing.id)
    } else {
        OrderInsert::Conflict(existing)
    })
}

/// The latest orders of a contact, newest first.
pub async fn orders_of(conn: &mut Conn, contact_id: i64, limit: i64) -> anyhow::Result<Vec<Order>> {
    Ok(sqlx::query_as(
        "SELECT id, external_id, contact_id, amount_minor, currency, base_amount_minor, ordered_on, items
         FROM orders WHERE contact_id = ? ORDER BY ordered_on DESC, id DESC LIMIT ?",
    )
    .bind(contact_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// A customer's order totals as classification needs them. Dates are YYYY-MM-DD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderTotals {
    pub first_order: Option<String>,
    pub last_order: Option<String>,
    /// Base-currency purchases dated after `value_since`.
    pub value_window_amount: i64,
    /// Orders and purchases dated after `rfm_since`.
    pub rfm_window_count: i64,
    pub rfm_window_amount: i64,
    /// When the latest follow-up with the contact happened (unix ms).
    pub last_follow_up_at: Option<i64>,
}

/// Sums a contact's orders; windows hold the orders dated strictly after their start date.
pub async fn order_totals(
    conn: &mut Conn,
    contact_id: i64,
    value_since: &str,
    rfm_since: &str,
) -> anyhow::Result<OrderTotals> {
    let (first_order, last_order, value_window_amount, rfm_window_count, rfm_window_amount): (
        Option<String>,
        Option<String>,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT MIN(ordered_on), MAX(ordered_on),
                COALESCE(SUM(CASE WHEN ordered_on > ?1 THEN base_amount_minor END), 0),
                COUNT(CASE WHEN ordered_on > ?2 THEN 1 END),
                COALESCE(SUM(CASE WHEN ordered_on > ?2 THEN base_amount_minor END), 0)
         FROM orders WHERE contact_id = ?3",
    )
    .bind(value_since)
    .bind(rfm_since)
    .bind(contact_id)
    .fetch_one(&mut *conn)
    .await?;
    let last_follow_up_at: Option<i64> = sqlx::query_scalar("SELECT MAX(at) FROM follow_ups WHERE contact_id = ?")
        .bind(contact_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(OrderTotals {
        first_order,
        last_order,
        value_window_amount,
        rfm_window_count,
        rfm_window_amount,
        last_follow_up_at,
    })
}

/// A customer's classification as computed from orders.
#[derive(Debug, Clone, Copy)]
pub struct ComputedClassification<'a> {
    pub value_tier: &'a str,
    pub rfm_grade: &'a str,
    pub rfm_scores: &'a str,
    pub behaviour: &'a str,
    pub customer_since: &'a str,
}

/// Writes the computed classification of a customer.
pub async fn set_computed_classification(
    conn: &mut Conn,
    contact_id: i64,
    computed: &ComputedClassification<'_>,
    now: i64,
) -> anyhow::Result<()> {
    let c = computed;
    sqlx::query(
        "UPDATE contacts SET value_tier = ?, rfm_grade = ?, rfm_scores = ?, behaviour = ?, customer_since = ?,
                             updated_at = ? WHERE id = ?",
    )
    .bind(c.value_tier)
    .bind(c.rfm_grade)
    .bind(c.rfm_scores)
    .bind(c.behaviour)
    .bind(c.customer_since)
    .bind(now)
    .bind(contact_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The customers (contacts with at least one order) after `after_id`, in id order.
pub async fn customer_ids(conn: &mut Conn, after_id: i64, limit: i64) -> anyhow::Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT contact_id FROM orders WHERE contact_id > ? ORDER BY contact_id LIMIT ?")
            .bind(after_id)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// The day the daily classification pass last ran.
pub async fn last_classification_pass(conn: &mut Conn) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT day FROM classification_pass WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?)
}

pub async fn record_classification_pass(conn: &mut Conn, day: &str) -> anyhow::Result<()> {
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
pub struct HistoryEntry {
    pub field: String,
    pub from_value: Option<String>,
    pub to_value: Option<String>,
    pub changed_by: String,
    pub at: i64,
}

/// Records that `field` of a contact went from `from` to `to`, changed by `by`.
pub async fn insert_history(
    conn: &mut Conn,
    contact_id: i64,
    field: &str,
    from: Option<&str>,
    to: Option<&str>,
    by: &str,
    at: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO contact_history (contact_id, field, from_value, to_value, changed_by, at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(contact_id)
    .bind(field)
    .bind(from)
    .bind(to)
    .bind(by)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A contact's history, newest first.
pub async fn history_of(conn: &mut Conn, contact_id: i64, limit: i64) -> anyhow::Result<Vec<HistoryEntry>> {
    Ok(sqlx::query_as(
        "SELECT field, from_value, to_value, changed_by, at FROM contact_history WHERE contact_id = ?
         ORDER BY at DESC, id DESC LIMIT ?",
    )
    .bind(contact_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}
