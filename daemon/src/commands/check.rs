//! `nudge check`: validates the workflow folder as the daemon would load it,
//! and prints every problem in every file at once; and the DKIM keys of nudge.toml.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::bail;

use crate::config::Config;
use crate::plugins::PluginHost;
use crate::store::{self, Store};
use crate::workflow::{WorkflowSet, language};

/// `nudge check`: validates the workflow folder; Err (exit 1) on any problem.
pub(crate) fn run(config: &Config, dir: Option<&Path>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or(&config.workflows);
    if let Some(warning) = config.public_link_warning() {
        eprintln!("warning: {warning}");
    }
    // The daemon would refuse to start on a key it cannot sign with.
    let dkim = config.dkim_signers()?;
    if !dkim.is_empty() {
        println!(
            "ok: DKIM keys for {}",
            dkim.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let plugins = PluginHost::load(&config.plugin_settings(), None)?.strict()?;
    match WorkflowSet::load(dir, &plugins.channels()) {
        Ok(set) => {
            // The daemon would refuse to start on a retention the caps outlast.
            config.check_retention(&set)?;
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
            for warning in language_warnings(config, &set)? {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
        Err(diagnostics) => {
            eprintln!("{}", diagnostics.render(std::io::stderr().is_terminal()));
            bail!("{} has {} problem(s)", dir.display(), diagnostics.items.len())
        }
    }
}

/// With a database, the templates that lack a language its contacts have:
/// not an error (they read the default language), but likely an oversight.
fn language_warnings(config: &Config, set: &WorkflowSet) -> anyhow::Result<Vec<String>> {
    if !config.database.exists() {
        return Ok(Vec::new());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let locales = runtime.block_on(async {
        let store = Store::open(&config.database).await?;
        let mut conn = store.pool.acquire().await?;
        store::locale_counts(&mut conn).await
    })?;
    let default = &set.languages.default;
    Ok(language::lacking(set.templates.values(), default, &locales)
        .into_iter()
        .map(|l| {
            format!(
                "template `{}` has no `{}`: {} contact(s) with that language get `{default}` (add `[{}.{}]` to its file)",
                l.template, l.language, l.contacts, l.template, l.language
            )
        })
        .collect())
}
