//! `nudge simulate`: what the workflows will send over the next days, found by
//! running the daemon's own engine (triggers, timers, segment passes, the
//! daily classification, send windows, caps, working hours, A/B variants) on
//! a copy of the database and a virtual clock the simulation moves itself.
//!
//! Nothing leaves by construction: the simulation has no delivery workers, no
//! API, no watchers; the engine writes outbox rows into the copy, and those
//! rows are read back as what would be sent (`run.rs`). Rendering runs in the
//! plugins' sandboxes, which make no requests. The live database is only read,
//! once, through a read-only connection (`copy.rs`).
//!
//! With `--against`, a second copy of the same snapshot runs the candidate
//! folder, and the two are compared message by message (`diff.rs`).

mod copy;
mod diff;
mod html;
mod report;
mod run;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::config::Config;
use crate::plugins::Plugins;
use crate::store::MessageDifference;
use crate::workflow::{Condition, WorkflowSet};
use copy::{Scratch, copy_database};
pub(crate) use report::Summary;
use run::Simulation;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// What `nudge simulate` was asked.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) days: u32,
    /// A candidate workflow folder to compare with the current one.
    pub(crate) against: Option<PathBuf>,
    /// A `when`-style condition over the contact: only matching contacts are reported.
    pub(crate) contacts: Option<String>,
    /// Where to write every simulated message as CSV.
    pub(crate) messages: Option<PathBuf>,
}

/// What a simulation found, with the candidate's and the difference under `--against`.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    /// Milliseconds since the epoch: the period simulated.
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) days: u32,
    /// The zone whose calendar days `day` names.
    pub(crate) time_zone: String,
    pub(crate) contacts: Option<String>,
    /// Messages queued before the period and not sent yet (not counted in it).
    pub(crate) already_queued: i64,
    pub(crate) current: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) candidate: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) differences: Option<Vec<MessageDifference>>,
}

impl Outcome {
    pub(crate) fn to_text(&self) -> String {
        let mut out = format!(
            "Simulation of {} days, {} .. {} (days in {}), contacts: {}; {} messages were queued before\n\n",
            self.days,
            crate::clock::display_ms(self.from),
            crate::clock::display_ms(self.to),
            self.time_zone,
            self.contacts.as_deref().unwrap_or("all"),
            self.already_queued
        );
        out += &self.current.to_text();
        if let (Some(candidate), Some(differences)) = (&self.candidate, &self.differences) {
            out += "\n";
            out += &candidate.to_text();
            out += &report::differences_text(differences, Path::new(&candidate.workflows));
        }
        out
    }
}

/// Runs the simulation(s) `options` ask for, on copies of the configured database.
pub(crate) async fn simulate(config: &Config, options: &Options) -> anyhow::Result<Outcome> {
    let filter = options.contacts.as_deref().map(compile_filter).transpose()?;
    let plugins = crate::daemon::load_plugins(config, false).await?;
    let current_set = load_set(&config.workflows, &plugins)?;
    let candidate_set = match &options.against {
        Some(dir) => Some(load_set(dir, &plugins)?),
        None => None,
    };
    let zone = current_set
        .classification
        .as_ref()
        .map_or(TimeZone::UTC, |rules| rules.time_zone.clone());
    let scratch = Scratch::new()?;
    let (current_copy, candidate_copy) = (scratch.path("current.db"), scratch.path("candidate.db"));
    copy_database(&config.database, &current_copy).await?;
    if candidate_set.is_some() {
        std::fs::copy(&current_copy, &candidate_copy).context("copy the snapshot for the candidate")?;
    }
    let mut sim = Simulation::start(
        config,
        &current_copy,
        plugins.clone(),
        current_set,
        zone.clone(),
        filter.as_ref(),
    )
    .await?;
    let (from, to) = (sim.start, sim.start + i64::from(options.days) * DAY_MS);
    sim.run_until(to).await?;
    let current = Summary::read(sim.store(), &config.workflows).await?;
    if let Some(file) = &options.messages {
        report::export_messages(sim.store(), file).await?;
    }
    let (candidate, differences) = match (candidate_set, &options.against) {
        (Some(set), Some(dir)) => {
            let mut other =
                Simulation::start(config, &candidate_copy, plugins, set, zone.clone(), filter.as_ref()).await?;
            other.run_until(to).await?;
            let summary = Summary::read(other.store(), dir).await?;
            other.store().close().await;
            (
                Some(summary),
                Some(diff::differences(sim.store(), &candidate_copy).await?),
            )
        }
        _ => (None, None),
    };
    sim.store().close().await;
    Ok(Outcome {
        from,
        to,
        days: options.days,
        time_zone: zone.iana_name().unwrap_or("UTC").to_string(),
        contacts: options.contacts.clone(),
        already_queued: sim.already_queued,
        current,
        candidate,
        differences,
    })
}

/// A workflow folder, which must compile whole, as the daemon requires.
fn load_set(dir: &Path, plugins: &Plugins) -> anyhow::Result<WorkflowSet> {
    WorkflowSet::load(dir, &plugins.get().channels())
        .map_err(|d| anyhow::anyhow!("{}\nfix the workflow files of {} first", d.render(false), dir.display()))
}

/// `--contacts`: a condition as a workflow's `when` is written, over `contact` alone.
fn compile_filter(source: &str) -> anyhow::Result<Condition> {
    Condition::compile(source).map_err(|e| {
        let help = e.help.map(|h| format!("\n  help: {h}")).unwrap_or_default();
        anyhow::anyhow!(
            "--contacts `{source}`, column {}: {}{help}\n  it is written as a workflow's `when`, e.g. --contacts 'contact.stage == \"lead\"'",
            e.span.start + 1,
            e.message
        )
    })
}
