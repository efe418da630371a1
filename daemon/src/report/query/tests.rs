use std::path::Path;

use super::*;
use crate::store::{self, NewContact, NewFollowUp, OrderRow, Store};

const DAY: i64 = 86_400_000;

/// A contact followed up five days ago, with an order on `ordered_days_ago`.
async fn followed_up(conn: &mut Conn, rules: &ClassificationRules, email: &str, now: i64, ordered_days_ago: i64) {
    let new = NewContact {
        name: email.into(),
        email: Some(email.into()),
        ..NewContact::default()
    };
    let id = store::insert_contact(conn, &new, now - 60 * DAY).await.unwrap();
    let contact = store::contact_by_id(conn, id).await.unwrap().unwrap();
    let follow_up = NewFollowUp {
        at: Some(now - 5 * DAY),
        channel: "phone".into(),
        ..NewFollowUp::default()
    };
    store::log_follow_up(conn, &contact, &follow_up, now - 5 * DAY)
        .await
        .unwrap();
    let day = rules.date_of(now - ordered_days_ago * DAY).to_string();
    let order = OrderRow {
        external_id: email,
        contact_id: id,
        amount_minor: 100,
        currency: "CNY",
        base_amount_minor: 100,
        ordered_on: &day,
        items: "",
    };
    store::insert_orders(conn, &[order], now).await.unwrap();
}

/// The conversion windows go to SQLite as objects read by name: an order
/// within the window after a follow-up counts, one before it does not.
#[tokio::test]
async fn conversion_counts_the_orders_within_the_window_after_each_follow_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    let rules = crate::insight::load_rules(Path::new("../workflows")).unwrap();
    let set = WorkflowSet::compile(Vec::new(), &[]).unwrap();
    let now = 1_781_510_400_000; // 2026-06-15, 16:00 in Shanghai
    followed_up(&mut conn, &rules, "converted@x.test", now, 3).await;
    followed_up(&mut conn, &rules, "ordered-before@x.test", now, 10).await;
    let scope = ReportScope::new(&rules, now, None, None, [None, None, None]).unwrap();
    let report = build(&mut conn, &rules, &set, scope, now).await.unwrap();
    let conversion = report.measures.iter().find(|m| m.name == "conversion rate").unwrap();
    assert_eq!((conversion.numerator, conversion.denominator), (1, 2));
    let response = report.measures.iter().find(|m| m.name == "response rate").unwrap();
    assert_eq!((response.numerator, response.denominator), (0, 2));
}

/// A contact created in the period at `stage` (ten days before `now`); its id.
async fn created_at_stage(conn: &mut Conn, email: &str, stage: &str, now: i64) -> i64 {
    let new = NewContact {
        name: email.into(),
        email: Some(email.into()),
        stage: Some(stage.into()),
        ..NewContact::default()
    };
    store::insert_contact(conn, &new, now - 10 * DAY).await.unwrap()
}

/// "To next" is the share of a stage's cohort that moved on to any later stage:
/// contacts created at a later stage, or skipping one, never push it above 100 %.
#[tokio::test]
async fn to_next_is_the_share_of_the_cohort_that_reached_a_later_stage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    let rules = crate::insight::load_rules(Path::new("../workflows")).unwrap();
    let set = WorkflowSet::compile(Vec::new(), &[]).unwrap();
    let now = 1_781_510_400_000;
    let a = created_at_stage(&mut conn, "a@x.test", "lead", now).await;
    store::set_stage(&mut conn, a, "lead", "inquiry", "cli", now - 5 * DAY)
        .await
        .unwrap();
    // Skips inquiry and intent.
    let d = created_at_stage(&mut conn, "d@x.test", "lead", now).await;
    store::set_stage(&mut conn, d, "lead", "sample", "cli", now - 5 * DAY)
        .await
        .unwrap();
    created_at_stage(&mut conn, "e@x.test", "lead", now).await;
    created_at_stage(&mut conn, "b@x.test", "inquiry", now).await;
    created_at_stage(&mut conn, "c@x.test", "inquiry", now).await;
    created_at_stage(&mut conn, "f@x.test", "inquiry", now).await;
    let scope = ReportScope::new(&rules, now, None, None, [None, None, None]).unwrap();
    let report = build(&mut conn, &rules, &set, scope, now).await.unwrap();
    let stage = |name: &str| report.funnel.iter().find(|f| f.stage == name).unwrap();
    let round = |p: Option<f64>| p.map(|p| (p * 10.0).round() / 10.0);
    assert_eq!(
        (stage("lead").entered, round(stage("lead").to_next_percent)),
        (3, Some(66.7))
    );
    assert_eq!(
        (stage("inquiry").entered, stage("inquiry").to_next_percent),
        (4, Some(0.0))
    );
    assert_eq!((stage("intent").entered, stage("intent").to_next_percent), (0, None));
    assert_eq!(
        (stage("sample").entered, stage("sample").to_next_percent),
        (1, Some(0.0))
    );
    assert!(
        report
            .funnel
            .iter()
            .all(|f| f.to_next_percent.is_none_or(|p| p <= 100.0))
    );
}

