//! A/B tests of send steps, as the engine meets them: which variant a run's
//! message is (`Variant::assign`, stable per contact), whether the variant's
//! delay still holds the message back, and the template with its subject.

use crate::model::add_span;
use crate::store::{self, Run, Store};
use crate::workflow::{Step, Template, Variant, Workflow};

/// The variant of the step a run is at, if that step is an A/B test.
pub(crate) fn of_step<'a>(workflow: &'a Workflow, run: &Run) -> Option<&'a Variant> {
    match workflow.steps.get(run.next_step as usize)? {
        Step::Send { variants, .. } => Variant::assign(variants, &workflow.name, run.next_step, run.contact_id),
        _ => None,
    }
}

/// Until when, and why, a variant's `delay` holds its message back. The delay
/// counts from when the run reached the step, so waking up for a send window or
/// after a restart does not start it again.
pub(crate) async fn held_until(
    store: &Store,
    run: &Run,
    variant: Option<&Variant>,
    time_zone: &str,
    now: i64,
) -> anyhow::Result<Option<(i64, String)>> {
    let Some((variant, delay)) = variant.and_then(|v| Some((v, v.delay?))) else {
        return Ok(None);
    };
    let reached = {
        let mut conn = store.pool.acquire().await?;
        store::step_reached_at(&mut conn, run).await?
    };
    let until = add_span(reached, delay, time_zone);
    Ok((until > now).then(|| {
        let reason = format!(
            "A/B variant `{}` sends {delay:#} after the step, at {}",
            variant.name,
            crate::clock::display_ms(until)
        );
        (until, reason)
    }))
}

/// The template as this variant sends it.
pub(crate) fn template(mut template: Template, variant: Option<&Variant>) -> Template {
    if let Some(v) = variant {
        v.apply(&mut template);
    }
    template
}
