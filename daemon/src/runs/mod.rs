//! Durable step execution. Each step's effect (an outbox row, a timer, a
//! contact change) commits in one transaction with the run moving past that
//! step, so a crash at any point neither loses a step nor repeats one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::plugins::{Plugins, Recipient};
use crate::store::{self, Contact, NewOutboxRow, OutboundMessage, Run, Store, TimerKind};
use crate::triggers;
use crate::workflow::{FollowUpAfter, Step, Workflow, WorkflowSet, add_span};

/// Batch size for each kind of work in one tick.
const BATCH: i64 = 64;

/// A message a step is about to send.
struct Outgoing<'a> {
    channel: &'a str,
    template: &'a str,
    name: String,
    address: String,
    /// Tells apart two messages of one step (the contact's and the owner's).
    key_suffix: &'static str,
}

/// The engine: turns events into runs, fires timers, advances runs.
pub struct Engine {
    pub store: Store,
    pub clock: Clock,
    pub plugins: Plugins,
    pub message_id_domain: String,
    /// Woken when new outbox rows are committed.
    pub delivery_wake: Arc<Notify>,
    current: RwLock<Arc<WorkflowSet>>,
    /// Sets that runs are pinned to, by hash (the current one included).
    pinned: Mutex<HashMap<String, Arc<WorkflowSet>>>,
}

impl Engine {
    pub async fn new(
        store: Store,
        clock: Clock,
        plugins: Plugins,
        workflows: WorkflowSet,
        message_id_domain: String,
    ) -> anyhow::Result<Engine> {
        let set = Arc::new(workflows);
        let engine = Engine {
            store,
            clock,
            plugins,
            message_id_domain,
            delivery_wake: Arc::new(Notify::new()),
            current: RwLock::new(set.clone()),
            pinned: Mutex::new(HashMap::new()),
        };
        engine.install(set).await?;
        Ok(engine)
    }

    /// Makes `set` the one new events are matched against. Runs already started
    /// keep the set they started with.
    pub async fn install(&self, set: Arc<WorkflowSet>) -> anyhow::Result<()> {
        self.store
            .save_workflow_set(&set.hash, &set.files, self.clock.now_ms())
            .await?;
        self.pinned.lock().unwrap().insert(set.hash.clone(), set.clone());
        *self.current.write().unwrap() = set;
        Ok(())
    }

    pub fn current(&self) -> Arc<WorkflowSet> {
        self.current.read().unwrap().clone()
    }

    /// The set a run is pinned to, recompiled from the database if this process never loaded it.
    async fn set_for(&self, hash: &str) -> anyhow::Result<Arc<WorkflowSet>> {
        if let Some(set) = self.pinned.lock().unwrap().get(hash) {
            return Ok(set.clone());
        }
        let files = self
            .store
            .workflow_set_files(hash)
            .await?
            .with_context(|| format!("workflow set {hash} is not stored"))?;
        let set = WorkflowSet::compile(files, &self.plugins.get().channels())
            .map_err(|d| anyhow::anyhow!("stored workflow set {hash} no longer compiles:\n{d}"))?;
        let set = Arc::new(set);
        self.pinned.lock().unwrap().insert(hash.to_string(), set.clone());
        Ok(set)
    }

    /// Does whatever work is due; returns whether there was any.
    pub async fn tick(&self) -> anyhow::Result<bool> {
        let events = self.ingest_events().await?;
        let timers = self.fire_timers().await?;
        let runs = self.advance_runs().await?;
        Ok(events + timers + runs > 0)
    }

    /// When the next timer falls due, if any.
    pub async fn next_due(&self) -> anyhow::Result<Option<i64>> {
        let mut conn = self.store.pool.acquire().await?;
        store::next_timer_due(&mut conn).await
    }

