//! `tag` and `untag`: adds a tag to the contact or takes one away. Unlike the
//! other contact changes, tags are changed in memory and written with the
//! batch (one statement for all its contacts); the next runs of the batch see
//! the contact's tags as this step left them.

use serde_json::json;

use super::{Applying, Outcome};
use crate::engine::Contacts;
use crate::engine::effects::Effects;

pub(super) fn apply(
    at: &Applying,
    tag: &str,
    present: bool,
    contacts: &mut Contacts,
    effects: &mut Effects,
) -> Outcome {
    let contact = at.contact;
    let mut tags = contact.tags.0.clone();
    tags.retain(|t| t != tag);
    if present {
        tags.push(tag.to_string());
    }
    if let Some((known, context)) = contacts.get_mut(&contact.id) {
        known.tags.0 = tags.clone();
        context["tags"] = json!(tags);
    }
    effects.tags.insert(contact.id, tags);
    Outcome::Done(format!("{} {tag}", if present { "tagged" } else { "untagged" }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{Fixture, workflow};

    /// Tags are written with the batch; a later step of the batch (another
    /// run's, here) sees them as the earlier one left them.
    #[tokio::test]
    async fn tags_are_added_and_taken_away_across_a_batch() {
        let f = Fixture::new(vec![
            workflow("a", "", &["tag = \"vip\"", "untag = \"cold\""]),
            workflow("b", "", &["tag = \"asked\""]),
        ])
        .await;
        let li = f
            .contact(json!({ "email": "li@test.example", "tags": ["cold", "old"] }))
            .await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (tags,): (String,) = f.row("SELECT tags FROM contacts WHERE id = ?", li).await;
        let mut tags: Vec<String> = serde_json::from_str(&tags).unwrap();
        tags.sort();
        assert_eq!(tags, ["asked", "old", "vip"]);
        let (done,): (i64,) = f
            .row("SELECT COUNT(*) FROM runs WHERE status = 'done' AND contact_id = ?", li)
            .await;
        assert_eq!(done, 2);
    }
}
