//! `notify_owner`: an email to the contact's owner (the sales rep), not to the
//! contact: internal mail, so no unsubscribe link, consent or frequency cap.

use super::{Applying, Outcome, PreparedStep};
use crate::engine::Engine;
use crate::engine::effects::Effects;
use crate::engine::message::Outgoing;
use crate::store::Contact;

/// The email to the owner, if the owner is an email address.
pub(super) fn outgoing(contact: &Contact, template: &str) -> Option<Outgoing> {
    Some(contact.owner.clone())
        .filter(|o| o.contains('@'))
        .map(|address| Outgoing {
            channel: "email".into(),
            template: template.to_string(),
            name: String::new(),
            address,
            key_suffix: "-owner",
            withheld: None,
        })
}

pub(super) fn apply(engine: &Engine, at: &Applying, step: &PreparedStep, effects: &mut Effects) -> Outcome {
    let detail = match (&step.outgoing, &step.rendered) {
        (Some(out), Some(rendered)) => engine.queue(at, step, out, rendered, effects),
        _ => "skipped: the contact has no owner email".into(),
    };
    Outcome::Done(detail)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{Fixture, workflow};

    const NOTIFY: &str = "notify_owner = { template = \"hello\" }";

    #[tokio::test]
    async fn the_owner_gets_an_internal_email_keyed_apart_from_the_contacts() {
        let f = Fixture::new(vec![workflow("tell", "", &[NOTIFY])]).await;
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
        let f = Fixture::new(vec![workflow("tell", "", &[NOTIFY])]).await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        assert_eq!(f.outbox_count(li).await, 0);
        let skipped = vec!["skipped: the contact has no owner email".to_string()];
        assert_eq!(f.run_of(li).await, ("done".into(), skipped));
    }
}
