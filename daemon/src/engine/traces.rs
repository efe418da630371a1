//! The engine's spans in an exported trace (`crate::trace`): one per event
//! taken, a child per run it starts, and per step a child of its run's span,
//! which the message it queues carries on to delivery. Their attributes are
//! ids, names and outcomes: never a message's content or an address.

use std::collections::HashMap;

use tracing::field::Empty;

use crate::store::{self, Contact, Run};
use crate::trace::{self, TARGET};
use crate::workflow::Workflow;

/// The span of each event taken, by event id.
pub(super) fn event_spans(events: &[store::Event]) -> HashMap<i64, tracing::Span> {
    events
        .iter()
        .map(|event| {
            let span = tracing::info_span!(
                target: TARGET,
                parent: None,
                "event",
                event_id = event.id,
                event_kind = event.kind.as_str(),
                contact_id = event.contact_id,
            );
            (event.id, span)
        })
        .collect()
}

/// The span of a run `event` starts (its id is recorded once it has one).
pub(super) fn run_span(event: &tracing::Span, workflow: &Workflow, contact: &Contact) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        parent: event,
        "run",
        run_id = Empty,
        workflow = workflow.name.as_str(),
        contact_id = contact.id,
    )
}

/// The span of the step `run` is about to take, a child of the run's span
/// (stored with the run). From here on `run` carries the step's context, so
/// that the message it queues carries it on to delivery.
pub(super) fn step_span(run: &mut Run) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "step",
        run_id = run.id,
        workflow = run.workflow.as_str(),
        contact_id = run.contact_id,
        step = run.next_step,
        step_kind = Empty,
        outcome = Empty,
    );
    trace::continue_from(&span, run.traceparent.as_deref());
    run.traceparent = trace::traceparent(&span);
    span
}

/// What a step did, for its span: its kind (None when the run ended or was
/// put off before taking it) and its outcome.
pub(super) struct StepOutcome {
    pub(crate) kind: Option<&'static str>,
    pub(crate) outcome: String,
}

impl StepOutcome {
    pub(super) fn record(&self, span: &tracing::Span) {
        if let Some(kind) = self.kind {
            span.record("step_kind", kind);
        }
        span.record("outcome", self.outcome.as_str());
    }
}