/// A reply recorded by `POST /replies` after a follow-up is a response; one
/// before the follow-up is not.
#[tokio::test]
async fn a_recorded_reply_after_a_follow_up_is_a_response() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    let rules = crate::insight::load_rules(Path::new("../workflows")).unwrap();
    let set = WorkflowSet::compile(Vec::new(), &[]).unwrap();
    let now = 1_781_510_400_000;
    followed_up(&mut conn, &rules, "replied@x.test", now, 3).await;
    followed_up(&mut conn, &rules, "replied-before@x.test", now, 3).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM contacts ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    store::record_reply(&mut conn, ids[0], None, now - 2 * DAY)
        .await
        .unwrap();
    store::record_reply(&mut conn, ids[1], None, now - 7 * DAY)
        .await
        .unwrap();
    let scope = ReportScope::new(&rules, now, None, None, [None, None, None]).unwrap();
    let report = build(&mut conn, &rules, &set, scope, now).await.unwrap();
    let response = report.measures.iter().find(|m| m.name == "response rate").unwrap();
    assert_eq!((response.numerator, response.denominator), (1, 2));
}

/// An inquiry is judged by the SLA of the tier the contact had when it came: a
/// high-value contact answered after 10 minutes missed its 5, even though it is
/// low value (30 minutes) now.
#[tokio::test]
async fn sla_compliance_judges_an_inquiry_by_the_tier_at_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    let rules = crate::insight::load_rules(Path::new("../workflows")).unwrap();
    let sla = "[trigger]\non = \"inquiry_received\"\nsla = { high = \"5m\", low = \"30m\", default = \"15m\" }\n\n[[steps]]\ntag = \"inquiry\"\n";
    let set = WorkflowSet::compile(vec![("inquiry-sla.toml".into(), sla.into())], &[]).unwrap();
    let now = 1_781_510_400_000;
    const MINUTE: i64 = 60_000;
    let id = created_at_stage(&mut conn, "was-high@x.test", "inquiry", now).await;
    let contact = store::contact_by_id(&mut conn, id).await.unwrap().unwrap();
    let tier = store::Classification::ValueTier;
    store::set_classification_by(&mut conn, &contact, tier, "high", "cli", now - 3 * DAY)
        .await
        .unwrap();
    let received = now - 2 * DAY;
    store::add_inquiry(&mut conn, id, "price?", "email", received)
        .await
        .unwrap();
    sqlx::query("UPDATE inquiries SET answered_at = ?")
        .bind(received + 10 * MINUTE)
        .execute(&mut *conn)
        .await
        .unwrap();
    let contact = store::contact_by_id(&mut conn, id).await.unwrap().unwrap();
    store::set_classification_by(&mut conn, &contact, tier, "low", "classification", now - DAY)
        .await
        .unwrap();
    let scope = ReportScope::new(&rules, now, None, None, [None, None, None]).unwrap();
    let report = build(&mut conn, &rules, &set, scope, now).await.unwrap();
    let sla = report
        .measures
        .iter()
        .find(|m| m.name == "inquiry SLA compliance")
        .unwrap();
    assert_eq!(
        (sla.numerator, sla.denominator),
        (0, 1),
        "judged by high (5m), not low (30m)"
    );
}
