use serde_json::json;

use crate::engine::steps::fixture::{Fixture, START, workflow};

const TEAM: &str = r#"
[[working_hours.office]]
days = ["mon-fri"]
hours = ["09:00-18:00"]

[members."rep@test.example"]
name = "Wang Rep"
time_zone = "Asia/Shanghai"
working_hours = "office"
manager = "boss@test.example"

[members."boss@test.example"]
name = "Zhao Boss"

[roles]
key_accounts = ["boss@test.example", "rep@test.example"]
"#;

fn team() -> (String, String) {
    ("workflows/team.toml".into(), TEAM.into())
}

fn notify(to: &str) -> String {
    format!("notify = {{ to = \"{to}\", template = \"hello\" }}")
}

#[tokio::test]
async fn the_owner_gets_an_internal_email_keyed_apart_from_the_contacts() {
    let f = Fixture::new(vec![workflow("tell", "", &[&notify("owner")])]).await;
    let li = f
        .contact(json!({ "email": "li@test.example", "owner": "rep@test.example" }))
        .await;
    f.event(crate::store::EventKind::InquiryReceived, li).await;
    f.settle().await;
    let (run, key, recipient, category): (i64, String, String, String) = f
        .row(
            "SELECT run_id, idempotency_key, recipient, category FROM outbox WHERE contact_id = ?",
            li,
        )
        .await;
    assert_eq!(key, format!("run{run}-step0-contact{li}-owner"));
    assert_eq!(
        (recipient.as_str(), category.as_str()),
        ("rep@test.example", "internal")
    );
    assert_eq!(f.run_of(li).await.0, "done");
}

#[tokio::test]
async fn a_contact_without_an_owner_email_is_skipped() {
    let f = Fixture::new(vec![workflow("tell", "", &[&notify("owner")])]).await;
    let li = f.contact(json!({ "email": "li@test.example" })).await;
    f.event(crate::store::EventKind::InquiryReceived, li).await;
    f.settle().await;
    assert_eq!(f.outbox_count(li).await, 0);
    let skipped = vec!["skipped: nobody to notify (the contact has no owner email)".to_string()];
    assert_eq!(f.run_of(li).await, ("done".into(), skipped));
}

/// Without a team file no manager is known: the owner hears instead, and the
/// run's step says why.
#[tokio::test]
async fn an_unknown_manager_falls_back_to_the_owner_with_the_reason_recorded() {
    let f = Fixture::new(vec![workflow("tell", "category = \"sla\"", &[&notify("manager")])]).await;
    let li = f
        .contact(json!({ "email": "li@test.example", "owner": "rep@test.example" }))
        .await;
    f.event(crate::store::EventKind::InquiryReceived, li).await;
    f.settle().await;
    let (run, key, recipient, category): (i64, String, String, String) = f
        .row(
            "SELECT run_id, idempotency_key, recipient, category FROM outbox WHERE contact_id = ?",
            li,
        )
        .await;
    assert_eq!(key, format!("run{run}-step0-contact{li}-manager"));
    assert_eq!(
        (recipient.as_str(), category.as_str()),
        ("rep@test.example", "internal"),
        "a note, never counted as a message to the contact"
    );
    let (_, details) = f.run_of(li).await;
    assert!(
        details[0].ends_with("(no manager: no team.toml, so no manager is known; sent to the owner)"),
        "{details:?}"
    );
}

/// The fixture starts on a Friday at 08:00 UTC, 16:00 in Shanghai: inside the
/// rep's hours; the manager has none, so is always reachable.
#[tokio::test]
async fn the_manager_of_the_owner_gets_the_escalation() {
    let f = Fixture::new(vec![
        team(),
        workflow("tell", "category = \"sla\"", &[&notify("manager")]),
    ])
    .await;
    let li = f
        .contact(json!({ "email": "li@test.example", "owner": "REP@test.example" }))
        .await;
    f.event(crate::store::EventKind::InquiryReceived, li).await;
    f.settle().await;
    let (recipient, message): (String, String) = f
        .row("SELECT recipient, message FROM outbox WHERE contact_id = ?", li)
        .await;
    assert_eq!(recipient, "boss@test.example");
    let message: serde_json::Value = serde_json::from_str(&message).unwrap();
    assert_eq!(message["to_name"], "Zhao Boss");
}

