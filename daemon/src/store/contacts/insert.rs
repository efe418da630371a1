//! Adding contacts, one or a batch, each with its `contact_created` event.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::QueryBuilder;
use sqlx::types::Json;

use super::{Consent, Invalid, NewContact};
use crate::store::{Conn, EventKind, inserted_ids, push_multi_row_insert};

/// Adds a contact and its `contact_created` event.
pub async fn insert_contact(conn: &mut Conn, new: &NewContact, now: i64) -> anyhow::Result<i64> {
    let new = &new.clone().cleaned()?;
    let ids = insert_contact_rows(conn, &[new], now, KnownEmail::Fail)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => anyhow::Error::new(Invalid(format!(
                "a contact with email {} exists already",
                new.email.as_deref().unwrap_or("")
            ))),
            _ => e.into(),
        })?;
    Ok(*ids.context("a contact inserted or an error")?.contacts.start())
}

/// What `insert_contact_rows` does with a row whose email a stored contact has.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KnownEmail {
    /// The insert fails (a unique violation).
    Fail,
    /// The row is left out.
    Skip,
}

/// What `insert_contact_rows` added.
pub(super) struct InsertedContacts {
    pub(crate) contacts: RangeInclusive<i64>,
    /// Their `contact_created` events.
    pub(crate) events: RangeInclusive<i64>,
}

/// Inserts contacts (validated, at least one) and their `contact_created` events;
/// returns the ids of the new ones and of their events, each consecutive, if any went in.
/// Rows go in as multi-row VALUES: with 16 columns a row, binding them costs SQLite
/// less than extracting them from JSON.
pub(super) async fn insert_contact_rows(
    conn: &mut Conn,
    new: &[&NewContact],
    now: i64,
    known_email: KnownEmail,
) -> Result<Option<InsertedContacts>, sqlx::Error> {
    // OR FAIL: a failing row leaves the statement's earlier rows in, which every
    // caller rolls back with its transaction (or savepoint) on the error; in return
    // SQLite keeps no undo copy of every index page the statement touches (with
    // random emails, most of them).
    let tail = match known_email {
        KnownEmail::Fail => "",
        KnownEmail::Skip => " ON CONFLICT (email) DO NOTHING",
    };
    let mut insert = QueryBuilder::new("");
    push_multi_row_insert(
        &mut insert,
        "INSERT OR FAIL INTO contacts (name, salutation, company, email, phone, owner, stage, intent_grade, value_tier, tags, source,
                                       time_zone, locale, consent, created_at, updated_at) ",
        new,
        16,
        tail,
        |mut row, c| {
            row.push_bind(c.name.trim())
                .push_bind(&c.salutation)
                .push_bind(&c.company)
                .push_bind(&c.email)
                .push_bind(&c.phone)
                .push_bind(&c.owner)
                .push_bind(c.first_stage())
                .push_bind(&c.intent_grade)
                .push_bind(&c.value_tier)
                .push_bind(Json(&c.tags))
                .push_bind(&c.source)
                .push_bind(c.time_zone.as_deref().unwrap_or("UTC"))
                .push_bind(c.locale.as_deref().unwrap_or("en"))
                .push_bind(c.consent.unwrap_or(Consent::Unknown))
                .push_bind(now)
                .push_bind(now);
        },
    );
    let done = insert.build().execute(&mut *conn).await?;
    let ids = inserted_ids(&done, done.rows_affected());
    let Some(contacts) = ids else {
        return Ok(None);
    };
    let done = sqlx::query(
        "INSERT INTO events (kind, contact_id, payload, occurred_at)
         SELECT ?, id, '{}', ? FROM contacts WHERE id >= ? ORDER BY id",
    )
    .bind(EventKind::ContactCreated)
    .bind(now)
    .bind(contacts.start())
    .execute(&mut *conn)
    .await?;
    let events = inserted_ids(&done, done.rows_affected()).expect("an event for every new contact");
    Ok(Some(InsertedContacts { contacts, events }))
}

