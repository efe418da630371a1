//! Suppression: addresses that get nothing (on a channel, or on any), for
//! unsubscribes, bounces, complaints and manual entries; checked when a message
//! is claimed for delivery, whatever workflow queued it.

use serde::Serialize;

use super::stored_text::stored_text;
use super::{Conn, Invalid};

/// Bounce and complaint counts that suppress an address (from `nudge.toml`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SuppressionRules {
    pub(crate) hard_bounces: i64,
    pub(crate) soft_bounces: i64,
    pub(crate) complaints: i64,
}

stored_text! {
    pub(crate) enum BounceKind {
        Hard = "hard",
        Soft = "soft",
        Complaint = "complaint",
    }
}

impl BounceKind {
    fn reason(self) -> SuppressionReason {
        match self {
            BounceKind::Hard => SuppressionReason::HardBounce,
            BounceKind::Soft => SuppressionReason::SoftBounce,
            BounceKind::Complaint => SuppressionReason::Complaint,
        }
    }
}

stored_text! {
    /// Why an address gets nothing.
    pub(crate) enum SuppressionReason {
        Unsubscribed = "unsubscribed",
        HardBounce = "hard_bounce",
        SoftBounce = "soft_bounce",
        Complaint = "complaint",
        Manual = "manual",
    }
}

/// Addresses compare case-insensitively (the domain part is, and mailbox parts practically are).
pub(crate) fn normalise_address(address: &str) -> String {
    address.trim().to_lowercase()
}

/// An address as given to a bounce or a suppression, normalised: an empty one
/// would suppress nothing (and hide the caller's mistake), so it is refused.
fn given_address(address: &str) -> Result<String, Invalid> {
    let address = normalise_address(address);
    if address.is_empty() {
        return Err(Invalid(
            "`address` is empty; give the email address or phone number".into(),
        ));
    }
    super::no_control_characters("address", &address)?;
    Ok(address)
}

