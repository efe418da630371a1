//! Passes of segment workflows over all contacts: each enrols the matching
//! contacts in batches, from a cursor, so a pass over millions of contacts
//! keeps memory flat, survives restarts and shows its progress.

use serde::Serialize;

use super::{Conn, Contact};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Enrolment {
    pub id: i64,
    pub workflow: String,
    pub set_hash: String,
    pub due_at: i64,
    pub cursor: i64,
    pub scanned: i64,
    pub enrolled: i64,
    pub total: i64,
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// The scheduled time of the workflow's latest pass.
pub async fn last_enrolment_due(conn: &mut Conn, workflow: &str) -> anyhow::Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MAX(due_at) FROM enrolments WHERE workflow = ?")
            .bind(workflow)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Opens a pass (once per workflow and scheduled time).
pub async fn open_enrolment(
    conn: &mut Conn,
    workflow: &str,
    set_hash: &str,
    due_at: i64,
    now: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO enrolments (workflow, set_hash, due_at, total, started_at)
         VALUES (?, ?, ?, (SELECT COUNT(*) FROM contacts), ?) ON CONFLICT (workflow, due_at) DO NOTHING",
    )
    .bind(workflow)
    .bind(set_hash)
    .bind(due_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn running_enrolments(conn: &mut Conn) -> anyhow::Result<Vec<Enrolment>> {
    Ok(
        sqlx::query_as("SELECT * FROM enrolments WHERE status = 'running' ORDER BY id")
            .fetch_all(&mut *conn)
            .await?,
    )
}

pub async fn list_enrolments(conn: &mut Conn, limit: i64) -> anyhow::Result<Vec<Enrolment>> {
    Ok(sqlx::query_as("SELECT * FROM enrolments ORDER BY id DESC LIMIT ?")
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?)
}

/// Records a batch's progress; `done` closes the pass.
pub async fn advance_enrolment(
    conn: &mut Conn,
    id: i64,
    cursor: i64,
    scanned: i64,
    enrolled: i64,
    done: bool,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE enrolments SET cursor = ?, scanned = scanned + ?, enrolled = enrolled + ?,
                status = CASE WHEN ? THEN 'done' ELSE status END,
                finished_at = CASE WHEN ? THEN ? ELSE finished_at END
         WHERE id = ?",
    )
    .bind(cursor)
    .bind(scanned)
    .bind(enrolled)
    .bind(done)
    .bind(done)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A contact with the derived count its condition context needs.
#[derive(Debug, sqlx::FromRow)]
pub struct ContactRow {
    #[sqlx(flatten)]
    pub contact: Contact,
    pub follow_up_count: i64,
}

/// The next contacts after `cursor` in id order.
pub async fn contacts_after(conn: &mut Conn, cursor: i64, limit: i64) -> anyhow::Result<Vec<ContactRow>> {
    Ok(sqlx::query_as(
        "SELECT c.*, (SELECT COUNT(*) FROM follow_ups f WHERE f.contact_id = c.id) AS follow_up_count
         FROM contacts c WHERE c.id > ? ORDER BY c.id LIMIT ?",
    )
    .bind(cursor)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// A contact and its condition/template context, in one query.
pub async fn contact_with_context(conn: &mut Conn, id: i64) -> anyhow::Result<Option<(Contact, serde_json::Value)>> {
    let row: Option<ContactRow> = sqlx::query_as(
        "SELECT c.*, (SELECT COUNT(*) FROM follow_ups f WHERE f.contact_id = c.id) AS follow_up_count
         FROM contacts c WHERE c.id = ?",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| {
        let context = r.contact.context(r.follow_up_count);
        (r.contact, context)
    }))
}

/// Contacts and their contexts by id, in one query: what a batch of run steps reads.
pub async fn contacts_with_context(
    conn: &mut Conn,
    ids: &[i64],
) -> anyhow::Result<std::collections::HashMap<i64, (Contact, serde_json::Value)>> {
    let rows: Vec<ContactRow> = sqlx::query_as(
        "SELECT c.*, (SELECT COUNT(*) FROM follow_ups f WHERE f.contact_id = c.id) AS follow_up_count
         FROM contacts c WHERE c.id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(ids)?)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let context = r.contact.context(r.follow_up_count);
            (r.contact.id, (r.contact, context))
        })
        .collect())
}
