//! `wait`: the run sleeps for a span, in the contact's time zone (a day is a
//! calendar day there), or in a workflow on the business clock, in the owner's
//! working time (team.toml). The wait is a timer row, which `timers.rs` fires.

use super::{Applying, Outcome};
use crate::engine::effects::Effects;
use jiff::Span;

use crate::model::add_span;
use crate::store::RunTimer;

pub(super) fn apply(at: &Applying, span: Span, effects: &mut Effects) -> Outcome {
    let owner = at.set.team.member(&at.contact.owner);
    let until = match owner.filter(|_| at.workflow.business_clock()) {
        Some(owner) => owner.add_business(at.now, span),
        None => add_span(at.now, span, &at.contact.time_zone),
    };
    effects.timers.push(RunTimer {
        run_id: at.run.id,
        due_at: until,
    });
    Outcome::Waiting(format!("wait until {}", crate::clock::display_ms(until)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{DAY, Fixture, START, workflow};

    #[tokio::test]
    async fn a_wait_parks_the_run_on_a_timer_that_resumes_it() {
        let f = Fixture::new(vec![workflow("pause", "", &["wait = \"1d\"", "tag = \"later\""])]).await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (status, next_step, due): (String, i64, i64) = f
            .row(
                "SELECT r.status, r.next_step, t.due_at FROM runs r JOIN timers t ON t.run_id = r.id WHERE r.contact_id = ?",
                li,
            )
            .await;
        assert_eq!((status.as_str(), next_step, due), ("waiting", 1, START + DAY));
        f.later(DAY - 1).await;
        assert_eq!(f.run_of(li).await.0, "waiting", "not a moment early");
        f.later(1).await;
        let (status, details) = f.run_of(li).await;
        assert_eq!((status.as_str(), details[1].as_str()), ("done", "tagged later"));
    }
}
