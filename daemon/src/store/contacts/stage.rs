//! Moving contacts through the lifecycle stages: one by one, or a batch of
//! changes by email that creates the contacts it does not know yet.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use anyhow::Context as _;
use sqlx::QueryBuilder;

use super::insert::{KnownEmail, insert_contact_rows};
use super::{NewContact, check};
use crate::model::STAGES;
use crate::store::{Change, Conn, EventKind, inserted_ids, push_history_entries};

/// Moves a contact to `stage`; emits `stage_changed` (with `by`, who did it) and
/// returns its id, or `None` if the contact is at that stage already.
pub(crate) async fn set_stage(
    conn: &mut Conn,
    contact_id: i64,
    from: &str,
    stage: &str,
    by: &str,
    now: i64,
) -> anyhow::Result<Option<i64>> {
    check(stage, STAGES, "stage")?;
    if from == stage {
        return Ok(None);
    }
    let moves = [StageMove {
        contact_id,
        from,
        to: stage,
    }];
    Ok(set_stages(conn, &moves, by, now).await?.pop())
}

/// One contact's move for `set_stages`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct StageMove<'a> {
    pub(crate) contact_id: i64,
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
}

/// Moves contacts (each once, to a checked stage other than its own) in three
/// statements whatever their number: the contacts, their history, their
/// `stage_changed` events. Returns the events' ids, in the order of `moves`.
async fn set_stages(conn: &mut Conn, moves: &[StageMove<'_>], by: &str, now: i64) -> anyhow::Result<Vec<i64>> {
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let moves_json = serde_json::to_string(moves)?;
    let changes: Vec<Change> = moves
        .iter()
        .map(|m| Change {
            contact_id: m.contact_id,
            field: "stage",
            from: Some(m.from),
            to: Some(m.to),
        })
        .collect();
    // The three statements in one query: one round trip to SQLite's thread.
    let mut query = QueryBuilder::new("UPDATE contacts SET stage = j.value ->> 'to', updated_at = ");
    query
        .push_bind(now)
        .push(" FROM json_each(")
        .push_bind(&moves_json)
        .push(") AS j WHERE contacts.id = j.value ->> 'contact_id';\n");
    push_history_entries(&mut query, &changes, by, now);
    query
        .push(
            "INSERT INTO events (kind, contact_id, payload, occurred_at)
             SELECT ",
        )
        .push_bind(EventKind::StageChanged)
        .push(", value ->> 'contact_id', json_object('from', value ->> 'from', 'to', value ->> 'to', 'by', ")
        .push_bind(by)
        .push("), ")
        .push_bind(now)
        .push(" FROM json_each(")
        .push_bind(&moves_json)
        .push(") ORDER BY key");
    let done = query.build().execute(&mut *conn).await?;
    // The events went in last, one a move.
    Ok(inserted_ids(&done, moves.len() as u64).into_iter().flatten().collect())
}

/// A stage change for a contact known by email, created on first sight: what a
/// CRM or web form sends when it only knows who the customer is.
#[derive(Debug, Clone)]
pub struct StageByEmail {
    pub email: String,
    /// For a contact created by the change; the email if empty.
    pub name: String,
    pub company: String,
    pub stage: String,
}

/// What `stage_changes_by_email` did.
#[derive(Debug)]
pub struct StageChanges {
    /// For each change, the contact and its `stage_changed` event (`None`: it
    /// was at that stage already).
    pub(crate) done: Vec<(i64, Option<i64>)>,
    /// Every event written (`contact_created` ones too): consecutive ids.
    pub(crate) events: Option<RangeInclusive<i64>>,
}

impl StageChanges {
    fn wrote_events(&mut self, ids: RangeInclusive<i64>) {
        let first = self.events.as_ref().map_or(*ids.start(), |events| *events.start());
        self.events = Some(first..=*ids.end());
    }
}

/// Applies stage changes by email, creating the contacts not known yet, in a
/// handful of statements whatever their number. Changes of one email apply in
/// order: each round takes an email once, and a second change of it waits for
/// the next round.
pub async fn stage_changes_by_email(
    conn: &mut Conn,
    changes: &[StageByEmail],
    by: &str,
    now: i64,
) -> anyhow::Result<StageChanges> {
    for change in changes {
        check(&change.stage, STAGES, "stage")?;
    }
    let mut written = StageChanges {
        done: vec![(0, None); changes.len()],
        events: None,
    };
    let mut pending: Vec<usize> = (0..changes.len()).collect();
    while !pending.is_empty() {
        let mut in_round = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&i| in_round.insert(changes[i].email.as_str()));
        pending = later;
        apply_round(conn, changes, &round, by, now, &mut written).await?;
    }
    Ok(written)
}

