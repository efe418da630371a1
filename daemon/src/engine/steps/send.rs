//! `send`: a message to the contact on a channel (email, SMS, a plugin's),
//! rendered from a template, perhaps one arm of an A/B test. Before its
//! transaction the step waits for its variant's delay and its send window;
//! inside it, a frequency cap may put it off. The contact's consent may
//! withhold it (docs/domain.md §5): one who stopped all email gets nothing,
//! and their owner hears of each answer or check withheld; one who
//! unsubscribed from marketing gets no marketing, and nobody is told (they
//! asked for exactly that).

use super::{Action, Applying, Outcome, PreparedStep, Preparing, notify};
use crate::engine::effects::Effects;
use crate::engine::message::Outgoing;
use crate::engine::{Engine, variants};
use crate::model::{Category, Reason};
use crate::plugins::Recipient;
use crate::store::{self, Contact, SuppressionReason};
use crate::workflow::NotifyTo;

/// The owner's template (in `templates/owner.toml`) telling them that a
/// message to their contact was withheld for consent.
const OWNER_NOTICE: &str = "message_withheld";

/// The notice to the owner of a message withheld by consent: owed for the
/// answers and checks the contact expects (sla, transactional), not for
/// marketing; sent if the owner has an email and the set has its template.
pub(super) fn owner_notice(at: &Preparing, template: &str) -> Option<Outgoing> {
    if at.workflow.category == Category::Marketing || !at.set.templates.contains_key(OWNER_NOTICE) {
        return None;
    }
    let owner = notify::recipient(&at.set.team, at.contact, &NotifyTo::Owner);
    notify::outgoing(&owner, &NotifyTo::Owner, OWNER_NOTICE).map(|notice| Outgoing {
        key_suffix: "-withheld-owner",
        withheld: Some(template.to_string()),
        ..notice
    })
}