/// Suppresses an address on a channel (`*` for all); the first reason recorded stays.
pub(crate) async fn suppress(
    conn: &mut Conn,
    address: &str,
    channel: &str,
    reason: SuppressionReason,
    detail: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let address = given_address(address)?;
    let done = sqlx::query(
        "INSERT INTO suppressions (address, channel, reason, detail, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (address, channel) DO NOTHING",
    )
    .bind(address)
    .bind(channel)
    .bind(reason)
    .bind(detail)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn unsuppress(conn: &mut Conn, address: &str, channel: &str) -> anyhow::Result<bool> {
    let done = sqlx::query("DELETE FROM suppressions WHERE address = ? AND (channel = ? OR ? = '*')")
        .bind(normalise_address(address))
        .bind(channel)
        .bind(channel)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Why `address` gets nothing on `channel`, if it is suppressed.
#[cfg(test)]
pub(crate) async fn suppression_reason(
    conn: &mut Conn,
    address: &str,
    channel: &str,
) -> anyhow::Result<Option<SuppressionReason>> {
    Ok(sqlx::query_scalar(
        "SELECT reason FROM suppressions WHERE address = ? AND channel IN ('*', ?) ORDER BY created_at LIMIT 1",
    )
    .bind(normalise_address(address))
    .bind(channel)
    .fetch_optional(&mut *conn)
    .await?)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct Suppression {
    pub(crate) address: String,
    pub(crate) channel: String,
    pub(crate) reason: SuppressionReason,
    pub(crate) detail: String,
    pub(crate) created_at: i64,
}

pub(crate) async fn list_suppressions(conn: &mut Conn) -> anyhow::Result<Vec<Suppression>> {
    Ok(sqlx::query_as(
        "SELECT address, channel, reason, detail, created_at FROM suppressions ORDER BY created_at, address",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// A bounce or complaint about one address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounce<'a> {
    pub(crate) address: &'a str,
    pub(crate) channel: &'a str,
    pub(crate) kind: BounceKind,
    pub(crate) detail: &'a str,
    /// The message that bounced, when nudge saw it itself.
    pub(crate) outbox_id: Option<i64>,
}

/// Records a bounce or complaint; suppresses the address on all channels once
/// its count reaches the rule's threshold. Returns whether it is now suppressed.
pub(crate) async fn record_bounce(
    conn: &mut Conn,
    bounce: &Bounce<'_>,
    rules: SuppressionRules,
    now: i64,
) -> anyhow::Result<bool> {
    let Bounce {
        address,
        channel,
        kind,
        detail,
        outbox_id,
    } = *bounce;
    let address = given_address(address)?;
    sqlx::query("INSERT INTO bounces (address, channel, kind, detail, outbox_id, at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&address)
        .bind(channel)
        .bind(kind)
        .bind(detail)
        .bind(outbox_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bounces WHERE address = ? AND kind = ?")
        .bind(&address)
        .bind(kind)
        .fetch_one(&mut *conn)
        .await?;
    let threshold = match kind {
        BounceKind::Hard => rules.hard_bounces,
        BounceKind::Soft => rules.soft_bounces,
        BounceKind::Complaint => rules.complaints,
    };
    if threshold > 0 && count >= threshold {
        let why = format!("{count} {kind} bounce(s); last: {detail}");
        suppress(conn, &address, "*", kind.reason(), &why, now).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Suppression reasons of the given (normalised) addresses, by address, in one query.
pub(crate) async fn suppression_reasons(
    conn: &mut Conn,
    addresses: &[String],
) -> anyhow::Result<std::collections::HashMap<String, Vec<SuppressionReason>>> {
    let mut reasons: std::collections::HashMap<String, Vec<SuppressionReason>> = Default::default();
    if addresses.is_empty() {
        return Ok(reasons);
    }
    let rows: Vec<(String, SuppressionReason)> = sqlx::query_as(
        "SELECT DISTINCT address, reason FROM suppressions WHERE address IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(addresses)?)
    .fetch_all(&mut *conn)
    .await?;
    for (address, reason) in rows {
        reasons.entry(address).or_default().push(reason);
    }
    Ok(reasons)
}

/// The contact no longer wants messages (an unsubscribe).
pub(crate) async fn withdraw_consent(conn: &mut Conn, contact_id: i64, now: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE contacts SET consent = 'withdrawn', updated_at = ? WHERE id = ?")
        .bind(now)
        .bind(contact_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestStore;

    const RULES: SuppressionRules = SuppressionRules {
        hard_bounces: 1,
        soft_bounces: 2,
        complaints: 1,
    };

    fn bounce(kind: BounceKind) -> Bounce<'static> {
        Bounce {
            address: " Ann@X.test ",
            channel: "email",
            kind,
            detail: "550 no such user",
            outbox_id: None,
        }
    }

    #[tokio::test]
    async fn bounces_suppress_an_address_once_their_count_reaches_the_rule() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        assert!(
            !record_bounce(&mut conn, &bounce(BounceKind::Soft), RULES, 1)
                .await
                .unwrap()
        );
        assert!(
            record_bounce(&mut conn, &bounce(BounceKind::Soft), RULES, 2)
                .await
                .unwrap()
        );
        let kinds: Vec<(String, BounceKind)> = sqlx::query_as("SELECT address, kind FROM bounces")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(kinds, vec![("ann@x.test".into(), BounceKind::Soft); 2]);
        let listed = list_suppressions(&mut conn).await.unwrap();
        let got: Vec<(&str, &str, SuppressionReason, &str)> = listed
            .iter()
            .map(|s| (s.address.as_str(), s.channel.as_str(), s.reason, s.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            [(
                "ann@x.test",
                "*",
                SuppressionReason::SoftBounce,
                "2 soft bounce(s); last: 550 no such user"
            )]
        );
        assert_eq!(
            suppression_reason(&mut conn, "ANN@x.test", "sms").await.unwrap(),
            Some(SuppressionReason::SoftBounce)
        );
        let reasons = suppression_reasons(&mut conn, &["ann@x.test".into(), "bob@x.test".into()])
            .await
            .unwrap();
        assert_eq!(
            reasons,
            [("ann@x.test".to_string(), vec![SuppressionReason::SoftBounce])].into()
        );
        assert!(unsuppress(&mut conn, "ann@x.test", "*").await.unwrap());
        assert_eq!(
            suppression_reason(&mut conn, "ann@x.test", "email").await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn every_reason_and_bounce_kind_is_one_the_database_accepts() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        for (i, &reason) in SuppressionReason::ALL.iter().enumerate() {
            suppress(&mut conn, &format!("{i}@x.test"), "email", reason, "", 1)
                .await
                .unwrap();
        }
        let reasons: Vec<SuppressionReason> = list_suppressions(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|s| s.reason)
            .collect();
        assert_eq!(reasons, SuppressionReason::ALL);
        for &kind in BounceKind::ALL {
            let rules = SuppressionRules {
                hard_bounces: 0,
                soft_bounces: 0,
                complaints: 0,
            };
            record_bounce(&mut conn, &bounce(kind), rules, 1).await.unwrap();
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
    }
}