/// Adds the contacts of `new` that are not known already, each with its
/// `contact_created` event, in a few statements whatever their number. A contact is
/// known by email, else by phone, else by name and company, among those stored and
/// those added earlier in `new`. Each comes with its validation (`NewContact::validate`):
/// a known contact is left alone even if the row is invalid, as a row at a time always
/// did; one not known is added if valid. Returns for each: added (`Ok(true)`), known
/// (`Ok(false)`), or why it cannot be added.
///
/// A valid row with an email is not looked up: the insert skips it if the email is
/// stored (the unique index finds it while inserting anyway), and only when some
/// were skipped are the new rows' emails read back. The others, without an email
/// or invalid (a rare few), are looked up first; so are rows with an email and the
/// phone of a phone-only row of the batch: whether such a row is known decides whether
/// that phone names a contact the batch adds.
pub(crate) async fn insert_new_contacts(
    conn: &mut Conn,
    new: &[(NewContact, Result<(), Invalid>)],
    now: i64,
) -> anyhow::Result<Vec<Result<bool, String>>> {
    let phone_only: HashSet<&str> = new
        .iter()
        .filter(|(c, _)| email_of(c).is_none())
        .filter_map(|(c, _)| phone_of(c))
        .collect();
    let looked_up: Vec<usize> = (0..new.len())
        .filter(|&i| {
            let (c, valid) = &new[i];
            email_of(c).is_none() || valid.is_err() || phone_of(c).is_some_and(|p| phone_only.contains(p))
        })
        .collect();
    let known = known_contacts(conn, looked_up.iter().map(|&i| &new[i].0)).await?;
    let known: HashSet<usize> = known.into_iter().map(|k| looked_up[k]).collect();
    let (mut emails, mut phones, mut unreachable) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut added = Vec::with_capacity(new.len());
    let mut rows = Vec::new();
    for (i, (c, valid)) in new.iter().enumerate() {
        let (email, phone) = (email_of(c), phone_of(c));
        let seen = match (email, phone) {
            (Some(email), _) => emails.contains(email),
            (None, Some(phone)) => phones.contains(phone),
            (None, None) => unreachable.contains(&(c.name.trim(), c.company.as_str())),
        };
        if seen || known.contains(&i) {
            added.push(Ok(false));
            continue;
        }
        if let Err(invalid) = valid {
            added.push(Err(invalid.0.clone()));
            continue;
        }
        added.push(Ok(true));
        emails.extend(email);
        phones.extend(phone);
        if email.is_none() && phone.is_none() {
            unreachable.insert((c.name.trim(), c.company.as_str()));
        }
        rows.push(c);
    }
    if rows.is_empty() {
        return Ok(added);
    }
    let ids = insert_contact_rows(conn, &rows, now, KnownEmail::Skip)
        .await?
        .map(|inserted| inserted.contacts);
    let went_in = ids.as_ref().map_or(0, |ids| ids.end() - ids.start() + 1);
    if went_in < rows.len() as i64 {
        // Some emails were stored already: those rows are known contacts.
        let new_emails: HashSet<String> = match &ids {
            Some(ids) => {
                let emails: Option<String> = sqlx::query_scalar(
                    "SELECT json_group_array(email) FROM contacts WHERE id >= ? AND email IS NOT NULL",
                )
                .bind(ids.start())
                .fetch_one(&mut *conn)
                .await?;
                serde_json::from_str(emails.as_deref().unwrap_or("[]"))?
            }
            None => HashSet::new(),
        };
        for (outcome, (c, _)) in added.iter_mut().zip(new) {
            if *outcome == Ok(true)
                && let Some(email) = email_of(c)
                && !new_emails.contains(email)
            {
                *outcome = Ok(false);
            }
        }
    }
    Ok(added)
}

fn email_of(c: &NewContact) -> Option<&str> {
    c.email.as_deref().map(str::trim)
}

fn phone_of(c: &NewContact) -> Option<&str> {
    c.phone.as_deref().map(str::trim)
}

/// What `known_contacts` knows a contact by.
#[derive(Serialize)]
struct ContactKey<'a> {
    email: Option<&'a str>,
    phone: Option<&'a str>,
    name: &'a str,
    company: &'a str,
}