/// An internal note outside the recipient's working hours waits for them,
/// as a message outside its send window does: a waiting run with a reason.
#[tokio::test]
async fn an_internal_note_waits_for_the_recipients_working_hours() {
    let f = Fixture::new(vec![team(), workflow("tell", "", &[&notify("owner")])]).await;
    // Friday 20:00 in Shanghai.
    f.later(4 * 3_600_000).await;
    let li = f
        .contact(json!({ "email": "li@test.example", "owner": "rep@test.example" }))
        .await;
    f.event(crate::store::EventKind::InquiryReceived, li).await;
    f.settle().await;
    assert_eq!(f.outbox_count(li).await, 0);
    let (status, reason, due): (String, String, i64) = f
        .row(
            "SELECT r.status, r.waiting_reason, t.due_at FROM runs r JOIN timers t ON t.run_id = r.id
             WHERE r.contact_id = ? AND t.fired_at IS NULL",
            li,
        )
        .await;
    assert_eq!(status, "waiting");
    assert!(
        reason.starts_with("outside the working hours of rep@test.example; next opening Mon"),
        "{reason}"
    );
    // Monday 09:00 in Shanghai is Monday 01:00 UTC: 2 days 17 hours after Friday 08:00 UTC.
    assert_eq!(due, START + (2 * 24 + 17) * 3_600_000);
    f.later(due - START - 4 * 3_600_000).await;
    assert_eq!(f.outbox_count(li).await, 1);
}

#[tokio::test]
async fn a_role_notifies_the_member_picked_for_the_contact() {
    let f = Fixture::new(vec![team(), workflow("tell", "", &[&notify("role:key_accounts")])]).await;
    let mut recipients = Vec::new();
    for n in 0..2 {
        let id = f.contact(json!({ "email": format!("li{n}@test.example") })).await;
        f.event(crate::store::EventKind::InquiryReceived, id).await;
        f.settle().await;
        let (recipient, key): (String, String) = f
            .row("SELECT recipient, idempotency_key FROM outbox WHERE contact_id = ?", id)
            .await;
        assert!(key.ends_with("-role"), "{key}");
        recipients.push(recipient);
    }
    recipients.sort();
    assert_eq!(recipients, ["boss@test.example", "rep@test.example"]);
}

/// docs/domain.md §3: an SLA escalation is urgent and goes at night too, unless
/// its workflow counts business time.
#[tokio::test]
async fn an_sla_escalation_goes_at_once_unless_its_workflow_is_on_the_business_clock() {
    let business = (
        "workflows/business.toml".to_string(),
        format!(
            "category = \"sla\"\n[trigger]\non = \"inquiry_received\"\nsla = {{ default = \"1m\" }}\n\
             sla_clock = \"business\"\n[[steps]]\n{}\n",
            notify("owner")
        ),
    );
    let f = Fixture::new(vec![
        team(),
        workflow("urgent", "category = \"sla\"", &[&notify("owner")]),
        business,
    ])
    .await;
    // Friday 20:00 in Shanghai.
    f.later(4 * 3_600_000).await;
    let li = f
        .contact(json!({ "email": "li@test.example", "owner": "rep@test.example" }))
        .await;
    f.event(crate::store::EventKind::InquiryReceived, li).await;
    f.settle().await;
    let (workflow,): (String,) = f
        .row(
            "SELECT r.workflow FROM outbox o JOIN runs r ON r.id = o.run_id WHERE o.contact_id = ?",
            li,
        )
        .await;
    assert_eq!(workflow, "urgent", "only the wall-clock escalation went at once");
    // The business one starts at Monday 09:01 in Shanghai, inside the rep's hours.
    let (due,): (i64,) = f
        .row(
            "SELECT t.due_at FROM timers t JOIN runs r ON r.id = t.run_id WHERE r.contact_id = ? AND r.workflow = 'business'",
            li,
        )
        .await;
    assert_eq!(due, START + 4 * 3_600_000 + (2 * 24 + 13) * 3_600_000 + 60_000);
}
