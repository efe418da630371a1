//! Follow-up records (docs/domain.md §4) and inquiries. Logging a follow-up answers
//! the contact's open inquiries and sets the next follow-up time.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::contacts::{check, check_owner};
use super::stored_text::stored_text;
use super::{
    Classification, Conn, Contact, EventKind, Invalid, insert_event, insert_history, set_classification,
    set_next_follow_up, set_stage,
};
use crate::model::{ATTITUDES, UNDERSTANDINGS, funnel_stage};

/// A follow-up as logged by a rep.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewFollowUp {
    /// When the contact happened (unix ms); defaults to now.
    pub(crate) at: Option<i64>,
    pub(crate) channel: String,
    #[serde(default)]
    pub(crate) summary: String,
    #[serde(default)]
    pub(crate) feedback: String,
    /// A new intent grade decided in this contact (recorded as "B -> A").
    pub(crate) intent_grade: Option<String>,
    /// The rep's judgements for the funnel: doubting / accepting, vague / specific.
    pub(crate) attitude: Option<String>,
    pub(crate) understanding: Option<String>,
    /// A new lifecycle stage reached in this contact.
    pub(crate) stage: Option<String>,
    pub(crate) next_follow_up_at: Option<i64>,
    pub(crate) next_goal: Option<String>,
    pub(crate) result: Option<FollowUpResult>,
    pub(crate) owner: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub(crate) struct FollowUp {
    pub(crate) id: i64,
    pub(crate) contact_id: i64,
    pub(crate) at: i64,
    pub(crate) channel: String,
    pub(crate) summary: String,
    pub(crate) feedback: String,
    pub(crate) status_change: Option<String>,
    pub(crate) next_follow_up_at: Option<i64>,
    pub(crate) next_goal: Option<String>,
    pub(crate) result: FollowUpResult,
    pub(crate) owner: String,
}

stored_text! {
    /// Where a follow-up left the deal, in the rep's judgement (docs/domain.md §4).
    pub(crate) enum FollowUpResult {
        InProgress = "in_progress",
        Won = "won",
        NeedsFollowUp = "needs_follow_up",
        Lost = "lost",
    }
}