    async fn ingest_events(&self) -> anyhow::Result<usize> {
        let events = {
            let mut conn = self.store.pool.acquire().await?;
            store::unprocessed_events(&mut conn, BATCH).await?
        };
        let set = self.current();
        // One transaction for the batch: each event's runs and its "processed" mark
        // still commit together, and a batch costs one fsync instead of one per event.
        let mut tx = self.store.write().await?;
        for event in &events {
            let now = self.clock.now_ms();
            if let Some(contact) = store::contact_by_id(&mut tx, event.contact_id).await? {
                let contact_ctx = store::contact_context(&mut tx, &contact).await?;
                let event_ctx = triggers::event_context(event);
                for workflow in set
                    .workflows
                    .iter()
                    .filter(|w| w.enabled && triggers::matches(&w.trigger, event))
                {
                    if let Some(condition) = &workflow.when {
                        match condition.evaluate(&contact_ctx, &event_ctx) {
                            Ok(true) => {}
                            Ok(false) => continue,
                            Err(e) => {
                                warn!(workflow = %workflow.name, contact_id = contact.id, "condition failed: {e}");
                                continue;
                            }
                        }
                    }
                    let start = triggers::start_at(workflow, event, &contact);
                    let status = if start <= now { "ready" } else { "waiting" };
                    let mut context = event.payload.0.clone();
                    context["kind"] = json!(event.kind);
                    let new_run = store::NewRun {
                        workflow: &workflow.name,
                        set_hash: &set.hash,
                        contact_id: contact.id,
                        event_id: event.id,
                        status,
                        context: &context,
                    };
                    let run = store::insert_run(&mut tx, &new_run, now).await?;
                    if let Some(run_id) = run {
                        if status == "waiting" {
                            store::insert_timer(&mut tx, start, TimerKind::ResumeRun, Some(run_id), None).await?;
                        }
                        info!(run_id, workflow = %workflow.name, contact_id = contact.id, event = %event.kind, "run started");
                    }
                }
            }
            store::mark_event_processed(&mut tx, event.id, now).await?;
        }
        tx.commit().await?;
        Ok(events.len())
    }

    async fn fire_timers(&self) -> anyhow::Result<usize> {
        let now = self.clock.now_ms();
        let timers = {
            let mut conn = self.store.pool.acquire().await?;
            store::due_timers(&mut conn, now, BATCH).await?
        };
        // One transaction for the batch, as for events.
        let mut tx = self.store.write().await?;
        for timer in &timers {
            if !store::mark_timer_fired(&mut tx, timer.id, now).await? {
                continue;
            }
            match timer.kind.as_str() {
                "resume_run" => {
                    if let Some(run_id) = timer.run_id {
                        store::wake_run(&mut tx, run_id, now).await?;
                    }
                }
                "follow_up_due" => {
                    let contact = match timer.contact_id {
                        Some(id) => store::contact_by_id(&mut tx, id).await?,
                        None => None,
                    };
                    // A newer follow-up moved the date: this timer is stale.
                    if let Some(contact) = contact.filter(|c| c.next_follow_up_at == Some(timer.due_at)) {
                        store::insert_event(
                            &mut tx,
                            "follow_up_overdue",
                            contact.id,
                            &json!({ "due_at": timer.due_at }),
                            now,
                        )
                        .await?;
                    }
                }
                other => warn!(timer_id = timer.id, "unknown timer kind {other}"),
            }
        }
        tx.commit().await?;
        Ok(timers.len())
    }

    async fn advance_runs(&self) -> anyhow::Result<usize> {
        let runs = {
            let mut conn = self.store.pool.acquire().await?;
            store::ready_runs(&mut conn, BATCH).await?
        };
        for &run_id in &runs {
            if let Err(e) = self.advance(run_id).await {
                warn!(run_id, "run failed: {e:#}");
                let mut conn = self.store.pool.acquire().await?;
                store::end_run(&mut conn, run_id, "failed", &format!("{e:#}"), self.clock.now_ms()).await?;
            }
        }
        Ok(runs.len())
    }

