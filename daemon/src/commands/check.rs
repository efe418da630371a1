//! `nudge check`: validates the workflow folder as the daemon would load it,
//! and prints every problem in every file at once.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::bail;

use crate::config::Config;
use crate::plugins::PluginHost;
use crate::workflow::WorkflowSet;

/// `nudge check`: validates the workflow folder; Err (exit 1) on any problem.
pub(crate) fn run(config: &Config, dir: Option<&Path>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or(&config.workflows);
    if let Some(warning) = config.public_link_warning() {
        eprintln!("warning: {warning}");
    }
    let plugins = PluginHost::load(&config.plugin_settings(), None)?.strict()?;
    match WorkflowSet::load(dir, &plugins.channels()) {
        Ok(set) => {
            println!(
                "ok: {} workflows, {} templates, {} cadences, {} in {} (set {})",
                set.workflows.len(),
                set.templates.len(),
                set.cadences.len(),
                if set.classification.is_some() {
                    "classification rules"
                } else {
                    "no classification rules"
                },
                dir.display(),
                set.hash
            );
            Ok(())
        }
        Err(diagnostics) => {
            eprintln!("{}", diagnostics.render(std::io::stderr().is_terminal()));
            bail!("{} has {} problem(s)", dir.display(), diagnostics.items.len())
        }
    }
}
