//! `set_owner`: hands the contact to another owner (an email address), who
//! gets the `notify_owner` mail from then on.

use super::{Applying, Outcome};
use crate::store;

pub(super) async fn apply(tx: &mut store::Conn, at: &Applying<'_>, owner: &str) -> anyhow::Result<Outcome> {
    let by = format!("workflow:{}", at.workflow.name);
    store::set_owner(tx, at.contact, owner, &by, at.now).await?;
    Ok(Outcome::Done(format!("owner {} -> {owner}", at.contact.owner)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{Fixture, workflow};

    #[tokio::test]
    async fn the_contact_goes_to_the_new_owner() {
        let f = Fixture::new(vec![workflow("hand-over", "", &["set_owner = \"key@test.example\""])]).await;
        let li = f
            .contact(json!({ "email": "li@test.example", "owner": "rep@test.example" }))
            .await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (owner,): (String,) = f.row("SELECT owner FROM contacts WHERE id = ?", li).await;
        assert_eq!(owner, "key@test.example");
        let details = vec!["owner rep@test.example -> key@test.example".to_string()];
        assert_eq!(f.run_of(li).await, ("done".into(), details));
    }
}