/// Records a follow-up, in one transaction with everything it changes.
pub(crate) async fn log_follow_up(
    conn: &mut Conn,
    contact: &Contact,
    new: &NewFollowUp,
    now: i64,
) -> anyhow::Result<i64> {
    let result = new.checked_result()?;
    let at = new.at.unwrap_or(now);
    let owner = new
        .owner
        .as_deref()
        .map_or_else(|| contact.owner.clone(), |o| o.trim().to_string());
    // The rep who logged the follow-up made its judgements (docs/domain.md §4: "B -> A").
    let by = if owner.is_empty() { "follow-up" } else { owner.as_str() };
    let changes = apply_judgements(conn, contact, new, by, at, now).await?;
    let status_change = (!changes.is_empty()).then(|| changes.join("; "));
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO follow_ups (contact_id, at, channel, summary, feedback, status_change, next_follow_up_at,
                                 next_goal, result, owner, logged_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(contact.id)
    .bind(at)
    .bind(new.channel.trim())
    .bind(&new.summary)
    .bind(&new.feedback)
    .bind(&status_change)
    .bind(new.next_follow_up_at)
    .bind(&new.next_goal)
    .bind(result)
    .bind(&owner)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    set_next_follow_up(conn, contact.id, new.next_follow_up_at, new.next_goal.as_deref(), now).await?;
    // Any contact with the customer answers the inquiries they were waiting on.
    sqlx::query(
        "UPDATE inquiries SET answered_at = ? WHERE contact_id = ? AND answered_at IS NULL AND received_at <= ?",
    )
    .bind(at)
    .bind(contact.id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let payload = json!({ "follow_up_id": id, "channel": new.channel, "result": result });
    insert_event(conn, EventKind::FollowUpLogged, contact.id, &payload, now).await?;
    Ok(id)
}

impl NewFollowUp {
    /// Checks the follow-up's values; returns its result (`in_progress` if not given).
    fn checked_result(&self) -> anyhow::Result<FollowUpResult> {
        if self.channel.trim().is_empty() {
            return Err(Invalid("a follow-up needs a channel (phone, wechat, email, visit, ...)".into()).into());
        }
        let result = self.result.unwrap_or(FollowUpResult::InProgress);
        if let Some(a) = &self.attitude {
            check(a, ATTITUDES, "attitude")?;
        }
        if let Some(u) = &self.understanding {
            check(u, UNDERSTANDINGS, "understanding")?;
        }
        if let Some(owner) = &self.owner {
            check_owner(owner.trim())?;
        }
        Ok(result)
    }
}

/// Applies what the follow-up judged (intent grade, funnel judgements, stage),
/// each change kept in the history as made by `by` at `at`; returns the changes
/// as the follow-up's status change reads them ("intent B -> A").
async fn apply_judgements(
    conn: &mut Conn,
    contact: &Contact,
    new: &NewFollowUp,
    by: &str,
    at: i64,
    now: i64,
) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    if let Some(grade) = &new.intent_grade
        && Some(grade) != contact.intent_grade.as_ref()
    {
        set_classification(conn, contact.id, Classification::IntentGrade, grade, now).await?;
        let from = contact.intent_grade.as_deref();
        insert_history(conn, contact.id, "intent_grade", from, Some(grade), by, at).await?;
        changes.push(format!("intent {} -> {grade}", from.unwrap_or("-")));
    }
    if let Some(funnel) = set_funnel_judgements(conn, contact, new, now).await? {
        let from = contact.funnel_stage.as_deref();
        if from != Some(funnel) {
            insert_history(conn, contact.id, "funnel_stage", from, Some(funnel), by, at).await?;
            changes.push(format!("funnel {} -> {funnel}", from.unwrap_or("-")));
        }
    }
    if let Some(stage) = &new.stage
        && *stage != contact.stage
    {
        set_stage(conn, contact.id, &contact.stage, stage, by, now).await?;
        changes.push(format!("stage {} -> {stage}", contact.stage));
    }
    Ok(changes)
}

/// Stores the attitude and understanding a follow-up judged (each keeps its old
/// value when not given) and returns the funnel stage, once both are known.
async fn set_funnel_judgements(
    conn: &mut Conn,
    contact: &Contact,
    new: &NewFollowUp,
    now: i64,
) -> anyhow::Result<Option<&'static str>> {
    if new.attitude.is_none() && new.understanding.is_none() {
        return Ok(None);
    }
    let attitude = new.attitude.as_ref().or(contact.attitude.as_ref());
    let understanding = new.understanding.as_ref().or(contact.understanding.as_ref());
    let funnel = attitude.zip(understanding).map(|(a, u)| funnel_stage(a, u));
    sqlx::query("UPDATE contacts SET attitude = ?, understanding = ?, funnel_stage = ?, updated_at = ? WHERE id = ?")
        .bind(attitude)
        .bind(understanding)
        .bind(funnel)
        .bind(now)
        .bind(contact.id)
        .execute(&mut *conn)
        .await?;
    Ok(funnel)
}

/// Whether this follow-up was logged already (how a re-imported row is recognised).
pub(crate) async fn follow_up_exists(
    conn: &mut Conn,
    contact_id: i64,
    at: i64,
    channel: &str,
    summary: &str,
) -> anyhow::Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM follow_ups WHERE contact_id = ? AND at = ? AND channel = ? AND summary = ?")
            .bind(contact_id)
            .bind(at)
            .bind(channel.trim())
            .bind(summary)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some())
}

