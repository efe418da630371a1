//! A run's next step, in two halves. `prepare` works out the move outside any
//! transaction: the end of the run's steps, a send window or an A/B delay that
//! defers it, the message to render. `apply` carries it out inside the batch's
//! transaction: the checks that must see the database as it is (whether the
//! run must stop, frequency caps) and the step's own effect. What a step does
//! is in its own file, one per kind of step.

use std::sync::Arc;

use anyhow::Context as _;
use tracing::info;

use super::effects::Effects;
use super::message::Outgoing;
use super::render::Render;
use super::traces::StepOutcome;
use super::{Contacts, Engine, triggers, variants};
use crate::model::{Category, Reason};
use crate::plugins::RenderedMessage;
use crate::store::{self, Contact, Run, RunStatus};
use crate::unsubscribe::MessageRef;
use crate::workflow::{Step, Variant, Workflow, WorkflowSet};

#[cfg(test)]
pub(super) mod fixture;
mod notify;
mod schedule_follow_up;
mod send;
mod set_classification;
mod set_owner;
mod set_stage;
mod tag;
mod wait;

/// A ready run's next move, worked out before its transaction.
pub(super) struct NextMove {
    pub(crate) run: Run,
    pub(crate) set: Arc<WorkflowSet>,
    /// Index of the run's workflow in `set.workflows`.
    pub(crate) workflow: usize,
    pub(crate) action: Action,
}

impl NextMove {
    pub(crate) fn workflow(&self) -> &Workflow {
        &self.set.workflows[self.workflow]
    }

    /// Whether the run takes its step (rather than ending or waiting).
    pub(crate) fn is_step(&self) -> bool {
        matches!(self.action, Action::Step(_))
    }

    /// Whether its step is taken and writes the contact (see `Step::writes_contact`).
    pub(crate) fn writes_contact(&self) -> bool {
        let step = self.workflow().steps.get(self.run.next_step as usize);
        self.is_step() && step.is_some_and(Step::writes_contact)
    }
}

pub(super) enum Action {
    /// No steps left.
    Finish,
    /// Wait at this step until then (a send window is closed), saying why (code and words).
    Defer { until: i64, code: Reason, reason: String },
    /// Run the step; its message, if any, is rendered by then (`render_messages`).
    Step(Box<PreparedStep>),
}

pub(super) struct PreparedStep {
    pub(crate) outgoing: Option<Outgoing>,
    /// What the message is rendered from, until it is.
    pub(crate) render: Option<Render>,
    pub(crate) rendered: Option<RenderedMessage>,
    pub(crate) unsubscribe: Option<store::Unsubscribe>,
    pub(crate) category: Category,
    /// Whether the contact's consent withheld the message when it was prepared
    /// (`outgoing` is then the owner's notice, if one is owed).
    pub(crate) withheld: bool,
    /// Why the message goes elsewhere than the step said (a `notify` to an unknown manager).
    pub(crate) note: Option<String>,
}

/// What a step's `apply` did.
enum Outcome {
    /// The step happened (the detail says what); the run goes on to the next.
    Done(String),
    /// The step happened without its message (the code says why); the run goes on.
    Skipped(Reason, String),
    /// The step happened and the run waits for its timer.
    Waiting(String),
    /// The step was put off (a frequency cap); the run waits at it.
    Deferred,
}

/// A ready run at its step before the batch's transaction: the contact as
/// the batch read it.
pub(super) struct Preparing<'a> {
    pub(crate) set: &'a WorkflowSet,
    pub(crate) workflow: &'a Workflow,
    pub(crate) run: &'a Run,
    pub(crate) contact: &'a Contact,
    pub(crate) contact_ctx: &'a serde_json::Value,
    /// The A/B variant of the run's message, if its step is a test.
    pub(crate) variant: Option<&'a Variant>,
    pub(crate) now: i64,
}

/// A run at its step inside the batch's transaction: the contact as the
/// transaction sees it.
pub(super) struct Applying<'a> {
    pub(crate) set: &'a WorkflowSet,
    pub(crate) workflow: &'a Workflow,
    pub(crate) run: &'a Run,
    pub(crate) contact: &'a Contact,
    pub(crate) contact_ctx: &'a serde_json::Value,
    /// What the batch read about suppressions and later events.
    pub(crate) facts: &'a triggers::ExitFacts,
    pub(crate) now: i64,
}

