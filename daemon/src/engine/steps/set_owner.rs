//! `set_owner`: hands the contact to another owner (an email address, or the
//! member of a team.toml role picked for the contact: docs/domain.md §2, the
//! owner by value tier), who gets the `notify` mail from then on.

use super::{Applying, Outcome};
use crate::store;
use crate::workflow::OwnerRef;

pub(super) async fn apply(tx: &mut store::Conn, at: &Applying<'_>, to: &OwnerRef) -> anyhow::Result<Outcome> {
    let owner = match to {
        OwnerRef::Address(address) => address.as_str(),
        OwnerRef::Role(role) => match at.set.team.pick(role, at.contact.id) {
            Some(member) => member,
            None => return Ok(Outcome::Done(format!("skipped: role {role} has no members"))),
        },
    };
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

    #[tokio::test]
    async fn a_role_hands_the_contact_to_the_member_picked_for_it() {
        let team = "[members.\"a@test.example\"]\n[members.\"b@test.example\"]\n\
                    [roles]\nsenior_reps = [\"a@test.example\", \"b@test.example\"]\n";
        let f = Fixture::new(vec![
            ("workflows/team.toml".into(), team.into()),
            workflow("hand-over", "", &["set_owner = { role = \"senior_reps\" }"]),
        ])
        .await;
        let mut owners = Vec::new();
        for n in 0..2 {
            let id = f.contact(json!({ "email": format!("li{n}@test.example") })).await;
            f.event(crate::store::EventKind::InquiryReceived, id).await;
            f.settle().await;
            let (owner,): (String,) = f.row("SELECT owner FROM contacts WHERE id = ?", id).await;
            owners.push(owner);
        }
        owners.sort();
        assert_eq!(owners, ["a@test.example", "b@test.example"], "one each, by contact id");
    }
}