pub(crate) async fn follow_ups_of(conn: &mut Conn, contact_id: i64, limit: i64) -> anyhow::Result<Vec<FollowUp>> {
    Ok(sqlx::query_as(
        "SELECT id, contact_id, at, channel, summary, feedback, status_change, next_follow_up_at, next_goal, result, owner
         FROM follow_ups WHERE contact_id = ? ORDER BY at DESC, id DESC LIMIT ?",
    )
    .bind(contact_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// Records a new inquiry and its `inquiry_received` event.
pub(crate) async fn add_inquiry(
    conn: &mut Conn,
    contact_id: i64,
    message: &str,
    channel: &str,
    now: i64,
) -> anyhow::Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO inquiries (contact_id, message, channel, received_at) VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(contact_id)
    .bind(message)
    .bind(channel)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    insert_event(
        conn,
        EventKind::InquiryReceived,
        contact_id,
        &json!({ "inquiry_id": id, "channel": channel }),
        now,
    )
    .await?;
    Ok(id)
}

/// Which of the inquiries are still unanswered, in one query.
pub(crate) async fn open_inquiries(conn: &mut Conn, ids: &[i64]) -> anyhow::Result<std::collections::HashSet<i64>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let open: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM inquiries WHERE id IN (SELECT value FROM json_each(?)) AND answered_at IS NULL",
    )
    .bind(serde_json::to_string(ids)?)
    .fetch_all(&mut *conn)
    .await?;
    Ok(open.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{TestStore, contact};
    use crate::store::{TimerKind, contact_by_id};

    #[tokio::test]
    async fn a_follow_up_records_its_judgements_answers_inquiries_and_schedules_the_next() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let id = contact(&mut conn, "a@x.test").await;
        let inquiry = add_inquiry(&mut conn, id, "price?", "email", 10).await.unwrap();
        let later = add_inquiry(&mut conn, id, "and now?", "email", 30).await.unwrap();
        let c = contact_by_id(&mut conn, id).await.unwrap().unwrap();
        let new = NewFollowUp {
            at: Some(20),
            channel: " phone ".into(),
            summary: "called".into(),
            feedback: "likes it".into(),
            intent_grade: Some("A".into()),
            attitude: Some("accepting".into()),
            understanding: Some("specific".into()),
            stage: Some("intent".into()),
            next_follow_up_at: Some(900),
            next_goal: Some("quote".into()),
            result: Some(FollowUpResult::Won),
            owner: Some(" rep@x.test ".into()),
        };
        let follow_up = log_follow_up(&mut conn, &c, &new, 25).await.unwrap();

        let logged = follow_ups_of(&mut conn, id, 10).await.unwrap();
        let f = &logged[0];
        let got = (
            f.id,
            f.contact_id,
            f.at,
            f.channel.as_str(),
            f.summary.as_str(),
            f.feedback.as_str(),
            f.status_change.as_deref(),
            f.next_follow_up_at,
            f.next_goal.as_deref(),
            f.result,
            f.owner.as_str(),
        );
        let status_change = "intent - -> A; funnel - -> opportunity; stage lead -> intent";
        assert_eq!(
            got,
            (
                follow_up,
                id,
                20,
                "phone",
                "called",
                "likes it",
                Some(status_change),
                Some(900),
                Some("quote"),
                FollowUpResult::Won,
                "rep@x.test"
            )
        );
        let c = contact_by_id(&mut conn, id).await.unwrap().unwrap();
        let judged = (
            c.intent_grade,
            c.attitude,
            c.understanding,
            c.funnel_stage,
            c.stage,
            c.next_follow_up_at,
        );
        assert_eq!(
            judged,
            (
                Some("A".into()),
                Some("accepting".into()),
                Some("specific".into()),
                Some("opportunity".into()),
                "intent".into(),
                Some(900)
            )
        );
        let history: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT field, changed_by, at FROM contact_history WHERE contact_id = ? ORDER BY id")
                .bind(id)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let by_rep = |field: &str, at: i64| (field.to_string(), "rep@x.test".to_string(), at);
        assert_eq!(
            history,
            vec![
                by_rep("intent_grade", 20),
                by_rep("funnel_stage", 20),
                by_rep("stage", 25)
            ]
        );
        assert_eq!(
            open_inquiries(&mut conn, &[inquiry, later]).await.unwrap(),
            [later].into()
        );
        let kinds: Vec<(EventKind, String)> = sqlx::query_as(
            "SELECT kind, payload FROM events WHERE contact_id = ? AND kind != 'contact_created' ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let kinds: Vec<EventKind> = kinds.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            [
                EventKind::InquiryReceived,
                EventKind::InquiryReceived,
                EventKind::StageChanged,
                EventKind::FollowUpLogged
            ]
        );
        let timer: (i64, TimerKind) = sqlx::query_as("SELECT due_at, kind FROM timers WHERE fired_at IS NULL")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(timer, (900, TimerKind::FollowUpDue));
        assert!(follow_up_exists(&mut conn, id, 20, "phone", "called").await.unwrap());
    }

    #[tokio::test]
    async fn a_follow_up_without_a_channel_is_refused() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let id = contact(&mut conn, "a@x.test").await;
        let c = contact_by_id(&mut conn, id).await.unwrap().unwrap();
        let e = log_follow_up(&mut conn, &c, &NewFollowUp::default(), 1)
            .await
            .unwrap_err();
        assert!(e.downcast_ref::<Invalid>().is_some(), "{e:#}");
        assert!(follow_ups_of(&mut conn, id, 10).await.unwrap().is_empty());
    }
}
