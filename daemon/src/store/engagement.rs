//! Engagement: opens, clicks and replies, each recorded against the message
//! (outbox row) it answers, with the message's workflow and A/B variant.

use serde_json::json;

use super::stored_text::stored_text;
use super::{Conn, EventKind, insert_event};

stored_text! {
    /// The `kind` of an engagement row.
    pub(crate) enum EngagementKind {
        Opened = "opened",
        Clicked = "clicked",
        Replied = "replied",
    }
}

/// A message that engagement is recorded against.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct EngagedMessage {
    pub(crate) outbox_id: i64,
    pub(crate) message_id: String,
    pub(crate) contact_id: i64,
    pub(crate) workflow: Option<String>,
    pub(crate) variant: Option<String>,
}

const MESSAGE: &str = "SELECT o.id AS outbox_id, o.message_id, o.contact_id, r.workflow, o.variant
                       FROM outbox o LEFT JOIN runs r ON r.id = o.run_id";

/// The message of an idempotency key (what tracking tokens carry), if it was sent to a contact.
pub(crate) async fn message_by_key(conn: &mut Conn, key: &str) -> anyhow::Result<Option<EngagedMessage>> {
    Ok(sqlx::query_as(&format!(
        "{MESSAGE} WHERE o.idempotency_key = ? AND o.contact_id IS NOT NULL"
    ))
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The latest message delivered to a contact (not to its owner): what a reply
/// that names no message most likely answers.
pub(crate) async fn last_message_to(conn: &mut Conn, contact_id: i64) -> anyhow::Result<Option<EngagedMessage>> {
    Ok(sqlx::query_as(&format!(
        "{MESSAGE} WHERE o.contact_id = ? AND o.status = 'sent' AND o.category != 'internal'
         ORDER BY o.sent_at DESC, o.id DESC LIMIT 1"
    ))
    .bind(contact_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// What a recipient did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Engagement {
    Opened,
    /// A link was followed to `url`.
    Clicked(String),
    Replied,
}

/// Records what the recipient of `message` did.
pub(crate) async fn record_engagement(
    conn: &mut Conn,
    message: &EngagedMessage,
    what: &Engagement,
    now: i64,
) -> anyhow::Result<()> {
    let (kind, url) = match what {
        Engagement::Opened => (EngagementKind::Opened, None),
        Engagement::Clicked(url) => (EngagementKind::Clicked, Some(url.as_str())),
        Engagement::Replied => (EngagementKind::Replied, None),
    };
    sqlx::query(
        "INSERT INTO engagement (outbox_id, contact_id, workflow, variant, kind, url, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(message.outbox_id)
    .bind(message.contact_id)
    .bind(&message.workflow)
    .bind(&message.variant)
    .bind(kind)
    .bind(url)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A reply from a contact, to `message` if known: recorded for the report and
/// written as a `replied` event, which the `replied` exit condition stops runs on.
pub(crate) async fn record_reply(
    conn: &mut Conn,
    contact_id: i64,
    message: Option<&EngagedMessage>,
    now: i64,
) -> anyhow::Result<i64> {
    match message {
        Some(message) => record_engagement(conn, message, &Engagement::Replied, now).await?,
        None => {
            sqlx::query("INSERT INTO engagement (contact_id, kind, at) VALUES (?, ?, ?)")
                .bind(contact_id)
                .bind(EngagementKind::Replied)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
    }
    let payload = json!({ "message_id": message.map(|m| m.message_id.clone()) });
    insert_event(conn, EventKind::Replied, contact_id, &payload, now).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{TestStore, contact};

    #[tokio::test]
    async fn engagement_is_recorded_against_the_message_and_a_reply_is_an_event() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let c = contact(&mut conn, "a@x.test").await;
        sqlx::query(
            "INSERT INTO outbox (idempotency_key, message_id, contact_id, channel, recipient, message, status,
                                 next_attempt_at, created_at, sent_at, variant)
             VALUES ('k', '<k@x>', ?, 'email', 'a@x.test', '{}', 'sent', 1, 1, 1, 'b')",
        )
        .bind(c)
        .execute(&mut *conn)
        .await
        .unwrap();
        let message = message_by_key(&mut conn, "k").await.unwrap().unwrap();
        assert_eq!(
            last_message_to(&mut conn, c).await.unwrap().map(|m| m.outbox_id),
            Some(message.outbox_id)
        );
        record_engagement(&mut conn, &message, &Engagement::Opened, 5)
            .await
            .unwrap();
        record_engagement(&mut conn, &message, &Engagement::Clicked("https://x.test/a".into()), 6)
            .await
            .unwrap();
        record_reply(&mut conn, c, Some(&message), 7).await.unwrap();
        record_reply(&mut conn, c, None, 8).await.unwrap();
        type Row = (Option<i64>, i64, Option<String>, EngagementKind, Option<String>, i64);
        let rows: Vec<Row> =
            sqlx::query_as("SELECT outbox_id, contact_id, variant, kind, url, at FROM engagement ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let on = |kind, url: Option<&str>, at| {
            (
                Some(message.outbox_id),
                c,
                Some("b".to_string()),
                kind,
                url.map(Into::into),
                at,
            )
        };
        assert_eq!(
            rows,
            vec![
                on(EngagementKind::Opened, None, 5),
                on(EngagementKind::Clicked, Some("https://x.test/a"), 6),
                on(EngagementKind::Replied, None, 7),
                (None, c, None, EngagementKind::Replied, None, 8),
            ]
        );
        let replies: Vec<String> = sqlx::query_scalar("SELECT payload FROM events WHERE kind = ? ORDER BY id")
            .bind(EventKind::Replied)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(replies, [r#"{"message_id":"<k@x>"}"#, r#"{"message_id":null}"#]);
    }
}
