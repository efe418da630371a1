//! `nudge report`: the measures of docs/domain.md §6 for a period, by the
//! workflow set and classification rules in the files.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Config;
use crate::daemon;
use crate::plugins::PluginHost;
use crate::report::{self, ReportScope};
use crate::workflow::{CLASSIFICATION_FILE, WorkflowSet};

/// How `nudge report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportFormat {
    Table,
    Json,
    Csv,
}

/// `nudge report`: the measures of docs/domain.md §6 for a period (default: the 30 days up to today).
pub(crate) async fn run(
    config: &Config,
    from: Option<&str>,
    to: Option<&str>,
    filters: [Option<String>; 3],
    format: ReportFormat,
    html: Option<&Path>,
) -> anyhow::Result<()> {
    let plugins = PluginHost::load(&config.plugin_settings(), None)?.strict()?;
    let set = WorkflowSet::load(&config.workflows, &plugins.channels())
        .map_err(|d| anyhow::anyhow!("{}\nfix {} first", d.render(false), config.workflows.display()))?;
    let rules = set.classification.clone().with_context(|| {
        format!(
            "no {} in {}: the report needs its time zone and targets",
            CLASSIFICATION_FILE,
            config.workflows.display()
        )
    })?;
    let (store, clock) = daemon::open(config).await?;
    let now = clock.now_ms();
    let scope = ReportScope::new(&rules, now, from, to, filters)?;
    let mut conn = store.pool.acquire().await?;
    let report = report::build(&mut conn, &rules, &set, scope.clone(), now).await?;
    if let Some(file) = html {
        let weeks = report::weekly_trend(&mut conn, &rules, &set, &scope, now).await?;
        std::fs::write(file, report.to_html(&weeks)).with_context(|| format!("write {}", file.display()))?;
        eprintln!("wrote {}", file.display());
    }
    match format {
        ReportFormat::Table => print!("{}", report.to_table()),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Csv => print!("{}", report.to_csv()?),
    }
    Ok(())
}
