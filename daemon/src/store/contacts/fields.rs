//! The other fields of a contact: classification, owner, tags, and the next
//! follow-up, whose timer makes it overdue.

use super::{Contact, ContactEdit, check, one_line};
use crate::model::{INTENT_GRADES, TIERS};
use crate::store::{Conn, TimerKind, insert_history};

/// Sets one of the single-valued classification fields.
pub(crate) async fn set_classification(
    conn: &mut Conn,
    contact_id: i64,
    field: Classification,
    value: &str,
    now: i64,
) -> anyhow::Result<()> {
    let sql = match field {
        Classification::ValueTier => {
            check(value, TIERS, "value tier")?;
            "UPDATE contacts SET value_tier = ?, updated_at = ? WHERE id = ?"
        }
        Classification::IntentGrade => {
            check(value, INTENT_GRADES, "intent grade")?;
            "UPDATE contacts SET intent_grade = ?, updated_at = ? WHERE id = ?"
        }
    };
    sqlx::query(sql)
        .bind(value)
        .bind(now)
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Classification {
    ValueTier,
    IntentGrade,
}

impl Classification {
    /// The field's name in the contact's history.
    fn field(self) -> &'static str {
        match self {
            Classification::ValueTier => "value_tier",
            Classification::IntentGrade => "intent_grade",
        }
    }

    /// As people read it: `value tier`, `intent grade`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Classification::ValueTier => "value tier",
            Classification::IntentGrade => "intent grade",
        }
    }
}

/// Sets a value tier or intent grade on someone's behalf (`by`, e.g. `workflow:NAME`);
/// a change is kept in the history, like changes of stage and owner.
pub(crate) async fn set_classification_by(
    conn: &mut Conn,
    contact: &Contact,
    field: Classification,
    value: &str,
    by: &str,
    now: i64,
) -> anyhow::Result<()> {
    let from = match field {
        Classification::ValueTier => contact.value_tier.as_deref(),
        Classification::IntentGrade => contact.intent_grade.as_deref(),
    };
    set_classification(conn, contact.id, field, value, now).await?;
    if from != Some(value) {
        insert_history(conn, contact.id, field.field(), from, Some(value), by, now).await?;
    }
    Ok(())
}

/// Hands the contact to another owner; kept in the history with who did it.
pub(crate) async fn set_owner(
    conn: &mut Conn,
    contact: &Contact,
    owner: &str,
    by: &str,
    now: i64,
) -> anyhow::Result<()> {
    if contact.owner == owner {
        return Ok(());
    }
    sqlx::query("UPDATE contacts SET owner = ?, updated_at = ? WHERE id = ?")
        .bind(owner)
        .bind(now)
        .bind(contact.id)
        .execute(&mut *conn)
        .await?;
    insert_history(conn, contact.id, "owner", Some(&contact.owner), Some(owner), by, now).await
}

