//! Reads of contacts: one at a time by id or email, and many at once as one
//! JSON text with the context conditions and templates see.

use std::collections::{HashMap, HashSet};

use super::Contact;
use crate::store::Conn;

/// A contact as one JSON object, for reads of many contacts at once: through
/// sqlx every column of every row is a separate allocation on SQLite's thread,
/// so a batch comes back as one JSON text instead. Keep in step with `Contact`
/// (a missing field fails every such read, which any end-to-end test shows).
const CONTACT_JSON: &str = "json_object(
    'id', c.id, 'name', c.name, 'salutation', c.salutation, 'company', c.company, 'email', c.email, 'phone', c.phone,
    'owner', c.owner, 'stage', c.stage, 'intent_grade', c.intent_grade, 'value_tier', c.value_tier,
    'tags', json(c.tags), 'source', c.source, 'time_zone', c.time_zone, 'locale', c.locale,
    'consent', c.consent, 'next_follow_up_at', c.next_follow_up_at, 'next_goal', c.next_goal,
    'created_at', c.created_at, 'updated_at', c.updated_at, 'rfm_grade', c.rfm_grade,
    'rfm_scores', c.rfm_scores, 'behaviour', c.behaviour, 'customer_since', c.customer_since,
    'attitude', c.attitude, 'understanding', c.understanding, 'funnel_stage', c.funnel_stage)";

/// The query for contacts with their follow-up counts (what the condition
/// context needs), selected by `filter` on `contacts c`, as one row of JSON.
pub(in crate::store) fn contacts_json_sql(filter: &str) -> String {
    format!(
        "SELECT json_group_array(json_array({CONTACT_JSON},
                  (SELECT COUNT(*) FROM follow_ups f WHERE f.contact_id = c.id),
                  (SELECT COUNT(*) FROM orders o WHERE o.contact_id = c.id)))
         FROM (SELECT * FROM contacts c {filter}) AS c"
    )
}

pub(in crate::store) fn parse_contact_rows(json: Option<String>) -> anyhow::Result<Vec<ContactRow>> {
    let rows: Vec<(Contact, i64, i64)> = serde_json::from_str(json.as_deref().unwrap_or("[]"))?;
    Ok(rows
        .into_iter()
        .map(|(contact, follow_up_count, order_count)| ContactRow {
            contact,
            follow_up_count,
            order_count,
        })
        .collect())
}

/// A contact with the derived counts its condition context needs.
#[derive(Debug)]
pub(crate) struct ContactRow {
    pub(crate) contact: Contact,
    pub(crate) follow_up_count: i64,
    /// Orders recorded for the contact (docs/domain.md §1: first_order -> repeat -> loyal).
    pub(crate) order_count: i64,
}

/// The next contacts after `cursor` in id order.
pub(crate) async fn contacts_after(conn: &mut Conn, cursor: i64, limit: i64) -> anyhow::Result<Vec<ContactRow>> {
    let json = sqlx::query_scalar(&contacts_json_sql("WHERE c.id > ? ORDER BY c.id LIMIT ?"))
        .bind(cursor)
        .bind(limit)
        .fetch_one(&mut *conn)
        .await?;
    let mut rows = parse_contact_rows(json)?;
    // The aggregate need not keep the subquery's order.
    rows.sort_unstable_by_key(|r| r.contact.id);
    Ok(rows)
}

/// A contact and its condition/template context.
pub(crate) async fn contact_with_context(
    conn: &mut Conn,
    id: i64,
) -> anyhow::Result<Option<(Contact, serde_json::Value)>> {
    Ok(contacts_with_context(conn, &[id]).await?.remove(&id))
}