    /// Executes a ready run's steps until it waits or ends.
    async fn advance(&self, run_id: i64) -> anyhow::Result<()> {
        loop {
            let mut conn = self.store.pool.acquire().await?;
            let Some(run) = store::load_run(&mut conn, run_id).await? else {
                return Ok(());
            };
            if run.status != "ready" {
                return Ok(());
            }
            let set = self.set_for(&run.set_hash).await?;
            let workflow = set
                .workflow(&run.workflow)
                .with_context(|| format!("workflow {} is not in its set", run.workflow))?;
            let now = self.clock.now_ms();
            let Some(step) = workflow.steps.get(run.next_step as usize) else {
                store::end_run(&mut conn, run.id, "done", "all steps done", now).await?;
                info!(run_id, workflow = %workflow.name, "run done");
                return Ok(());
            };
            let contact = store::contact_by_id(&mut conn, run.contact_id)
                .await?
                .context("contact is gone")?;
            if let Some(reason) =
                triggers::cancel_reason(&mut conn, &workflow.trigger, &run.context.0, &contact).await?
            {
                store::end_run(&mut conn, run.id, "cancelled", reason, now).await?;
                info!(run_id, workflow = %workflow.name, reason, "run cancelled");
                return Ok(());
            }
            let contact_ctx = store::contact_context(&mut conn, &contact).await?;
            drop(conn);
            self.step(&run, workflow, step, &contact, contact_ctx).await?;
        }
    }

