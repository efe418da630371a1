//! `set_tier` and `set_intent`: sets one of the contact's classification
//! fields (value tier, intent grade); a change is kept in the contact's
//! history with the workflow that made it.

use super::{Applying, Outcome};
use crate::store::{self, Classification};

pub(super) async fn apply(
    tx: &mut store::Conn,
    at: &Applying<'_>,
    field: Classification,
    value: &str,
) -> anyhow::Result<Outcome> {
    let by = format!("workflow:{}", at.workflow.name);
    store::set_classification_by(tx, at.contact, field, value, &by, at.now).await?;
    Ok(Outcome::Done(format!("{} -> {value}", field.label())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{Fixture, workflow};

    #[tokio::test]
    async fn the_tier_and_the_grade_change_and_the_history_says_who_did_it() {
        let f = Fixture::new(vec![workflow(
            "grade",
            "",
            &["set_tier = \"high\"", "set_intent = \"A\""],
        )])
        .await;
        let li = f
            .contact(json!({ "email": "li@test.example", "value_tier": "low" }))
            .await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (tier, grade): (String, String) = f
            .row("SELECT value_tier, intent_grade FROM contacts WHERE id = ?", li)
            .await;
        assert_eq!((tier.as_str(), grade.as_str()), ("high", "A"));
        let history: (String, String, String) = f
            .row(
                "SELECT from_value, to_value, changed_by FROM contact_history WHERE field = 'value_tier' AND contact_id = ?",
                li,
            )
            .await;
        assert_eq!(history, ("low".into(), "high".into(), "workflow:grade".into()));
        assert_eq!(f.run_of(li).await.0, "done");
    }
}
