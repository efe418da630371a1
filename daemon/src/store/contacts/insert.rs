//! Adding contacts, one or a batch, each with its `contact_created` event.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::QueryBuilder;
use sqlx::types::Json;

use super::{Invalid, NewContact};
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
    pub contacts: RangeInclusive<i64>,
    /// Their `contact_created` events.
    pub events: RangeInclusive<i64>,
}

/// Inserts contacts (validated, at least one) and their `contact_created` events;
/// returns the ids of the new ones and of their events, each consecutive, if any went in.
/// Rows go in as multi-row VALUES: with 15 columns a row, binding them costs SQLite
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
        "INSERT OR FAIL INTO contacts (name, company, email, phone, owner, stage, intent_grade, value_tier, tags, source,
                                       time_zone, locale, consent, created_at, updated_at) ",
        new,
        15,
        tail,
        |mut row, c| {
            row.push_bind(c.name.trim())
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
                .push_bind(c.consent.as_deref().unwrap_or("unknown"))
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
pub async fn insert_new_contacts(
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