impl Engine {
    /// Works out a ready run's next move outside any transaction: the end of its
    /// steps, a send window that defers it, the rendering of its message. `None`: not ready.
    pub(super) async fn prepare(&self, run: Run, contacts: &Contacts) -> anyhow::Result<Option<NextMove>> {
        let set = self.set_for(&run.set_hash).await?;
        let index = set
            .workflows
            .iter()
            .position(|w| w.name == run.workflow)
            .with_context(|| format!("workflow {} is not in its set", run.workflow))?;
        let workflow = &set.workflows[index];
        let prepared = |action| {
            Ok(Some(NextMove {
                run: run.clone(),
                set: set.clone(),
                workflow: index,
                action,
            }))
        };
        let Some(step) = workflow.steps.get(run.next_step as usize) else {
            return prepared(Action::Finish);
        };
        // Whether the run must stop is decided in `apply`, inside the transaction.
        let (contact, contact_ctx) = contacts.get(&run.contact_id).context("contact is gone")?;
        let at = Preparing {
            set: &set,
            workflow,
            run: &run,
            contact,
            contact_ctx,
            variant: variants::of_step(workflow, &run),
            now: self.at(run.updated_at),
        };
        // A message the contact's consent withholds is not sent, so it waits for no
        // window; the owner's notice of it (if one is owed) takes its place.
        let withheld = contact.consent_withholds(workflow.category);
        let mut note = None;
        let outgoing = match step {
            Step::Send { template, .. } if withheld => send::owner_notice(&at, template),
            Step::Send { channel, template, .. } => {
                if let Some(defer) = send::held(self, &at).await? {
                    return prepared(defer);
                }
                send::outgoing(self, contact, channel, template)
            }
            Step::Notify { to, template } => {
                let recipient = notify::recipient(&set.team, contact, to);
                if let Some(defer) = notify::held(&at, &recipient)? {
                    return prepared(defer);
                }
                note = recipient.note.clone();
                notify::outgoing(&recipient, to, template)
            }
            _ => None,
        };
        let (category, unsubscribe) = self.category_and_links(&at, step, withheld, outgoing.as_ref());
        // Rendering is pure and may be slow, so it happens before the transaction
        // opens, for the whole batch at once (`render_messages`).
        let render = match &outgoing {
            Some(out) => Some(self.render_input(&at, out, &unsubscribe)?),
            None => None,
        };
        prepared(Action::Step(Box::new(PreparedStep {
            outgoing,
            render,
            rendered: None,
            unsubscribe,
            category,
            withheld,
            note,
        })))
    }

    /// The category a step's message goes out in (a note to staff is internal,
    /// so is the owner's notice of a withheld message) and its unsubscribe links:
    /// marketing email carries one (visible and in List-Unsubscribe) naming the
    /// message it is in, for the contact's history.
    fn category_and_links(
        &self,
        at: &Preparing<'_>,
        step: &Step,
        withheld: bool,
        outgoing: Option<&Outgoing>,
    ) -> (Category, Option<store::Unsubscribe>) {
        let category = match step {
            Step::Notify { .. } => Category::Internal,
            Step::Send { .. } if withheld => Category::Internal,
            _ => at.workflow.category,
        };
        let message = MessageRef {
            run_id: at.run.id,
            step: at.run.next_step,
        };
        let unsubscribe = (category == Category::Marketing && outgoing.is_some_and(|o| o.channel == "email"))
            .then(|| self.unsubscribe.links(at.contact.id, Some(message)));
        (category, unsubscribe)
    }

