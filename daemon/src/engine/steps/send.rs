//! `send`: a message to the contact on a channel (email, SMS, a plugin's),
//! rendered from a template, perhaps one arm of an A/B test. Before its
//! transaction the step waits for its variant's delay and its send window;
//! inside it, a frequency cap may put it off, and a contact who withdrew
//! consent meanwhile gets nothing.

use super::{Action, Applying, Outcome, PreparedStep, Preparing};
use crate::engine::effects::Effects;
use crate::engine::message::Outgoing;
use crate::engine::{Engine, variants};
use crate::plugins::Recipient;
use crate::store::{self, Contact};

/// Whether the message must wait before it is rendered: for its A/B variant's
/// delay, or for its send window to open (a wait would make the render stale).
pub(super) async fn held(engine: &Engine, at: &Preparing<'_>) -> anyhow::Result<Option<Action>> {
    let (workflow, contact, now) = (at.workflow, at.contact, at.now);
    if let Some((until, reason)) =
        variants::held_until(&engine.store, at.run, at.variant, &contact.time_zone, now).await?
    {
        return Ok(Some(Action::Defer { until, reason }));
    }
    let tz = jiff::tz::TimeZone::get(&contact.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let now = jiff::Timestamp::from_millisecond(now)?;
    let window = (at.set).window_name(workflow.send_window.as_ref(), |field| contact.cadence_key(field));
    let slot = at.set.sending.next_slot(window, workflow.category, now, &tz);
    if slot <= now {
        return Ok(None);
    }
    let reason = format!(
        "outside the send window{}; next opening {} ({})",
        window.map(|w| format!(" `{w}`")).unwrap_or_default(),
        slot.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z"),
        contact.time_zone
    );
    Ok(Some(Action::Defer {
        until: slot.as_millisecond(),
        reason,
    }))
}

/// The message to the contact, if the channel's plugin has an address for
/// them and they have not withdrawn consent.
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
    address
        .filter(|_| contact.consent != "withdrawn")
        .map(|address| Outgoing {
            channel: channel.to_string(),
            template: template.to_string(),
            name: contact.name.clone(),
            address,
            key_suffix: "",
        })
}

/// Queues the message, unless a frequency cap puts it off or the contact has
/// withdrawn consent since it was prepared.
pub(super) async fn apply(
    engine: &Engine,
    tx: &mut store::Conn,
    at: &Applying<'_>,
    channel: &str,
    step: &PreparedStep,
    effects: &mut Effects,
) -> anyhow::Result<Outcome> {
    if step.outgoing.is_some() && engine.defer_if_capped(tx, at, channel, effects).await? {
        return Ok(Outcome::Deferred);
    }
    let withdrawn = at.contact.consent == "withdrawn";
    let detail = match (step.outgoing.as_ref().filter(|_| !withdrawn), &step.rendered) {
        (Some(out), Some(rendered)) => engine.queue(at, step, out, rendered, effects),
        _ if withdrawn => "skipped: consent withdrawn".into(),
        _ => "skipped: the contact has no address for this channel".into(),
    };
    Ok(Outcome::Done(detail))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{DAY, Fixture, START, workflow};

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
        assert_eq!(f.run_of(withdrawn).await, skipped("consent withdrawn"));
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
}