    async fn step(
        &self,
        run: &Run,
        workflow: &Workflow,
        step: &Step,
        contact: &Contact,
        contact_ctx: serde_json::Value,
    ) -> anyhow::Result<()> {
        let kind = step.kind();
        let mut status = "ready";
        // Rendering is pure and may be slow, so it happens before the transaction opens.
        let outgoing = match step {
            Step::Send { channel, template } => {
                let recipient = self
                    .plugins
                    .get()
                    .for_channel(channel)
                    .map(|p| p.manifest.capabilities.recipient);
                let address = match recipient {
                    Ok(Recipient::Email) => contact.email.clone(),
                    Ok(Recipient::Phone) => contact.phone.clone(),
                    Ok(Recipient::None) => Some(String::new()),
                    Err(_) => None,
                };
                address
                    .filter(|_| contact.consent != "withdrawn")
                    .map(|address| Outgoing {
                        channel,
                        template,
                        name: contact.name.clone(),
                        address,
                        key_suffix: "",
                    })
            }
            Step::NotifyOwner { template } => {
                Some(contact.owner.clone())
                    .filter(|o| o.contains('@'))
                    .map(|address| Outgoing {
                        channel: "email",
                        template,
                        name: String::new(),
                        address,
                        key_suffix: "-owner",
                    })
            }
            _ => None,
        };
        let rendered = match &outgoing {
            Some(out) => {
                let set = self.set_for(&run.set_hash).await?;
                let template = set.templates.get(out.template).cloned().context("template missing")?;
                let context = json!({
                    "contact": contact_ctx, "vars": workflow.vars, "event": run.context.0,
                    "owner": { "email": contact.owner }, "workflow": workflow.name,
                });
                let plugins = self.plugins.get();
                let channel = out.channel.to_string();
                let result =
                    tokio::task::spawn_blocking(move || plugins.render(&channel, &template.fields, &context)).await?;
                let (message, _) = result.with_context(|| format!("render template `{}`", out.template))?;
                Some(message)
            }
            None => None,
        };
        let now = self.clock.now_ms();
        let mut tx = self.store.write().await?;
        // The checks above ran before this transaction; repeat them inside it, so a
        // follow-up logged or consent withdrawn meanwhile still wins.
        let contact = &store::contact_by_id(&mut tx, contact.id)
            .await?
            .context("contact is gone")?;
        if let Some(reason) = triggers::cancel_reason(&mut tx, &workflow.trigger, &run.context.0, contact).await? {
            store::end_run(&mut tx, run.id, "cancelled", reason, now).await?;
            tx.commit().await?;
            info!(run_id = run.id, workflow = %workflow.name, reason, "run cancelled");
            return Ok(());
        }
        let outgoing = outgoing.filter(|_| !(matches!(step, Step::Send { .. }) && contact.consent == "withdrawn"));
        let detail = match step {
            Step::Send { .. } | Step::NotifyOwner { .. } => match (outgoing, rendered) {
                (Some(out), Some(r)) => {
                    let key = format!(
                        "run{}-step{}-contact{}{}",
                        run.id, run.next_step, contact.id, out.key_suffix
                    );
                    let message_id = format!("<{key}@{}>", self.message_id_domain);
                    let outbound = OutboundMessage {
                        to_name: out.name,
                        to_address: out.address.clone(),
                        subject: r.subject.unwrap_or_default(),
                        text: r.text,
                        html: r.html,
                        extra: r.extra,
                    };
                    let row = NewOutboxRow {
                        idempotency_key: &key,
                        message_id: &message_id,
                        run_id: Some(run.id),
                        contact_id: Some(contact.id),
                        channel: out.channel,
                        message: &outbound,
                    };
                    store::insert_outbox(&mut tx, &row, now).await?;
                    format!("queued {message_id} to {}", out.address)
                }
                _ if matches!(step, Step::NotifyOwner { .. }) => "skipped: the contact has no owner email".into(),
                _ if contact.consent == "withdrawn" => "skipped: consent withdrawn".into(),
                _ => "skipped: the contact has no address for this channel".into(),
            },
            Step::Wait(span) => {
                let until = add_span(now, *span, &contact.time_zone);
                store::insert_timer(&mut tx, until, TimerKind::ResumeRun, Some(run.id), None).await?;
                status = "waiting";
                format!("wait until {}", crate::clock::display_ms(until))
            }
            Step::ScheduleFollowUp { after, goal } => {
                let span = match after {
                    FollowUpAfter::Fixed(span) => Some(*span),
                    FollowUpAfter::Cadence(name) => {
                        let set = self.set_for(&run.set_hash).await?;
                        let cadence = set.cadences.get(name).context("cadence missing")?;
                        let key = contact_ctx.get(&cadence.by).and_then(|v| v.as_str());
                        cadence.interval_for(key)
                    }
                };
                match span {
                    Some(span) => {
                        let at = add_span(now, span, &contact.time_zone);
                        store::set_next_follow_up(&mut tx, contact.id, Some(at), goal.as_deref(), now).await?;
                        format!("next follow-up {}", crate::clock::display_ms(at))
                    }
                    None => "skipped: the cadence has no interval for this contact".into(),
                }
            }
            Step::SetStage(stage) => {
                store::set_stage(&mut tx, contact, stage, &format!("workflow:{}", workflow.name), now).await?;
                format!("stage {} -> {stage}", contact.stage)
            }
            Step::SetTier(tier) => {
                store::set_classification(&mut tx, contact.id, store::Classification::ValueTier, tier, now).await?;
                format!("value tier -> {tier}")
            }
            Step::SetIntent(grade) => {
                store::set_classification(&mut tx, contact.id, store::Classification::IntentGrade, grade, now).await?;
                format!("intent grade -> {grade}")
            }
            Step::Tag(tag) => {
                store::set_tag(&mut tx, contact, tag, true, now).await?;
                format!("tagged {tag}")
            }
            Step::Untag(tag) => {
                store::set_tag(&mut tx, contact, tag, false, now).await?;
                format!("untagged {tag}")
            }
            Step::SetOwner(owner) => {
                store::set_owner(&mut tx, contact, owner, &format!("workflow:{}", workflow.name), now).await?;
                format!("owner {} -> {owner}", contact.owner)
            }
        };
        if !store::finish_step(&mut tx, run, kind, &detail, status, now).await? {
            // Another worker moved this run on meanwhile: drop this attempt's effects.
            return Ok(());
        }
        tx.commit().await?;
        info!(run_id = run.id, workflow = %workflow.name, step = run.next_step, kind, contact_id = contact.id, "{detail}");
        if detail.starts_with("queued") {
            self.delivery_wake.notify_one();
        }
        Ok(())
    }
}
