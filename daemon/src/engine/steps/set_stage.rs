//! `set_stage`: moves the contact to another lifecycle stage. The change
//! writes a `stage_changed` event, which may start other workflows' runs; the
//! run's own start stage moves with it, so that its `stage_changed` exit does
//! not stop the run that made the change.

use super::{Applying, Outcome};
use crate::store;

pub(super) async fn apply(tx: &mut store::Conn, at: &Applying<'_>, stage: &str) -> anyhow::Result<Outcome> {
    let (contact, by) = (at.contact, format!("workflow:{}", at.workflow.name));
    store::set_stage(tx, contact.id, &contact.stage, stage, &by, at.now).await?;
    store::rebase_run_stage(tx, at.run.id, stage).await?;
    Ok(Outcome::Done(format!("stage {} -> {stage}", contact.stage)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{Fixture, workflow};

    #[tokio::test]
    async fn the_stage_moves_and_the_run_keeps_going_past_its_own_change() {
        let head = "exit_when = [\"stage_changed\"]";
        let f = Fixture::new(vec![workflow(
            "qualify",
            head,
            &["set_stage = \"intent\"", "tag = \"after\""],
        )])
        .await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (stage,): (String,) = f.row("SELECT stage FROM contacts WHERE id = ?", li).await;
        assert_eq!(stage, "intent");
        let (start_stage,): (String,) = f.row("SELECT start_stage FROM runs WHERE contact_id = ?", li).await;
        assert_eq!(start_stage, "intent", "rebased, so its own change is no exit");
        let details = vec!["stage lead -> intent".to_string(), "tagged after".to_string()];
        assert_eq!(f.run_of(li).await, ("done".into(), details));
    }

    /// A step that changes the stage writes an event that starts another
    /// workflow's run: the tick must say so, or the event would wait for the
    /// next wake-up from outside.
    #[tokio::test]
    async fn a_stage_set_by_a_step_starts_its_runs_without_a_wake_up() {
        let tag_inquiry = (
            "workflows/tag-inquiry.toml".to_string(),
            "[trigger]\non = \"stage_changed\"\nto = \"inquiry\"\n\n[[steps]]\ntag = \"asked\"\n".to_string(),
        );
        let f = Fixture::new(vec![
            workflow("to-inquiry", "", &["set_stage = \"inquiry\""]),
            tag_inquiry,
        ])
        .await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (tags,): (String,) = f.row("SELECT tags FROM contacts WHERE id = ?", li).await;
        assert_eq!(tags, r#"["asked"]"#, "the stage change's run ran in the same ticks");
        let (unprocessed,): (i64,) = f
            .row(
                "SELECT COUNT(*) FROM events WHERE processed_at IS NULL AND contact_id = ?",
                li,
            )
            .await;
        assert_eq!(unprocessed, 0);
    }
}
