//! Contacts and the changes made to them. Every change that a workflow may react
//! to writes its event in the same transaction.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::QueryBuilder;
use sqlx::types::Json;

use super::{Change, Conn, insert_history, insert_timer, inserted_ids, push_history_entries, push_multi_row_insert};
use crate::model::{INTENT_GRADES, STAGES, TIERS};

/// A contact as stored.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub struct Contact {
    pub id: i64,
    pub name: String,
    pub company: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub owner: String,
    pub stage: String,
    pub intent_grade: Option<String>,
    pub value_tier: Option<String>,
    pub tags: Json<Vec<String>>,
    pub source: String,
    pub time_zone: String,
    pub locale: String,
    pub consent: String,
    pub next_follow_up_at: Option<i64>,
    pub next_goal: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Computed from orders (classification.toml): A / B / C and the scores behind it.
    pub rfm_grade: Option<String>,
    pub rfm_scores: Option<String>,
    /// Computed: active / dormant / churned; none before the first order.
    pub behaviour: Option<String>,
    /// The date of the first order (YYYY-MM-DD); none for a contact who never ordered.
    pub customer_since: Option<String>,
    /// Set through follow-ups: doubting / accepting, vague / specific, and the funnel stage they make.
    pub attitude: Option<String>,
    pub understanding: Option<String>,
    pub funnel_stage: Option<String>,
}

/// What a new contact is made of; everything but the name is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    pub name: String,
    #[serde(default)]
    pub company: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    #[serde(default)]
    pub owner: String,
    pub stage: Option<String>,
    pub intent_grade: Option<String>,
    pub value_tier: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub source: String,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    pub consent: Option<String>,
}

impl NewContact {
    /// The stage the contact starts at.
    pub fn first_stage(&self) -> &str {
        self.stage.as_deref().unwrap_or("lead")
    }
}

/// A value a person or a file gave that nudge cannot accept.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Whether `stage` is one of the lifecycle stages.
pub fn check_stage(stage: &str) -> Result<(), Invalid> {
    check(stage, STAGES, "stage")
}

pub(super) fn check(value: &str, allowed: &[&str], what: &str) -> Result<(), Invalid> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "unknown {what} `{value}`; expected one of: {}",
            allowed.join(", ")
        )))
    }
}

/// A one-line text as a person typed it or a file held it (a name, a company):
/// line breaks, tabs and Unicode line and paragraph separators (Excel's
/// multi-line cells, a pasted address) become one space and the ends are
/// trimmed. NUL and the other control characters, which no name has and which
/// would break the headers of a message that names it, are refused.
pub fn one_line(field: &str, text: &str) -> Result<String, Invalid> {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    no_control_characters(field, &out)?;
    Ok(out)
}

/// Refuses a text with a control character, naming the field and where it is.
pub fn no_control_characters(field: &str, text: &str) -> Result<(), Invalid> {
    let bad = |c: &char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    match text.chars().position(|c| bad(&c)) {
        None => Ok(()),
        Some(at) => {
            let c = text.chars().find(bad).unwrap_or_default();
            Err(Invalid(format!(
                "`{field}` has a control character (U+{:04X}) at character {}; remove it",
                u32::from(c),
                at + 1
            )))
        }
    }
}

/// An owner is the email address that gets new-lead notes, overdue reminders and
/// SLA escalations: anything else would make them reach nobody.
pub fn check_owner(owner: &str) -> Result<(), Invalid> {
    if owner.parse::<lettre::Address>().is_err() {
        return Err(Invalid(format!(
            "`owner`: `{owner}` is not an email address; give the address that gets the contact's reminders, e.g. rep@example.com"
        )));
    }
    Ok(())
}