/// Contacts and their contexts by id: what a batch of events or run steps reads.
pub(crate) async fn contacts_with_context(
    conn: &mut Conn,
    ids: &[i64],
) -> anyhow::Result<HashMap<i64, (Contact, serde_json::Value)>> {
    // The engine asks on every tick, mostly with nothing to ask for.
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let json = sqlx::query_scalar(&contacts_json_sql("WHERE c.id IN (SELECT value FROM json_each(?))"))
        .bind(serde_json::to_string(ids)?)
        .fetch_one(&mut *conn)
        .await?;
    Ok(with_contexts(parse_contact_rows(json)?))
}

/// Contacts by id, each with its condition/template context.
pub(in crate::store) fn with_contexts(rows: Vec<ContactRow>) -> HashMap<i64, (Contact, serde_json::Value)> {
    rows.into_iter()
        .map(|r| {
            let context = r.contact.context(r.follow_up_count, r.order_count);
            (r.contact.id, (r.contact, context))
        })
        .collect()
}

/// Which contacts references name: ids (`42`) or emails, as `find_contact` reads them.
pub(crate) struct ContactIds {
    ids: HashSet<i64>,
    emails: HashMap<String, i64>,
}

impl ContactIds {
    pub(crate) fn get(&self, reference: &str) -> Option<i64> {
        match parse_reference(reference) {
            Ok(id) => self.ids.contains(&id).then_some(id),
            Err(email) => self.emails.get(email).copied(),
        }
    }
}

/// A reference to a contact, trimmed: an id (`42`), else an email.
fn parse_reference(reference: &str) -> Result<i64, &str> {
    let reference = reference.trim();
    reference.parse().map_err(|_| reference)
}

/// Looks up the contacts that `references` name, in one query.
pub(crate) async fn contact_ids_by_reference<'a>(
    conn: &mut Conn,
    references: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<ContactIds> {
    let (mut ids, mut emails) = (Vec::new(), Vec::new());
    for reference in references {
        match parse_reference(reference) {
            Ok(id) => ids.push(id),
            Err(email) => emails.push(email),
        }
    }
    let found: Option<String> = sqlx::query_scalar(
        "SELECT json_group_array(json_array(id, email)) FROM (
             SELECT id, NULL AS email FROM contacts WHERE id IN (SELECT value FROM json_each(?1))
             UNION ALL
             SELECT id, email FROM contacts WHERE email IN (SELECT value FROM json_each(?2)))",
    )
    .bind(serde_json::to_string(&ids)?)
    .bind(serde_json::to_string(&emails)?)
    .fetch_one(&mut *conn)
    .await?;
    let found: Vec<(i64, Option<String>)> = serde_json::from_str(found.as_deref().unwrap_or("[]"))?;
    let mut result = ContactIds {
        ids: HashSet::new(),
        emails: HashMap::new(),
    };
    for (id, email) in found {
        match email {
            Some(email) => result.emails.insert(email, id),
            None => result.ids.insert(id).then_some(id),
        };
    }
    Ok(result)
}

/// Finds a contact by id (`42`) or email address.
pub(crate) async fn find_contact(conn: &mut Conn, reference: &str) -> anyhow::Result<Option<Contact>> {
    Ok(match parse_reference(reference) {
        Ok(id) => contact_by_id(conn, id).await?,
        Err(email) => contact_by_email(conn, email).await?,
    })
}

pub(crate) async fn contact_by_email(conn: &mut Conn, email: &str) -> anyhow::Result<Option<Contact>> {
    Ok(sqlx::query_as("SELECT * FROM contacts WHERE email = ?")
        .bind(email.trim())
        .fetch_optional(&mut *conn)
        .await?)
}

pub(crate) async fn contact_by_id(conn: &mut Conn, id: i64) -> anyhow::Result<Option<Contact>> {
    Ok(sqlx::query_as("SELECT * FROM contacts WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Every locale contacts have, with how many have it.
pub(crate) async fn locale_counts(conn: &mut Conn) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT locale, COUNT(*) FROM contacts GROUP BY locale ORDER BY locale")
            .fetch_all(&mut *conn)
            .await?,
    )
}