/// Applies the changes at positions `round` of `changes`, of distinct emails.
async fn apply_round(
    conn: &mut Conn,
    changes: &[StageByEmail],
    round: &[usize],
    by: &str,
    now: i64,
    written: &mut StageChanges,
) -> anyhow::Result<()> {
    let round: Vec<(usize, &StageByEmail)> = round.iter().map(|&i| (i, &changes[i])).collect();
    let contacts = contacts_by_email(conn, round.iter().map(|(_, c)| *c), now, written).await?;
    let moving: Vec<(usize, &StageByEmail)> = round
        .iter()
        .copied()
        .filter(|(_, c)| contacts[c.email.as_str()].1 != c.stage)
        .collect();
    let moves: Vec<StageMove> = moving
        .iter()
        .map(|(_, c)| {
            let (contact_id, from) = &contacts[c.email.as_str()];
            StageMove {
                contact_id: *contact_id,
                from,
                to: &c.stage,
            }
        })
        .collect();
    let events = set_stages(conn, &moves, by, now).await?;
    if let (Some(first), Some(last)) = (events.first(), events.last()) {
        written.wrote_events(*first..=*last);
    }
    for (i, c) in &round {
        written.done[*i].0 = contacts[c.email.as_str()].0;
    }
    for ((i, _), event) in moving.into_iter().zip(events) {
        written.done[i].1 = Some(event);
    }
    Ok(())
}