impl NewContact {
    /// The contact with its texts made one line (see `one_line`), then validated.
    pub fn cleaned(mut self) -> Result<NewContact, Invalid> {
        self.name = one_line("name", &self.name)?;
        self.company = one_line("company", &self.company)?;
        self.source = one_line("source", &self.source)?;
        self.owner = self.owner.trim().to_string();
        for tag in &mut self.tags {
            *tag = one_line("tags", tag)?;
        }
        self.validate()?;
        Ok(self)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.name.trim().is_empty() {
            return Err(Invalid("a contact needs a name".into()));
        }
        for (field, text) in [
            ("name", &self.name),
            ("company", &self.company),
            ("source", &self.source),
        ] {
            no_control_characters(field, text)?;
        }
        for tag in &self.tags {
            no_control_characters("tags", tag)?;
        }
        if !self.owner.is_empty() {
            check_owner(&self.owner)?;
        }
        if let Some(email) = &self.email
            && email.parse::<lettre::Address>().is_err()
        {
            return Err(Invalid(format!("`{email}` is not an email address")));
        }
        if let Some(s) = &self.stage {
            check(s, STAGES, "stage")?;
        }
        if let Some(g) = &self.intent_grade {
            check(g, INTENT_GRADES, "intent grade")?;
        }
        if let Some(t) = &self.value_tier {
            check(t, TIERS, "value tier")?;
        }
        if let Some(c) = &self.consent {
            check(c, &["granted", "unknown", "withdrawn"], "consent")?;
        }
        if let Some(tz) = &self.time_zone
            && jiff::tz::TimeZone::get(tz).is_err()
        {
            return Err(Invalid(format!(
                "unknown time zone `{tz}`; use an IANA name like Asia/Shanghai"
            )));
        }
        Ok(())
    }
}

impl Contact {
    /// The contact as conditions and templates see it (see `workflow::contact_schema`).
    pub fn context(&self, follow_up_count: i64) -> serde_json::Value {
        json!({
            "id": self.id, "name": self.name, "company": self.company,
            "email": self.email.clone().unwrap_or_default(), "phone": self.phone.clone().unwrap_or_default(),
            "owner": self.owner, "stage": self.stage,
            "intent_grade": self.intent_grade.clone().unwrap_or_default(),
            "value_tier": self.value_tier.clone().unwrap_or_default(),
            "tags": self.tags.0, "source": self.source, "time_zone": self.time_zone, "locale": self.locale,
            "consent": self.consent, "follow_up_count": follow_up_count,
            "has_next_follow_up": self.next_follow_up_at.is_some(),
            "rfm_grade": self.rfm_grade.clone().unwrap_or_default(),
            "behaviour": self.behaviour.clone().unwrap_or_default(),
            "funnel_stage": self.funnel_stage.clone().unwrap_or_default(),
        })
    }
}

/// A contact as one JSON object, for reads of many contacts at once: through
/// sqlx every column of every row is a separate allocation on SQLite's thread,
/// so a batch comes back as one JSON text instead. Keep in step with `Contact`
/// (a missing field fails every such read, which any end-to-end test shows).
const CONTACT_JSON: &str = "json_object(
    'id', c.id, 'name', c.name, 'company', c.company, 'email', c.email, 'phone', c.phone,
    'owner', c.owner, 'stage', c.stage, 'intent_grade', c.intent_grade, 'value_tier', c.value_tier,
    'tags', json(c.tags), 'source', c.source, 'time_zone', c.time_zone, 'locale', c.locale,
    'consent', c.consent, 'next_follow_up_at', c.next_follow_up_at, 'next_goal', c.next_goal,
    'created_at', c.created_at, 'updated_at', c.updated_at, 'rfm_grade', c.rfm_grade,
    'rfm_scores', c.rfm_scores, 'behaviour', c.behaviour, 'customer_since', c.customer_since,
    'attitude', c.attitude, 'understanding', c.understanding, 'funnel_stage', c.funnel_stage)";

/// The query for contacts with their follow-up counts (what the condition
/// context needs), selected by `filter` on `contacts c`, as one row of JSON.
pub(super) fn contacts_json_sql(filter: &str) -> String {
    format!(
        "SELECT json_group_array(json_array({CONTACT_JSON},
                  (SELECT COUNT(*) FROM follow_ups f WHERE f.contact_id = c.id)))
         FROM (SELECT * FROM contacts c {filter}) AS c"
    )
}

pub(super) fn parse_contact_rows(json: Option<String>) -> anyhow::Result<Vec<ContactRow>> {
    let rows: Vec<(Contact, i64)> = serde_json::from_str(json.as_deref().unwrap_or("[]"))?;
    Ok(rows
        .into_iter()
        .map(|(contact, follow_up_count)| ContactRow {
            contact,
            follow_up_count,
        })
        .collect())
}

/// A contact with the derived count its condition context needs.
#[derive(Debug)]
pub struct ContactRow {
    pub contact: Contact,
    pub follow_up_count: i64,
}