/// Whether the message must wait before it is rendered: for its A/B variant's
/// delay, or for its send window to open (a wait would make the render stale).
pub(super) async fn held(engine: &Engine, at: &Preparing<'_>) -> anyhow::Result<Option<Action>> {
    let (workflow, contact, now) = (at.workflow, at.contact, at.now);
    if let Some((until, reason)) =
        variants::held_until(&engine.store, at.run, at.variant, &contact.time_zone, now).await?
    {
        let code = Reason::VariantDelay;
        return Ok(Some(Action::Defer { until, code, reason }));
    }
    let tz = jiff::tz::TimeZone::get(&contact.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let now = jiff::Timestamp::from_millisecond(now)?;
    let window = (at.set).window_name(workflow.send_window.as_ref(), |field| contact.cadence_key(field));
    let slot = at.set.sending.next_slot(window, workflow.category, now, &tz);
    if slot <= now {
        return Ok(None);
    }
    let quiet = at.set.sending.in_quiet_hours(workflow.category, now, &tz);
    let (code, held_by) = match (quiet, window) {
        (true, _) => (Reason::QuietHours, "in quiet hours".to_string()),
        (false, Some(w)) => (Reason::SendWindow, format!("outside the send window `{w}`")),
        (false, None) => (Reason::SendWindow, "outside the send window".to_string()),
    };
    let reason = format!(
        "{held_by}; next opening {} ({})",
        slot.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z"),
        contact.time_zone
    );
    Ok(Some(Action::Defer {
        until: slot.as_millisecond(),
        code,
        reason,
    }))
}

/// The message to the contact, if the channel's plugin has an address for them.
pub(super) fn outgoing(engine: &Engine, contact: &Contact, channel: &str, template: &str) -> Option<Outgoing> {
    let recipient = engine
        .plugins
        .get()
        .for_channel(channel)
        .map(|p| p.manifest.capabilities.recipient);
    let address = match recipient {
        Ok(Recipient::Email) => contact.email.clone(),
        Ok(Recipient::Phone) => contact.phone.clone(),
        Ok(Recipient::None) => Some(String::new()),
        Err(_) => None,
    };
    address.map(|address| Outgoing {
        channel: channel.to_string(),
        template: template.to_string(),
        name: contact.name.clone(),
        address,
        key_suffix: "",
        withheld: None,
    })
}

/// Queues the message, unless the contact's consent withholds it or a
/// frequency cap puts it off.
pub(super) async fn apply(
    engine: &Engine,
    tx: &mut store::Conn,
    at: &Applying<'_>,
    channel: &str,
    step: &PreparedStep,
    effects: &mut Effects,
) -> anyhow::Result<Outcome> {
    let category = at.workflow.category;
    let withheld = at.contact.consent_withholds(category);
    if withheld != step.withheld {
        // Consent changed between preparing the message and now: prepare it again.
        effects.deferred.push(store::DeferredRun {
            run_id: at.run.id,
            step: at.run.next_step,
            until: at.now,
            reason: "consent changed while the message was prepared".into(),
            code: Reason::ConsentChanged,
            counted: Vec::new(),
        });
        return Ok(Outcome::Deferred);
    }
    if withheld {
        let detail = withheld_detail(engine, at, step, effects);
        return Ok(Outcome::Skipped(Reason::ConsentWithdrawn, detail));
    }
    if category == Category::Marketing
        && let Some(reason) = at.facts.marketing_suppressed(at.contact)
    {
        return Ok(match reason {
            SuppressionReason::Unsubscribed => Outcome::Skipped(
                Reason::MarketingUnsubscribed,
                "skipped: the contact unsubscribed from marketing".into(),
            ),
            reason => Outcome::Skipped(
                Reason::Suppressed,
                format!("skipped: the contact's address is suppressed for marketing ({reason})"),
            ),
        });
    }
    if step.outgoing.is_some() && engine.defer_if_capped(tx, at, channel, effects).await? {
        return Ok(Outcome::Deferred);
    }
    Ok(match (&step.outgoing, &step.rendered) {
        (Some(out), Some(rendered)) => Outcome::Done(engine.queue(at, step, out, rendered, effects)),
        _ => Outcome::Skipped(
            Reason::NoAddress,
            "skipped: the contact has no address for this channel".into(),
        ),
    })
}

/// The detail of a message withheld because the contact stopped all email,
/// queueing the owner's notice if one was prepared.
fn withheld_detail(engine: &Engine, at: &Applying, step: &PreparedStep, effects: &mut Effects) -> String {
    const SKIPPED: &str = "skipped: consent withdrawn for all email";
    if at.workflow.category == Category::Marketing {
        return SKIPPED.into();
    }
    let told = match (&step.outgoing, &step.rendered) {
        (Some(out), Some(rendered)) => format!("the owner is told: {}", engine.queue(at, step, out, rendered, effects)),
        _ if !at.contact.owner.contains('@') => "the owner is not told: the contact has no owner email".into(),
        _ => format!("the owner is not told: no template `{OWNER_NOTICE}` in the templates"),
    };
    format!("{SKIPPED}; {told}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{DAY, Fixture, START, workflow};
    use crate::store::{ConsentScope, Suppress, SuppressionReason};

    const SEND: &str = "send = { channel = \"email\", template = \"hello\" }";

    #[tokio::test]
    async fn a_send_queues_one_outbox_row_keyed_by_run_step_and_contact() {
        let f = Fixture::new(vec![workflow("welcome", "category = \"transactional\"", &[SEND])]).await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (run, key, message_id, recipient, category, message): (i64, String, String, String, String, String) = f
            .row(
                "SELECT run_id, idempotency_key, message_id, recipient, category, message FROM outbox WHERE contact_id = ?",
                li,
            )
            .await;
        assert_eq!(key, format!("run{run}-step0-contact{li}"));
        assert_eq!(message_id, format!("<{key}@test.example>"));
        assert_eq!(
            (recipient.as_str(), category.as_str()),
            ("li@test.example", "transactional")
        );
        let message: serde_json::Value = serde_json::from_str(&message).unwrap();
        assert_eq!(message["subject"], "Hi Li");
        assert_eq!(
            message["text"], "Hello Li.",
            "no unsubscribe footer on transactional mail"
        );
        let detail = format!("queued {message_id} to li@test.example");
        assert_eq!(f.run_of(li).await, ("done".into(), vec![detail]));
    }

    #[tokio::test]
    async fn marketing_email_gets_an_unsubscribe_footer_and_headers() {
        let f = Fixture::new(vec![workflow("promo", "category = \"marketing\"", &[SEND])]).await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (message,): (String,) = f.row("SELECT message FROM outbox WHERE contact_id = ?", li).await;
        let message: serde_json::Value = serde_json::from_str(&message).unwrap();
        let text = message["text"].as_str().unwrap();
        assert!(
            text.starts_with("Hello Li.\n\n--\nUnsubscribe: https://test.example/"),
            "{text}"
        );
        assert!(
            message["unsubscribe"].is_object(),
            "List-Unsubscribe targets: {message}"
        );
    }

    #[tokio::test]
    async fn a_contact_without_consent_or_address_gets_nothing() {
        let f = Fixture::new(vec![workflow("welcome", "category = \"transactional\"", &[SEND])]).await;
        let withdrawn = f
            .contact(json!({ "email": "li@test.example", "consent": "withdrawn" }))
            .await;
        let no_email = f.contact(json!({ "name": "Wu", "phone": "+8613800000000" })).await;
        for contact in [withdrawn, no_email] {
            f.event(crate::store::EventKind::InquiryReceived, contact).await;
        }
        f.settle().await;
        assert_eq!(f.outbox_count(withdrawn).await + f.outbox_count(no_email).await, 0);
        let skipped = |why: &str| ("done".to_string(), vec![format!("skipped: {why}")]);
        assert_eq!(
            f.run_of(withdrawn).await,
            skipped("consent withdrawn for all email; the owner is not told: the contact has no owner email")
        );
        assert_eq!(
            f.run_of(no_email).await,
            skipped("the contact has no address for this channel")
        );
    }

    /// Caps count what the same batch queued: of two marketing messages taken
    /// together, the second waits for the next free slot.
    #[tokio::test]
    async fn a_frequency_cap_defers_the_message_over_it() {
        let sending = "[[caps]]\nchannel = \"email\"\ncategories = [\"marketing\"]\nmax = 1\nper = \"7d\"\n";
        let f = Fixture::new(vec![
            workflow("a", "category = \"marketing\"", &[SEND]),
            workflow("b", "category = \"marketing\"", &[SEND]),
            ("workflows/sending.toml".into(), sending.into()),
        ])
        .await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        assert_eq!(f.outbox_count(li).await, 1);
        let (status, reason, due): (String, String, i64) = f
            .row(
                "SELECT r.status, r.waiting_reason, t.due_at FROM runs r JOIN timers t ON t.run_id = r.id
                 WHERE r.contact_id = ? AND t.fired_at IS NULL",
                li,
            )
            .await;
        assert_eq!(status, "waiting");
        assert!(reason.starts_with("frequency cap reached"), "{reason}");
        assert!(due >= START + 7 * DAY, "the slot frees a week later");
    }

    /// The owner's notice, as `templates/owner.toml` ships it (in short).
    fn owner_notice() -> (String, String) {
        (
            "workflows/templates/owner.toml".into(),
            "[message_withheld]\nchannel = \"email\"\n\
             subject = \"Not sent: {{ workflow }} ({{ withheld.category }} {{ withheld.template }})\"\n\
             text = \"{{ contact.name }} stopped all email.\"\n"
                .into(),
        )
    }

    #[tokio::test]
    async fn an_answer_withheld_from_a_contact_who_stopped_all_email_is_told_to_the_owner() {
        let f = Fixture::new(vec![
            workflow("answer", "category = \"sla\"", &[SEND]),
            workflow("promo", "category = \"marketing\"\nexit_when = []", &[SEND]),
            owner_notice(),
        ])
        .await;
        let li = f
            .contact(json!({ "email": "li@test.example", "owner": "rep@test.example", "consent": "withdrawn" }))
            .await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT r.workflow, o.recipient, o.category, o.message ->> 'subject' FROM outbox o JOIN runs r ON r.id = o.run_id",
        )
        .fetch_all(&f.store.pool)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [(
                "answer".to_string(),
                "rep@test.example".to_string(),
                "internal".to_string(),
                "Not sent: answer (sla hello)".to_string()
            )],
            "one notice, for the answer only: the contact asked for no marketing"
        );
        let details: Vec<(String, String)> = sqlx::query_as(
            "SELECT r.workflow, s.detail FROM run_steps s JOIN runs r ON r.id = s.run_id ORDER BY r.workflow",
        )
        .fetch_all(&f.store.pool)
        .await
        .unwrap();
        assert_eq!(details[0].0, "answer");
        assert!(
            details[0].1.starts_with(
                "skipped: consent withdrawn for all email; the owner is told: queued <run1-step0-contact1-withheld-owner@"
            ),
            "{details:?}"
        );
        assert_eq!(
            details[1],
            ("promo".into(), "skipped: consent withdrawn for all email".into())
        );
    }

    #[tokio::test]
    async fn a_marketing_unsubscribe_withholds_marketing_only_and_tells_nobody() {
        let f = Fixture::new(vec![
            workflow("answer", "category = \"transactional\"", &[SEND]),
            workflow("promo", "category = \"marketing\"\nexit_when = []", &[SEND]),
            workflow("drip", "category = \"marketing\"", &[SEND]),
            owner_notice(),
        ])
        .await;
        let li = f
            .contact(json!({ "email": "Li@Test.example", "owner": "rep@test.example" }))
            .await;
        let what = Suppress {
            address: "li@test.example",
            channel: "*",
            reason: SuppressionReason::Unsubscribed,
            scope: ConsentScope::Marketing,
            detail: "one-click",
        };
        let mut conn = f.store.pool.acquire().await.unwrap();
        crate::store::suppress(&mut conn, &what, START).await.unwrap();
        drop(conn);
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let runs: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT r.workflow, r.status, r.outcome, s.detail FROM runs r LEFT JOIN run_steps s ON s.run_id = r.id
             ORDER BY r.workflow",
        )
        .fetch_all(&f.store.pool)
        .await
        .unwrap();
        assert_eq!(runs[0].0, "answer");
        assert!(
            runs[0].3.as_deref().unwrap_or_default().starts_with("queued <run"),
            "{runs:?}"
        );
        assert_eq!(
            (runs[1].0.as_str(), runs[1].1.as_str(), runs[1].2.as_deref()),
            ("drip", "cancelled", Some("exit condition met: unsubscribed")),
        );
        assert_eq!(
            runs[2],
            (
                "promo".into(),
                "done".into(),
                Some("all steps done".into()),
                Some("skipped: the contact unsubscribed from marketing".into())
            )
        );
        let codes: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT r.workflow, r.reason, s.reason FROM runs r LEFT JOIN run_steps s ON s.run_id = r.id ORDER BY r.workflow",
        )
        .fetch_all(&f.store.pool)
        .await
        .unwrap();
        let code = |s: &str| Some(s.to_string());
        assert_eq!(
            codes,
            [
                ("answer".into(), code("completed"), None),
                ("drip".into(), code("exit_unsubscribed"), None),
                ("promo".into(), code("completed"), code("marketing_unsubscribed")),
            ],
            "each outcome with its code"
        );
        let recipients: Vec<String> = sqlx::query_scalar("SELECT recipient FROM outbox")
            .fetch_all(&f.store.pool)
            .await
            .unwrap();
        assert_eq!(
            recipients,
            ["Li@Test.example"],
            "the answer only; the owner hears nothing"
        );
    }

    /// Consent that changes between preparing a message and queueing it puts
    /// the step off until it is prepared again: neither the message nor the
    /// owner's notice goes out on a stale reading.
    #[tokio::test]
    async fn consent_changed_while_a_message_was_prepared_prepares_it_again() {
        let f = Fixture::new(vec![workflow("answer", "category = \"sla\"", &[SEND]), owner_notice()]).await;
        let li = f
            .contact(json!({ "email": "li@test.example", "owner": "rep@test.example" }))
            .await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.prepare_then_apply("UPDATE contacts SET consent = 'withdrawn'").await;
        assert_eq!(f.outbox_count(li).await, 0);
        let (status, reason): (String, String) = f
            .row("SELECT status, waiting_reason FROM runs WHERE contact_id = ?", li)
            .await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("waiting", "consent changed while the message was prepared")
        );
        f.settle().await;
        let (recipient,): (String,) = f.row("SELECT recipient FROM outbox WHERE contact_id = ?", li).await;
        assert_eq!(
            recipient, "rep@test.example",
            "prepared again, as a notice to the owner"
        );
    }
}
