//! Suppression: addresses that get nothing (on a channel, or on any), for
//! unsubscribes, bounces, complaints and manual entries; checked when a message
//! is claimed for delivery, whatever workflow queued it. A suppression has a
//! scope: marketing only, or all customer-facing mail.

use serde::Serialize;

use super::stored_text::stored_text;
use super::{Conn, Consent, Contact, Invalid};
use crate::model::Category;

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

stored_text! {
    /// What a withdrawal of consent (or a suppression) stops (docs/domain.md §5:
    /// "a clear opt-out that is honoured at once").
    pub(crate) enum ConsentScope {
        /// Nurture and promotion; answers, sample and after-sale checks still go out.
        Marketing = "marketing",
        /// Every customer-facing message: marketing, transactional and SLA.
        All = "all",
    }
}

impl ConsentScope {
    /// Whether a message of `category` is withheld under this scope. Internal
    /// mail goes to staff, not to the contact, so no consent of theirs covers it.
    pub(crate) fn covers(self, category: Category) -> bool {
        match (self, category) {
            (_, Category::Internal) => false,
            (ConsentScope::Marketing, category) => category == Category::Marketing,
            (ConsentScope::All, _) => true,
        }
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

/// What to suppress: an address on a channel (`*` for all), why, and how widely.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Suppress<'a> {
    pub(crate) address: &'a str,
    pub(crate) channel: &'a str,
    pub(crate) reason: SuppressionReason,
    pub(crate) scope: ConsentScope,
    pub(crate) detail: &'a str,
}

/// Suppresses an address on a channel; the first reason recorded stays, but a
/// marketing-only suppression widens to all mail when that is asked for later.
/// Returns whether anything changed.
pub(crate) async fn suppress(conn: &mut Conn, what: &Suppress<'_>, now: i64) -> anyhow::Result<bool> {
    let address = given_address(what.address)?;
    let done = sqlx::query(
        "INSERT INTO suppressions (address, channel, reason, scope, detail, created_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (address, channel) DO UPDATE SET scope = excluded.scope
         WHERE excluded.scope = 'all' AND suppressions.scope <> 'all'",
    )
    .bind(address)
    .bind(what.channel)
    .bind(what.reason)
    .bind(what.scope)
    .bind(what.detail)
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
    pub(crate) scope: ConsentScope,
    pub(crate) detail: String,
    pub(crate) created_at: i64,
}

pub(crate) async fn list_suppressions(conn: &mut Conn) -> anyhow::Result<Vec<Suppression>> {
    Ok(sqlx::query_as(
        "SELECT address, channel, reason, scope, detail, created_at FROM suppressions ORDER BY created_at, address",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// The suppressions after `after` (an address and channel) in address order,
/// at most `limit`: a page of the console's list is a range of the primary
/// key, whatever the table holds.
const SUPPRESSIONS_PAGE: &str = "SELECT address, channel, reason, scope, detail, created_at FROM suppressions
     WHERE (address, channel) > (?1, ?2) ORDER BY address, channel LIMIT ?3";

pub(crate) async fn suppressions_page(
    conn: &mut Conn,
    after: (&str, &str),
    limit: i64,
) -> anyhow::Result<Vec<Suppression>> {
    Ok(sqlx::query_as(SUPPRESSIONS_PAGE)
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
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
    /// The report it came in (a DSN's Message-ID): recorded once however often it is read.
    pub(crate) report_id: Option<&'a str>,
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
        report_id,
    } = *bounce;
    let address = given_address(address)?;
    let inserted = sqlx::query(
        "INSERT INTO bounces (address, channel, kind, detail, outbox_id, report_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (report_id, address) WHERE report_id IS NOT NULL DO NOTHING",
    )
    .bind(&address)
    .bind(channel)
    .bind(kind)
    .bind(detail)
    .bind(outbox_id)
    .bind(report_id)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
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
        // An address that bounces cannot take any mail; a complaint ("this is
        // spam") is about all mail from us, not one kind: both stop everything.
        let what = Suppress {
            address: &address,
            channel: "*",
            reason: kind.reason(),
            scope: ConsentScope::All,
            detail: &why,
        };
        suppress(conn, &what, now).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Suppression reasons and scopes of the given (normalised) addresses, by address, in one query.
pub(crate) async fn suppression_reasons(
    conn: &mut Conn,
    addresses: &[String],
) -> anyhow::Result<std::collections::HashMap<String, Vec<(SuppressionReason, ConsentScope)>>> {
    let mut reasons: std::collections::HashMap<String, Vec<(SuppressionReason, ConsentScope)>> = Default::default();
    if addresses.is_empty() {
        return Ok(reasons);
    }
    let rows: Vec<(String, SuppressionReason, ConsentScope)> = sqlx::query_as(
        "SELECT DISTINCT address, reason, scope FROM suppressions WHERE address IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(addresses)?)
    .fetch_all(&mut *conn)
    .await?;
    for (address, reason, scope) in rows {
        reasons.entry(address).or_default().push((reason, scope));
    }
    Ok(reasons)
}

/// The idempotency key of the message a run's step sends to a contact
/// (`suffix` tells apart a step's several messages); its Message-ID derives from it.
pub(crate) fn idempotency_key(run_id: i64, step: i64, contact_id: i64, suffix: &str) -> String {
    format!("run{run_id}-step{step}-contact{contact_id}{suffix}")
}

/// The Message-ID of the message a run's step sent to its contact (if it was
/// queued) and the run's workflow: what an unsubscribe link in it answers.
pub(crate) async fn message_of_step(
    conn: &mut Conn,
    contact_id: i64,
    run_id: i64,
    step: i64,
) -> anyhow::Result<Option<(Option<String>, String)>> {
    Ok(sqlx::query_as(
        "SELECT (SELECT o.message_id FROM outbox o WHERE o.idempotency_key = ?), r.workflow
         FROM runs r WHERE r.id = ? AND r.contact_id = ?",
    )
    .bind(idempotency_key(run_id, step, contact_id, ""))
    .bind(run_id)
    .bind(contact_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The contact withdraws consent for `scope`, as `by` says (the message whose
/// link they followed, or who acted for them): their addresses are suppressed
/// on every channel for that scope, "all" withdraws their consent too, and the
/// history records it. Idempotent: returns false when nothing changed.
pub(crate) async fn withdraw_consent(
    conn: &mut Conn,
    contact: &Contact,
    scope: ConsentScope,
    by: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let mut changed = false;
    let addresses = [&contact.email, &contact.phone].into_iter().flatten();
    for address in addresses.filter(|a| !a.trim().is_empty()) {
        let what = Suppress {
            address,
            channel: "*",
            reason: SuppressionReason::Unsubscribed,
            scope,
            detail: by,
        };
        changed |= suppress(conn, &what, now).await?;
    }
    if scope == ConsentScope::All {
        let done = sqlx::query("UPDATE contacts SET consent = ?, updated_at = ? WHERE id = ? AND consent <> ?")
            .bind(Consent::Withdrawn)
            .bind(now)
            .bind(contact.id)
            .bind(Consent::Withdrawn)
            .execute(&mut *conn)
            .await?;
        changed |= done.rows_affected() == 1;
    }
    if changed {
        super::insert_history(conn, contact.id, "unsubscribed", None, Some(scope.as_str()), by, now).await?;
    }
    Ok(changed)
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
            report_id: None,
        }
    }

    #[tokio::test]
    async fn a_report_read_twice_counts_once() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let from_report = |report_id| Bounce {
            report_id: Some(report_id),
            ..bounce(BounceKind::Soft)
        };
        assert!(
            !record_bounce(&mut conn, &from_report("dsn-1@mx"), RULES, 1)
                .await
                .unwrap()
        );
        assert!(
            !record_bounce(&mut conn, &from_report("dsn-1@mx"), RULES, 2)
                .await
                .unwrap()
        );
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bounces")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(count, 1, "the second reading of the same report is not a second bounce");
        assert_eq!(
            suppression_reason(&mut conn, "ann@x.test", "email").await.unwrap(),
            None
        );
        // Another report about the same address is: the rule's second soft bounce.
        assert!(
            record_bounce(&mut conn, &from_report("dsn-2@mx"), RULES, 3)
                .await
                .unwrap()
        );
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
            [(
                "ann@x.test".to_string(),
                vec![(SuppressionReason::SoftBounce, ConsentScope::All)]
            )]
            .into()
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
            let address = format!("{i}@x.test");
            let what = Suppress {
                address: &address,
                channel: "email",
                reason,
                scope: ConsentScope::ALL[i % ConsentScope::ALL.len()],
                detail: "",
            };
            suppress(&mut conn, &what, 1).await.unwrap();
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

    #[test]
    fn marketing_scope_covers_marketing_only_and_no_scope_covers_internal_mail() {
        use Category::*;
        let covered = |scope: ConsentScope| {
            [Sla, Transactional, Marketing, Internal]
                .into_iter()
                .filter(|&c| scope.covers(c))
                .collect::<Vec<_>>()
        };
        assert_eq!(covered(ConsentScope::Marketing), [Marketing]);
        assert_eq!(covered(ConsentScope::All), [Sla, Transactional, Marketing]);
    }

    async fn history(conn: &mut Conn, contact: i64) -> Vec<(Option<String>, String)> {
        crate::store::history_of(conn, contact, 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|h| h.field == "unsubscribed")
            .map(|h| (h.to_value, h.changed_by))
            .collect()
    }

    #[tokio::test]
    async fn withdrawing_marketing_then_all_widens_the_suppression_and_records_both() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let id = crate::store::testing::contact(&mut conn, "Ann@X.test").await;
        let ann = crate::store::contact_by_id(&mut conn, id).await.unwrap().unwrap();
        let scopes = |rows: Vec<Suppression>| rows.into_iter().map(|s| (s.address, s.scope)).collect::<Vec<_>>();
        assert!(
            withdraw_consent(&mut conn, &ann, ConsentScope::Marketing, "link in <m1>", 10)
                .await
                .unwrap()
        );
        // A second click changes nothing and records nothing.
        assert!(
            !withdraw_consent(&mut conn, &ann, ConsentScope::Marketing, "link in <m1>", 11)
                .await
                .unwrap()
        );
        let ann = crate::store::contact_by_id(&mut conn, id).await.unwrap().unwrap();
        assert_eq!(ann.consent, Consent::Unknown, "marketing only leaves consent as it was");
        assert_eq!(
            scopes(list_suppressions(&mut conn).await.unwrap()),
            [("ann@x.test".to_string(), ConsentScope::Marketing)]
        );
        assert!(
            withdraw_consent(&mut conn, &ann, ConsentScope::All, "unsubscribe page", 20)
                .await
                .unwrap()
        );
        assert!(
            !withdraw_consent(&mut conn, &ann, ConsentScope::Marketing, "link in <m2>", 21)
                .await
                .unwrap(),
            "a narrower withdrawal does not narrow a wider one"
        );
        let ann = crate::store::contact_by_id(&mut conn, id).await.unwrap().unwrap();
        assert_eq!(ann.consent, Consent::Withdrawn);
        let listed = list_suppressions(&mut conn).await.unwrap();
        assert_eq!(listed[0].reason, SuppressionReason::Unsubscribed);
        assert_eq!(listed[0].detail, "link in <m1>", "the first reason recorded stays");
        assert_eq!(scopes(listed), [("ann@x.test".to_string(), ConsentScope::All)]);
        assert_eq!(
            history(&mut conn, id).await,
            [
                (Some("all".to_string()), "unsubscribe page".to_string()),
                (Some("marketing".to_string()), "link in <m1>".to_string()),
            ]
        );
    }

    /// The console lists suppressions a page at a time, each a range of the
    /// primary key from the last one shown.
    #[tokio::test]
    async fn suppressions_come_a_page_at_a_time_from_the_key() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let plan = crate::store::testing::query_plan(&mut conn, SUPPRESSIONS_PAGE).await;
        assert!(
            plan.iter()
                .any(|d| d.contains("USING INDEX sqlite_autoindex_suppressions_1")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{plan:?}");
        for (address, channel) in [
            ("c@x.test", "*"),
            ("a@x.test", "sms"),
            ("a@x.test", "*"),
            ("b@x.test", "*"),
        ] {
            let what = Suppress {
                address,
                channel,
                reason: SuppressionReason::Manual,
                scope: ConsentScope::All,
                detail: "",
            };
            suppress(&mut conn, &what, 1).await.unwrap();
        }
        let keys = |rows: Vec<Suppression>| rows.into_iter().map(|r| (r.address, r.channel)).collect::<Vec<_>>();
        let first = keys(suppressions_page(&mut conn, ("", ""), 3).await.unwrap());
        assert_eq!(
            first,
            [("a@x.test", "*"), ("a@x.test", "sms"), ("b@x.test", "*")].map(|(a, c)| (a.to_string(), c.to_string()))
        );
        let next = keys(suppressions_page(&mut conn, ("b@x.test", "*"), 3).await.unwrap());
        assert_eq!(next, [("c@x.test".to_string(), "*".to_string())]);
    }
}