/// The next contacts after `cursor` in id order.
pub async fn contacts_after(conn: &mut Conn, cursor: i64, limit: i64) -> anyhow::Result<Vec<ContactRow>> {
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
pub async fn contact_with_context(conn: &mut Conn, id: i64) -> anyhow::Result<Option<(Contact, serde_json::Value)>> {
    Ok(contacts_with_context(conn, &[id]).await?.remove(&id))
}

/// Contacts and their contexts by id: what a batch of events or run steps reads.
pub async fn contacts_with_context(
    conn: &mut Conn,
    ids: &[i64],
) -> anyhow::Result<std::collections::HashMap<i64, (Contact, serde_json::Value)>> {
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
pub(super) fn with_contexts(rows: Vec<ContactRow>) -> std::collections::HashMap<i64, (Contact, serde_json::Value)> {
    rows.into_iter()
        .map(|r| {
            let context = r.contact.context(r.follow_up_count);
            (r.contact.id, (r.contact, context))
        })
        .collect()
}

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
enum KnownEmail {
    /// The insert fails (a unique violation).
    Fail,
    /// The row is left out.
    Skip,
}

/// What `insert_contact_rows` added.
struct InsertedContacts {
    contacts: RangeInclusive<i64>,
    /// Their `contact_created` events.
    events: RangeInclusive<i64>,
}

/// Inserts contacts (validated, at least one) and their `contact_created` events;
/// returns the ids of the new ones and of their events, each consecutive, if any went in.
/// Rows go in as multi-row VALUES: with 15 columns a row, binding them costs SQLite
/// less than extracting them from JSON.
async fn insert_contact_rows(
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
         SELECT 'contact_created', id, '{}', ? FROM contacts WHERE id >= ? ORDER BY id",
    )
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

/// Which of `contacts` are stored (their positions): by email, else by phone, else
/// by name and company; in one query.
async fn known_contacts<'a>(
    conn: &mut Conn,
    contacts: impl ExactSizeIterator<Item = &'a NewContact>,
) -> anyhow::Result<Vec<usize>> {
    if contacts.len() == 0 {
        return Ok(Vec::new());
    }
    let keys: Vec<_> = contacts
        .map(|c| json!([email_of(c), phone_of(c), c.name.trim(), c.company]))
        .collect();
    let known: Option<String> = sqlx::query_scalar(
        "SELECT json_group_array(j.key) FROM json_each(?) AS j
         WHERE CASE WHEN j.value ->> 0 IS NOT NULL THEN EXISTS (SELECT 1 FROM contacts c WHERE c.email = j.value ->> 0)
                    WHEN j.value ->> 1 IS NOT NULL THEN EXISTS (SELECT 1 FROM contacts c WHERE c.phone = j.value ->> 1)
                    ELSE EXISTS (SELECT 1 FROM contacts c WHERE c.email IS NULL AND c.phone IS NULL
                                                           AND c.name = j.value ->> 2 AND c.company = j.value ->> 3)
               END",
    )
    .bind(serde_json::to_string(&keys)?)
    .fetch_one(&mut *conn)
    .await?;
    Ok(serde_json::from_str(known.as_deref().unwrap_or("[]"))?)
}

/// Which contacts references name: ids (`42`) or emails, as `find_contact` reads them.
pub struct ContactIds {
    ids: HashSet<i64>,
    emails: std::collections::HashMap<String, i64>,
}

impl ContactIds {
    pub fn get(&self, reference: &str) -> Option<i64> {
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
pub async fn contact_ids_by_reference<'a>(
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
        emails: std::collections::HashMap::new(),
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
pub async fn find_contact(conn: &mut Conn, reference: &str) -> anyhow::Result<Option<Contact>> {
    Ok(match parse_reference(reference) {
        Ok(id) => contact_by_id(conn, id).await?,
        Err(email) => contact_by_email(conn, email).await?,
    })
}

pub async fn contact_by_email(conn: &mut Conn, email: &str) -> anyhow::Result<Option<Contact>> {
    Ok(sqlx::query_as("SELECT * FROM contacts WHERE email = ?")
        .bind(email.trim())
        .fetch_optional(&mut *conn)
        .await?)
}

pub async fn contact_by_id(conn: &mut Conn, id: i64) -> anyhow::Result<Option<Contact>> {
    Ok(sqlx::query_as("SELECT * FROM contacts WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Moves a contact to `stage`; emits `stage_changed` (with `by`, who did it) and
/// returns its id, or `None` if the contact is at that stage already.
pub async fn set_stage(
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
pub struct StageMove<'a> {
    pub contact_id: i64,
    pub from: &'a str,
    pub to: &'a str,
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
             SELECT 'stage_changed', value ->> 'contact_id', json_object('from', value ->> 'from', 'to', value ->> 'to', 'by', ",
        )
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
    pub done: Vec<(i64, Option<i64>)>,
    /// Every event written (`contact_created` ones too): consecutive ids.
    pub events: Option<RangeInclusive<i64>>,
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
        let mut in_round = std::collections::HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&i| in_round.insert(changes[i].email.as_str()));
        pending = later;
        let emails: Vec<&str> = round.iter().map(|&i| changes[i].email.as_str()).collect();
        let known: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT email, id, stage FROM contacts WHERE email IN (SELECT value FROM json_each(?))")
                .bind(serde_json::to_string(&emails)?)
                .fetch_all(&mut *conn)
                .await?;
        let mut contacts: std::collections::HashMap<&str, (i64, String)> = known
            .iter()
            .map(|(email, id, stage)| (email.as_str(), (*id, stage.clone())))
            .collect();
        let new: Vec<(&str, NewContact)> = round
            .iter()
            .map(|&i| &changes[i])
            .filter(|c| !contacts.contains_key(c.email.as_str()))
            .map(|c| {
                let name = if c.name.trim().is_empty() { &c.email } else { &c.name };
                let contact = NewContact {
                    name: name.clone(),
                    company: c.company.clone(),
                    email: Some(c.email.clone()),
                    ..NewContact::default()
                };
                (c.email.as_str(), contact)
            })
            .collect();
        if !new.is_empty() {
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
        }
        let moving: Vec<usize> = round
            .iter()
            .copied()
            .filter(|&i| contacts[changes[i].email.as_str()].1 != changes[i].stage)
            .collect();
        let moves: Vec<StageMove> = moving
            .iter()
            .map(|&i| {
                let (contact_id, from) = &contacts[changes[i].email.as_str()];
                StageMove {
                    contact_id: *contact_id,
                    from,
                    to: &changes[i].stage,
                }
            })
            .collect();
        let events = set_stages(conn, &moves, by, now).await?;
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            written.wrote_events(*first..=*last);
        }
        for &i in &round {
            written.done[i].0 = contacts[changes[i].email.as_str()].0;
        }
        for (i, event) in moving.into_iter().zip(events) {
            written.done[i].1 = Some(event);
        }
    }
    Ok(written)
}

/// Sets one of the single-valued classification fields.
pub async fn set_classification(
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
pub enum Classification {
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
    pub fn label(self) -> &'static str {
        match self {
            Classification::ValueTier => "value tier",
            Classification::IntentGrade => "intent grade",
        }
    }
}

/// Sets a value tier or intent grade on someone's behalf (`by`, e.g. `workflow:NAME`);
/// a change is kept in the history, like changes of stage and owner.
pub async fn set_classification_by(
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
pub async fn set_owner(conn: &mut Conn, contact: &Contact, owner: &str, by: &str, now: i64) -> anyhow::Result<()> {
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
pub async fn set_tags(
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

/// Sets (or clears) the next follow-up. A timer fires at that time; if the time
/// is still the contact's next follow-up then, the follow-up is overdue.
pub async fn set_next_follow_up(
    conn: &mut Conn,
    contact_id: i64,
    at: Option<i64>,
    goal: Option<&str>,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE contacts SET next_follow_up_at = ?, next_goal = ?, updated_at = ? WHERE id = ?")
        .bind(at)
        .bind(goal)
        .bind(now)
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    // Only the newest next follow-up may fall due: retire the timers of earlier ones,
    // or setting the same time twice would make it overdue twice.
    sqlx::query("UPDATE timers SET fired_at = ? WHERE kind = 'follow_up_due' AND contact_id = ? AND fired_at IS NULL")
        .bind(now)
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    if let Some(at) = at {
        insert_timer(conn, at, super::TimerKind::FollowUpDue, None, Some(contact_id)).await?;
    }
    Ok(())
}
