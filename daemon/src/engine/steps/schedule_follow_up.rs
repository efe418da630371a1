//! `schedule_follow_up`: sets the contact's next follow-up date, a fixed span
//! or one looked up in a cadence table by a contact field. When the date
//! passes with nothing logged, a `follow_up_due` timer makes it overdue.

use anyhow::Context as _;

use super::{Applying, Outcome};
use crate::model::add_span;
use crate::store;
use crate::workflow::FollowUpAfter;

pub(super) async fn apply(
    tx: &mut store::Conn,
    at: &Applying<'_>,
    after: &FollowUpAfter,
    goal: &Option<String>,
) -> anyhow::Result<Outcome> {
    let span = match after {
        FollowUpAfter::Fixed(span) => Some(*span),
        FollowUpAfter::Cadence(name) => {
            let cadence = at.set.cadences.get(name).context("cadence missing")?;
            let key = at.contact_ctx.get(&cadence.by).and_then(|v| v.as_str());
            cadence.interval_for(key)
        }
    };
    let detail = match span {
        Some(span) => {
            let next = add_span(at.now, span, &at.contact.time_zone);
            store::set_next_follow_up(tx, at.contact.id, Some(next), goal.as_deref(), at.now).await?;
            format!("next follow-up {}", crate::clock::display_ms(next))
        }
        None => "skipped: the cadence has no interval for this contact".into(),
    };
    Ok(Outcome::Done(detail))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{DAY, Fixture, START, workflow};

    #[tokio::test]
    async fn a_fixed_span_sets_the_next_follow_up_and_its_goal() {
        let step = "schedule_follow_up = { in = \"3d\", goal = \"Send the quote\" }";
        let f = Fixture::new(vec![workflow("plan", "", &[step])]).await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (at, goal): (i64, String) = f
            .row("SELECT next_follow_up_at, next_goal FROM contacts WHERE id = ?", li)
            .await;
        assert_eq!((at, goal.as_str()), (START + 3 * DAY, "Send the quote"));
        assert_eq!(f.run_of(li).await.0, "done");
    }

    #[tokio::test]
    async fn a_cadence_looks_the_span_up_by_the_contacts_field() {
        let cadences = "[intent]\nby = \"intent_grade\"\nevery = { A = \"3d\", B = \"7d\" }\n";
        let f = Fixture::new(vec![
            workflow("plan", "", &["schedule_follow_up = { cadence = \"intent\" }"]),
            ("workflows/cadences.toml".into(), cadences.into()),
        ])
        .await;
        let a = f
            .contact(json!({ "email": "a@test.example", "intent_grade": "A" }))
            .await;
        let none = f.contact(json!({ "email": "n@test.example" })).await;
        for contact in [a, none] {
            f.event(crate::store::EventKind::InquiryReceived, contact).await;
        }
        f.settle().await;
        let (at,): (Option<i64>,) = f.row("SELECT next_follow_up_at FROM contacts WHERE id = ?", a).await;
        assert_eq!(at, Some(START + 3 * DAY));
        let (at,): (Option<i64>,) = f.row("SELECT next_follow_up_at FROM contacts WHERE id = ?", none).await;
        assert_eq!(at, None);
        let skipped = vec!["skipped: the cadence has no interval for this contact".to_string()];
        assert_eq!(f.run_of(none).await, ("done".into(), skipped));
    }
}