/// Which of `contacts` are stored (their positions): by email, else by phone, else
/// by name and company; in one query.
async fn known_contacts<'a>(
    conn: &mut Conn,
    contacts: impl ExactSizeIterator<Item = &'a NewContact>,
) -> anyhow::Result<Vec<usize>> {
    if contacts.len() == 0 {
        return Ok(Vec::new());
    }
    let keys: Vec<ContactKey> = contacts
        .map(|c| ContactKey {
            email: email_of(c),
            phone: phone_of(c),
            name: c.name.trim(),
            company: &c.company,
        })
        .collect();
    let known: Option<String> = sqlx::query_scalar(
        "SELECT json_group_array(j.key) FROM json_each(?) AS j
         WHERE CASE WHEN j.value ->> 'email' IS NOT NULL
                    THEN EXISTS (SELECT 1 FROM contacts c WHERE c.email = j.value ->> 'email')
                    WHEN j.value ->> 'phone' IS NOT NULL
                    THEN EXISTS (SELECT 1 FROM contacts c WHERE c.phone = j.value ->> 'phone')
                    ELSE EXISTS (SELECT 1 FROM contacts c WHERE c.email IS NULL AND c.phone IS NULL
                                   AND c.name = j.value ->> 'name' AND c.company = j.value ->> 'company')
               END",
    )
    .bind(serde_json::to_string(&keys)?)
    .fetch_one(&mut *conn)
    .await?;
    Ok(serde_json::from_str(known.as_deref().unwrap_or("[]"))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contact_by_id;
    use crate::store::testing::TestStore;

    fn named(name: &str, email: Option<&str>, phone: Option<&str>) -> NewContact {
        NewContact {
            name: name.into(),
            email: email.map(Into::into),
            phone: phone.map(Into::into),
            ..NewContact::default()
        }
    }

    #[tokio::test]
    async fn a_new_contact_lands_field_by_field_with_its_event() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let new = NewContact {
            name: " Ann\tLee ".into(),
            salutation: "Ms Lee".into(),
            company: "Acme".into(),
            email: Some("ann@x.test".into()),
            phone: Some("+861".into()),
            owner: "rep@x.test".into(),
            stage: Some("intent".into()),
            intent_grade: Some("B".into()),
            value_tier: Some("high".into()),
            tags: vec!["vip".into()],
            source: "fair".into(),
            time_zone: Some("Asia/Shanghai".into()),
            locale: Some("zh".into()),
            consent: Some(Consent::Granted),
        };
        let id = insert_contact(&mut conn, &new, 44).await.unwrap();
        let c = contact_by_id(&mut conn, id).await.unwrap().unwrap();
        let got = (
            (c.name.as_str(), c.salutation.as_str()),
            c.company.as_str(),
            c.email.as_deref(),
            c.phone.as_deref(),
            c.owner.as_str(),
            c.stage.as_str(),
            c.intent_grade.as_deref(),
            c.value_tier.as_deref(),
            (
                c.tags.0.clone(),
                c.source.as_str(),
                c.time_zone.as_str(),
                c.locale.as_str(),
                c.consent,
                (c.created_at, c.updated_at),
            ),
        );
        assert_eq!(
            got,
            (
                ("Ann Lee", "Ms Lee"),
                "Acme",
                Some("ann@x.test"),
                Some("+861"),
                "rep@x.test",
                "intent",
                Some("B"),
                Some("high"),
                (
                    vec!["vip".to_string()],
                    "fair",
                    "Asia/Shanghai",
                    "zh",
                    Consent::Granted,
                    (44, 44)
                )
            )
        );
        let events: Vec<(crate::store::EventKind, i64, String, i64)> =
            sqlx::query_as("SELECT kind, contact_id, payload, occurred_at FROM events")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            events,
            vec![(crate::store::EventKind::ContactCreated, id, "{}".into(), 44)]
        );
        let e = insert_contact(&mut conn, &named("Again", Some("ann@x.test"), None), 45)
            .await
            .unwrap_err();
        assert!(e.downcast_ref::<Invalid>().is_some(), "{e:#}");
    }

    #[tokio::test]
    async fn a_batch_adds_only_contacts_not_known_by_email_phone_or_name() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        for known in [
            named("Known", Some("known@x.test"), None),
            named("Phone", None, Some("+1")),
            named("Nobody", None, None),
        ] {
            insert_contact(&mut conn, &known, 1).await.unwrap();
        }
        let rows = vec![
            (named("Known again", Some("known@x.test"), None), Ok(())),
            (named("Phone again", None, Some("+1")), Ok(())),
            (named("Nobody", None, None), Ok(())),
            (named("Fresh", Some("fresh@x.test"), Some("+2")), Ok(())),
            (named("Fresh twice", Some("fresh@x.test"), None), Ok(())),
            (named("Bad", Some("bad@x.test"), None), Err(Invalid("bad row".into()))),
            (named("Only phone", None, Some("+3")), Ok(())),
        ];
        let added = insert_new_contacts(&mut conn, &rows, 2).await.unwrap();
        assert_eq!(
            added,
            vec![
                Ok(false),
                Ok(false),
                Ok(false),
                Ok(true),
                Ok(false),
                Err("bad row".into()),
                Ok(true)
            ]
        );
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM contacts WHERE created_at = 2 ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(names, ["Fresh", "Only phone"]);
    }

    #[tokio::test]
    async fn known_contacts_are_found_by_each_key_in_its_column() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let mut stored = named("Ann", Some("ann@x.test"), None);
        stored.company = "Acme".into();
        insert_contact(&mut conn, &stored, 1).await.unwrap();
        let mut by_name = named("Bob", None, None);
        by_name.company = "Bolt".into();
        insert_contact(&mut conn, &by_name, 1).await.unwrap();
        insert_contact(&mut conn, &named("Cy", None, Some("+9")), 1)
            .await
            .unwrap();
        let mut swapped = named("Bolt", None, None);
        swapped.company = "Bob".into();
        let asked = [
            named("x", Some("ann@x.test"), None),
            named("x", None, Some("+9")),
            by_name.clone(),
            swapped,
            named("x", Some("+9"), None),
            named("x", None, Some("ann@x.test")),
        ];
        assert_eq!(known_contacts(&mut conn, asked.iter()).await.unwrap(), [0, 1, 2]);
    }
}
