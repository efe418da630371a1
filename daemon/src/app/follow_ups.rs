//! Logging a follow-up: what a rep records after talking to a contact. It
//! answers the contact's open inquiries, sets the next follow-up, may change the
//! intent grade, funnel and stage, writes `follow_up_logged`, and counts as
//! activity for the customer's classification.

use serde::Deserialize;

use super::find_contact;
use crate::clock::parse_time;
use crate::insight::{Events, reclassify_customers};
use crate::store::{self, Conn, Contact, FollowUpResult, Invalid, NewFollowUp};
use crate::workflow::ClassificationRules;

/// A follow-up as people and files give it: times as text (`3d`, RFC 3339, or
/// a local date-time in the contact's time zone).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FollowUpInput {
    pub(crate) at: Option<String>,
    pub(crate) channel: String,
    #[serde(default)]
    pub(crate) summary: String,
    #[serde(default)]
    pub(crate) feedback: String,
    pub(crate) intent_grade: Option<String>,
    pub(crate) attitude: Option<String>,
    pub(crate) understanding: Option<String>,
    pub(crate) stage: Option<String>,
    pub(crate) next_follow_up: Option<String>,
    pub(crate) next_goal: Option<String>,
    pub(crate) result: Option<FollowUpResult>,
    pub(crate) owner: Option<String>,
}

impl FollowUpInput {
    /// Resolves the times in the contact's own time zone.
    fn resolve(self, contact: &Contact, now: i64) -> Result<NewFollowUp, Invalid> {
        let time = |t: Option<String>| {
            t.map(|t| parse_time(&t, now, &contact.time_zone).map_err(Invalid))
                .transpose()
        };
        Ok(NewFollowUp {
            at: time(self.at)?,
            channel: self.channel,
            summary: self.summary,
            feedback: self.feedback,
            intent_grade: self.intent_grade,
            attitude: self.attitude,
            understanding: self.understanding,
            stage: self.stage,
            next_follow_up_at: time(self.next_follow_up)?,
            next_goal: self.next_goal,
            result: self.result,
            owner: self.owner,
        })
    }
}

/// Whether a follow-up that is logged already (the same contact, time, channel
/// and summary) is logged again. A file says when each row happened, so that a
/// second import of it recognises its rows; a rep may well log two alike calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeats {
    Log,
    Skip,
}

/// What logging a follow-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FollowUpLogged {
    Added {
        id: i64,
        contact_id: i64,
        next_follow_up_at: Option<i64>,
    },
    /// Logged already (with `Repeats::Skip`): nothing changed.
    AlreadyPresent,
}

/// Logs a follow-up of the contact `reference` and re-classifies the customer
/// when there are rules: a follow-up is activity that keeps a customer from
/// churning. Without rules it is still logged; the daemon's pass catches up.
pub(crate) async fn log_follow_up(
    conn: &mut Conn,
    rules: Option<&ClassificationRules>,
    reference: &str,
    input: FollowUpInput,
    repeats: Repeats,
    now: i64,
) -> anyhow::Result<FollowUpLogged> {
    let contact = find_contact(conn, reference).await?;
    let follow_up = input.resolve(&contact, now)?;
    if repeats == Repeats::Skip {
        let at = follow_up.at.unwrap_or(now);
        if store::follow_up_exists(conn, contact.id, at, &follow_up.channel, &follow_up.summary).await? {
            return Ok(FollowUpLogged::AlreadyPresent);
        }
    }
    let id = store::log_follow_up(conn, &contact, &follow_up, now).await?;
    if let Some(rules) = rules {
        reclassify_customers(conn, rules, &[contact.id], now, Events::Write).await?;
    }
    Ok(FollowUpLogged::Added {
        id,
        contact_id: contact.id,
        next_follow_up_at: follow_up.next_follow_up_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewContact, Store};

    /// What one contact's follow-ups look like in the store: (channel, summary) per row.
    async fn logged(store: &Store) -> Vec<(String, String)> {
        sqlx::query_as("SELECT channel, summary FROM follow_ups ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap()
    }

    async fn log(conn: &mut Conn, call: &FollowUpInput, repeats: Repeats, now: i64) -> anyhow::Result<FollowUpLogged> {
        log_follow_up(conn, None, "liu@example.com", call.clone(), repeats, now).await
    }

    #[tokio::test]
    async fn a_file_logs_a_follow_up_once_and_a_rep_as_often_as_told() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let now = 1_796_000_000_000;
        let mut tx = store.write().await.unwrap();
        let new = NewContact {
            name: "Liu Yang".into(),
            email: Some("liu@example.com".into()),
            ..NewContact::default()
        };
        let contact_id = crate::app::add_contact(&mut tx, &new, now).await.unwrap();
        let call = FollowUpInput {
            at: Some("2026-11-20T02:00:00Z".into()),
            channel: "phone".into(),
            summary: "Talked prices".into(),
            next_follow_up: Some("3d".into()),
            ..FollowUpInput::default()
        };
        let first = log(&mut tx, &call, Repeats::Skip, now).await.unwrap();
        let FollowUpLogged::Added {
            contact_id: of,
            next_follow_up_at,
            ..
        } = first
        else {
            panic!("not logged: {first:?}");
        };
        assert_eq!(of, contact_id);
        assert_eq!(next_follow_up_at, Some(now + 3 * 86_400_000));
        assert_eq!(
            log(&mut tx, &call, Repeats::Skip, now).await.unwrap(),
            FollowUpLogged::AlreadyPresent
        );
        assert!(matches!(
            log(&mut tx, &call, Repeats::Log, now).await.unwrap(),
            FollowUpLogged::Added { .. }
        ));
        tx.commit().await.unwrap();
        let row = ("phone".to_string(), "Talked prices".to_string());
        assert_eq!(logged(&store).await, [row.clone(), row]);

        let mut tx = store.write().await.unwrap();
        let missing = log_follow_up(&mut tx, None, "nobody@example.com", call, Repeats::Log, now).await;
        let missing = missing.unwrap_err().downcast::<crate::app::NotFound>().unwrap();
        assert_eq!(missing.0, "no contact `nobody@example.com` (give an id or an email)");
    }
}
