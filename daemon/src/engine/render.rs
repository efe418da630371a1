//! The messages of a batch rendered by their channel plugins, before the
//! batch's transaction opens: rendering is pure and may be slow, and the turn
//! to write must not wait for it. One blocking call per core rather than one
//! per message, since each call is a hand-off to another thread and back.

use anyhow::Context as _;
use serde_json::json;

use super::batch::{Batch, PreparedRun};
use super::message::Outgoing;
use super::steps::{Action, NextMove, Preparing};
use super::{Engine, variants};
use crate::plugins::PluginError;
use crate::store;

/// A message to render: the plugin's input.
pub(super) struct Render {
    channel: String,
    template_name: String,
    fields: Vec<(String, String)>,
    /// The running set's version of the template, where it differs from the run's
    /// own: used if the run's own cannot render, so that a fixed template reaches
    /// the runs it held (which stay pinned to their set for everything else).
    fixed: Option<Vec<(String, String)>>,
    context: serde_json::Value,
    /// Its run's span, for what the plugin host logs.
    span: tracing::Span,
}

impl Engine {
    /// What `out`, the message of a run's step, is rendered from: its template
    /// (as the run's A/B variant sends it) and the context templates see.
    pub(super) fn render_input(
        &self,
        at: &Preparing,
        out: &Outgoing,
        unsubscribe: &Option<store::Unsubscribe>,
    ) -> anyhow::Result<Render> {
        let (set, workflow, run, variant) = (at.set, at.workflow, at.run, at.variant);
        let (contact, contact_ctx) = (at.contact, at.contact_ctx);
        let template = set.templates.get(&out.template).cloned().context("template missing")?;
        let current = self.current();
        let fixed = (current.templates.get(&out.template))
            .filter(|t| t.channel == template.channel && t.texts != template.texts)
            .map(|t| {
                let t = variants::template(t.clone(), variant);
                t.for_locale(&contact.locale, &current.languages.default).1.to_vec()
            });
        let template = variants::template(template, variant);
        let fields = template.for_locale(&contact.locale, &set.languages.default).1.to_vec();
        let context = json!({
            "contact": contact_ctx, "vars": workflow.vars, "event": run.context.0,
            "owner": { "email": contact.owner }, "workflow": workflow.name,
            "unsubscribe_url": unsubscribe.as_ref().map(|u| u.https.clone()).unwrap_or_default(),
            // What a notice to the owner is about (empty in every other message).
            "withheld": {
                "template": out.withheld.clone().unwrap_or_default(),
                "category": if out.withheld.is_some() { workflow.category.as_str() } else { "" },
            },
        });
        Ok(Render {
            channel: out.channel.clone(),
            template_name: out.template.clone(),
            fields,
            fixed,
            context,
            // Worked out inside the run's `prepare`, in its span.
            span: tracing::Span::current(),
        })
    }

    /// Renders the messages of a batch's prepared steps, in one blocking call per
    /// core. A message that fails to render fails its run's step. With a
    /// `budget`, a render not begun within it is not made (its step fails with
    /// "left to the engine").
    pub(super) async fn render_messages(
        &self,
        batch: &mut Batch,
        budget: Option<std::time::Duration>,
    ) -> anyhow::Result<()> {
        let mut renders: Vec<(usize, Render)> = batch
            .runs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| match &mut p.next {
                Ok(Some(NextMove {
                    action: Action::Step(step),
                    ..
                })) => Some((i, step.render.take()?)),
                _ => None,
            })
            .collect();
        if renders.is_empty() {
            return Ok(());
        }
        let began = std::time::Instant::now();
        let within = move || budget.is_none_or(|budget| began.elapsed() <= budget);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = renders.len().div_ceil(cores);
        let plugins = self.plugins.get();
        let mut calls = Vec::new();
        while !renders.is_empty() {
            let mine: Vec<(usize, Render)> = renders.drain(..share.min(renders.len())).collect();
            let plugins = plugins.clone();
            calls.push(tokio::task::spawn_blocking(move || {
                mine.into_iter()
                    .map(|(i, r)| {
                        let _in_run = r.span.enter();
                        let rendered =
                            within().then(|| match (plugins.render(&r.channel, &r.fields, &r.context), &r.fixed) {
                                (Err(PluginError::Template { .. }), Some(fixed)) => {
                                    plugins.render(&r.channel, fixed, &r.context)
                                }
                                (rendered, _) => rendered,
                            });
                        (i, r.template_name, rendered)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        for call in calls {
            for (i, template_name, result) in call.await? {
                let PreparedRun { next: slot, .. } = &mut batch.runs[i];
                match result {
                    Some(Ok((message, _))) => {
                        if let Ok(Some(NextMove {
                            action: Action::Step(step),
                            ..
                        })) = slot
                        {
                            step.rendered = Some(message);
                        }
                    }
                    Some(Err(e)) => {
                        *slot = Err(anyhow::Error::new(e).context(format!("render template `{template_name}`")))
                    }
                    None => *slot = Err(anyhow::anyhow!("left to the engine: the renders ran past their budget")),
                }
            }
        }
        Ok(())
    }
}