/// Sets contacts' tags, each (contact id, all its tags), in one statement.
pub(crate) async fn set_tags(
    conn: &mut Conn,
    tags: &std::collections::BTreeMap<i64, Vec<String>>,
    now: i64,
) -> anyhow::Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE contacts SET tags = j.value, updated_at = ? FROM json_each(?) AS j WHERE contacts.id = CAST(j.key AS INTEGER)",
    )
    .bind(now)
    .bind(serde_json::to_string(tags)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets the next follow-up (?1, goal ?2) at ?3 of contact ?4, in one round trip
/// (the engine sets one per run step in a batch's transaction). Only the newest
/// next follow-up may fall due: the contact's earlier follow-up timers (kind ?5)
/// are retired, or setting the same time twice would make it overdue twice. They
/// are found through `timers_contact_pending`: without it each follow-up set read
/// every pending timer, so a workflow step that sets follow-ups for many contacts
/// cost the square of their number.
const SET_NEXT_FOLLOW_UP: &str =
    "UPDATE contacts SET next_follow_up_at = ?1, next_goal = ?2, updated_at = ?3 WHERE id = ?4;
     UPDATE timers SET fired_at = ?3 WHERE kind = ?5 AND contact_id = ?4 AND fired_at IS NULL;
     INSERT INTO timers (due_at, kind, contact_id) SELECT ?1, ?5, ?4 WHERE ?1 IS NOT NULL";

/// Sets (or clears) the next follow-up. A timer fires at that time; if the time
/// is still the contact's next follow-up then, the follow-up is overdue.
pub(crate) async fn set_next_follow_up(
    conn: &mut Conn,
    contact_id: i64,
    at: Option<i64>,
    goal: Option<&str>,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(SET_NEXT_FOLLOW_UP)
        .bind(at)
        .bind(goal)
        .bind(now)
        .bind(contact_id)
        .bind(TimerKind::FollowUpDue)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Changes how a contact is addressed and its locale; each change is kept in
/// the history with who made it (`by`).
pub(crate) async fn edit_contact(
    conn: &mut Conn,
    contact: &Contact,
    edit: &ContactEdit,
    by: &str,
    now: i64,
) -> anyhow::Result<()> {
    let fields = [
        ("salutation", &contact.salutation, &edit.salutation),
        ("locale", &contact.locale, &edit.locale),
    ];
    for (field, from, to) in fields {
        let Some(to) = to else { continue };
        let to = one_line(field, to)?;
        if *from == to {
            continue;
        }
        let sql = match field {
            "salutation" => "UPDATE contacts SET salutation = ?, updated_at = ? WHERE id = ?",
            _ => "UPDATE contacts SET locale = ?, updated_at = ? WHERE id = ?",
        };
        sqlx::query(sql)
            .bind(&to)
            .bind(now)
            .bind(contact.id)
            .execute(&mut *conn)
            .await?;
        insert_history(conn, contact.id, field, Some(from), Some(&to), by, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{TestStore, contact};
    use crate::store::{contact_by_id, history_of};

    #[tokio::test]
    async fn tags_land_on_the_contact_they_are_keyed_by() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let (a, b) = (
            contact(&mut conn, "a@x.test").await,
            contact(&mut conn, "b@x.test").await,
        );
        let tags: std::collections::BTreeMap<i64, Vec<String>> =
            [(a, vec!["x".to_string()]), (b, vec!["y".to_string(), "z".to_string()])].into();
        set_tags(&mut conn, &tags, 9).await.unwrap();
        for (id, want) in [(a, vec!["x"]), (b, vec!["y", "z"])] {
            let c = contact_by_id(&mut conn, id).await.unwrap().unwrap();
            assert_eq!(
                (c.tags.0, c.updated_at),
                (want.iter().map(|t| t.to_string()).collect(), 9)
            );
        }
    }

    #[tokio::test]
    async fn only_the_newest_next_follow_up_keeps_a_timer() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let c = contact(&mut conn, "a@x.test").await;
        set_next_follow_up(&mut conn, c, Some(100), Some("call"), 5)
            .await
            .unwrap();
        set_next_follow_up(&mut conn, c, Some(200), Some("visit"), 6)
            .await
            .unwrap();
        let contact = contact_by_id(&mut conn, c).await.unwrap().unwrap();
        assert_eq!(
            (contact.next_follow_up_at, contact.next_goal.as_deref()),
            (Some(200), Some("visit"))
        );
        let timers: Vec<(i64, TimerKind, Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT due_at, kind, contact_id, fired_at FROM timers ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            timers,
            vec![
                (100, TimerKind::FollowUpDue, Some(c), Some(6)),
                (200, TimerKind::FollowUpDue, Some(c), None)
            ]
        );
    }

    #[tokio::test]
    async fn a_contacts_follow_up_timers_are_found_by_index() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
            "EXPLAIN QUERY PLAN {}",
            SET_NEXT_FOLLOW_UP.split(';').nth(1).unwrap()
        ))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert!(
            plan.iter()
                .any(|(.., detail)| detail.contains("USING INDEX timers_contact_pending")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn a_classification_set_on_someones_behalf_is_kept_in_the_history() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let id = contact(&mut conn, "a@x.test").await;
        let c = contact_by_id(&mut conn, id).await.unwrap().unwrap();
        set_classification_by(&mut conn, &c, Classification::ValueTier, "high", "workflow:w", 7)
            .await
            .unwrap();
        assert!(
            set_classification(&mut conn, id, Classification::IntentGrade, "Z", 8)
                .await
                .is_err()
        );
        set_owner(&mut conn, &c, "rep@x.test", "admin", 9).await.unwrap();
        let c = contact_by_id(&mut conn, id).await.unwrap().unwrap();
        assert_eq!(
            (c.value_tier.as_deref(), c.owner.as_str()),
            (Some("high"), "rep@x.test")
        );
        let history: Vec<(String, Option<String>, String)> = history_of(&mut conn, id, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.field, h.to_value, h.changed_by))
            .collect();
        assert_eq!(
            history,
            vec![
                ("owner".into(), Some("rep@x.test".into()), "admin".into()),
                ("value_tier".into(), Some("high".into()), "workflow:w".into())
            ]
        );
    }
}