/// The contacts of the changes (of distinct emails), each (id, stage) by email;
/// those not known yet are created (at their first stage), their events noted
/// in `written`.
async fn contacts_by_email<'c>(
    conn: &mut Conn,
    changes: impl Iterator<Item = &'c StageByEmail> + Clone,
    now: i64,
    written: &mut StageChanges,
) -> anyhow::Result<HashMap<&'c str, (i64, String)>> {
    let emails: Vec<&str> = changes.clone().map(|c| c.email.as_str()).collect();
    let known: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT email, id, stage FROM contacts WHERE email IN (SELECT value FROM json_each(?))")
            .bind(serde_json::to_string(&emails)?)
            .fetch_all(&mut *conn)
            .await?;
    let known: HashMap<String, (i64, String)> = known
        .into_iter()
        .map(|(email, id, stage)| (email, (id, stage)))
        .collect();
    let mut contacts = HashMap::new();
    let mut new: Vec<(&str, NewContact)> = Vec::new();
    for c in changes {
        match known.get(&c.email) {
            Some(found) => {
                contacts.insert(c.email.as_str(), found.clone());
            }
            None => {
                let name = if c.name.trim().is_empty() { &c.email } else { &c.name };
                let contact = NewContact {
                    name: name.clone(),
                    company: c.company.clone(),
                    email: Some(c.email.clone()),
                    ..NewContact::default()
                };
                new.push((c.email.as_str(), contact));
            }
        }
    }
    if new.is_empty() {
        return Ok(contacts);
    }
    for (_, contact) in &new {
        contact.validate()?;
    }
    let rows: Vec<&NewContact> = new.iter().map(|(_, c)| c).collect();
    let inserted = insert_contact_rows(conn, &rows, now, KnownEmail::Fail)
        .await?
        .context("new contacts inserted or an error")?;
    for ((email, contact), id) in new.iter().zip(inserted.contacts) {
        contacts.insert(email, (id, contact.first_stage().to_string()));
    }
    written.wrote_events(inserted.events);
    Ok(contacts)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::testing::{TestStore, contact};

    fn by_email(email: &str, stage: &str) -> StageByEmail {
        StageByEmail {
            email: email.into(),
            name: String::new(),
            company: "Co".into(),
            stage: stage.into(),
        }
    }

    #[tokio::test]
    async fn stage_changes_by_email_create_move_and_record_each_in_its_column() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let known = contact(&mut conn, "known@x.test").await;
        let first_event = crate::store::last_event_id(&mut conn).await.unwrap() + 1;
        let changes = [
            by_email("new@x.test", "intent"),
            by_email("known@x.test", "lead"),
            by_email("new@x.test", "sample"),
            by_email("known@x.test", "inquiry"),
        ];
        let written = stage_changes_by_email(&mut conn, &changes, "crm", 50).await.unwrap();
        let new: i64 = sqlx::query_scalar("SELECT id FROM contacts WHERE email = 'new@x.test'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        // known@ is at lead already: its first change writes no event.
        assert_eq!(
            written.done.iter().map(|d| d.0).collect::<Vec<_>>(),
            [new, known, new, known]
        );
        assert_eq!(written.done[1].1, None);
        let events: Vec<(i64, EventKind, i64, serde_json::Value)> =
            sqlx::query_as("SELECT id, kind, contact_id, json(payload) FROM events WHERE id >= ? ORDER BY id")
                .bind(first_event)
                .fetch_all(&mut *conn)
                .await
                .unwrap()
                .into_iter()
                .map(|(id, kind, contact_id, payload): (i64, EventKind, i64, String)| {
                    (id, kind, contact_id, serde_json::from_str(&payload).unwrap())
                })
                .collect();
        let moved = |from: &str, to: &str| json!({ "from": from, "to": to, "by": "crm" });
        let summary: Vec<_> = events.iter().map(|(_, k, c, p)| (*k, *c, p.clone())).collect();
        assert_eq!(
            summary,
            vec![
                (EventKind::ContactCreated, new, json!({})),
                (EventKind::StageChanged, new, moved("lead", "intent")),
                (EventKind::StageChanged, new, moved("intent", "sample")),
                (EventKind::StageChanged, known, moved("lead", "inquiry")),
            ]
        );
        assert_eq!(written.events, Some(events[0].0..=events[3].0));
        assert_eq!(written.done[0].1, Some(events[1].0));
        assert_eq!(written.done[2].1, Some(events[2].0));
        assert_eq!(written.done[3].1, Some(events[3].0));
        let contacts: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT email, name, company, stage FROM contacts ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            contacts,
            vec![
                ("known@x.test".into(), "known".into(), String::new(), "inquiry".into()),
                ("new@x.test".into(), "new@x.test".into(), "Co".into(), "sample".into()),
            ]
        );
        type HistoryRow = (i64, String, Option<String>, Option<String>, String, i64);
        let history: Vec<HistoryRow> = sqlx::query_as(
            "SELECT contact_id, field, from_value, to_value, changed_by, at FROM contact_history ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let change = |c: i64, from: &str, to: &str| {
            (
                c,
                "stage".to_string(),
                Some(from.into()),
                Some(to.into()),
                "crm".to_string(),
                50,
            )
        };
        assert_eq!(
            history,
            vec![
                change(new, "lead", "intent"),
                change(new, "intent", "sample"),
                change(known, "lead", "inquiry")
            ]
        );
    }

    #[tokio::test]
    async fn an_unknown_stage_refuses_the_whole_batch() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let changes = [by_email("a@x.test", "intent"), by_email("b@x.test", "won-ish")];
        let e = stage_changes_by_email(&mut conn, &changes, "crm", 1).await.unwrap_err();
        assert!(e.downcast_ref::<crate::store::Invalid>().is_some(), "{e:#}");
        let contacts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(contacts, 0);
    }
}