    /// Works out a prepared move inside the batch's transaction: the checks and
    /// the contact's changes happen here, the run's own writes go to `effects`.
    /// Returns what the step did, for its span.
    pub(super) async fn apply(
        &self,
        tx: &mut store::Conn,
        next: &NextMove,
        contacts: &mut Contacts,
        facts: &triggers::ExitFacts,
        effects: &mut Effects,
        now: i64,
    ) -> anyhow::Result<StepOutcome> {
        let (run, workflow) = (&next.run, next.workflow());
        let run_id = run.id;
        let Some(prepared) = step_or_settle(next, effects) else {
            return Ok(settled(&next.action));
        };
        let step = &workflow.steps[run.next_step as usize];
        // The checks of `prepare` ran before this transaction; repeat them inside it,
        // so a follow-up logged or consent withdrawn meanwhile still wins.
        let (contact, contact_ctx) = &match contacts.get(&run.contact_id) {
            Some(known) => known.clone(),
            None => store::contact_with_context(tx, run.contact_id)
                .await?
                .context("contact is gone")?,
        };
        // Steps that write the contact make the next run of this batch read it afresh.
        if step.writes_contact() {
            contacts.remove(&run.contact_id);
        }
        if let Some((code, outcome)) = triggers::stop_reason(facts, workflow, run, contact, contact_ctx) {
            info!(reason = %code, "run stopped: {outcome}");
            let ended = store::EndedRun {
                id: run_id,
                status: RunStatus::Cancelled,
                reason: code,
                outcome,
            };
            effects.end_run(&workflow.name, ended);
            return Ok(StepOutcome {
                kind: Some(step.kind()),
                outcome: code.to_string(),
            });
        }
        let at = Applying {
            run,
            set: &next.set,
            workflow,
            contact,
            contact_ctx,
            facts,
            now,
        };
        let outcome = match step {
            Step::Send { channel, .. } => send::apply(self, tx, &at, channel, prepared, effects).await?,
            Step::Notify { .. } => notify::apply(self, &at, prepared, effects),
            Step::Wait(span) => wait::apply(&at, *span, effects),
            Step::ScheduleFollowUp { after, window, goal } => {
                schedule_follow_up::apply(tx, &at, after, window.as_ref(), goal).await?
            }
            Step::SetStage(stage) => set_stage::apply(tx, &at, stage).await?,
            Step::SetTier(value) => set_classification::apply(tx, &at, store::Classification::ValueTier, value).await?,
            Step::SetIntent(value) => {
                set_classification::apply(tx, &at, store::Classification::IntentGrade, value).await?
            }
            Step::Tag(tag) => tag::apply(&at, tag, true, contacts, effects),
            Step::Untag(tag) => tag::apply(&at, tag, false, contacts, effects),
            Step::SetOwner(owner) => set_owner::apply(tx, &at, owner).await?,
        };
        let traced = StepOutcome {
            kind: Some(step.kind()),
            outcome: outcome.label(),
        };
        finish(&at, step, outcome, effects);
        Ok(traced)
    }
}

impl Outcome {
    /// The step's outcome in its span: the reason code of a step taken without its message.
    fn label(&self) -> String {
        match self {
            Outcome::Done(_) => "done".into(),
            Outcome::Skipped(code, _) => code.to_string(),
            Outcome::Waiting(_) => "waiting".into(),
            Outcome::Deferred => "deferred".into(),
        }
    }
}

/// What a move that takes no step did, for its step's span.
fn settled(action: &Action) -> StepOutcome {
    let outcome = match action {
        Action::Finish => Reason::Completed.to_string(),
        Action::Defer { code, .. } => code.to_string(),
        Action::Step(_) => "done".into(),
    };
    StepOutcome { kind: None, outcome }
}

/// The prepared step of a move that takes one; a move that ends the run or
/// defers it is recorded in `effects` instead.
fn step_or_settle<'a>(next: &'a NextMove, effects: &mut Effects) -> Option<&'a PreparedStep> {
    let run = &next.run;
    let run_id = run.id;
    match &next.action {
        Action::Step(step) => Some(step),
        Action::Finish => {
            let ended = store::EndedRun {
                id: run_id,
                status: RunStatus::Done,
                reason: Reason::Completed,
                outcome: "all steps done".into(),
            };
            effects.end_run(&next.workflow().name, ended);
            info!("run done");
            None
        }
        Action::Defer { until, code, reason } => {
            effects.deferred.push(store::DeferredRun {
                run_id,
                step: run.next_step,
                until: *until,
                reason: reason.clone(),
                code: *code,
                counted: Vec::new(),
            });
            info!(reason = %code, "{reason}");
            None
        }
    }
}

/// Records a step that happened (or says nothing, if it was put off): its
/// detail in the log and the run's move past it; after its last step a run is
/// done at once, not in another batch.
fn finish(at: &Applying, step: &Step, outcome: Outcome, effects: &mut Effects) {
    let (detail, mut status, reason) = match outcome {
        Outcome::Done(detail) => (detail, RunStatus::Ready, None),
        Outcome::Skipped(code, detail) => (detail, RunStatus::Ready, Some(code)),
        Outcome::Waiting(detail) => (detail, RunStatus::Waiting, None),
        Outcome::Deferred => return,
    };
    let (run, workflow) = (at.run, at.workflow);
    let run_id = run.id;
    let kind = step.kind();
    match reason {
        Some(code) => info!(step = run.next_step, kind, reason = %code, "{detail}"),
        None => info!(step = run.next_step, kind, "{detail}"),
    }
    if status == RunStatus::Ready && run.next_step + 1 >= workflow.steps.len() as i64 {
        status = RunStatus::Done;
        info!("run done");
        let metrics = crate::metrics::get();
        metrics.run_finished(
            &mut effects.tally,
            &workflow.name,
            RunStatus::Done.as_str(),
            Reason::Completed,
        );
    }
    effects.finished.push(store::FinishedStep {
        run_id,
        step: run.next_step,
        kind,
        detail,
        status,
        reason,
    });
}
